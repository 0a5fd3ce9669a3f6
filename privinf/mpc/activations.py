"""Each card's non-linearities in CrypTen MPC primitives (arithmetic shares at the card's precision).

Every function works at the fraction bits of CrypTen's current encoder configuration
(``crypten.cfg.encoder.precision_bits``, which the backend sets to the card's precision; 16 by
default), read by :func:`fraction_bits`.

- ``piecewise``: segments selected by secure comparisons. All breakpoints are compared in ONE
  batched comparison of the stacked tensor (x - t_1, ..., x - t_k); since the bits b_i = [x < t_i]
  are monotone, segment indicators b_{i+1} - b_i are free, and one stacked multiplication applies
  every segment at once. Powers of x are shared between segments, computed in ceil(log2 d) rounds.
- ``bolt``: BOLT's |x| symmetry for f(x) = 0.5 x + g(|x|): one batched comparison gives the
  sign and [|x| < a] (which picks Q(|x|) or 0.5|x|), the powers of |x| come from x's.
- ``logistic``: relu(x) - |x| q(t) with q(t) = e^-t / (1 + e^-t) (t = |x| for SiLU, the tanh
  argument for GELU): the sigmoid/tanh form with one sign comparison, exp by repeated squaring and
  a Newton reciprocal from a linear initial guess. Used for Iron's fixed-point tanh and for the
  ``exact`` card (CrypTen cannot evaluate exp exactly; this is its most accurate form here).
- ``native``: CrypTen's own ``x * sigmoid(x)`` and tanh GELU, untouched: the baseline.

Comparisons use :func:`privinf.mpc.compare.ltz` (exact for |x| < 32768).
"""

from __future__ import annotations

import math

import torch

from privinf.cards import ActivationSpec, Segment
from privinf.mpc import ring
from privinf.mpc.compare import ltz
from privinf.mpc.shim import import_crypten

_GELU_C = math.sqrt(2.0 / math.pi)


def fraction_bits() -> int:
    """The fraction bits new shared tensors get now (CrypTen's encoder configuration)."""
    return int(import_crypten().cfg.encoder.precision_bits)


def below(x, thresholds: list[float]) -> list:
    """[x < t] for every public t, in one batched comparison; bits at scale 1."""
    crypten = import_crypten()
    stacked = crypten.stack([x - t for t in thresholds])  # (k, ...)
    bits = ltz(stacked)
    return [bits[i] for i in range(len(thresholds))]


def powers(x, needed: set[int]) -> dict:
    """{k: x**k} for k in ``needed``; level l builds the powers in (2**(l-1), 2**l] from lower ones.

    Per level one batched product (squares and the other products stacked together, so a level is
    one round): ceil(log2 d) rounds for degree d. Every product is truncated by x's scale, as
    CrypTen's; the powers come back at x's fraction bits.
    """
    req = set(needed) | {1}
    for k in sorted(req, reverse=True):
        if k > 1:
            h = 1 << ((k - 1).bit_length() - 1)
            req |= {h, k - h}
    bits = ring.bits_of(x)
    out = {1: x._tensor.share}
    level = 1
    while max(req) > level:
        todo = [k for k in sorted(req) if level < k <= 2 * level]
        halves = {k: 1 << ((k - 1).bit_length() - 1) for k in todo}
        if todo:
            left = torch.stack([out[halves[k]] for k in todo])
            right = torch.stack([out[k - halves[k]] for k in todo])
            prod = ring.truncate(ring.beaver(left, right), bits)
            out.update({k: prod[i] for i, k in enumerate(todo)})
        level *= 2
    return {k: x if k == 1 else ring.wrap(v, bits) for k, v in out.items()}


def reduced(x, shift: int):
    """x / 2**shift with no rounding: the same shares read at f + shift fraction bits."""
    return ring.wrap(x._tensor.share.clone(), fraction_bits() + shift)


def polynomial(p: dict, coeffs, shift: int = 0):
    """sum_k coeffs[k] x**k from p[k] = (x / 2**shift)**k at f + shift bits; result at f bits.

    Every coefficient becomes the integer round(c_k 2**(k shift) 2**f), the terms add exactly at
    scale 2**(2 f + shift), and one truncation rescales: coefficients keep f significant bits however
    small they are (CrypTen's public multiply truncates each coefficient to 16 fraction bits, which
    is 6% off for PUMA's 2.7e-4 x^6 term).
    """
    f = fraction_bits()
    scale = 2 ** f
    acc = None
    for k, c in enumerate(coeffs):
        if k == 0 or c == 0.0:
            continue
        term = p[k]._tensor.share * int(round(c * 2.0 ** (k * shift) * scale))
        acc = term if acc is None else acc + term
    if acc is None:
        acc = torch.zeros_like(p[1]._tensor.share)
    if coeffs and coeffs[0]:  # encoded at the powers' f + shift bits
        acc = ring.add_public(acc, coeffs[0] * scale, ring.bits_of(p[1]))
    return ring.wrap(ring.truncate(acc, f + shift), f)


