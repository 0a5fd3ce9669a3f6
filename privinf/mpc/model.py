"""The whole decoder (Llama family) as a two-party protocol on CrypTen, with a KV cache in shares.

Party 0 (client) holds the token ids, party 1 (server) the weights. Per forward, on shares at the
card's fraction bits f (CrypTen's encoder precision, int64 ring):

- **Embedding**: party 0 one-hot encodes its tokens (T, V) and secret-shares them; the one-hot
  times the table (V, C) is a masked product (:mod:`privinf.mpc.offline`): it opens only the
  masked one-hot, so the server learns the vocabulary size (public anyway) and the number of
  tokens, nothing about which.
- **Each layer**: the card's RMSNorm (:func:`privinf.mpc.block.norm`; its output truncated as
  CrypTen truncates every product here, rounded exactly only at the MLP input), q/k/v as one masked
  product, rotary embedding with public angles (a local integer product, one truncation), causal
  attention (CrypTen Beaver products for q k^T and p v; the softmax of :mod:`privinf.mpc.softmax`:
  max by batched comparisons, the card's exp (CrypTen's own where the card names none) and a
  range-reduced Newton reciprocal, at >= 16 fraction bits), o_proj, residual, the MLP block of
  :mod:`privinf.mpc.block` with masked products, residual.
- **Final norm and LM head** (the tied or own head as a masked product with W^T).
- **What the client learns**: the logits of the last position of each forward (the full
  next-token distribution), revealed to party 0 only; party 0 picks the token itself. The server
  learns nothing but public sizes; the number of steps is public (no early stop at EOS).
- **KV cache**: k (after rotary) and v of every layer stay in shares across decoding steps.

Masks are drawn once per connection for every weight (offline); each query opens only masked
activations (online).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from privinf.cards import ProtocolCard
from privinf.errors import PrivinfError
from privinf.mpc import activations, ring
from privinf.mpc.block import Meter, Weights, mlp_block, norm, precision_bits
from privinf.mpc.offline import MaskedWeight, block_matmul, masked_matmul, prepare, prepare_block, share_raw
from privinf.mpc.shim import import_crypten
from privinf.mpc.softmax import SOFTMAX_BITS, softmax

ARCHS = ("llama", "mistral", "qwen2")
ROPE_BITS = 16  # public cos/sin as integers at 16 fraction bits


class UnsupportedModel(PrivinfError, ValueError):
    """The model's architecture has no whole-model MPC protocol here."""


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # (C,)
    w_qkv: torch.Tensor  # (C, Dq + 2 Dkv), input-major
    b_qkv: torch.Tensor | None
    w_o: torch.Tensor  # (Dq, C)
    mlp: object  # privinf.blocks.MLPBlock


