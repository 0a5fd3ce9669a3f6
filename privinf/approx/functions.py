"""Exact activations and plaintext emulations of the non-polynomial methods cards name.

- ``gelu`` / ``silu``: exact references (erf GELU, x * sigmoid(x)).
- ``fixed_point_tanh_gelu`` / ``fixed_point_silu``: Iron-style evaluation where every
  intermediate is rounded to ``f`` fraction bits (SIRNN computes tanh/sigmoid in fixed point);
  error is the fixed-point precision, about 2**-f per operation.
- ``crypten_sigmoid``: CrypTen 0.4.1's ``sigmoid`` (method "reciprocal"): exp by (1 + x/2^9)^(2^9),
  then 3 Newton steps for 1/(1 + e^-|x|) from 0.75, then the sign flip. ``crypten_silu`` and
  ``crypten_gelu`` (tanh form, tanh(z) = 2 sigmoid(2z) - 1) compose it as the no-polynomial baseline.
  Given ``fraction_bits`` (the crypten card's 16) each step is rounded to that grid, as CrypTen's
  truncations do (round to nearest here; CrypTen's 2PC truncation rounds stochastically).
- ``newton_rsqrt``: CrypTen's inverse square root: y0 = 2.2 exp(-(x/2 + 0.2)) + 0.2 - x/1024,
  then ``iterations`` Newton steps y <- y (3 - x y^2) / 2. Accurate on roughly [0.1, 200]; far
  outside it the initial guess is poor and 3 steps do not converge (the error is real MPC error).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from privinf.approx.fixed_point import fixed_point

_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


def silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


EXACT = {"gelu": gelu, "silu": silu}


def fixed_point_tanh_gelu(x: torch.Tensor, fraction_bits: int) -> torch.Tensor:
    """0.5 x (1 + tanh(c (x + 0.044715 x^3))) with every intermediate on the 2**-f grid."""
    fp = lambda t: fixed_point(t, fraction_bits)  # noqa: E731
    x = fp(x)
    inner = fp(_GELU_C * fp(x + fp(0.044715 * fp(fp(x * x) * x))))
    return fp(0.5 * x * fp(1.0 + fp(torch.tanh(inner))))


def fixed_point_silu(x: torch.Tensor, fraction_bits: int) -> torch.Tensor:
    """x * sigmoid(x) with sigmoid computed as 0.5 (1 + tanh(x / 2)) on the 2**-f grid."""
    fp = lambda t: fixed_point(t, fraction_bits)  # noqa: E731
    x = fp(x)
    sig = fp(0.5 * fp(1.0 + fp(torch.tanh(fp(0.5 * x)))))
    return fp(x * sig)


def _grid(fraction_bits: int | None):
    """Rounding to the 2**-f grid, or the identity for ``None`` (float arithmetic)."""
    if fraction_bits is None:
        return lambda t: t
    return lambda t: fixed_point(t, fraction_bits)


def crypten_exp(x: torch.Tensor, iterations: int, fraction_bits: int | None = None) -> torch.Tensor:
    """(1 + x / 2^n)^(2^n); with ``fraction_bits`` every step is rounded as in fixed point: the
    base's rounding (2**-(f+1)) is amplified 2^n times, CrypTen's dominant sigmoid error."""
    fp = _grid(fraction_bits)
    y = 1.0 + fp(x / 2 ** iterations)
    for _ in range(iterations):
        y = fp(y * y)
    return y


def crypten_sigmoid(x: torch.Tensor, fraction_bits: int | None = None) -> torch.Tensor:
    fp = _grid(fraction_bits)
    neg = x < 0
    denom = 1.0 + crypten_exp(-x.abs(), 9, fraction_bits)
    y = torch.full_like(x, 0.75)
    for _ in range(3):
        y = fp(2 * y - fp(fp(y * y) * denom))
    return torch.where(neg, 1.0 - y, y)


def crypten_silu(x: torch.Tensor, fraction_bits: int | None = None) -> torch.Tensor:
    return _grid(fraction_bits)(x * crypten_sigmoid(x, fraction_bits))


def crypten_gelu(x: torch.Tensor, fraction_bits: int | None = None) -> torch.Tensor:
    tanh = 2.0 * crypten_sigmoid(2.0 * _GELU_C * (x + 0.044715 * x * x * x), fraction_bits) - 1.0
    return _grid(fraction_bits)(0.5 * x * (1.0 + tanh))


CRYPTEN_NATIVE = {"gelu": crypten_gelu, "silu": crypten_silu}
FIXED_POINT = {"gelu": fixed_point_tanh_gelu, "silu": fixed_point_silu}


def newton_rsqrt(x: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """CrypTen's 1/sqrt(x) (see module docstring)."""
    y = 2.2 * crypten_exp(-(x / 2 + 0.2), 8) + 0.2 - x / 1024
    for _ in range(iterations):
        y = y * (3 - x * y * y) / 2
    return y


RSQRT_EXPONENTS = (-8, 10)  # normalised range: x in [4**-8, 4**11) = [1.5e-5, 4.2e6)


def normalized_rsqrt(x: torch.Tensor, iterations: int = 3, exponents: tuple[int, int] = RSQRT_EXPONENTS) -> torch.Tensor:
    """1/sqrt(x) with power-of-4 range reduction, then CrypTen's Newton on the mantissa.

    x = m * 4**k with m in [1, 4) and k in ``exponents``: 1/sqrt(x) = 2**-k / sqrt(m). In MPC,
    k comes from one batched comparison of x against the public thresholds 4**j, and 2**-k, 4**-k
    are products of (1 - c * bit) factors. CrypTen's plain ``inv_sqrt`` is accurate only on about
    [0.1, 200]; the default model's MLP inputs have mean squares from 0.014 (layer 0) to 1.3e5
    (layer 29), where it is off by 30% or diverges. On [1, 4) three Newton steps from CrypTen's guess leave at most 1.3e-3 relative error.
    """
    lo, hi = exponents
    k = torch.floor(torch.log2(x.clamp(min=4.0 ** lo)) / 2).clamp(lo, hi)  # count of thresholds 4**j <= x
    m = x * torch.pow(4.0, -k)
    return newton_rsqrt(m, iterations) * torch.pow(2.0, -k)
