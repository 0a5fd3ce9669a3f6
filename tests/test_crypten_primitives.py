"""MPC primitives (comparison, piecewise polynomials, logistic activations, rsqrt) in two processes.

One two-process CrypTen run evaluates every primitive on public test vectors and reports the
max errors against the plaintext definitions; the tests then check them one by one.
"""

import multiprocessing as mp
import os
import tempfile

import pytest
import torch

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
    return cases


def _party(rank: int, rendezvous: str, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    torch.set_num_threads(1)
    from privinf.mpc.party import reveal
    from privinf.mpc.shim import import_crypten

    crypten = import_crypten()
    crypten.init()
    errors = {}
    for name, (x, ref, fn) in _cases().items():
        got = fn(crypten.cryptensor(x, src=0))
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
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    rendezvous = "file://" + tempfile.mktemp(prefix="privinf-rdv-")
    procs = [ctx.Process(target=_party, args=(r, rendezvous, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    import queue as queues
    import time

    deadline, result = time.monotonic() + 120, None
    try:
        while result is None:
            try:
                result = queue.get(timeout=0.5)
            except queues.Empty:
                if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                    pytest.fail(f"a party failed or hung: exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return result


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
    assert errors["rsqrt-relative"] < 2e-3, errors["rsqrt-relative"]
