"""Fast forms of a card's arithmetic for the emulator's hooks: the same float32 results as
:class:`~privinf.approx.ops.CardOps`, in far fewer and cheaper calls.

During generation every hook sees one token: a (1, 1, C) activation and a single mean square.
Each torch call then costs microseconds of dispatch for nanoseconds of arithmetic, so speed
comes from fewer calls and from NumPy (under a microsecond a call) on CPU tensors, never from
different arithmetic. Every rewrite keeps the reference's IEEE float32 operations (+, -, *,
round half to even, comparisons: correctly rounded, so NumPy and torch agree bit for bit) in
their order; the only changes are ones that cannot alter a bit:

- ``0 * x + c`` (the first Horner step) is ``c`` for finite x; ``+ 0`` only flips the sign of
  a zero, dropped only where a later step provably erases it; ``a / 2**k`` and ``a * 2**-k`` are
  the same correctly rounded number; ``-a`` and scaling by an exact power of two are exact.
- comparisons against sorted, touching segments select the same piece as the reference's
  disjoint masks (NaN and +inf, which no ``[lo, hi)`` holds, give 0 as there).
- rounding ``x * 2**f`` in float32 equals rounding it in float64 (the scaling is exact), below
  float32's overflow at 2**(127 - f); inputs that could get there go to ``CardOps``.
- transcendental calls (``log2``, ``tanh``) are not correctly rounded and differ between torch's
  scalar and vector loops, so they stay torch calls on tensors laid out as the reference's. The
  one exception: a single mean square's range-reduction exponent k = floor(log2(x) / 2) comes
  from ``math.frexp`` (exact), except within 2**-16 of a power of 4, where torch's log2 decides.

Anything else (other dtypes, tensors that need grad, GPU tensors for the NumPy forms,
sign-polynomial comparisons, segments that do not tile the line) falls back to ``CardOps`` or to
the same arithmetic in torch. ``tests/test_emulator.py`` checks bit equality (NaN payloads aside)
against ``CardOps`` for every MPC card on random and extreme inputs.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from privinf.approx import functions
from privinf.approx.fixed_point import fixed_point
from privinf.approx.ops import CardOps
from privinf.emulator.piecewise import fast_piecewise

F32 = np.float32


def fast_fixed_point(ops: CardOps) -> Callable[[torch.Tensor], torch.Tensor]:
    """``ops.fp`` without the float64 round trip, for generation speed.

    Scaling by 2**f is exact in float32/bfloat16 and rounding a float is exact, so this equals
    ``ops.fp`` bit for bit on those dtypes (tests/test_emulator.py checks it); others use ``ops.fp``.
    """
    f, r = ops.card.fraction_bits, ops.card.ring_bits
    if f is None:
        def identity(x):
            return x
        identity.numpy = lambda a, inplace=False: a
        return identity
    scale, inv, half = float(2 ** f), float(2.0 ** -f), None if r is None else float(2 ** (r - 1))
    nscale, ninv = F32(scale), F32(inv)
    nlo, nhi = (None, None) if r is None else (F32(-half), F32(half - 1))  # as torch casts them

    def fp_np(a: np.ndarray, inplace: bool = False) -> np.ndarray:
        """The same IEEE operations on a float32 array (call under ``np.errstate``)."""
        q = np.multiply(a, nscale, out=a if inplace else None)
        np.rint(q, out=q)  # round half to even, as torch.round
        if nlo is not None:
            np.maximum(np.minimum(q, nhi, out=q), nlo, out=q)
        return np.multiply(q, ninv, out=q)

    def fp(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and x.device.type == "cpu" and not x.requires_grad:
            with np.errstate(all="ignore"):
                return torch.from_numpy(fp_np(x.numpy()))
        if x.dtype not in (torch.float32, torch.bfloat16):
            return ops.fp(x)
        q = torch.round(x * scale)
        if half is not None:
            q = q.clamp_(-half, half - 1)
        return q.mul_(inv)

    fp.numpy = fp_np
    return fp


# -- CrypTen's sigmoid and Iron's fixed-point tanh --------------------------------------------------

def _np_grid(fraction_bits: int | None):
    """``fixed_point(a, f)`` (no ring) in place on a float32 array, exact below |a| = 2**(127 - f)."""
    if fraction_bits is None:
        return lambda a: a
    s, inv = F32(2.0 ** fraction_bits), F32(2.0 ** -fraction_bits)

    def fp(a):
        np.multiply(a, s, out=a)
        np.rint(a, out=a)
        return np.multiply(a, inv, out=a)
    return fp


def _crypten(name: str, fraction_bits: int | None, reference):
    """``functions.crypten_silu`` / ``crypten_gelu`` at ``fraction_bits`` on NumPy float32.

    Taken only while the sigmoid's input is within (-1024, 1024): then 1 - |z| / 2**9 lies in
    (-1, 1], every square stays at most 1 and no scaled value nears float32's overflow, where the
    reference's float64 rounding and this float32 one would part. Otherwise ``reference``.
    """
    fp = _np_grid(fraction_bits)
    c1 = 0.5625 if fraction_bits is None else float(fixed_point(torch.tensor(0.5625), fraction_bits))
    one, two, c1 = F32(1.0), F32(2.0), F32(c1)
    half_bits = None if fraction_bits is None or fraction_bits % 2 else fraction_bits // 2
    up, down = (None, None) if half_bits is None else (F32(2.0 ** half_bits), F32(2.0 ** -half_bits))

    def sigmoid(z):
        neg = z < 0
        a = fp(np.multiply(np.abs(z), F32(-2.0 ** -9)))  # (-|z|) / 2**9
        a += one
        if half_bits is None:
            for _ in range(9):
                a = fp(np.multiply(a, a, out=a))
        else:  # with b = a * 2**(f/2): fp(a * a) * 2**f = rint(b * b) exactly (|a| <= 1, a on the grid)
            b = np.multiply(a, up, out=a)
            for _ in range(9):
                np.rint(np.multiply(b, b, out=b), out=b)
                np.multiply(b, down, out=b)
            a = np.multiply(b, down, out=b)
        denom = np.add(a, one, out=a)
        y = fp(np.multiply(denom, c1))  # first Newton step from 0.75: 0.75**2 and 2 * 0.75 are exact
        y = fp(np.subtract(F32(1.5), y, out=y))
        for _ in range(2):
            t = fp(np.multiply(y, y))
            t = fp(np.multiply(t, denom, out=t))
            y = fp(np.subtract(np.multiply(y, two, out=y), t, out=y))
        return np.where(neg, one - y, y)

    def act(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.requires_grad or x.numel() == 0:
            return reference(x)
        a = x.numpy()
        with np.errstate(all="ignore"):
            if name == "silu":
                z = a
            else:
                z = F32(2.0 * functions._GELU_C) * (a + F32(0.044715) * a * a * a)
            if not np.abs(z).max() < 1024:
                return reference(x)
            s = sigmoid(z)
            if name == "silu":
                out = np.multiply(a, s, out=s)
            else:
                out = F32(0.5) * a * (one + (two * s - one))
            return torch.from_numpy(fp(out))

    return act


def _iron(name: str, fraction_bits: int, reference):
    """Iron's fixed-point ``functions.fixed_point_silu`` / ``fixed_point_tanh_gelu`` on NumPy float32,
    ``tanh`` a torch call on a tensor laid out as the reference's (same result, element by element).

    Rounding x * 2**f in float32 parts from the reference's float64 only above |x| = 2**(127 - f);
    beyond |x| = 2**30 (x**3 near 2**90) the input is left to ``reference``.
    """
    fp = _np_grid(fraction_bits)
    s = F32(2.0 ** fraction_bits)
    half, one, cube, c = F32(0.5), F32(1.0), F32(0.044715), F32(functions._GELU_C)

    def grid_new(a):  # fp into a new array
        q = np.multiply(a, s)
        np.rint(q, out=q)
        return np.multiply(q, F32(2.0 ** -fraction_bits), out=q)

    def tanh(a):
        return torch.tanh(torch.from_numpy(a)).numpy()

    def silu(a):
        x = grid_new(a)
        t = fp(tanh(fp(np.multiply(x, half))))
        t = fp(np.multiply(fp(np.add(t, one, out=t)), half, out=t))
        return fp(np.multiply(x, t, out=t))

    def gelu(a):
        x = grid_new(a)
        t = fp(np.multiply(fp(np.multiply(x, x)), x, out=None))
        t = fp(np.add(x, fp(np.multiply(t, cube, out=t)), out=t))
        t = fp(tanh(fp(np.multiply(t, c, out=t))))
        t = fp(np.add(t, one, out=t))
        return fp(np.multiply(np.multiply(x, half), t, out=t))

    body = silu if name == "silu" else gelu

    def act(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.requires_grad or x.numel() == 0:
            return reference(x)
        a = x.numpy()
        with np.errstate(all="ignore"):
            if not np.abs(a).max() < 2.0 ** 30:
                return reference(x)
            return torch.from_numpy(body(a))

    return act


def fast_activation(ops: CardOps) -> Callable[[torch.Tensor], torch.Tensor]:
    """``ops.act`` for float32 tensors in fewer calls; other dtypes use ``ops.act``."""
    spec = ops.card.activation(ops.activation)
    fast = None
    if spec.method == "piecewise" and spec.comparison != "sign-polynomial":
        fast = fast_piecewise(spec.segments)
    elif spec.method == "crypten-native":
        fast = _crypten(ops.activation, ops.card.fraction_bits, ops.act)
    elif spec.method == "fixed-point-tanh":
        fast = _iron(ops.activation, spec.fraction_bits, ops.act)
    if fast is None:
        return ops.act

    def act(x: torch.Tensor) -> torch.Tensor:
        return fast(x) if x.dtype == torch.float32 else ops.act(x)

    return act


# -- inverse square root ---------------------------------------------------------------------------

def _newton_np(m, iterations: int):
    """``functions.newton_rsqrt`` on NumPy float32 (scalar or array), same operations in order."""
    t = m * F32(0.5) + F32(0.2)  # m / 2 + 0.2
    y = F32(1.0) - t * F32(2.0 ** -8)  # 1 + (-t) / 2**8
    for _ in range(8):
        y = y * y
    y = F32(2.2) * y + F32(0.2) - m * F32(2.0 ** -10)
    for _ in range(iterations):
        y = y * (F32(3.0) - m * y * y) * F32(0.5)
    return y


def fast_rsqrt(ops: CardOps):
    """``ops.rsqrt``; the card's ``newton-normalized`` rsqrt of float32 CPU tensors runs on NumPy.

    Returns a tensor shaped like the input or, for a one-element input, a Python float (the same
    float32 value; ``t * r`` then multiplies by it exactly as by the tensor).
    """
    spec = ops.card.rsqrt
    if spec.method != "newton-normalized":
        return ops.rsqrt
    lo, hi = functions.RSQRT_EXPONENTS
    iters, floor4 = spec.iterations, 4.0 ** lo
    EDGE_LO, EDGE_HI = 1.0 + 2.0 ** -16, 4.0 * (1.0 - 2.0 ** -16)
    flo, fhi = F32(lo), F32(hi)

    def one(v: float):
        """k for one positive finite value without a torch call, or None near a power of 4.

        log2 only serves to find k = floor(log2(c) / 2) (c = max(v, 4**lo)). frexp gives the exact
        k; the reference's float32 log2 (torch's, at most a few ULP off) agrees with it unless c
        lies within 2**-16 (relative) of a power of 4, 5 orders of magnitude more than those few
        ULP. There the reference's own log2 decides.
        """
        c = max(v, floor4)
        k = (math.frexp(c)[1] - 1) >> 1  # c = f * 2**e, f in [0.5, 1): floor(log2 c) = e - 1
        m = c * 4.0 ** -k  # in [1, 4), exactly
        if m < EDGE_LO or m >= EDGE_HI:
            return None
        return min(max(k, lo), hi)

    def rsqrt(x: torch.Tensor):
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.requires_grad:
            return ops.rsqrt(x)
        if x.numel() == 1:  # one token: NumPy float32 scalars, no torch call
            v = x.item()
            k = one(v) if 0 < v < math.inf else None
            if k is None:  # the reference's log2 on the reference's tensor
                l2 = torch.log2(x.clamp(min=floor4)).item()
                if l2 != l2:
                    return math.nan
                k = min(max(math.floor(l2 / 2) if abs(l2) < math.inf else int(math.copysign(hi + 1, l2)), lo), hi)
            s = 2.0 ** -k
            with np.errstate(all="ignore"):
                return float(_newton_np(F32(v * s * s), iters) * F32(s))  # v * 4**-k is exact
        # the reference's log2 on the reference's tensor: k = floor(log2(max(x, 4**lo)) / 2)
        l2 = torch.log2(x.clamp(min=floor4))
        with np.errstate(all="ignore"):
            k = np.clip(np.floor(l2.numpy() * F32(0.5)), flo, fhi)
            s = np.ldexp(F32(1.0), (-k).astype(np.int32))  # 2**-k, exact
            y = _newton_np(x.numpy() * s * s, iters) * s
        return torch.from_numpy(y.astype(np.float32, copy=False)).view(x.shape)

    return rsqrt


class FastOps:
    """What the exact-mode hooks call for one card: ``fp``, ``act``, ``rsqrt`` and ``site``.

    Same values as the wrapped :class:`CardOps` (see the module docstring); ``MLPBlock.norm``
    accepts it in place of ``CardOps`` (it only calls ``rsqrt``).
    """

    def __init__(self, ops: CardOps):
        self.ops, self.card = ops, ops.card
        self.fp = fast_fixed_point(ops)
        self.act = fast_activation(ops)
        self.rsqrt = fast_rsqrt(ops)
        self.site = ops.site

    def norm(self, view, x: torch.Tensor) -> torch.Tensor:
        """``fp(view.norm(fp(x), ops))`` (``MLPBlock.norm`` under the card), on NumPy for CPU float32.

        ``view`` has ``MLPBlock``'s norm fields. Only the mean (a reduction, whose summation order
        is torch's) stays a torch call, on a tensor laid out as the reference's.
        """
        w, b = view.norm_weight, view.norm_bias
        if not (x.dtype == w.dtype == torch.float32 and x.device.type == w.device.type == "cpu"
                and not x.requires_grad and not w.requires_grad and (b is None or b.dtype == torch.float32)):
            return self.fp(view.norm(self.fp(x), self))
        fp = self.fp.numpy
        with np.errstate(all="ignore"):
            a = fp(x.numpy())  # (B, T, C)
            if view.norm_kind == "layer":
                a = a - torch.from_numpy(a).mean(dim=-1, keepdim=True).numpy()
            ms = torch.from_numpy(np.multiply(a, a)).mean(dim=-1, keepdim=True).numpy()  # (B, T, 1)
            r = self.rsqrt(torch.from_numpy(np.add(ms, F32(view.norm_eps), out=ms)))
            n = np.multiply(a, F32(r) if isinstance(r, float) else r.numpy())
            np.multiply(n, w.numpy(), out=n)
            if b is not None:
                np.add(n, b.numpy(), out=n)
            return torch.from_numpy(fp(n, inplace=True))