@dataclass
class ModelWeights:
    """The server's plaintext weights of a Llama-family decoder, and the public shapes (``meta``)."""

    embed: torch.Tensor  # (V, C)
    layers: list[LayerWeights]
    final_norm: torch.Tensor  # (C,)
    lm_head: torch.Tensor | None  # (V, C); None when tied to the embedding
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_model(cls, model) -> "ModelWeights":
        from privinf.blocks import MLPBlock

        cfg = model.config
        if cfg.model_type not in ARCHS:
            raise UnsupportedModel(f"--model: architecture {cfg.model_type!r} has no whole-model 2PC protocol; "
                                   f"supported: {', '.join(ARCHS)}")
        rot = model.model.rotary_emb
        f32 = lambda t: t.detach().to("cpu", torch.float32).clone()  # noqa: E731
        layers = []
        for i, layer in enumerate(model.model.layers):
            a = layer.self_attn
            w = torch.cat([f32(a.q_proj.weight), f32(a.k_proj.weight), f32(a.v_proj.weight)], 0).T.contiguous()
            b = None if a.q_proj.bias is None else torch.cat([f32(a.q_proj.bias), f32(a.k_proj.bias), f32(a.v_proj.bias)])
            layers.append(LayerWeights(f32(layer.input_layernorm.weight), w, b, f32(a.o_proj.weight).T.contiguous(),
                                       MLPBlock.from_model(model, i)))
        embed = f32(model.model.embed_tokens.weight)
        head = model.lm_head.weight
        tied = head.data_ptr() == model.model.embed_tokens.weight.data_ptr() or torch.equal(f32(head), embed)
        a0 = model.model.layers[0].self_attn
        d = getattr(a0, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
        mlp = layers[0].mlp
        meta = dict(V=embed.shape[0], C=embed.shape[1], L=len(layers), H=cfg.num_attention_heads,
                    Hkv=cfg.num_key_value_heads, d=d, I=mlp.intermediate_size, activation=mlp.activation,
                    eps=float(model.model.norm.variance_epsilon), mlp_eps=mlp.norm_eps, tied=bool(tied),
                    qkv_bias=b is not None, inv_freq=[float(v) for v in rot.inv_freq.float()],
                    rope_scaling=float(getattr(rot, "attention_scaling", 1.0)))
        return cls(embed, layers, f32(model.model.norm.weight), None if tied else f32(head), meta)


def mlp_meta(meta: dict) -> dict:
    return dict(C=meta["C"], I=meta["I"], gated=True, activation=meta["activation"], norm_kind="rms",
                norm_eps=meta["mlp_eps"], present=[])


def rope_tables(meta: dict, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) (T, d) in float32, as Hugging Face's rotary embedding computes them."""
    inv = torch.tensor(meta["inv_freq"], dtype=torch.float32)
    freqs = positions.float()[:, None] * inv[None, :]  # (T, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos() * meta["rope_scaling"], emb.sin() * meta["rope_scaling"]


# -- offline: share every weight once, with its mask ----------------------------------------------

@dataclass
class SharedLayer:
    attn_norm: object
    qkv: MaskedWeight
    b_qkv: object | None
    o: MaskedWeight
    mlp: Weights


@dataclass
class SharedModel:
    embed: MaskedWeight  # (V, C)
    layers: list[SharedLayer]
    final_norm: object
    head: MaskedWeight  # (C, V): W^T


def share_model(w: ModelWeights | None, meta: dict, bits: int) -> SharedModel:
    """Offline phase: party 1 passes its weights, party 0 None; masks opened once (see offline.py)."""
    from privinf.mpc.block import MIN_WEIGHT_BITS, encode

    crypten = import_crypten()
    wb = max(bits, MIN_WEIGHT_BITS)
    V, C, H, Hkv, d = meta["V"], meta["C"], meta["H"], meta["Hkv"], meta["d"]
    nq = (H + 2 * Hkv) * d
    has = w is not None

    def vec(t, n, b):  # rounded to nearest on the 2**-b grid, as share_weights does
        return crypten.cryptensor(encode(t.float(), b) if has else torch.zeros(n, dtype=torch.float64), src=1,
                                  precision=b)

    layers = []
    for i in range(meta["L"]):
        lw = w.layers[i] if has else None
        layers.append(SharedLayer(
            attn_norm=vec(lw.attn_norm if has else None, C, wb),
            qkv=prepare(lw.w_qkv if has else None, (C, nq), wb),
            b_qkv=vec(lw.b_qkv if has else None, nq, bits) if meta["qkv_bias"] else None,
            o=prepare(lw.w_o if has else None, (H * d, C), wb),
            mlp=prepare_block(lw.mlp if has else None, mlp_meta(meta), bits)))
    embed = prepare(w.embed if has else None, (V, C), wb)
    # the head multiplies by W^T: a contiguous (C, V) copy (of the embedding's shares and mask when tied)
    head = embed.transposed() if meta["tied"] else prepare(w.lm_head.T if has else None, (C, V), wb)
    return SharedModel(embed, layers, vec(w.final_norm if has else None, C, wb), head)


# -- online ---------------------------------------------------------------------------------------

@dataclass
class KVCache:
    """Per layer k (after rotary) and v as this party's raw shares (Hkv, S, d) at the protocol's
    fraction bits; ``length`` = S."""

    k: list = field(default_factory=list)
    v: list = field(default_factory=list)
    length: int = 0


def _rope(x_share: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of a shared (heads, T, d) raw tensor: x cos + rotate_half(x) sin, local."""
    half = x_share.shape[-1] // 2
    rot = torch.cat([-x_share[..., half:], x_share[..., :half]], dim=-1)
    c = torch.round(cos.double() * 2 ** ROPE_BITS).long()
    s = torch.round(sin.double() * 2 ** ROPE_BITS).long()
    return ring.truncate(x_share * c + rot * s, ROPE_BITS)


def attention(x, L: SharedLayer, meta: dict, card: ProtocolCard, meter: Meter, cache: KVCache, i: int,
              positions: torch.Tensor):
    """Shared residual x (T, C) -> o_proj(attention(norm(x))) (T, C); appends this layer's k, v."""
    H, Hkv, d = meta["H"], meta["Hkv"], meta["d"]
    T, g = x.size(0), H // Hkv
    n = norm(x, L.attn_norm, None, meta["C"], meta["eps"], "rms", card, meter, exact=False)
    f = precision_bits(n)
    with meter.phase("matmul"):
        qkv = masked_matmul(n, L.qkv, f)  # (T, (H + 2 Hkv) d)
        if L.b_qkv is not None:
            qkv = qkv + L.b_qkv
    with meter.phase("attention"):
        s = qkv._tensor.share
        cos, sin = rope_tables(meta, positions)
        q = _rope(s[:, :H * d].reshape(T, H, d).transpose(0, 1), cos, sin)  # (H, T, d)
        k = _rope(s[:, H * d:(H + Hkv) * d].reshape(T, Hkv, d).transpose(0, 1), cos, sin)  # (Hkv, T, d)
        v = s[:, (H + Hkv) * d:].reshape(T, Hkv, d).transpose(0, 1).contiguous()
        if len(cache.k) > i:
            k, v = torch.cat([cache.k[i], k], dim=1), torch.cat([cache.v[i], v], dim=1)
            cache.k[i], cache.v[i] = k, v
        else:
            cache.k.append(k)
            cache.v.append(v)
        S = k.shape[1]
        qg = q.reshape(Hkv, g * T, d)  # query head h = kv * g + j (Hugging Face's repeat_kv)
        qk = ring.truncate(ring.beaver(qg, k.transpose(1, 2), "matmul"), f)  # (Hkv, g T, S)
        scores = activations.times(ring.wrap(qk, f), 1.0 / math.sqrt(d))
        keep = None
        if T > 1:
            past = S - T
            keep = (torch.arange(S)[None, :] <= past + torch.arange(T)[:, None]).repeat(g, 1)  # (g T, S)
        p = activations.at_least(lambda t: softmax(t, keep, card.softmax, meter), scores, SOFTMAX_BITS)
        out = ring.truncate(ring.beaver(p._tensor.share, v, "matmul"), precision_bits(p))  # (Hkv, g T, d)
        out = ring.wrap(out.reshape(H, T, d).transpose(0, 1).reshape(T, H * d), f)  # (T, H d)
    with meter.phase("matmul"):
        return masked_matmul(out, L.o, f)


def forward(sm: SharedModel, meta: dict, ids: list[int] | None, T: int, card: ProtocolCard, meter: Meter,
            cache: KVCache, bits: int, all_positions: bool = False, sites: list | None = None):
    """One forward of T new tokens (party 0 passes their ids) -> shared logits (1 or T, V).

    ``sites`` (evaluation only): a list that receives each layer's shared (up, down) site values.
    """
    V = meta["V"]
    positions = torch.arange(cache.length, cache.length + T)
    with meter.phase("embed"):
        onehot = None
        if ids is not None:
            onehot = torch.zeros(T, V, dtype=torch.long)
            onehot[torch.arange(T), torch.tensor(ids)] = 1
        x = masked_matmul(ring.wrap(share_raw(onehot, (T, V), src=0), 0), sm.embed, bits)  # (T, C)
    mm = mlp_meta(meta)
    for i, L in enumerate(sm.layers):
        x = ring.wrap(x._tensor.share + attention(x, L, meta, card, meter, cache, i, positions)._tensor.share, bits)
        x, up, down = mlp_block(x, L.mlp, mm, card, meter, matmul=block_matmul)
        if sites is not None:
            sites.append((up, down))
    cache.length += T
    h = norm(x if all_positions else x[-1:], sm.final_norm, None, meta["C"], meta["eps"], "rms", card, meter,
             exact=False)
    with meter.phase("head"):
        return masked_matmul(h, sm.head, bits)  # (1 or T, V)


def reveal_logits(t) -> torch.Tensor | None:
    """Open shared logits to party 0 only (None on party 1)."""
    raw = t._tensor.reveal(dst=0)
    return None if raw is None else (raw.double() / t.encoder.scale).float()


def check_model_card(card: ProtocolCard) -> None:
    """Cards the whole-model protocol runs: the MPC cards (see privinf.backends.crypten_mpc.check_card)."""
    from privinf.backends.crypten_mpc import check_card
    check_card(card)
