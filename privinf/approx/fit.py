"""Derive SiLU versions of the published GELU approximations (privinf's own fits).

The MPC/FHE papers publish GELU polynomials; Llama-family models use SiLU. Since
silu(x) - x/2 = x (sigmoid(x) - 1/2) is even, the symmetric forms (BOLT, NEXUS) keep the exact
0.5x term and fit the even remainder by least squares on a dense grid; BumbleBee's asymmetric
middle interval takes a full degree-6 fit. Breakpoints are scaled by 2 from GELU's (PUMA's
published SiLU does the same: GELU's [-4, -1.95, 3] becomes [-8, -4, 4]).

    python -m privinf.approx.fit      # prints the fitted segments and their max error as TOML

The printed coefficients are the ones recorded in protocols/{bolt,bumblebee,nexus}.toml.
"""

from __future__ import annotations

import math

import numpy as np

from privinf.cards import Segment

GRID = 40001  # least-squares grid points per interval


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _lstsq(x: np.ndarray, y: np.ndarray, powers: list[int], absolute: bool = False) -> list[float]:
    base = np.abs(x) if absolute else x
    A = np.stack([base ** p for p in powers], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    out = [0.0] * (max(powers) + 1)
    for p, c in zip(powers, coef):
        out[p] = float(c)
    return out


def bolt_silu(t: float = 5.4) -> tuple[Segment, ...]:
    """BOLT form: 0 below -t, x above t, else 0.5x + degree-4 polynomial in |x|."""
    x = np.linspace(-t, t, GRID)
    abs_coeffs = _lstsq(x, _silu(x) - 0.5 * x, [0, 1, 2, 3, 4], absolute=True)
    return (Segment(-math.inf, -t), Segment(-t, t, (0.0, 0.5), tuple(abs_coeffs)), Segment(t, math.inf, (0.0, 1.0)))


def bumblebee_silu(b0: float = -10.0, b1: float = -3.94, b2: float = 6.0) -> tuple[Segment, ...]:
    """BumbleBee/PUMA form: cubic on [b0, b1), degree 6 on [b1, b2], x above (GELU breakpoints x2)."""
    x0 = np.linspace(b0, b1, GRID)
    cubic = _lstsq(x0, _silu(x0), [0, 1, 2, 3])
    x1 = np.linspace(b1, b2, GRID)
    sextic = _lstsq(x1, _silu(x1), [0, 1, 2, 3, 4, 5, 6])  # asymmetric interval: all powers
    return (Segment(-math.inf, b0), Segment(b0, b1, tuple(cubic)), Segment(b1, b2, tuple(sextic)),
            Segment(b2, math.inf, (0.0, 1.0)))


def nexus_silu(t: float = 7.0) -> tuple[Segment, ...]:
    """NEXUS form: 0.5x + even degree-12 polynomial on [-t, t], 0 below, x above."""
    x = np.linspace(-t, t, GRID)
    even = _lstsq(x, _silu(x) - 0.5 * x, [0, 2, 4, 6, 8, 10, 12])
    even[1] = 0.5
    return (Segment(-math.inf, -t), Segment(-t, t, tuple(even)), Segment(t, math.inf, (0.0, 1.0)))


def max_error(segments, exact, lo: float = -12.0, hi: float = 12.0, n: int = 200001) -> float:
    """max |piecewise - exact| over [lo, hi] on a dense grid (float64)."""
    import torch

    from privinf.approx.polynomial import piecewise
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    return float((piecewise(x, segments) - exact(x)).abs().max())


def _toml(name: str, segments) -> str:
    def num(v: float) -> str:
        return "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
    lines = [f"# {name}"]
    for s in segments:
        parts = [f"lo = {num(s.lo)}", f"hi = {num(s.hi)}", f"coeffs = [{', '.join(map(repr, s.coeffs))}]"]
        if s.abs_coeffs:
            parts.append(f"abs_coeffs = [{', '.join(map(repr, s.abs_coeffs))}]")
        lines.append("{ " + ", ".join(parts) + " },")
    return "\n".join(lines)


if __name__ == "__main__":
    import torch.nn.functional as F
    for name, segs in (("bolt silu", bolt_silu()), ("bumblebee silu", bumblebee_silu()), ("nexus silu", nexus_silu())):
        print(_toml(name, segs))
        print(f"# max_abs_error = {max_error(segs, F.silu):.6g}\n")
