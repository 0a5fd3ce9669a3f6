"""The offline phase: weights secret-shared once per connection, each with a reusable Beaver mask.

A Beaver product X @ W opens eps = X - A and delta = W - B and returns
eps @ [W] + [A] @ delta + [C] with C = A @ B (the same identity as CrypTen's, written with
[W] = delta + [B]). CrypTen draws a fresh (A, B, C) for every product, so every query re-opens
the masked weights: 43 MB of the 52-67 MB of one MLP block at 16 tokens. Here the weight's mask B
is drawn once per connection and delta = W - B is opened once (``prepare``, the offline phase);
each query draws a fresh activation mask A with C = A @ B and opens only eps = X - A
(``masked_matmul``, the online phase): T x k words instead of T x k + k x n.

Party 1 holds W itself as its share and party 0's share is zero (a two-party zero sharing of
CrypTen's is derived from seeds both parties hold, so the pseudo-random share it gave party 0 hid
nothing from either party: the views are the same). Online, party 1 computes eps @ W + [A]_1 @ delta
and party 0 [A]_0 @ delta + C: two int64 products each, where party 0 computed three and the
next round waited for it.

Why reusing B is safe (semi-honest, TFP dealer as CrypTen's default): the peer's whole view of
W is delta = W - B, one one-time-pad opening with a uniform ring element B that is used for
nothing else. Every later query opens only eps_i = X_i - A_i with fresh uniform A_i independent
of B, W and every other A_j, so the joint view (delta, eps_1, ..., eps_q) is distributed as
q + 1 independent uniform ring tensors whatever W and the X_i are: a simulator draws them. What
must never happen is a second opening W' - B with the same B (the difference would reveal
W - W'): weights are fixed for the connection, and a new connection draws a new B.

Dealer: party 0 plays CrypTen's trusted first party. It draws B and every A, computes C = A @ B
and shares them by pseudo-random zero sharing (no traffic). It therefore knows B and, after the
opening, W: as with CrypTen's TFP provider, party 1's weights are hidden from party 0 only if
party 0 runs the dealer honestly (here: keeps B for the connection's lifetime and uses it only
to make C). A deployment moves the dealer to a third party or to an HE/OT-based preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from privinf.mpc import ring
from privinf.mpc.shim import import_crypten


@dataclass
class MaskedWeight:
    """One weight matrix W (k, n) after the offline phase, as this party holds it."""

    share: torch.Tensor | None  # int64 (k, n): W's raw value (party 1's share); party 0's share is 0: None
    delta: torch.Tensor  # int64 (k, n): the public W - B, opened once
    mask: torch.Tensor | None  # int64 (k, n): B in the clear (party 0, the dealer), else None
    bits: int  # fraction bits of W's raw value

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.delta.shape)

    def transposed(self) -> "MaskedWeight":
        """W^T (n, k) with the same mask B^T, each matrix laid out contiguously: local, no traffic.

        torch's int64 product has no BLAS; reading a transposed view it is about 12x slower than
        reading a contiguous matrix (the default model's tied LM head, (1, 576) times (576, 49152):
        0.72 s against 0.058 s, three such products a token on party 0).
        """
        flip = lambda m: None if m is None else m.T.contiguous()  # noqa: E731
        return MaskedWeight(share=flip(self.share), delta=flip(self.delta), mask=flip(self.mask), bits=self.bits)


def _rank() -> int:
    return import_crypten().communicator.get().get_rank()


def share_raw(raw: torch.Tensor | None, shape, src: int) -> torch.Tensor:
    """This party's additive share of the int64 tensor ``raw`` held by ``src`` (PRZS: no traffic)."""
    AST = import_crypten().mpc.primitives.ArithmeticSharedTensor
    share = AST.PRZS(torch.Size(shape)).share
    if _rank() == src:
        share += raw
    return share


def open_raw(share: torch.Tensor) -> torch.Tensor:
    """Open an int64 share to both parties (one round)."""
    AST = import_crypten().mpc.primitives.ArithmeticSharedTensor
    return AST.from_shares(share.contiguous(), precision=0).reveal()


