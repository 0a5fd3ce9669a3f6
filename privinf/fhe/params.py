"""CKKS parameters chosen from the circuit a card needs.

The MLP block under CKKS is: gate/up projections (1 level, plaintext weights), the card's
activation times up (its depth below), and the down projection (1 level). Every level costs one
``scale_bits``-bit prime; the first and the special prime are ``edge_bits`` wide. The ring
dimension N is the smallest whose 128-bit-security budget of coefficient-modulus bits (SEAL's
``CoeffModulus::MaxBitCount``, HomomorphicEncryption.org standard) holds the whole chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privinf.cards import ActivationSpec
from privinf.errors import UsageError

# SEAL's CoeffModulus::MaxBitCount(N, sec_level_type::tc128)
MAX_COEFF_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


class DepthError(UsageError):
    """No 128-bit-secure CKKS parameter set holds the circuit's multiplicative depth."""


@dataclass(frozen=True)
class CKKSParams:
    poly_modulus_degree: int  # N, the ring dimension
    coeff_mod_bit_sizes: tuple[int, ...]  # first (edge), depth x scale, special (edge)
    scale_bits: int
    depth: int

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)


def poly_depth(degree: int, weighted: bool = False) -> int:
    """Levels to evaluate a degree-``degree`` polynomial (times one more ciphertext if ``weighted``).

    Every scalar coefficient multiply costs a level, so sum_k c_k x^k needs ceil(log2(d + 1)) and
    (sum_k c_k x^k) * w needs ceil(log2(d + 2)) (the evaluator in privinf.fhe.circuit reaches both).
    """
    n = degree + 1 + int(weighted)
    return 0 if n <= 1 else math.ceil(math.log2(n))


def _degree(coeffs) -> int:
    nz = [k for k, c in enumerate(coeffs) if c != 0.0]
    return max(nz, default=0)


def sign_depth(spec: ActivationSpec) -> int:
    s = spec.sign
    return s.g_times * poly_depth(_degree(s.g)) + s.f_times * poly_depth(_degree(s.f))


def activation_depth(spec: ActivationSpec, weighted: bool = True) -> int:
    """Levels of act(z) * w (``weighted``: gated MLP, w = up) as privinf.fhe.circuit evaluates it."""
    pieces = [s for s in spec.segments if s.coeffs]
    deg = max((_degree(s.coeffs) for s in pieces), default=0)
    value = poly_depth(deg, weighted)
    if spec.comparison == "sign-polynomial" and len(spec.segments) > 1:
        return max(sign_depth(spec), value) + 1  # indicator x value
    return value


def block_depth(spec: ActivationSpec, gated: bool = True) -> int:
    """Multiplicative depth of the whole MLP block: projections, activation (x up), down."""
    return 1 + activation_depth(spec, weighted=gated) + 1


def choose_params(depth: int, scale_bits: int = 40, edge_bits: int = 60,
                  min_degree: int = 8192) -> CKKSParams:
    """The smallest ring dimension N >= ``min_degree`` whose 128-bit budget holds ``depth`` levels."""
    need = 2 * edge_bits + depth * scale_bits
    for n, budget in MAX_COEFF_BITS.items():
        if n >= min_degree and need <= budget:
            return CKKSParams(n, (edge_bits,) + (scale_bits,) * depth + (edge_bits,), scale_bits, depth)
    n_max, budget = max(MAX_COEFF_BITS.items())
    most = (budget - 2 * edge_bits) // scale_bits
    raise DepthError(
        f"the circuit needs multiplicative depth {depth} ({need} coefficient-modulus bits at "
        f"scale 2^{scale_bits}); the largest ring dimension N={n_max} holds at most {budget} bits, "
        f"i.e. depth {most}, at 128-bit security. Lower the depth: fewer sign-polynomial "
        f"compositions (the card's activations.<act>.sign.f_times/g_times), a lower-degree "
        f"polynomial, or a smaller precision.ckks_scale_bits")
