"""Fixed-point encoding on a ring of r bits with f fraction bits, as MPC protocols compute.

A real x is stored as the integer round(x * 2**f) modulo 2**r (two's complement). Values with
|x| >= 2**(r - f - 1) do not fit and wrap around to the other sign; that silent corruption is
what ``on_wrap`` detects. The rounding error is at most 2**-(f+1) per operation.
"""

from __future__ import annotations

import torch

from privinf.errors import RuntimeFault


class FixedPointWrapError(RuntimeFault, OverflowError):
    """A value left the representable range of the ring and would wrap around."""


def max_representable(fraction_bits: int, ring_bits: int) -> float:
    """Largest magnitude that fits in the signed ring: 2**(r - f - 1)."""
    return float(2 ** (ring_bits - fraction_bits - 1))


def wrapped(x: torch.Tensor, fraction_bits: int, ring_bits: int) -> torch.Tensor:
    """Boolean mask of entries that would wrap around on the ring."""
    return x.abs() >= max_representable(fraction_bits, ring_bits)


def fixed_point(x: torch.Tensor, fraction_bits: int, ring_bits: int | None = None,
                on_wrap: str = "raise") -> torch.Tensor:
    """Round x to the fixed-point grid 2**-fraction_bits (computed in float64, returned in x's dtype).

    With ``ring_bits`` the ring's range is enforced: ``on_wrap="raise"`` raises
    :class:`FixedPointWrapError` naming how many entries overflow; ``"wrap"`` reproduces the
    two's-complement wrap-around the protocol would compute; ``"clip"`` saturates.
    """
    if on_wrap not in ("raise", "wrap", "clip"):
        raise ValueError(f"on_wrap must be 'raise', 'wrap' or 'clip', got {on_wrap!r}")
    scale = float(2 ** fraction_bits)
    q = torch.round(x.double() * scale)
    if ring_bits is not None:
        half = float(2 ** (ring_bits - 1))
        over = q.abs() >= half
        if bool(over.any()):
            if on_wrap == "raise":
                limit = max_representable(fraction_bits, ring_bits)
                raise FixedPointWrapError(
                    f"{int(over.sum())} of {q.numel()} values exceed the ring's range |x| < {limit:g} "
                    f"(ring 2^{ring_bits}, {fraction_bits} fraction bits; max |x| = {x.abs().max().item():.4g}); "
                    "raise ring_bits or lower fraction_bits")
            if on_wrap == "clip":
                q = q.clamp(-half, half - 1)
            else:
                q = torch.remainder(q + half, 2 * half) - half
    return (q / scale).to(x.dtype)
