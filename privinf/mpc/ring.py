"""Two-party arithmetic on raw shares (int64 ring), without CrypTen's per-operation Python layers.

CrypTen routes every operation on an ``MPCTensor`` through attribute interception, an autograd
wrapper, a clone of the tensor and an encoder: about 60-100 us for an addition or an index on this
machine, 330-370 us for a Beaver product, against a few us of tensor work at a decoding step's
sizes (measured with one party, no network). The functions here run the same protocols on the
shares themselves (``x._tensor.share`` of an ``MPCTensor``, this party's additive share of the
raw value ``round(v 2**f)``) and wrap the result once:

- :func:`zero_share` / :func:`share`: CrypTen's pseudo-random zero sharing (PRZS, its ``prev`` and
  ``next`` generators, no traffic) and a value of one party shared by it.
- :func:`beaver`: CrypTen's Beaver product with its TFP dealer (party 0 draws the triple from its
  local generator and shares it by PRZS; both parties open x - a and y - b in one round): the
  same protocol and the same traffic as ``ArithmeticSharedTensor.mul``/``matmul``, with the
  triple's three sharings drawn as one.
- :func:`truncate`: CrypTen's local 2PC truncation of a product (each party divides its share).
- :func:`wrap`: an ``MPCTensor`` around a raw share, for the functions that still take one.
- :func:`square`: CrypTen's square (a TFP pair r, r**2; opens x - r only).
- :func:`open_many`: open several shares in one round (``all_reduce`` batched, as CrypTen does).
- :func:`bit_share`, :func:`bit_and`, :func:`open_bits`: the same for XOR shares of int64 words
  (CrypTen's ``BinarySharedTensor`` and its Beaver AND).

Every function must be called by both parties in the same order (they consume the shared
generators); party-dependent branches touch only local values.
"""

from __future__ import annotations

import torch

from privinf.mpc.shim import import_crypten

_CPU = torch.device("cpu")


def rank() -> int:
    return import_crypten().communicator.get().get_rank()


def _ring(shape, generator) -> torch.Tensor:
    from crypten.common.rng import generate_random_ring_element

    return generate_random_ring_element(torch.Size(shape), generator=generator)


def zero_share(shape) -> torch.Tensor:
    """This party's share of zero (CrypTen's PRZS: no traffic)."""
    g = import_crypten().generators
    return _ring(shape, g["prev"][_CPU]) - _ring(shape, g["next"][_CPU])


def local_random(shape) -> torch.Tensor:
    """Uniform ring elements from this party's own generator (the dealer's triples)."""
    return _ring(shape, import_crypten().generators["local"][_CPU])


def local_bits(shape) -> torch.Tensor:
    """Uniform 0/1 int64 from this party's own generator."""
    return torch.randint(0, 2, torch.Size(shape), generator=import_crypten().generators["local"][_CPU])


def share(raw: torch.Tensor | None, shape, src: int) -> torch.Tensor:
    """This party's share of the int64 tensor ``raw`` held by ``src`` (others pass None)."""
    out = zero_share(shape)
    if rank() == src:
        out += raw
    return out


def open_many(shares: list[torch.Tensor]) -> list[torch.Tensor]:
    """Open several shares to both parties in one round. Contiguous first: gloo adds the parties'
    tensors as flat memory, so two layouts of the same shape would be added out of order."""
    return import_crypten().communicator.get().all_reduce([s.contiguous() for s in shares], batched=True)


def _broadcast(xs, ys) -> tuple:
    n = max(len(xs), len(ys))
    xs, ys = (1,) * (n - len(xs)) + tuple(xs), (1,) * (n - len(ys)) + tuple(ys)
    if any(a != b and 1 not in (a, b) for a, b in zip(xs, ys)):
        raise ValueError(f"shapes {xs} and {ys} do not broadcast")
    return tuple(max(a, b) if 1 in (a, b) else a for a, b in zip(xs, ys))


def _out_shape(xs: torch.Size, ys: torch.Size, op: str) -> torch.Size:
    """The shape of torch.mul / torch.matmul of operands of these shapes (torch's own shape
    functions go through its reference implementations: tens of us)."""
    if op == "mul":
        return torch.Size(_broadcast(xs, ys))
    if len(xs) < 2 or len(ys) < 2:
        raise ValueError(f"beaver matmul needs operands of 2 or more dimensions, got {tuple(xs)} @ {tuple(ys)}")
    return torch.Size((*_broadcast(xs[:-2], ys[:-2]), xs[-2], ys[-1]))