def times(x, c: float):
    """x * c for a public float, with c rounded (not truncated) to f fraction bits."""
    f = fraction_bits()
    return ring.wrap(ring.truncate(x._tensor.share * int(round(c * 2 ** f)), f), ring.bits_of(x))


def power_shift(segments) -> int:
    """Bits to shift x by so that the highest-degree finite segment lies in [-1, 1]."""
    deg = max(s.degree for s in segments)
    bounds = [max(abs(s.lo), abs(s.hi)) for s in segments if s.degree == deg and math.isfinite(s.lo)
              and math.isfinite(s.hi)]
    return max(0, math.ceil(math.log2(max(bounds)))) if bounds and deg >= 2 else 0


def _plain_segments(segments) -> list[Segment]:
    """Split segments with |x| terms at 0 so each piece is a plain polynomial in x."""
    out = []
    for s in segments:
        if not s.abs_coeffs:
            out.append(s)
            continue
        pieces = [(s.lo, min(s.hi, 0.0), -1.0), (max(s.lo, 0.0), s.hi, 1.0)]
        for lo, hi, sign in pieces:
            if lo < hi:
                n = max(len(s.coeffs), len(s.abs_coeffs))
                c = [(s.coeffs[k] if k < len(s.coeffs) else 0.0)
                     + (s.abs_coeffs[k] * sign ** k if k < len(s.abs_coeffs) else 0.0) for k in range(n)]
                out.append(Segment(lo, hi, tuple(c)))
    return out


def piecewise(x, segments):
    """Generic piecewise polynomial: one batched comparison, shared powers, one selection product."""
    crypten = import_crypten()
    segs = _plain_segments(segments)
    bits = below(x, [s.lo for s in segs[1:]])  # b_i = [x < t_i], i = 1..S-1
    live = [(i, s) for i, s in enumerate(segs) if any(c != 0.0 for c in s.coeffs)]
    shift = power_shift([s for _, s in live])
    p = powers(reduced(x, shift), {k for _, s in live for k, c in enumerate(s.coeffs) if c != 0.0 and k > 0})
    inds, vals = [], []
    for i, s in live:
        lo_bit = bits[i - 1] if i > 0 else None  # [x < lo]
        hi_bit = bits[i] if i < len(segs) - 1 else None  # [x < hi]
        if hi_bit is None:
            ind = 1 - lo_bit
        elif lo_bit is None:
            ind = hi_bit
        else:
            ind = hi_bit - lo_bit
        inds.append(ind)
        vals.append(polynomial(p, s.coeffs, shift))
    prod = crypten.stack(inds) * crypten.stack(vals)  # bits at scale 1: no truncation
    return prod.sum(0)


def is_bolt_form(spec: ActivationSpec) -> bool:
    """0 below -a, x above a, 0.5 x + Q(|x|) on [-a, a): f(x) = 0.5 x + g(|x|)."""
    s = spec.segments
    return (len(s) == 3 and not any(s[0].coeffs) and not s[0].abs_coeffs and tuple(s[2].coeffs) == (0.0, 1.0)
            and not s[2].abs_coeffs and s[1].lo == -s[1].hi and tuple(s[1].coeffs) == (0.0, 0.5))


def bolt(x, spec: ActivationSpec):
    """f(x) = 0.5 x + (|x| < a ? Q(|x|) : 0.5 |x|): the signs of x, x + a and x - a in one
    batched comparison; Q's even powers of |x| are x's, the odd ones x**k (1 - 2 [x < 0]) in one
    product: 11 rounds for a degree-4 Q, where comparing |x| after the sign took 18."""
    a, q = spec.segments[1].hi, spec.segments[1].abs_coeffs
    X = x._tensor.share
    shift_a = ring.encode_public(a, ring.bits_of(x)) * int(ring.rank() == 0)
    bits = ltz(ring.wrap(torch.stack([X, X + shift_a, X - shift_a]), ring.bits_of(x)))._tensor.share
    neg, inside = bits[0], bits[2] - bits[1]  # [x < 0], [x < a] - [x < -a]
    shift = max(0, math.ceil(math.log2(a)))
    need = {k for k, c in enumerate(q) if c != 0.0 and k > 0} | {1}
    p = powers(reduced(x, shift), need)  # (x / 2**shift)**k
    odd = sorted(k for k in need if k % 2)
    flips = ring.beaver(neg, torch.stack([p[k]._tensor.share for k in odd]))  # bits at scale 1: no truncation
    pbits = ring.bits_of(p[1])
    pa = {k: (ring.wrap(p[k]._tensor.share - 2 * flips[odd.index(k)], pbits) if k % 2 else p[k])
          for k in need}  # |x / 2**shift|**k
    ax = pa[1]._tensor.share  # |x| at f bits
    g_in = polynomial(pa, q, shift)._tensor.share - ring.truncate(ax, 1)
    return ring.wrap(ring.truncate(X + ax, 1) + ring.beaver(inside, g_in), ring.bits_of(x))