def encode_raw(w: torch.Tensor, bits: int) -> torch.Tensor:
    """w rounded to nearest on the 2**-bits grid, as int64 ring elements."""
    return torch.round(w.double() * 2.0 ** bits).long()


def random_ring(shape) -> torch.Tensor:
    from crypten.common.rng import generate_random_ring_element

    return generate_random_ring_element(torch.Size(shape))


def prepare(w: torch.Tensor | None, shape, bits: int) -> MaskedWeight:
    """Offline: share W (party 1 passes it, party 0 None) and open W - B for a fresh mask B.

    Traffic: one opening of k x n words (this is the part CrypTen pays on every query).
    """
    rank = _rank()
    # party 1: W; party 0: 0 (see the module docstring). Contiguous: w may be a transposed view, and
    # gloo's all_reduce adds the peers' tensors as flat memory, whatever their strides
    w_share = encode_raw(w, bits).contiguous() if rank == 1 else None
    mask = random_ring(shape) if rank == 0 else None
    b_share = share_raw(mask, shape, src=0)
    delta = open_raw(w_share - b_share if rank == 1 else -b_share)
    return MaskedWeight(share=w_share, delta=delta, mask=mask, bits=bits)


def masked_matmul(x, mw: MaskedWeight, out_bits: int):
    """Online: shared x (..., k) @ W -> shared (..., n) at ``out_bits``.

    Opens only eps = x - A (x's size). The raw product sits at x's bits + W's bits and is
    truncated once (CrypTen's local 2PC truncation) to ``out_bits``.
    """
    X = x._tensor.share
    out_shape = (*X.shape[:-1], mw.shape[1])
    dealer = _rank() == 0
    A = random_ring(X.shape) if dealer else None
    a = share_raw(A, X.shape, src=0)
    c = ring.zero_share(out_shape)  # the dealer adds C = A @ B to its share below
    eps = open_raw(X - a)
    if dealer:  # party 0's share of W is 0: no eps term
        Z = a @ mw.delta + A @ mw.mask + c  # (..., n) raw at x_bits + W bits
    else:
        Z = eps @ mw.share + a @ mw.delta + c
    shift = ring.bits_of(x) + mw.bits - out_bits
    return ring.wrap(ring.truncate(Z, shift), out_bits)  # 2PC local truncation, as CrypTen's div


def prepare_block(block, meta: dict, fraction_bits: int):
    """:class:`privinf.mpc.block.Weights` of an MLP block with w_in and w_down masked offline.

    Use with ``mlp_block(..., matmul=block_matmul)``; the norm weight and biases are shared as in
    :func:`privinf.mpc.block.share_weights` (element-wise products need no weight mask).
    """
    from privinf.mpc.block import MIN_WEIGHT_BITS, Weights, encode

    crypten = import_crypten()
    C, I, gated = meta["C"], meta["I"], meta["gated"]
    wbits = max(fraction_bits, MIN_WEIGHT_BITS)
    has = block is not None
    w_in = (torch.cat([block.w_gate.T, block.w_up.T], dim=1) if gated else block.w_up.T) if has else None
    n_in = 2 * I if gated else I

    def plain(name, shape, bits):
        if name != "norm_weight" and name not in meta["present"]:
            return None
        t = encode(getattr(block, name).float(), bits) if has else torch.zeros(shape, dtype=torch.float64)
        return crypten.cryptensor(t, src=1, precision=bits)

    return Weights(w_in=prepare(w_in, (C, n_in), wbits), w_down=prepare(block.w_down.T if has else None, (I, C), wbits),
                   norm_weight=plain("norm_weight", (C,), wbits), norm_bias=plain("norm_bias", (C,), fraction_bits),
                   b_up=plain("b_up", (I,), fraction_bits), b_down=plain("b_down", (C,), fraction_bits))


def block_matmul(a, w: MaskedWeight):
    """The ``matmul`` argument of ``mlp_block`` for weights from :func:`prepare_block`."""
    return masked_matmul(a, w, int(a.encoder.scale).bit_length() - 1)
