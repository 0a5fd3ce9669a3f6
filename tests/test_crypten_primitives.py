"""MPC primitives (comparison, piecewise polynomials, logistic activations, rsqrt) in two processes.

One two-process CrypTen run evaluates every primitive on public test vectors and reports the
max errors against the plaintext definitions; the tests then check them one by one.
"""

import os

import pytest
import torch
from conftest import run_two_parties

from privinf.approx import functions, polynomial
from privinf.cards import protocol_card


def _grid(spec=None, lo=-12.0, hi=12.0, n=1201) -> torch.Tensor:
    """Points on [lo, hi], none within 1e-3 of a breakpoint (fixed-point inputs sit 2**-17 off)."""
    x = torch.linspace(lo, hi, n) + 1e-4
    if spec is not None:
        for t in spec.breakpoints:
            x = x[(x - t).abs() > 1e-3]
    return x


def _cases() -> dict:
    """name -> (input, reference, function of the shared input)."""
    from privinf.mpc import activations as A
    from privinf.mpc.block import _R_SHIFT, scaled_rsqrt
    from privinf.cards import RsqrtSpec

    cases = {}
    edge = torch.tensor([-32767.5, -1000.0, -1.0, -2.0 ** -16, 0.0, 2.0 ** -16, 1.0, 1000.0, 32767.5])
    x = torch.cat([edge, torch.randn(12, generator=torch.Generator().manual_seed(1)) * 10])  # odd count: padding
    cases["ltz"] = (x, (x < 0).float(), lambda s: A.ltz(s))
    for name in ("puma", "bumblebee", "bolt"):
        spec = protocol_card(name).activation("silu")
        g = _grid(spec)
        cases[f"{name}-silu"] = (g, polynomial.evaluate(g, spec), lambda s, spec=spec: A.activation(s, spec, "silu"))
    bolt = protocol_card("bolt").activation("gelu")
    g = _grid(bolt)
    cases["bolt-gelu-generic"] = (g, polynomial.evaluate(g, bolt), lambda s: A.piecewise(s, bolt.segments))
    cases["bolt-gelu-symmetric"] = (g, polynomial.evaluate(g, bolt), lambda s: A.bolt(s, bolt))
    g = _grid()
    cases["logistic-silu"] = (g, functions.silu(g), lambda s: A.logistic(s, "silu"))
    cases["logistic-gelu"] = (g, functions.EXACT["gelu"](g), lambda s: A.logistic(s, "gelu"))
    ms = torch.logspace(-4, 5, 40).unsqueeze(1)  # (T, 1) mean squares
    count = 576

    def rsqrt(s):  # R = 2**shift / sqrt(ms), compared at that scale (the block divides after x * R)
        return scaled_rsqrt(s, count, RsqrtSpec("newton-normalized", 3))[0]

    ref = functions.normalized_rsqrt(ms, 3) * 2 ** _R_SHIFT
    cases["rsqrt-relative"] = (ms * count, ref, rsqrt)  # input: the sum of squares over 576 features
    from privinf.mpc.block import round_nearest
    from privinf.mpc.softmax import reciprocal, tree_max

    keys = _fixed(torch.randn(9, 1, 48, generator=torch.Generator().manual_seed(2)) * 20)  # a decoding step's scores
    keys[:, :, 7] = keys[:, :, 3]  # ties
    cases["max-48"] = (keys, keys.max(-1, keepdim=True).values, tree_max)
    cases["max-pairs"] = (keys[:, :, :5], keys[:, :, :5].max(-1, keepdim=True).values, tree_max)
    sums = torch.cat([torch.linspace(1, 300, 997), torch.tensor([1.0, 2.0, 4.0 - 2 ** -16, 256.0])])
    cases["reciprocal"] = (sums, 1 / sums, lambda s: reciprocal(s, 300))
    v = _fixed(torch.randn(4001, generator=torch.Generator().manual_seed(3)) * 50)
    v[:6] = torch.tensor([0.5, -0.5, 1.5, -1.5, 2 ** -16, -2 ** -16]) / 2 ** 8  # ties round up
    cases["round"] = (v, torch.floor(v * 2 ** 8 + 0.5) / 2 ** 8, lambda s: round_nearest(s, 8, 8))
    return cases


def _fixed(x: torch.Tensor) -> torch.Tensor:
    """x on the 2**-16 grid, as the parties share it (encoded exactly)."""
    return torch.round(x * 2 ** 16) / 2 ** 16


def _party(rank: int, rendezvous: str, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    torch.set_num_threads(1)
    from privinf.mpc.party import reveal
    from privinf.mpc.shim import import_crypten

    crypten = import_crypten()
    crypten.init()
    errors = {}
    comm = crypten.communicator.get()
    for name, (x, ref, fn) in _cases().items():
        shared = crypten.cryptensor(x.double(), src=0)
        before = comm.get_communication_stats()["rounds"]
        got = fn(shared)
        errors[f"{name}:rounds"] = comm.get_communication_stats()["rounds"] - before
        got = reveal(got) if got.encoder.scale > 1 else got._tensor.reveal(dst=0)
        if rank == 0:
            got = got.float()
            diff = (got - ref).abs()
            if name == "rsqrt-relative":
                diff = diff / ref
            errors[name] = float(diff.max())
    crypten.uninit()
    if rank == 0:
        queue.put(errors)


@pytest.fixture(scope="module")
def errors():
    return run_two_parties(_party, want=1)[0]


def test_packed_comparison_is_exact_within_its_range(errors):
    assert errors["ltz"] == 0.0


@pytest.mark.parametrize("name", ["puma-silu", "bumblebee-silu", "bolt-silu", "bolt-gelu-generic",
                                  "bolt-gelu-symmetric"])
def test_piecewise_polynomials_match_their_definition(name, errors):
    assert errors[name] < 2e-4, f"{name}: {errors[name]:.3g}"


@pytest.mark.parametrize("name", ["logistic-silu", "logistic-gelu"])
def test_logistic_activations_are_accurate(name, errors):
    assert errors[name] < 1e-3, f"{name}: {errors[name]:.3g}"


def test_range_reduced_rsqrt_matches_the_emulation(errors):
    # the emulation computes CrypTen's guess and Newton in float; the protocol a fit of the same
    # function in fixed point (16 bits): a few units of 2**-16 relative
    assert errors["rsqrt-relative"] < 2e-4, errors["rsqrt-relative"]
    assert errors["rsqrt-relative:rounds"] <= 14  # comparison 8, mantissa 1, fitted Newton 4, select 1


@pytest.mark.parametrize("name, rounds", [("max-48", 13), ("max-pairs", 13)])
def test_max_is_exact_in_few_rounds(name, rounds, errors):
    assert errors[name] == 0.0
    assert errors[f"{name}:rounds"] <= rounds  # a binary tree: 8 per halving (48 for 48 keys)


def test_softmax_reciprocal_is_accurate_in_12_rounds(errors):
    assert errors["reciprocal"] < 4 * 2 ** -16, errors["reciprocal"]  # CrypTen's own: 28 rounds, 50 units
    assert errors["reciprocal:rounds"] <= 12


def test_exact_rounding_rounds_to_nearest_in_5_rounds(errors):
    assert errors["round"] == 0.0
    assert errors["round:rounds"] <= 5