def _exp_neg(t, squarings: int = 6):
    """e^-t for t >= 0 as T4(-t / 2^n)^(2^n), T4 the degree-4 Taylor polynomial of e^-u.

    CrypTen's limit form (1 - t/2^n)^(2^n) needs n = 8-9 squarings, and the base's rounding
    (2^-16) is amplified 2^n times: up to 0.4-0.8% relative error. A degree-4 base (error u^5/120)
    lets n = 6: the same 8 rounds, 4-8x less amplification. Valid for t < 2^(n+1) = 128
    (T4(-u) grows again beyond u ~ 2); e^-t for larger t would be garbage.
    """
    u = t.div(2 ** squarings)
    p = powers(reduced(u, 0), {2, 3, 4})
    y = polynomial(p, (1.0, -1.0, 0.5, -1.0 / 6.0, 1.0 / 24.0))
    for _ in range(squarings):
        y = y.square()
    return y


def _reciprocal_1_2(d, iterations: int = 2):
    """1/d for d in [1, 2]: linear minimax start (error <= 1/17), then Newton y <- y (2 - d y)."""
    y = times(d, -8.0 / 17.0) + 24.0 / 17.0
    for _ in range(iterations):
        y = y * (2 - d * y)
    return y


def logistic(x, name: str):
    """SiLU / tanh-GELU as relu(x) - |x| q(t), q(t) = e^-t / (1 + e^-t), one sign comparison."""
    neg = ltz(x)
    nx = neg * x
    ax, relu = x - 2 * nx, x - nx
    if name == "silu":
        t = ax
    else:  # tanh(z) = 1 - 2 q(2|z|), z = c (x + 0.044715 x^3); sign(z) = sign(x)
        t = times(ax + times(ax.square() * ax, 0.044715), 2 * _GELU_C)
    e = _exp_neg(t)
    r = _reciprocal_1_2(1 + e)
    return relu - (ax * e) * r


def native(x, name: str):
    """CrypTen's own composition: x * sigmoid(x), or 0.5 x (1 + tanh(c (x + 0.044715 x^3)))."""
    if name == "silu":
        return x * x.sigmoid()
    inner = (x + x.square() * x * 0.044715) * _GELU_C
    return x * 0.5 * (1 + inner.tanh())


LOGISTIC_BITS = 16  # internal precision of the logistic form for cards below it (Iron: 12)


def at_least(fn, x, bits: int):
    """fn(x) computed at max(f, bits) fraction bits, returned at x's f bits (one final rounding).

    Iron's tanh/sigmoid (SIRNN's math library) is accurate to its 2**-12 output grid; the logistic
    form here squares exp 6 times, which at 12 bits would amplify the base's rounding 64-fold (~1.6%).
    The input is re-read at more bits with no rounding, the result truncated back once.
    """
    crypten = import_crypten()
    f = fraction_bits()
    if f >= bits:
        return fn(x)
    hi = ring.wrap(x._tensor.share * 2 ** (bits - f), bits)  # the raw value at ``bits`` fraction bits
    with crypten.cfg.temp_override({"encoder.precision_bits": bits}):
        y = fn(hi)
    # stochastic rounding; the site's exact rounding comes after x up
    return ring.wrap(ring.truncate(y._tensor.share, bits - f), f)


def activation(x, spec: ActivationSpec, name: str):
    """Apply ``spec`` (a card's gelu/silu entry) to the shared tensor x."""
    if spec.method == "crypten-native":
        return native(x, name)
    if spec.method in ("fixed-point-tanh", "exact"):
        return at_least(lambda t: logistic(t, name), x, LOGISTIC_BITS)
    if spec.method == "piecewise":
        return bolt(x, spec) if is_bolt_form(spec) else piecewise(x, spec.segments)
    raise ValueError(f"activation method {spec.method!r} has no MPC evaluation")
