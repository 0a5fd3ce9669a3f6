from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch


def assert_close(got: torch.Tensor, ref: torch.Tensor, atol: float, what: str = "") -> None:
    """The one comparison every backend test uses: max abs difference within ``atol``."""
    err = float((got.double() - ref.double()).abs().max())
    assert err <= atol, f"{what} max abs error {err:.3g} > tolerance {atol:.3g}"


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny_llama():
    from privinf.models import tiny_model
    return tiny_model("llama", seed=0)


@pytest.fixture
def tiny_block(tiny_llama):
    from privinf.blocks import MLPBlock
    return MLPBlock.from_model(tiny_llama, 1)


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A tiny random llama saved as a local Hugging Face folder with a word-level tokenizer (w0..w97)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from privinf.models import tiny_model

    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    vocab = {f"w{i}": i for i in range(98)} | {"[UNK]": 98}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="w0", eos_token="w2")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tok.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------
# one test body, every backend: the `backend` fixture (plaintext, crypten, tenseal), each with the
# cards it runs and its tolerance against the card's plaintext arithmetic (CardOps)


def crypten_tolerance(card) -> dict[str, float]:
    """Fixed-point precision of the emulation (the card's bits) plus CrypTen's (16 bits).

    The MPC side rounds every product to 2**-16 and its rsqrt Newton starts from an exp computed in
    fixed point; the emulation rounds the block's tensors to the card's 2**-f. A few units of each.
    """
    from privinf.mpc.block import DEFAULT_FRACTION_BITS as F16

    f = min(card.fraction_bits or F16, F16)
    atol = 8 * 2.0 ** -f + 64 * 2.0 ** -F16
    return {"up": atol, "down": atol, "out": atol}


@dataclass(frozen=True)
class BackendCase:
    """A backend under test: its name, the cards it runs, options, and per-site tolerance."""

    name: str
    cards: tuple[str, ...]
    tolerance: Callable[..., dict[str, float]]  # card -> {"up", "down", "out"} max abs error
    exact_tolerance: float  # the `exact` card against the exact block
    options: dict = field(default_factory=dict)


BACKEND_CASES = {
    # the reference oracle: every card, bit for bit what CardOps computes
    "plaintext": BackendCase("plaintext", ("exact", "bolt", "iron", "bumblebee", "puma", "crypten", "nexus",
                                           "teal-25", "smoothquant-a8", "omniquant-a4"),
                             lambda card: {"up": 0.0, "down": 0.0, "out": 0.0}, 0.0),
    "crypten": BackendCase("crypten", ("crypten", "iron", "bolt", "bumblebee", "puma", "exact"), crypten_tolerance,
                           1e-3, {"timeout_s": 120, "protocol_timeout_s": 600}),  # generous: CI machines are shared
    # CKKS: the norm runs on the client (exact), the rest carries CKKS noise at 2**-40 scale
    "tenseal": BackendCase("tenseal", ("nexus-core", "exact"),
                           lambda card: {"up": 1e-6, "down": 1e-4, "out": 1e-4}, 1e-4),
}

_RUNS: dict[str, dict] = {}


def pytest_generate_tests(metafunc):
    """``backend`` alone: one run per backend; with ``card``: one per (backend, card it runs)."""
    if "backend" not in metafunc.fixturenames:
        return
    if "card" in metafunc.fixturenames:
        pairs = [(b, c) for b, case in BACKEND_CASES.items() for c in case.cards]
        metafunc.parametrize(("backend", "card"), pairs, indirect=["backend"], ids=[f"{b}-{c}" for b, c in pairs])
    else:
        metafunc.parametrize("backend", list(BACKEND_CASES), indirect=True)


@pytest.fixture(scope="session")
def block_x():
    """The tiny llama's layer-1 MLP block (hidden 32, MLP 37) and 6 random tokens (T, C)."""
    from privinf.blocks import MLPBlock
    from privinf.models import tiny_model

    block = MLPBlock.from_model(tiny_model("llama", seed=0), 1)
    return block, torch.randn(6, block.hidden_size, generator=torch.Generator().manual_seed(0))


def card_ops(card, block, x):
    """The card's plaintext arithmetic for ``block``, calibrated on ``x`` when it needs thresholds."""
    from privinf.approx.ops import CardOps

    ops = CardOps(card, block.activation)
    if ops.needs_calibration():
        ops.calibrate({"up": block.norm(x), "down": block(x).down})
    return ops


def backend_results(name: str, block, x) -> dict:
    """{card name: BlockResult} of backend ``name`` on every card it runs, computed once a session
    (CrypTen: one two-party session for all cards; CKKS contexts are expensive)."""
    if name not in _RUNS:
        from privinf.backends.base import get_backend
        from privinf.cards import protocol_card

        case = BACKEND_CASES[name]
        be = get_backend(name, **case.options)
        cards = [protocol_card(c) for c in case.cards]
        if hasattr(be, "run_cards"):
            _RUNS[name] = dict(zip(case.cards, be.run_cards(block, x, cards)))
        else:
            _RUNS[name] = {c.name: be.run(block, x, c, ops=card_ops(c, block, x)) for c in cards}
    return _RUNS[name]


@pytest.fixture(scope="session")
def backend(request, block_x):
    """A :class:`BackendCase` plus ``results``: {card: BlockResult} on ``block_x``."""
    case = BACKEND_CASES[request.param]
    return type("BackendRun", (), {"case": case, "name": case.name,
                                   "results": property(lambda self: backend_results(case.name, *block_x))})()


def run_two_parties(party, want: int, timeout_s: float = 120.0) -> list:
    """Run ``party(rank, rendezvous, queue)`` for ranks 0 and 1 in two spawned processes and return
    the first ``want`` items they put on the queue. A party that exits with an error, or a run past
    ``timeout_s``, fails the test instead of hanging it."""
    import multiprocessing as mp
    import queue as queues
    import tempfile
    import time

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    rendezvous = "file://" + tempfile.mktemp(prefix="privinf-rdv-")
    procs = [ctx.Process(target=party, args=(r, rendezvous, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    deadline, got = time.monotonic() + timeout_s, []
    try:
        while len(got) < want:
            try:
                got.append(queue.get(timeout=0.5))
            except queues.Empty:
                if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                    pytest.fail(f"a party failed or hung: exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return got
