"""The MLP block as a two-party protocol: norm -> gate/up -> activation -> x up -> down -> residual.

Party 0 supplies the hidden states x, party 1 the weights; both become arithmetic shares and
every step below runs on shares, at the card's fraction bits f (CrypTen's encoder precision; the
ring stays int64).

Arithmetic, kept equal to the card's plaintext emulation (``MLPBlock.forward`` with ``CardOps``):

- x enters rounded to nearest at f bits (``encode``), as the emulation's ``fp(x)``; weights at
  max(f, 16) bits (the emulation holds float weights).
- RMSNorm: the sum of squares (``sum_of_squares``: no truncation of a large square, so
  attention-sink tokens with |x| ~ 2e4 cannot wrap the ring), the power-of-4 range reduction of
  ss / C = the emulation's mean square (same k, same mantissa m), CrypTen's Newton on m (at >= 16
  bits), then h R w kept at f + 8 bits and rounded to nearest once (``round_nearest``) = fp(n).
- The site before W_down, act(gate) * up, is also rounded to nearest once from f + 8 bits.
  CrypTen's own truncation rounds stochastically (twice the variance of rounding to nearest); the
  exact rounding costs one small comparison per element (about 3 MB and 14 rounds per block at
  16 tokens, hidden 576, MLP 1536).
 ``Meter`` records CrypTen's own counters (bytes, rounds) and the
wall time of each phase, so the RMSNorm inverse square root and the activation are reported apart.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from privinf.cards import ProtocolCard, RsqrtSpec
from privinf.mpc import activations, ring
from privinf.mpc.compare import ltz
from privinf.mpc.shim import import_crypten

RSQRT_EXPONENTS = (-8, 10)  # as privinf.approx.functions.normalized_rsqrt
_R_SHIFT = 6  # R = 2**(SHIFT - k) / sqrt(m): 6 extra bits for 1/sqrt(x) at large x, products stay < 2**41
MIN_RSQRT_BITS = 16  # the mantissa's inverse square root runs at >= 16 fraction bits (see scaled_rsqrt)
DEFAULT_FRACTION_BITS = 16  # CrypTen's default, for cards that name no precision (exact)
MIN_WEIGHT_BITS = 16  # weights keep at least this many fraction bits (see share_weights)


def card_fraction_bits(card: ProtocolCard) -> int:
    """The fraction bits the protocol runs at: the card's, or CrypTen's 16 when it names none."""
    return int(card.fraction_bits or DEFAULT_FRACTION_BITS)


def precision_bits(t) -> int:
    """Fraction bits of a shared tensor's encoder."""
    return int(t.encoder.scale).bit_length() - 1


def sum_of_squares(h):
    """(T, 1) sum over the last dimension of h**2, with no truncation of a large product.

    CrypTen's 2PC truncation is local: each party divides its own share, which goes wrong (by
    2**64 / 2**f in raw units, about 4e9 in value at 16 bits) with probability about
    |raw| / 2**64. ``h.square()`` truncates h**2 2**(2f): for the default model's attention-sink
    tokens (|h| up to 2.2e4 at layer 15) that is a 10% chance per element. Here the raw value
    H = h 2**f is split locally into H = 2**s A + B (A = H >> s, |B| < 2**(s+1), s = ceil(f/2)),
    and H**2 / 2**f = A**2 2**(2s-f) + A B 2**(s+1-f) + B**2 2**-f: A**2 is already at scale
    2**f (no truncation), the other terms are small before their truncation. One batched Beaver
    product (one round), same precision as ``square`` (a couple of raw units per token).
    """
    f = precision_bits(h)
    s = (f + 1) // 2
    H = h._tensor.share
    A = H.div(2 ** s, rounding_mode="trunc")  # local: H = 2**s A + B share by share
    B = H - A * 2 ** s
    p = ring.beaver(torch.stack([A, A, B]), torch.stack([A, B, B])).sum(-1, keepdim=True)  # integers, exact
    ss = p[0] * 2 ** (2 * s - f) + ring.truncate(p[1], f - s - 1) + ring.truncate(p[2], f)
    return ring.wrap(ss, f)


@dataclass
class Meter:
    """Per-phase {wall_s, bytes, rounds} from CrypTen's communicator counters (this party's view).

    Phases nest: an inner phase's cost is its own, not also its enclosing phase's (exclusive).
    """

    phases: dict = field(default_factory=dict)
    _stack: list = field(default_factory=list)
    _mark: tuple = (0.0, 0, 0)

    def _flush(self) -> None:
        """Charge the cost since the last mark to the innermost open phase."""
        s = import_crypten().communicator.get().get_communication_stats()
        now = (time.perf_counter(), int(s["bytes"]), int(s["rounds"]))
        if self._stack:
            p = self.phases.setdefault(self._stack[-1], {"wall_s": 0.0, "bytes": 0, "rounds": 0})
            p["wall_s"] += now[0] - self._mark[0]
            p["bytes"] += now[1] - self._mark[1]
            p["rounds"] += now[2] - self._mark[2]
        self._mark = now

    @contextmanager
    def phase(self, name: str):
        self._flush()
        self._stack.append(name)
        try:
            yield
        finally:
            self._flush()
            self._stack.pop()


