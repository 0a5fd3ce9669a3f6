"""The attention softmax as a two-party protocol: max, exp and reciprocal on shares.

- **max** (:func:`tree_max`): all pairs of a group compared at once, the winner found from its
  count of wins; the same value as a comparison tree, in 13 rounds for a decoding step's keys
  where a binary tree takes 8 per halving.
- **exp**: the card's (``softmax`` section; CrypTen's limit (1 + t/2**8)**(2**8) where the
  protocol publishes none) of t = x - max <= 0, by squarings.
- **reciprocal** (:func:`reciprocal`): of the sum, >= 1 (the max's own term), <= the key count.

Runs at >= ``SOFTMAX_BITS`` fraction bits (the caller lifts the scores with ``activations.at_least``).
The plaintext twin (:func:`privinf.mpc.plain.card_softmax`) computes the same arithmetic.
"""

from __future__ import annotations

import math

import torch

from privinf.cards import SoftmaxSpec
from privinf.mpc import ring
from privinf.mpc.block import Meter, precision_bits
from privinf.mpc.compare import lane_for, ltz

SOFTMAX_BITS = 16  # the softmax runs at >= 16 fraction bits (CrypTen's exp squares 8 times)
MASK_BIAS = -1024.0  # added to masked scores before the max (ltz is exact for |x| < 2**15 at 16 bits)
RECIPROCAL_ITERS = 3  # Newton steps of :func:`reciprocal` from its linear guess on [1, 2)


PAIR_BUDGET = 2 ** 19  # comparisons one max step may batch (about 10 MB at 2.5 words each)


def tree_max(x):
    """max over the last dimension (keepdim): groups of r elements reduced to their max per step.

    A step compares every pair in each group at once (one batched ``ltz``), counts each element's
    wins (ties go to the lower index, so exactly one element of a group wins all r - 1), finds the
    winner with one small-lane ``ltz`` on the counts and selects it with one product: about
    7 + 5 + 1 rounds for a whole group, where a binary tree pays 8 per halving (48 rounds for 48
    keys against 13). The group size r is the largest whose pairs fit ``PAIR_BUDGET`` (decoding: all
    keys at once); r = 2 is the plain tree step. The value is the same max either way.
    """
    while x.size(-1) > 1:
        n = x.size(-1)
        rows = x.numel() // n
        r = max(2, min(n, int(2 * PAIR_BUDGET / max(1, rows * n)) + 1))
        x = _pair_step(x) if r == 2 else _group_step(x, r)
    return x


def _pair_step(x):
    bits = precision_bits(x)
    X = x._tensor.share
    carry = X[..., -1:] if X.shape[-1] % 2 else None
    if carry is not None:
        X = X[..., :-1]
    a, b = X[..., 0::2], X[..., 1::2]
    lower = ltz(ring.wrap(a - b, bits))._tensor.share
    X = a + ring.beaver(lower, b - a)  # bits at scale 1: no truncation
    return ring.wrap(X if carry is None else torch.cat([X, carry], dim=-1), bits)


