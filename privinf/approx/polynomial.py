"""Piecewise polynomials and the composite sign polynomials CKKS uses for interval tests.

Domain: any real x. Each segment [lo, hi) evaluates its own polynomial; the outermost
segments carry the tails (0 below, x above for GELU/SiLU). Measured errors of the shipped
cards are recorded in each card's ``max_abs_error`` and checked by ``tests/test_approx.py``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from privinf.cards import ActivationSpec, Segment, SignPolynomial


def polyval(x: torch.Tensor, coeffs: Sequence[float]) -> torch.Tensor:
    """sum_k coeffs[k] * x**k by Horner's rule (ascending coefficients; () gives 0)."""
    out = torch.zeros_like(x)
    for c in reversed(coeffs):
        out = out * x + c
    return out


def segment_value(x: torch.Tensor, seg: Segment) -> torch.Tensor:
    """The segment's polynomial at x, ignoring its interval."""
    out = polyval(x, seg.coeffs)
    if seg.abs_coeffs:
        out = out + polyval(x.abs(), seg.abs_coeffs)
    return out


def piecewise(x: torch.Tensor, segments: Sequence[Segment]) -> torch.Tensor:
    """Evaluate a piecewise polynomial with exact comparisons (what MPC's secure comparison does)."""
    out = torch.zeros_like(x)
    for seg in segments:
        mask = (x >= seg.lo) & (x < seg.hi)
        out = torch.where(mask, segment_value(x, seg), out)
    return out


def sign_approx(x: torch.Tensor, sign: SignPolynomial) -> torch.Tensor:
    """sign(x) by composite odd polynomials on x / input_bound (inputs are clamped to the bound).

    g is applied g_times first (fast contraction towards +-1), then f f_times (precision), as in
    NEXUS and Lee et al.'s minimax composite sign. Returns values near -1 or +1 and near 0 at x=0.
    """
    y = (x / sign.input_bound).clamp(-1.0, 1.0)
    for _ in range(sign.g_times):
        y = polyval(y, sign.g)
    for _ in range(sign.f_times):
        y = polyval(y, sign.f)
    return y


def piecewise_sign_poly(x: torch.Tensor, segments: Sequence[Segment], sign: SignPolynomial) -> torch.Tensor:
    """Piecewise polynomial whose interval tests are sign polynomials (CKKS has no comparison).

    The indicator of [lo, hi) is (step(x - lo) - step(x - hi)) with step(t) = (1 + sign(t)) / 2;
    near a breakpoint the blend of two pieces is the error CKKS actually incurs.
    """
    def step(t: float) -> torch.Tensor:
        if t == float("-inf"):
            return torch.ones_like(x)
        if t == float("inf"):
            return torch.zeros_like(x)
        return 0.5 * (1.0 + sign_approx(x - t, sign))

    out = torch.zeros_like(x)
    for seg in segments:
        out = out + (step(seg.lo) - step(seg.hi)) * segment_value(x, seg)
    return out


def evaluate(x: torch.Tensor, spec: ActivationSpec) -> torch.Tensor:
    """A piecewise card activation with the comparison its backend uses."""
    if spec.comparison == "sign-polynomial":
        assert spec.sign is not None
        return piecewise_sign_poly(x, spec.segments, spec.sign)
    return piecewise(x, spec.segments)
