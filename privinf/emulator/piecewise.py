"""Fast piecewise polynomials for the emulator's exact mode: ``polynomial.piecewise`` with one
comparison and one ``where`` per breakpoint, on NumPy for float32 CPU tensors. The bit-equality
rules are those of :mod:`privinf.emulator.fast`, which uses this for every piecewise card.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from privinf.cards import Segment

F32 = np.float32


class _Torch:
    """The few array operations the piecewise plan needs, on torch tensors (any device)."""
    mul, abs, where, ge, lt = torch.mul, torch.abs, torch.where, torch.ge, torch.lt
    imul = staticmethod(lambda a, b: a.mul_(b))
    iadd = staticmethod(lambda a, b: a.add_(b))
    const = staticmethod(float)
    full_like = staticmethod(torch.full_like)


class _NumPy:
    """The same on NumPy float32 arrays (a CPU tensor's memory): under a microsecond a call.

    Constants are cast to float32 first, as torch casts a Python scalar to the tensor's dtype.
    """
    mul, abs, where, ge, lt = np.multiply, np.abs, np.where, np.greater_equal, np.less
    imul = staticmethod(lambda a, b: np.multiply(a, b, out=a))
    iadd = staticmethod(lambda a, b: np.add(a, b, out=a))
    const = F32
    full_like = staticmethod(lambda a, v: np.full_like(a, v))


def _negzero(c: float) -> bool:
    return c == 0 and math.copysign(1.0, c) < 0


def _horner_plan(coeffs: Sequence[float], from_neg_inf: bool, keep_zero_sign: bool):
    """``polynomial.polyval(x, coeffs)`` on the x of one segment, as (top, [(c or None), ...]).

    The reference starts from zeros, so its first step ``0 * x + c_top`` is ``c_top`` (NaN at
    x = -inf, kept when the segment reaches -inf). ``+ 0`` changes nothing but the sign of a
    zero: a later nonzero ``+ c`` erases that sign and a last ``+ 0`` normalises it, so the only
    ``+ 0`` kept (None marks the dropped ones) is a last one the caller needs (``keep_zero_sign``).
    """
    if not coeffs:
        return None
    rev = [float(c) for c in reversed(coeffs)]
    steps = [c if (c != 0 or _negzero(c) or (i == len(rev) - 2 and keep_zero_sign)) else None
             for i, c in enumerate(rev[1:])]
    return rev[0], steps, from_neg_inf


def _horner_run(B, x, plan):
    """Run a :func:`_horner_plan` with backend ``B``: an array, or a float if constant."""
    if plan is None:
        return 0.0
    top, steps, from_neg_inf = plan
    if from_neg_inf:  # 0 * x + c_top, NaN at -inf as in the reference
        out = B.iadd(B.mul(x, B.const(0.0)), B.const(top))
        if not steps:
            return out
        out = B.imul(out, x)
    elif not steps:
        return top
    else:
        out = B.mul(x, B.const(top))
    for i, c in enumerate(steps):
        if i:
            out = B.imul(out, x)
        if c is not None:
            out = B.iadd(out, B.const(c))
    return out


def _segment_plan(seg: Segment):
    """``polynomial.segment_value`` restricted to ``seg``'s interval: ("x",) or ("poly", px, pabs, add)."""
    from_neg_inf = seg.lo == -math.inf
    coeffs, abs_coeffs = tuple(seg.coeffs), tuple(seg.abs_coeffs or ())
    # the monomial x on a segment away from 0 and -inf: (0 * x + 1) * x + 0 is x itself
    if coeffs == (0.0, 1.0) and not abs_coeffs and (seg.lo > 0 or (seg.hi <= 0 and not from_neg_inf)):
        return ("x",)
    # a trailing "+ 0" of the x part is invisible when a |x| part with a nonzero constant follows:
    # P(|x|) = q |x| + c0 is never -0 unless c0 is -0
    abs_safe = bool(abs_coeffs) and not _negzero(abs_coeffs[0])
    px = _horner_plan(coeffs, from_neg_inf, keep_zero_sign=not abs_safe)
    pabs = _horner_plan(abs_coeffs, from_neg_inf, keep_zero_sign=True) if abs_coeffs else None
    return ("poly", px, pabs, bool(abs_coeffs) and (bool(coeffs) or not abs_safe))


def _segment_run(B, x, plan):
    if plan[0] == "x":
        return x
    _, px, pabs, add = plan
    out = _horner_run(B, x, px)
    if pabs is None:
        return out
    p = _horner_run(B, B.abs(x), pabs)
    if not add:
        return p  # 0 + P(|x|), and P is never -0 here
    if isinstance(out, float):
        return p + B.const(out) if isinstance(p, float) else B.iadd(p, B.const(out))
    return B.iadd(out, p)


def fast_piecewise(segments: Sequence[Segment]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``polynomial.piecewise`` with one comparison and one ``where`` per breakpoint.

    Returns None unless the segments are sorted and touch (``hi`` of one is ``lo`` of the next),
    which is what every shipped card has; then ``x >= lo_i`` picks the same piece as the
    reference's disjoint ``[lo, hi)`` masks, and a final ``x < hi_last`` zeroes NaN, +inf and
    values above the last piece as the reference does. float32 CPU tensors run on NumPy.
    """
    segs = list(segments)
    if not segs or any(s.lo >= s.hi for s in segs) or any(a.hi != b.lo for a, b in zip(segs, segs[1:])):
        return None
    plans = [(s.lo, _segment_plan(s)) for s in segs]
    hi_last = segs[-1].hi

    def run(B, x):
        r = 0.0
        for i, (lo, plan) in enumerate(plans):
            v = _segment_run(B, x, plan)
            if i == 0 and lo == -math.inf:
                r = v
                continue
            if isinstance(r, float) and isinstance(v, float):
                r = B.full_like(x, B.const(r))
            r = B.where(B.ge(x, B.const(lo)), B.const(v) if isinstance(v, float) else v,
                        B.const(r) if isinstance(r, float) else r)
        if isinstance(r, float):
            r = B.full_like(x, B.const(r))
        return B.where(B.lt(x, B.const(hi_last)), r, B.const(0.0))

    def run_np(x):  # the same selection as run(), by masked copies into one array (cheaper than where)
        r = None
        for i, (lo, plan) in enumerate(plans):
            v = _segment_run(_NumPy, x, plan)
            v = F32(v) if isinstance(v, float) else v
            if i == 0 and lo == -math.inf:
                r = np.full_like(x, v) if np.ndim(v) == 0 else (v.copy() if v is x else v)
                continue
            if r is None:
                r = np.zeros_like(x)
            np.copyto(r, v, where=np.greater_equal(x, F32(lo)))
        return np.where(np.less(x, F32(hi_last)), r, F32(0.0))

    def evaluate(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.requires_grad:
            return run(_Torch, x)
        with np.errstate(all="ignore"):
            return torch.from_numpy(np.asarray(run_np(x.numpy()), dtype=np.float32))

    return evaluate