def _group_step(x, r: int):
    """(..., n) -> (..., ceil(n / r)): the max of each group of r, by all pairs (see tree_max)."""
    bits = precision_bits(x)
    X = x._tensor.share
    n = X.shape[-1]
    groups = -(-n // r)
    if groups * r > n:  # pad with copies of the last key: they cannot change a max
        X = torch.cat([X, X[..., -1:].expand(*X.shape[:-1], groups * r - n)], dim=-1)
    xg = X.reshape(*X.shape[:-1], groups, r)  # (..., G, r)
    ii, jj = torch.triu_indices(r, r, 1)  # pairs i < j
    bs = ltz(ring.wrap(xg[..., ii] - xg[..., jj], bits))._tensor.share  # (..., G, P): [x_i < x_j], j beats i
    inc_i = torch.zeros(len(ii), r, dtype=torch.long)
    inc_i[torch.arange(len(ii)), ii] = 1
    inc_j = torch.zeros(len(ii), r, dtype=torch.long)
    inc_j[torch.arange(len(ii)), jj] = 1
    first = int(ring.rank() == 0)
    ones = inc_i.sum(0) * first  # public counts, party 0's share
    wins = ones - bs @ inc_i + bs @ inc_j  # (..., G, r): sum over pairs of i's wins; local integer maps
    lose = ltz(ring.wrap(wins - (r - 1) * first, 0), lane=lane_for(r))._tensor.share  # [wins < r - 1]
    best = ring.beaver(first - lose, xg)  # one winner per group; bits at scale 1: no truncation
    return ring.wrap(best.sum(-1), bits)  # (..., G)


def softmax(x, keep: torch.Tensor | None, spec: SoftmaxSpec = SoftmaxSpec(), meter: Meter | None = None):
    """Softmax over the last dimension; ``keep`` (public 0/1, broadcastable) masks positions out.

    max by comparisons (:func:`tree_max`), the card's exp (CrypTen's (1 + t/2**n)**(2**n), n = 8,
    unless the card's ``softmax`` section says otherwise) of t = x - max <= 0, masked terms zeroed
    exactly, the reciprocal of the sum (>= 1, the max's own term) by :func:`reciprocal`.
    """
    meter = meter or Meter()
    f = precision_bits(x)
    if keep is not None:  # the bias encoded as CrypTen encodes a public float tensor (truncated)
        bias = ((1 - keep.double()) * MASK_BIAS * 2 ** f).long()
        x = ring.wrap(x._tensor.share + bias * int(ring.rank() == 0), f)
    with meter.phase("max"):
        mx = tree_max(x)
    with meter.phase("exp"):
        e = limit_exp(x._tensor.share - mx._tensor.share, f, spec.exp_iterations)
    if keep is not None:
        e = e * keep.long()
    with meter.phase("reciprocal"):
        r = reciprocal(ring.wrap(e.sum(-1, keepdim=True), f), x.size(-1), spec.reciprocal_iterations)
    return ring.wrap(ring.truncate(ring.beaver(e, r._tensor.share), f), f)


def limit_exp(t: torch.Tensor, bits: int, iterations: int) -> torch.Tensor:
    """Shares of exp(t) for shared raw t at ``bits``: CrypTen's ``exp``, (1 + t / 2**n)**(2**n) with
    n = ``iterations`` squarings, each truncated by 2**bits."""
    y = ring.add_public(ring.truncate(t, iterations), 1, bits)
    for _ in range(iterations):
        y = ring.truncate(ring.square(y), bits)
    return y


def reciprocal(s, limit: int, iterations: int = RECIPROCAL_ITERS):
    """1/s for shared s in [1, limit]: range reduction, a linear guess, Newton steps.

    2**k <= s < 2**(k+1) from one batched comparison with the public 2**j (j = 1..K); the one-hot
    k gives c = 2**-k and c**2 as local sums. On the mantissa m = s c in [1, 2) the guess
    24/17 - 8/17 m is within 1/17 of 1/m; scaled by c it is y0 = 24/17 c - 8/17 c**2 s (one
    product). Newton's y <- y (1 + e), e = 1 - s y, runs in Goldschmidt's form (e <- e**2 and
    y (1 + e) in one batched product): relative error (1/17)**8 = 1.4e-10 after 3 steps.
    CrypTen's own ``reciprocal`` (guess 3 exp(1 - 2 s) + 0.003, 10 Newton steps) reaches the same
    value (within 4e-8 relative for s in [1, 253]) in 28 rounds; this takes 12. Above s = 253
    CrypTen's guess breaks (its limit exp of 1 - 2 s < -255 grows again) and Newton diverges:
    a softmax over more than 253 similar keys; this one holds for any s <= limit.
    """
    f = precision_bits(s)
    S = s._tensor.share
    K = max(1, math.ceil(math.log2(limit + 1)))
    if K > f:
        raise ValueError(f"reciprocal: limit {limit} needs more than {f} fraction bits")
    first = int(ring.rank() == 0)
    powers = torch.tensor([ring.encode_public(2.0 ** j, f) for j in range(1, K + 1)]).view(-1, *[1] * S.dim())
    b = ltz(ring.wrap(S - powers * first, f))._tensor.share  # b[j-1] = [s < 2**j]
    onehot = torch.cat([b[:1], b[1:] - b[:-1], first - b[-1:]])  # (K + 1, ...): k = 0..K
    ks = torch.arange(K + 1).view(-1, *[1] * S.dim())
    c = (onehot * 2 ** (f - ks)).sum(0)  # 2**-k at f bits
    # c**2 = 4**-k at f + K bits (exact for k <= K): the raw product with s stays below 2**(2f + 2K),
    # as small as an ordinary product's (at 2f bits it reached 2**53, and a 2PC truncation wraps
    # with probability |raw| / 2**63: 1e-3 per row, a garbled attention row every few tokens)
    c2 = (onehot * 2 ** (f + K - 2 * ks)).sum(0)
    c2s = ring.truncate(ring.beaver(c2, S), f + K)  # c**2 s at f bits
    y = _times(c, 24.0 / 17.0, f) - _times(c2s, 8.0 / 17.0, f)
    e = ring.add_public(-ring.truncate(ring.beaver(S, y), f), 1, f)  # 1 - s y
    for _ in range(iterations - 1):
        ye = ring.truncate(ring.beaver(torch.stack([y, e]), torch.stack([ring.add_public(e, 1, f), e])), f)
        y, e = ye[0], ye[1]
    return ring.wrap(ring.truncate(ring.beaver(y, ring.add_public(e, 1, f)), f), f)


def _times(share: torch.Tensor, c: float, bits: int) -> torch.Tensor:
    """As :func:`privinf.mpc.activations.times` at ``bits``, on a raw share."""
    return ring.truncate(share * int(round(c * 2 ** bits)), bits)