def mpc_rsqrt_spec(card: ProtocolCard) -> RsqrtSpec:
    """The exact card has no rsqrt approximation; MPC cannot compute it exactly: use 4 Newton steps."""
    if card.rsqrt.method == "exact":
        return RsqrtSpec(method="newton-normalized", iterations=4)
    return card.rsqrt


FIT_RANGE = (0.6, 4.4)  # mantissas: [1, 4), and down to 0.65 where the exponent clamps (tiny mean squares)
FIT_DEGREE = 16  # powers in 4 rounds


@functools.lru_cache(maxsize=8)
def mantissa_fit(iterations: int) -> tuple[float, ...]:
    """Coefficients in m - c (c the range's centre) of the card's mantissa inverse square root.

    The function is :func:`privinf.approx.functions.newton_rsqrt` (CrypTen's initial guess, then
    ``iterations`` Newton steps: 1.4e-3 relative off 1/sqrt(m) at 3 steps, the card's error), a
    fixed smooth function of m; a degree-16 Chebyshev fit on ``FIT_RANGE`` matches it within 1e-6
    relative (2.4e-7 on [1, 4)), below every card's fixed-point step (2**-18 = 3.8e-6).
    """
    import numpy as np

    from privinf.approx.functions import newton_rsqrt

    lo, hi = FIT_RANGE
    m = torch.linspace(lo, hi, 20001, dtype=torch.float64)
    cheb = np.polynomial.chebyshev.Chebyshev.fit((m - (lo + hi) / 2).numpy(), newton_rsqrt(m, iterations).numpy(),
                                                 FIT_DEGREE, domain=[(lo - hi) / 2, (hi - lo) / 2])
    return tuple(float(c) for c in cheb.convert(kind=np.polynomial.Polynomial).coef)


def mantissa_rsqrt(m, iterations: int):
    """The card's 1/sqrt(m) for the shared mantissa m (about [1, 4)): CrypTen's ``inv_sqrt`` with
    ``iterations`` Newton steps, evaluated as its fit (:func:`mantissa_fit`) on (m - c) / 2 in
    4 rounds, where the guess (8 squarings) and 3 steps (3 products each) take 17. Runs at
    CrypTen's current encoder precision, which must be m's."""
    lo, hi = FIT_RANGE
    coeffs = mantissa_fit(iterations)
    centred = ring.wrap(ring.add_public(m._tensor.share, -(lo + hi) / 2, precision_bits(m)), precision_bits(m))
    p = activations.powers(activations.reduced(centred, 1), set(range(2, len(coeffs))))
    return activations.polynomial(p, coeffs, 1)


def scaled_rsqrt(ss, count: int, spec: RsqrtSpec):
    """(R, shift) with R / 2**shift ~ 1/sqrt(ss / count), for the (T, 1) shared sum of squares ``ss``.

    Works on the sum, not the mean: a mean square of 0.014 (the default model's layer 0) has only
    10 significant bits at 16 fraction bits; the sum over 576 features has 19. The mantissa
    m = (ss / count) 4**-k in [1, 4) is the one the plaintext emulation computes.
    """
    crypten = import_crypten()
    cfg = crypten.cfg
    if spec.method == "newton":
        with cfg.temp_override({"functions.sqrt_nr_iters": spec.iterations}):
            return ss.div(count).inv_sqrt(), 0
    lo, hi = RSQRT_EXPONENTS
    js = range(lo, hi + 1)
    f = precision_bits(ss)
    S = ss._tensor.share  # (T, 1) raw at f bits
    column = (-1,) + (1,) * S.dim()  # one entry per exponent, broadcast over (T, 1)
    # tiny (19 x T) tensor and values up to 4**10: the full ring's sign, as CrypTen's _ltz, one batch
    thresholds = torch.tensor([ring.encode_public(count * 4.0 ** j, f) for j in js]).view(column)
    b = ltz(ring.wrap(S - thresholds * int(ring.rank() == 0), f), lane=64)
    b = b._tensor.share  # b[i] = [ss / count < 4**js[i]], bits at scale 1
    # one-hot exponent k: e_k = [4**k <= ms < 4**(k+1)]; below 4**lo counts as k = lo (emulator's clamp)
    onehot = torch.cat([b[1:2], b[2:] - b[1:-1], int(ring.rank() == 0) - b[-1:]])  # (K, T, 1) over k = lo..hi
    up = torch.tensor([4 ** -k if k <= 0 else 1 for k in js]).view(column)
    down = torch.tensor([4 ** k if k > 0 else 1 for k in js]).view(column)
    scaled = (S * up).div(down, rounding_mode="trunc")  # ss 4^-k, truncated as CrypTen's div
    m = ring.beaver(onehot, scaled).sum(0).div(count, rounding_mode="trunc")  # mantissa in [1, 4), at f bits
    # below 16 bits, Newton's truncations and R = 2**(6-k) y (k up to 10) lose too much: the same
    # value at f + extra bits (m < 4: no wrap risk); R comes back at f + extra bits
    extra = max(0, MIN_RSQRT_BITS - f)
    with cfg.temp_override({"encoder.precision_bits": f + extra}):
        y = mantissa_rsqrt(ring.wrap(m * 2 ** extra, f + extra), spec.iterations)  # the card's Newton, as a fit
    Y = y._tensor.share
    up = torch.tensor([2 ** (_R_SHIFT - k) if k <= _R_SHIFT else 1 for k in js]).view(column)
    down = torch.tensor([2 ** (k - _R_SHIFT) if k > _R_SHIFT else 1 for k in js]).view(column)
    ys = (Y * up).div(down, rounding_mode="trunc")  # (K, T, 1): y 2**(shift - k)
    return ring.wrap(ring.beaver(onehot, ys).sum(0), f + extra), _R_SHIFT  # the caller rescales