def beaver(x: torch.Tensor, y: torch.Tensor, op: str = "mul") -> torch.Tensor:
    """Shares of ``op(x, y)`` (torch.mul or torch.matmul, with broadcasting) for shared raw x and y:
    one round, no truncation."""
    fn = getattr(torch, op)
    zs = _out_shape(x.shape, y.shape, op)
    na, nb = x.numel(), y.numel()
    if rank() == 0:  # the dealer: a, b uniform, c = op(a, b), all three shared in one draw
        a, b = local_random(x.shape), local_random(y.shape)
        triple = torch.cat([a.reshape(-1), b.reshape(-1), fn(a, b).reshape(-1)])
        triple += zero_share((na + nb + zs.numel(),))
    else:
        triple = zero_share((na + nb + zs.numel(),))
    a, b, c = triple[:na].view(x.shape), triple[na:na + nb].view(y.shape), triple[na + nb:].view(zs)
    eps, delta = open_many([x - a, y - b])
    z = c + fn(eps, b) + fn(a, delta)
    if rank() == 0:
        z += fn(eps, delta)
    return z


def square(x: torch.Tensor) -> torch.Tensor:
    """Shares of x * x (no truncation): CrypTen's square with its TFP pair (r, r**2), opening only
    x - r (half a Beaver product's traffic), one round."""
    n = x.numel()
    if rank() == 0:
        r = local_random(x.shape)
        pair = torch.cat([r.reshape(-1), (r * r).reshape(-1)]) + zero_share((2 * n,))
    else:
        pair = zero_share((2 * n,))
    r, r2 = pair[:n].view(x.shape), pair[n:].view(x.shape)
    (eps,) = open_many([x - r])
    z = r2 + 2 * eps * r
    if rank() == 0:
        z += eps * eps
    return z


# -- binary (XOR) shares: bits of int64 words ------------------------------------------------------

def bit_zero_share(shape) -> torch.Tensor:
    """This party's XOR share of zero words (CrypTen's binary PRZS)."""
    g = import_crypten().generators
    return _ring(shape, g["prev"][_CPU]) ^ _ring(shape, g["next"][_CPU])


def bit_share(raw: torch.Tensor | None, shape, src: int) -> torch.Tensor:
    """This party's XOR share of the words ``raw`` held by ``src``."""
    out = bit_zero_share(shape)
    if rank() == src:
        out ^= raw
    return out


def open_bits(shares: list[torch.Tensor]) -> list[torch.Tensor]:
    """Open several XOR shares to both parties in one round."""
    from torch.distributed import ReduceOp

    return import_crypten().communicator.get().all_reduce([s.contiguous() for s in shares], op=ReduceOp.BXOR,
                                                          batched=True)


def bit_and(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """XOR shares of x & y (x broadcasting against y): CrypTen's Beaver AND with its TFP dealer, one
    round, opening x ^ a and y ^ b."""
    zs = torch.Size(_broadcast(x.shape, y.shape))
    na, nb = x.numel(), y.numel()
    if rank() == 0:
        a, b = local_random(x.shape), local_random(y.shape)
        triple = torch.cat([a.reshape(-1), b.reshape(-1), (a & b).reshape(-1)])
        triple ^= bit_zero_share((na + nb + zs.numel(),))
    else:
        triple = bit_zero_share((na + nb + zs.numel(),))
    a, b, c = triple[:na].view(x.shape), triple[na:na + nb].view(y.shape), triple[na + nb:].view(zs)
    eps, delta = open_bits([x ^ a, y ^ b])
    z = (b & eps) ^ (a & delta) ^ c
    if rank() == 0:
        z ^= eps & delta
    return z


def wrap(raw_share: torch.Tensor, bits: int):
    """An ``MPCTensor`` holding ``raw_share`` at ``bits`` fraction bits: what
    ``MPCTensor.from_shares(raw_share, precision=bits)`` returns, without the throw-away shared
    tensor its constructor builds first (a zero sharing of nothing: 35-70 us)."""
    crypten = import_crypten()
    from crypten.cryptensor import CrypTensor
    from crypten.encoder import FixedPointEncoder
    from crypten.mpc.primitives import ArithmeticSharedTensor
    from crypten.mpc.ptype import ptype

    inner = ArithmeticSharedTensor.__new__(ArithmeticSharedTensor)
    inner.share = raw_share
    inner.encoder = FixedPointEncoder(precision_bits=bits)
    out = object.__new__(crypten.mpc.MPCTensor)
    CrypTensor.__init__(out, requires_grad=False)
    out._tensor = inner
    out.ptype = ptype.arithmetic
    return out


def bits_of(t) -> int:
    """Fraction bits of an ``MPCTensor``'s encoder."""
    return int(t.encoder.scale).bit_length() - 1


def truncate(share: torch.Tensor, bits: int) -> torch.Tensor:
    """The raw value divided by 2**bits: each party truncates its own share (CrypTen's 2PC
    ``div`` by a public power of two; off by one unit, or wrong with probability |raw| / 2**63)."""
    return share.div(2 ** bits, rounding_mode="trunc") if bits > 0 else share


def encode_public(value: float, bits: int) -> int:
    """A public number as CrypTen's encoder writes it: int(2**bits * value), truncated toward zero."""
    return int(2 ** bits * value)


def add_public(share: torch.Tensor, value: float, bits: int) -> torch.Tensor:
    """Shares of raw + the public ``value`` encoded at ``bits`` (party 0 adds it)."""
    return share + encode_public(value, bits) if rank() == 0 else share
