"""The MLP block as a two-party protocol: norm -> gate/up -> activation -> x up -> down -> residual.

Party 0 supplies the hidden states x, party 1 the weights; both become arithmetic shares and
every step below runs on shares. ``Meter`` records CrypTen's own counters (bytes, rounds) and the
wall time of each phase, so the RMSNorm inverse square root and the activation are reported apart.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from privinf.cards import ProtocolCard, RsqrtSpec
from privinf.mpc import activations
from privinf.mpc.shim import import_crypten

RSQRT_EXPONENTS = (-8, 10)  # as privinf.approx.functions.normalized_rsqrt
_R_SHIFT = 6  # R = 2**(SHIFT - k) / sqrt(m): 6 extra bits for 1/sqrt(x) at large x, products stay < 2**41


@dataclass
class Meter:
    """Per-phase {wall_s, bytes, rounds} from CrypTen's communicator counters (this party's view)."""

    phases: dict = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str):
        comm = import_crypten().communicator.get()
        before = comm.get_communication_stats()
        start = time.perf_counter()
        try:
            yield
        finally:
            after = comm.get_communication_stats()
            p = self.phases.setdefault(name, {"wall_s": 0.0, "bytes": 0, "rounds": 0})
            p["wall_s"] += time.perf_counter() - start
            p["bytes"] += int(after["bytes"] - before["bytes"])
            p["rounds"] += int(after["rounds"] - before["rounds"])


def mpc_rsqrt_spec(card: ProtocolCard) -> RsqrtSpec:
    """The exact card has no rsqrt approximation; MPC cannot compute it exactly: use 4 Newton steps."""
    if card.rsqrt.method == "exact":
        return RsqrtSpec(method="newton-normalized", iterations=4)
    return card.rsqrt


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
    js = list(range(lo, hi + 1))
    # tiny (T x 19) tensor and values up to 4**10: CrypTen's full-width comparison, one batch
    b = crypten.stack([ss - count * 4.0 ** j for j in js])._ltz()  # b[i] = [ss / count < 4**js[i]]
    # one-hot exponent k: e_k = [4**k <= ms < 4**(k+1)]; below 4**lo counts as k = lo (emulator's clamp)
    onehot = [b[1]] + [b[i + 1] - b[i] for i in range(1, len(js) - 1)] + [1 - b[-1]]
    onehot = crypten.stack(onehot)  # (K, T, 1) over k = lo..hi
    scaled = crypten.stack([ss.div(4 ** k) if k > 0 else ss * int(4 ** -k) for k in js])  # ss 4^-k
    m = (onehot * scaled).sum(0).div(count)  # mantissa in [1, 4)
    with cfg.temp_override({"functions.sqrt_nr_iters": spec.iterations}):
        y = m.inv_sqrt()  # CrypTen's initial guess + Newton, accurate on [1, 4)
    ys = crypten.stack([y * int(2 ** (_R_SHIFT - k)) if k <= _R_SHIFT else y.div(2 ** (k - _R_SHIFT)) for k in js])
    return (onehot * ys).sum(0), _R_SHIFT


@dataclass
class Weights:
    """Shared weights, laid out for the protocol: gate and up stacked into one matmul."""

    w_in: object  # (C, I) or (C, 2I) with [gate | up]
    w_down: object  # (I, C)
    norm_weight: object  # (C,)
    norm_bias: object | None
    b_up: object | None
    b_down: object | None


def share_weights(block, meta: dict) -> Weights:
    """Party 1 passes its MLPBlock; party 0 passes None and the public shapes in ``meta``."""
    crypten = import_crypten()
    C, I, gated = meta["C"], meta["I"], meta["gated"]

    def enc(name, shape, fn):
        if block is None:
            return crypten.cryptensor(torch.zeros(shape), src=1)
        return crypten.cryptensor(fn(block).float().contiguous(), src=1)

    w_in = enc("w_in", (C, 2 * I if gated else I),
               lambda b: torch.cat([b.w_gate.T, b.w_up.T], dim=1) if gated else b.w_up.T)
    opt = lambda n, shape: enc(n, shape, lambda b: getattr(b, n)) if n in meta["present"] else None  # noqa: E731
    return Weights(w_in=w_in, w_down=enc("w_down", (I, C), lambda b: b.w_down.T),
                   norm_weight=enc("norm_weight", (C,), lambda b: b.norm_weight),
                   norm_bias=opt("norm_bias", (C,)), b_up=opt("b_up", (I,)), b_down=opt("b_down", (C,)))


def mlp_block(x, w: Weights, meta: dict, card: ProtocolCard, meter: Meter):
    """Shared x (T, C) -> shared (out, up site, down site) under ``card``."""
    C, I, gated = meta["C"], meta["I"], meta["gated"]
    with meter.phase("norm"):
        h = x - x.mean(dim=-1, keepdim=True) if meta["norm_kind"] == "layer" else x
        ss = h.square().sum(dim=-1, keepdim=True) + C * meta["norm_eps"]  # (T, 1) sum of squares
    with meter.phase("rsqrt"):
        r, shift = scaled_rsqrt(ss, C, mpc_rsqrt_spec(card))
    with meter.phase("norm"):
        n = h * r
        if shift:
            n = n.div(2 ** shift)
        n = n * w.norm_weight  # (T, C): site before W_up
        if w.norm_bias is not None:
            n = n + w.norm_bias
    with meter.phase("matmul"):
        gu = n.matmul(w.w_in)  # (T, 2I) or (T, I)
    spec = card.activation(meta["activation"])
    with meter.phase("activation"):
        if gated:
            a = activations.activation(gu[:, :I], spec, meta["activation"])
        else:
            a = activations.activation(gu + w.b_up if w.b_up is not None else gu, spec, meta["activation"])
    with meter.phase("multiply"):
        d = a * gu[:, I:] if gated else a  # (T, I): site before W_down
    with meter.phase("matmul"):
        y = d.matmul(w.w_down)  # (T, C)
        if w.b_down is not None:
            y = y + w.b_down
        out = x + y
    return out, n, d