@dataclass
class Weights:
    """Shared weights, laid out for the protocol: gate and up stacked into one matmul."""

    w_in: object  # (C, I) or (C, 2I) with [gate | up]
    w_down: object  # (I, C)
    norm_weight: object  # (C,)
    norm_bias: object | None
    b_up: object | None
    b_down: object | None


def encode(x: torch.Tensor, fraction_bits: int) -> torch.Tensor:
    """x rounded to nearest on the 2**-f grid, in float64 so CrypTen's encoder (which truncates
    toward zero in float32) takes it exactly: the protocol's input rounding is the emulation's."""
    scale = float(2 ** fraction_bits)
    return torch.round(x.double() * scale) / scale


def share_weights(block, meta: dict, fraction_bits: int = DEFAULT_FRACTION_BITS) -> Weights:
    """Party 1 passes its MLPBlock; party 0 passes None and the public shapes in ``meta``.

    Matrices and the norm weight are shared at max(f, 16) fraction bits (``MIN_WEIGHT_BITS``), the
    biases at f: the products are truncated back to f bits, so activations carry the card's
    precision while weight quantization (which the plaintext emulation, holding float weights, does
    not model) stays below 2**-17. At 12 bits it would add ~1e-3 to every projection.
    """
    crypten = import_crypten()
    C, I, gated = meta["C"], meta["I"], meta["gated"]
    wbits = max(fraction_bits, MIN_WEIGHT_BITS)

    def enc(name, shape, fn, bits=wbits):
        if block is None:
            return crypten.cryptensor(torch.zeros(shape, dtype=torch.float64), src=1, precision=bits)
        return crypten.cryptensor(encode(fn(block).float().contiguous(), bits), src=1, precision=bits)

    w_in = enc("w_in", (C, 2 * I if gated else I),
               lambda b: torch.cat([b.w_gate.T, b.w_up.T], dim=1) if gated else b.w_up.T)
    opt = lambda n, shape: (enc(n, shape, lambda b: getattr(b, n), fraction_bits)  # noqa: E731
                            if n in meta["present"] else None)
    return Weights(w_in=w_in, w_down=enc("w_down", (I, C), lambda b: b.w_down.T),
                   norm_weight=enc("norm_weight", (C,), lambda b: b.norm_weight),
                   norm_bias=opt("norm_bias", (C,)), b_up=opt("b_up", (I,)), b_down=opt("b_down", (C,)))


GUARD_BITS = 8  # bits below the f-bit grid kept until a site's final rounding


