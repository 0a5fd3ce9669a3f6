"""The whole-model 2PC arithmetic in plaintext: the emulator's exact mode at whole-model scale.

``plain_forward`` runs the same decoder as :mod:`privinf.mpc.model` on plaintext tensors with the
card's arithmetic (:class:`~privinf.approx.ops.CardOps`): fixed-point rounding at the card's
fraction bits after every product, the card's RMSNorm inverse square root and activation (the MLP
block is ``MLPBlock.forward`` with ``CardOps``, the existing plaintext emulation), and the softmax
as the protocol computes it (CrypTen's limit exp, the range-reduced Newton reciprocal, in float64). With
``card=None`` it is the exact model, equal to Hugging Face's forward up to float rounding.
"""

from __future__ import annotations

import math

import torch

from privinf.approx.ops import CardOps
from privinf.cards import ProtocolCard, SoftmaxSpec
from privinf.mpc.model import ModelWeights, rope_tables

EXP_ITERS, RECIPROCAL_ITERS = 8, 10  # CrypTen's defaults (functions.exp_iterations, reciprocal_nr_iters)


def crypten_exp(t: torch.Tensor, iterations: int = EXP_ITERS) -> torch.Tensor:
    """CrypTen's exp: (1 + t / 2**n) ** (2**n) by n squarings (n = 8 in CrypTen)."""
    y = 1 + t / 2 ** iterations
    for _ in range(iterations):
        y = y * y
    return y


def crypten_reciprocal(s: torch.Tensor) -> torch.Tensor:
    """CrypTen's Newton reciprocal from its initial guess 3 exp(1 - 2 s) + 0.003, 10 steps."""
    y = 3 * crypten_exp(1 - 2 * s) + 0.003
    for _ in range(RECIPROCAL_ITERS):
        y = 2 * y - y * y * s
    return y


def softmax_reciprocal(s: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """The protocol's 1/s (:func:`privinf.mpc.softmax.reciprocal`): s = m 2**k with m in [1, 2),
    guess (24/17 - 8/17 m) 2**-k, Newton steps. Equals CrypTen's ``crypten_reciprocal`` within
    4e-8 relative on [1, 253] (both converge; CrypTen's diverges above 253), 1.4e-10 from 1/s."""
    k = torch.floor(torch.log2(s.clamp(min=1.0)))
    c = torch.pow(2.0, -k)
    y = (24 / 17 - 8 / 17 * s * c) * c
    for _ in range(iterations):
        y = y * (2 - s * y)
    return y


def card_softmax(x: torch.Tensor, keep: torch.Tensor, spec: SoftmaxSpec = SoftmaxSpec()) -> torch.Tensor:
    """The protocol's softmax over the last dim (float64), masked positions excluded."""
    x = x.double().masked_fill(~keep, -math.inf)
    t = x - x.max(dim=-1, keepdim=True).values
    n = spec.exp_iterations
    e = crypten_exp(t.clamp_min(-2 ** n), n) * keep  # masked terms are exactly zero
    return (e * softmax_reciprocal(e.sum(-1, keepdim=True), spec.reciprocal_iterations)).float()


def _rms(x, weight, eps, ops):
    ms = x.pow(2).mean(dim=-1, keepdim=True) + eps
    r = ops.rsqrt(ms) if ops is not None else torch.rsqrt(ms)
    return x * r * weight


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


@torch.no_grad()
def plain_forward(w: ModelWeights, ids: list[int], card: ProtocolCard | None = None) -> torch.Tensor:
    """Logits (S, V) for the token ids, under ``card``'s arithmetic (None: exact)."""
    m = w.meta
    H, Hkv, d = m["H"], m["Hkv"], m["d"]
    g = H // Hkv
    ops = CardOps(card, m["activation"]) if card is not None else None
    fp = ops.fp if ops is not None else (lambda t: t)
    S = len(ids)
    cos, sin = rope_tables(m, torch.arange(S))
    keep = torch.ones(S, S, dtype=torch.bool).tril()
    x = fp(w.embed[torch.tensor(ids)])  # (S, C)
    for L in w.layers:
        n = fp(_rms(x, L.attn_norm, m["eps"], ops))
        qkv = fp(n @ L.w_qkv + (L.b_qkv if L.b_qkv is not None else 0))
        q = fp(_rotate(qkv[:, :H * d].reshape(S, H, d).transpose(0, 1), cos, sin))  # (H, S, d)
        k = fp(_rotate(qkv[:, H * d:(H + Hkv) * d].reshape(S, Hkv, d).transpose(0, 1), cos, sin))
        v = qkv[:, (H + Hkv) * d:].reshape(S, Hkv, d).transpose(0, 1)
        k, v = k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)  # (H, S, d)
        scores = fp(fp(q @ k.transpose(1, 2)) / math.sqrt(d))
        if ops is None:
            p = torch.softmax(scores.masked_fill(~keep, -math.inf), dim=-1)
        else:
            p = fp(card_softmax(scores, keep, card.softmax))
        out = fp(p @ v).transpose(0, 1).reshape(S, H * d)
        x = fp(x + fp(out @ L.w_o))
        x = L.mlp.forward(x, ops).out
    h = fp(_rms(x, w.final_norm, m["eps"], ops))
    head = w.embed if w.lm_head is None else w.lm_head
    return fp(h @ head.T)
