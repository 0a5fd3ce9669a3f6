"""The server's CKKS circuit for one MLP block: packed matmuls and the card's activation.

Packing (``Layout``): the slots of a ciphertext form a (B features) x (P tokens) grid, slot
``f * P + t``, with B * P = N/2. A (T, F) activation matrix is ceil(F / B) ciphertexts. Rotating
a ciphertext by ``d * P`` slots shifts the feature index cyclically by d for every token at once,
so a B x B weight block is applied with the diagonal method (Halevi-Shoup) in baby-step
giant-step form: k1 baby rotations per input ciphertext (shared by all outputs), k2 = B / k1
giant rotations per output ciphertext, and one plaintext multiply per non-zero diagonal. Only
two rotation keys exist (steps P and k1 * P), so every rotation is a single key switch.

Levels: every multiply rescales; plaintexts are encoded at the scale of the prime the rescale
drops, so plaintext products keep the nominal scale exactly; ciphertext products are reset to
the nominal scale after the rescale (as TenSEAL does; relative error ~1e-7 per level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import tenseal.sealapi as seal

from privinf.cards import ActivationSpec


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


@dataclass(frozen=True)
class Layout:
    """Slot grid of B features x P tokens (B * P = slots, both powers of two)."""

    slots: int
    block: int  # B
    t_pad: int  # P

    @classmethod
    def choose(cls, slots: int, tokens: int, dims: tuple[int, ...]) -> "Layout":
        """As many tokens as fit; feature blocks no wider than the widest matrix needs."""
        t_pad = _pow2_at_least(tokens)
        if t_pad > slots:
            raise ValueError(f"{tokens} tokens do not fit in {slots} CKKS slots; run fewer tokens per block")
        block = min(slots // t_pad, _pow2_at_least(max(dims)))
        return cls(slots, block, slots // block)

    @property
    def baby(self) -> int:
        return 1 << math.ceil(math.log2(self.block) / 2)

    @property
    def giant(self) -> int:
        return self.block // self.baby

    def rotation_steps(self) -> list[int]:
        steps = [self.t_pad] if self.block > 1 else []
        return steps + ([self.baby * self.t_pad] if self.giant > 1 else [])

    def n_blocks(self, features: int) -> int:
        return math.ceil(features / self.block)

    def pack(self, x: torch.Tensor) -> list[list[float]]:
        """(T, F) -> one slot vector per feature block."""
        t, f = x.shape
        out = []
        for b in range(self.n_blocks(f)):
            grid = torch.zeros(self.block, self.t_pad, dtype=torch.float64)
            part = x[:, b * self.block:(b + 1) * self.block].T  # (fb, T)
            grid[:part.shape[0], :t] = part
            out.append(grid.reshape(-1).tolist())
        return out

    def unpack(self, vectors: list[list[float]], tokens: int, features: int) -> torch.Tensor:
        grids = [torch.tensor(v[:self.slots], dtype=torch.float64).reshape(self.block, self.t_pad) for v in vectors]
        return torch.cat(grids, 0)[:features, :tokens].T.float()  # (T, F)


@dataclass
class Counters:
    rotations: int = 0
    plain_mults: int = 0
    cipher_mults: int = 0


@dataclass
class Evaluator:
    """Level- and scale-managed CKKS arithmetic on SEAL ciphertexts (server side: no secret key)."""

    context: object  # SEALContext
    relin_keys: object
    galois_keys: object | None
    scale: float
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self):
        self.ev = seal.Evaluator(self.context)
        self.encoder = seal.CKKSEncoder(self.context)

    # -- levels ------------------------------------------------------------------------------
    def level(self, ct) -> int:
        return self.context.get_context_data(ct.parms_id()).chain_index()

    def _last_prime(self, ct) -> float:
        return float(self.context.get_context_data(ct.parms_id()).parms().coeff_modulus()[-1].value())

    def _down_to(self, ct, level: int):
        while self.level(ct) > level:
            self.ev.mod_switch_to_next_inplace(ct)
        return ct

    def _aligned(self, a, b):
        lv = min(self.level(a), self.level(b))
        return self._copy_down(a, lv), self._copy_down(b, lv)

    def _copy_down(self, ct, level: int):
        if self.level(ct) == level:
            return ct
        ctx_data = self.context.get_context_data(ct.parms_id())
        while ctx_data.chain_index() > level:
            ctx_data = ctx_data.next_context_data()
        out = seal.Ciphertext()
        self.ev.mod_switch_to(ct, ctx_data.parms_id(), out)
        return out

    # -- arithmetic --------------------------------------------------------------------------
    def add(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        a, b = self._aligned(a, b)
        out = seal.Ciphertext()
        self.ev.add(a, b, out)
        return out

    def sub(self, a, b):
        a, b = self._aligned(a, b)
        out = seal.Ciphertext()
        self.ev.sub(a, b, out)
        return out

    def add_const(self, ct, c: float):
        if c == 0.0:
            return ct
        pt = seal.Plaintext()
        self.encoder.encode(float(c), ct.parms_id(), ct.scale, pt)
        out = seal.Ciphertext()
        self.ev.add_plain(ct, pt, out)
        return out

    def encode_for(self, ct, values):
        """Encode a scalar or slot vector for multiplying ``ct`` (scale = the next dropped prime)."""
        pt = seal.Plaintext()
        v = float(values) if isinstance(values, (int, float)) else values
        self.encoder.encode(v, ct.parms_id(), self._last_prime(ct), pt)
        return pt

    def mul_plain_raw(self, ct, pt):
        """ct * pt without the rescale (sum several, then :meth:`rescale` once)."""
        self.counters.plain_mults += 1
        out = seal.Ciphertext()
        self.ev.multiply_plain(ct, pt, out)
        return out

    def rescale(self, ct, scale: float | None = None):
        self.ev.rescale_to_next_inplace(ct)
        ct.scale = scale or self.scale
        return ct

    def mul_const(self, ct, c: float):
        return self.rescale(self.mul_plain_raw(ct, self.encode_for(ct, c)))

    def mul(self, a, b):
        a, b = self._aligned(a, b)
        self.counters.cipher_mults += 1
        out = seal.Ciphertext()
        self.ev.multiply(a, b, out)
        self.ev.relinearize_inplace(out, self.relin_keys)
        return self.rescale(out)

    def rotate(self, ct, steps: int):
        self.counters.rotations += 1
        out = seal.Ciphertext()
        self.ev.rotate_vector(ct, steps, self.galois_keys, out)
        return out

    # -- packed matmul -----------------------------------------------------------------------
    def baby_steps(self, xs: list, layout: Layout) -> list[list]:
        """Each input block rotated by 0, P, ..., (k1 - 1) P slots (shared by every matmul of xs)."""
        babies = []
        for x in xs:
            row = [x]
            for _ in range(1, layout.baby):
                row.append(self.rotate(row[-1], layout.t_pad))
            babies.append(row)
        return babies

    def matmul(self, xs: list, weight: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None,
               babies: list[list] | None = None) -> list:
        """y = x @ weight.T (+ bias) on packed ciphertexts; weight (out, in); one level."""
        out_f, in_f = weight.shape
        B, k1, k2, P = layout.block, layout.baby, layout.giant, layout.t_pad
        babies = babies or self.baby_steps(xs, layout)
        idx = torch.arange(B)
        g = torch.arange(k2).view(k2, 1, 1)
        b = torch.arange(k1).view(1, k1, 1)
        rows, cols = (idx - g * k1) % B, (idx + b) % B  # D'[g, b, c] = M[(c - g k1) % B, (c + b) % B]
        outs = []
        for bo in range(layout.n_blocks(out_f)):
            acc = None
            for gi in reversed(range(k2)):
                part = None
                for bi, row in enumerate(babies):
                    m = torch.zeros(B, B, dtype=torch.float64)
                    blk = weight[bo * B:(bo + 1) * B, bi * B:(bi + 1) * B]
                    m[:blk.shape[0], :blk.shape[1]] = blk
                    diag = m[rows[gi], cols[0]]  # (k1, B)
                    for bj in range(k1):
                        if not torch.any(diag[bj]):
                            continue
                        vec = diag[bj].repeat_interleave(P).tolist()
                        part = self.add(part, self.mul_plain_raw(row[bj], self.encode_for(row[bj], vec)))
                if acc is not None:
                    acc = self.rotate(acc, k1 * P)
                acc = self.add(acc, part)
            if acc is None:  # an all-zero output block
                acc = self.mul_plain_raw(xs[0], self.encode_for(xs[0], 0.0))
            acc = self.rescale(acc, xs[0].scale)
            if bias is not None:
                vec = torch.zeros(B, P, dtype=torch.float64)
                piece = bias[bo * B:(bo + 1) * B].double()
                vec[:piece.shape[0]] = piece.view(-1, 1)
                pt = seal.Plaintext()
                self.encoder.encode(vec.reshape(-1).tolist(), acc.parms_id(), acc.scale, pt)
                self.ev.add_plain_inplace(acc, pt)
            outs.append(acc)
        return outs

    # -- polynomials -------------------------------------------------------------------------
    def poly(self, x, coeffs, weight=None):
        """sum_k coeffs[k] x^k (times ``weight`` if given) at depth ceil(log2(deg + 1 (+1)))."""
        powers = {1: x}

        def power(m: int):
            if m not in powers:
                hi = 1 << (m.bit_length() - 1)
                if hi == m:
                    half = power(m // 2)
                    powers[m] = self.mul(half, half)
                else:
                    powers[m] = self.mul(power(hi), power(m - hi))
            return powers[m]

        def term(m: int, c: float):
            if weight is not None:
                if m == 0:
                    return self.mul_const(weight, c)
                a = 1 << (m.bit_length() - 1)  # largest power of two <= m
            else:
                if m == 1:
                    return self.mul_const(x, c)
                a = 1 << ((m - 1).bit_length() - 1)  # largest power of two < m
            return self.mul(power(a), term(m - a, c))

        out = None
        for m, c in enumerate(coeffs):
            if c != 0.0 and (m > 0 or weight is not None):
                out = self.add(out, term(m, c))
        if out is None:
            raise ValueError("polynomial has no non-constant term")
        if weight is None and coeffs and coeffs[0] != 0.0:
            out = self.add_const(out, coeffs[0])
        return out


def _scaled(coeffs, r: float) -> list[float]:
    """Coefficients of p(r z) in z."""
    return [c * r ** k for k, c in enumerate(coeffs)]


def input_scale(spec: ActivationSpec) -> float:
    """The activation input is computed divided by r (folded into the weights): |z| <= 1 where valid."""
    if spec.sign is not None:
        return spec.sign.input_bound
    return max(abs(spec.domain[0]), abs(spec.domain[1]))


def activation_times(ev: Evaluator, z, spec: ActivationSpec, weight=None):
    """act(r z) * weight for the card's piecewise polynomial, z = x / r (r = :func:`input_scale`).

    With sign-polynomial comparisons, 2 * 1[lo <= x < hi] = (1 + s_lo) - (1 + s_hi) with
    s_t = sign((x - t) / bound) by the card's composite polynomials, and each piece's value is
    computed as 0.5 * p(x) * weight alongside; one ciphertext product joins them.
    """
    if spec.method != "piecewise":
        raise ValueError(f"activation method {spec.method!r} has no CKKS circuit")
    r = input_scale(spec)
    pieces = [s for s in spec.segments if s.coeffs]
    if any(s.abs_coeffs for s in spec.segments):
        raise ValueError("|x| terms need a sign polynomial per term; no CKKS circuit for abs_coeffs")
    if len(spec.segments) == 1:
        return ev.poly(z, _scaled(spec.segments[0].coeffs, r), weight)
    if spec.comparison != "sign-polynomial":
        raise ValueError("a piecewise activation with exact comparisons has no CKKS circuit; "
                         "CKKS needs comparison = 'sign-polynomial'")
    sign = spec.sign
    assert sign.input_bound == r

    def sign_of(t: float):  # sign((x - t) / bound) = sign(z - t / r)
        y = ev.add_const(z, -t / r)
        for poly, times in ((sign.g, sign.g_times), (sign.f, sign.f_times)):
            for _ in range(times):
                y = ev.poly(y, list(poly))
        return y

    signs = {}
    for seg in spec.segments:
        for t in (seg.lo, seg.hi):
            if math.isfinite(t) and t not in signs and any(t in (p.lo, p.hi) for p in pieces):
                signs[t] = sign_of(t)
    out = None
    for seg in pieces:
        half = ev.poly(z, _scaled([0.5 * c for c in seg.coeffs], r), weight)  # 0.5 p(x) w
        lo, hi = math.isfinite(seg.lo), math.isfinite(seg.hi)
        if lo and hi:
            ind = ev.sub(signs[seg.lo], signs[seg.hi])
        elif lo:
            ind = ev.add_const(signs[seg.lo], 1.0)
        elif hi:
            ind = _one_minus(ev, signs[seg.hi])
        else:
            raise ValueError("a segment covering the real line must be the only segment")
        out = ev.add(out, ev.mul(ind, half))
    return out


def _one_minus(ev: Evaluator, ct):
    """1 - ct without spending a level."""
    neg = seal.Ciphertext()
    ev.ev.negate(ct, neg)
    return ev.add_const(neg, 1.0)