def round_nearest(v, guard: int, fraction_bits: int):
    """v's raw value (at fraction_bits + guard bits) rounded to nearest on the f-bit grid, exactly.

    CrypTen's 2PC truncation rounds stochastically (floor or ceil of v / 2**g, error triangular on
    +-1 unit, std 2**-f / sqrt(6)); the cards' plaintext arithmetic rounds to nearest (uniform on
    +-1/2 unit, std 2**-f / sqrt(12)), and where rounding dominates the error (the site before
    W_up) the two distributions differ visibly. Party 0 adds d/2 (d = 2**g) to its share and each
    party floors its own share: V + d/2 = d (q0 + q1) + r0 + r1 with 0 <= r_i < d, so
    round(v / d) = q0 + q1 + [r0 + r1 >= d]: one comparison of the private residuals in a
    (g + 1)-bit lane (``ltz``: 5 rounds at g = 8, where two 32-bit comparisons took 7). Ties round
    up. Like CrypTen's own truncation it fails when the shares wrap the ring (probability
    |V| / 2**63).
    """
    d = 2 ** guard
    first = int(ring.rank() == 0)
    V = v._tensor.share + first * (d // 2)
    q = V.div(d, rounding_mode="floor")  # local
    r = V - q * d - first * d  # shares of r0 + r1 - d, in [-d, d)
    below = ltz(ring.wrap(r, 0), lane=guard + 1)._tensor.share  # [r0 + r1 < d]
    return ring.wrap(q + first - below, fraction_bits)  # q0 + q1 + [r0 + r1 >= d]


def rescale(a, w, product):
    """``product`` = a * w or a @ w, with w shared at more fraction bits than a, back at a's scale.

    CrypTen truncates a private product by the left operand's scale only, leaving the raw result
    at w's bits under a's encoder; one more local truncation brings it to a's precision.
    """
    extra = precision_bits(w) - precision_bits(a)
    return product.div(2 ** extra) if extra > 0 else product


def norm(x, weight, bias, count: int, eps: float, kind: str, card: ProtocolCard, meter: Meter, exact: bool = True):
    """Shared x (T, C) -> the card's RMSNorm/LayerNorm of x at x's f bits: rounded to nearest
    (``exact``, the MLP input: a measured site), else by CrypTen's stochastic truncation like every
    other product of the attention path (the attention and final norms: 5 rounds fewer each)."""
    with meter.phase("norm"):
        h = x - x.mean(dim=-1, keepdim=True) if kind == "layer" else x
        f = precision_bits(h)
        ss = ring.wrap(ring.add_public(sum_of_squares(h)._tensor.share, count * eps, f), f)  # (T, 1) sum of squares
    with meter.phase("rsqrt"):
        r, shift = scaled_rsqrt(ss, count, mpc_rsqrt_spec(card))
    with meter.phase("norm"):
        g = min(GUARD_BITS, f - 1)
        # h r truncated by h's scale and r's extra bits (as rescale(h, r, h * r)): 2**shift h / rms at
        # f bits, the raw value of h / rms at f + shift bits
        n = ring.truncate(ring.beaver(h._tensor.share, r._tensor.share), max(f, precision_bits(r)))
        # n w truncated by 2**(shift + w bits - g) leaves it at f + g bits; then round to nearest on
        # the f-bit grid once, as the emulation's fp(n)
        n = ring.truncate(ring.beaver(n, weight._tensor.share), shift + precision_bits(weight) - g)
        if exact:
            with meter.phase("round"):
                n = round_nearest(ring.wrap(n, f + g), g, f)  # (T, C)
        else:
            n = ring.wrap(ring.truncate(n, g), f)
        if bias is not None:
            n = n + bias
    return n


def plain_matmul(a, w):
    """CrypTen's Beaver matmul with a fresh triple (opens the masked weight every time)."""
    return rescale(a, w, a.matmul(w))


def mlp_block(x, w: Weights, meta: dict, card: ProtocolCard, meter: Meter, matmul=plain_matmul):
    """Shared x (T, C) -> shared (out, up site, down site) under ``card``.

    ``matmul(a, weight)``: CrypTen's own (default) or :func:`privinf.mpc.offline.block_matmul`
    for weights prepared offline (:func:`privinf.mpc.offline.prepare_block`).
    """
    C, I, gated = meta["C"], meta["I"], meta["gated"]
    n = norm(x, w.norm_weight, w.norm_bias, C, meta["norm_eps"], meta["norm_kind"], card, meter)  # site before W_up
    f = precision_bits(n)
    g = min(GUARD_BITS, f - 1)
    with meter.phase("matmul"):
        gu = matmul(n, w.w_in)  # (T, 2I) or (T, I)
    spec = card.activation(meta["activation"])
    with meter.phase("activation"):
        if gated:
            a = activations.activation(ring.wrap(gu._tensor.share[:, :I], precision_bits(gu)), spec, meta["activation"])
        else:
            a = activations.activation(gu + w.b_up if w.b_up is not None else gu, spec, meta["activation"])
    with meter.phase("multiply"):
        if gated:  # as at the norm: a * up truncated by 2**(f - g), kept at f + g bits, then one exact rounding
            d = ring.truncate(ring.beaver(a._tensor.share, gu._tensor.share[:, I:]), f - g)
            with meter.phase("round"):
                d = round_nearest(ring.wrap(d, f + g), g, f)  # (T, I): site before W_down
        else:
            d = a
    with meter.phase("matmul"):
        y = matmul(d, w.w_down)  # (T, C)
        if w.b_down is not None:
            y = y + w.b_down
        out = x + y
    return out, n, d
