"""Private generation with the whole model: the 2PC forward against its plaintext twin and the exact
model, the KV cache against recomputing, and the offline/online split against today's MLP block.

One two-party session (two OS processes, tiny random llama) serves every check below; the
PUMA card (18 fraction bits, piecewise SiLU) keeps fixed-point noise small enough for tight
tolerances. Fault tests start real processes too and use short timeouts.
"""

import socket

import pytest
import torch

from conftest import assert_close
from privinf.cards import protocol_card

CARD = "puma"
PROMPT = [3, 17, 5, 88, 42, 9]
NEW = 2
ULP = 2.0 ** -18  # the card's fraction bits


@pytest.fixture(scope="module")
def weights():
    from privinf.models import tiny_model
    from privinf.mpc.model import ModelWeights

    return ModelWeights.from_model(tiny_model("llama", seed=0))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Generate NEW tokens privately with --check: per-step logits, cache-free logits, block two ways."""
    from privinf.mpc.session import generate_2pc

    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    from privinf.models import tiny_model
    tiny_model("llama", seed=0).save_pretrained(folder)
    _tokenizer(folder)
    steps = []
    res = generate_2pc(str(folder), PROMPT, CARD, NEW, check=True, timeout_s=300, protocol_timeout_s=600,
                       progress=lambda s, of, rec: steps.append(s))
    return res, steps


def _tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(98)} | {"[UNK]": 98}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="w0", eos_token="w2").save_pretrained(folder)


def test_plain_twin_without_card_is_the_hugging_face_forward(weights):
    from privinf.models import tiny_model
    from privinf.mpc.plain import plain_forward

    ref = tiny_model("llama", seed=0)(torch.tensor([PROMPT])).logits[0].detach()
    assert_close(plain_forward(weights, PROMPT), ref, 1e-5, "plain twin vs HF")


def test_plain_twin_softmax_is_crypten_arithmetic():
    from privinf.mpc.plain import card_softmax

    x = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 4
    keep = torch.ones(5, 7, dtype=torch.bool).tril(2)
    p = card_softmax(x, keep)
    ref = torch.softmax(x.masked_fill(~keep, -torch.inf), -1)
    assert float((p - ref).abs().max()) < 2e-2  # CrypTen's limit exp is a few % off in the tails
    assert float(p.masked_select(~keep.expand_as(p)).abs().max()) == 0.0
    assert_close(p.sum(-1), torch.ones(3, 5), 1e-3, "rows sum to 1")


def test_card_softmax_section_is_read_by_the_twin():
    from privinf.mpc.plain import card_softmax, crypten_exp

    nexus, bolt = protocol_card("nexus").softmax, protocol_card("bolt").softmax
    assert nexus.exp_iterations == 7 and "NEXUS" in nexus.source  # (1 + x/128)**128, published
    assert bolt.exp_iterations == 8 and "CrypTen" in bolt.source  # none named: CrypTen's own
    x = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(0)) * 3
    keep = torch.ones(4, 9, dtype=torch.bool)
    t = x.double() - x.double().max(-1, keepdim=True).values
    e = crypten_exp(t, 7)
    assert_close(card_softmax(x, keep, nexus), e / e.sum(-1, keepdim=True), 1e-6, "NEXUS softmax")
    assert float((card_softmax(x, keep, nexus) - card_softmax(x, keep, bolt)).abs().max()) > 1e-4


def test_protocol_rsqrt_and_reciprocal_match_the_emulation():
    """The 2PC mantissa rsqrt (a fit of the card's Newton) and softmax reciprocal against the twin's."""
    from privinf.approx.functions import newton_rsqrt
    from privinf.mpc.block import FIT_RANGE, mantissa_fit
    from privinf.mpc.plain import crypten_reciprocal, softmax_reciprocal

    lo, hi = FIT_RANGE
    m = torch.linspace(lo, hi, 4001, dtype=torch.float64)
    for steps in (3, 4):
        fit = sum(c * (m - (lo + hi) / 2) ** k for k, c in enumerate(mantissa_fit(steps)))
        ref = newton_rsqrt(m, steps)
        assert float(((fit - ref) / ref).abs().max()) < 2e-6, steps
    assert float(((newton_rsqrt(m, 3) - m.rsqrt()) / m.rsqrt()).abs().max()) > 1e-3  # the card's own error, kept
    s = torch.linspace(1, 253, 5001, dtype=torch.float64)
    assert float(((softmax_reciprocal(s) - 1 / s) * s).abs().max()) < 1e-9
    assert float(((softmax_reciprocal(s) - crypten_reciprocal(s)) * s).abs().max()) < 1e-7


def test_two_party_forward_matches_the_plaintext_twin(session, weights):
    from privinf.mpc.plain import plain_forward

    res, _ = session
    seq = PROMPT + res.tokens
    full = res.check["full"]  # (len(seq) - 1, V): the cache-free forward over the whole sequence
    twin = plain_forward(weights, seq[:-1], protocol_card(CARD))
    exact = plain_forward(weights, seq[:-1])
    assert full.shape == twin.shape == (len(seq) - 1, weights.meta["V"])
    assert_close(full, twin, 64 * ULP, "2PC vs plaintext twin")
    assert_close(full, exact, 4e-3, "2PC vs exact model")  # the card's SiLU is an approximation
    assert float((full - exact).abs().max()) > 0  # not the exact model by accident


def test_kv_cache_gives_the_logits_of_recomputing(session):
    res, _ = session
    steps, full = res.logits, res.check["full"]
    assert steps.shape == (NEW, full.shape[1])
    # both sides carry CrypTen's random truncation error, so the bound is the twin test's, not a tighter one
    assert_close(steps, full[len(PROMPT) - 1:], 64 * ULP, "cached steps vs recomputed")


def test_client_picks_the_argmax_of_the_revealed_logits(session):
    res, progress = session
    assert res.tokens == [int(t) for t in res.logits.argmax(-1)]
    assert progress == list(range(1, NEW + 1)) and len(res.steps) == NEW


def test_offline_online_split_matches_todays_block(session, weights):
    from privinf.approx.ops import CardOps
    from privinf.mpc.block import encode

    res, _ = session
    today, split = res.check["block_today"], res.check["block_split"]
    assert_close(split, today, 16 * ULP, "offline/online block vs today's block")
    x = torch.randn(5, weights.meta["C"], generator=torch.Generator().manual_seed(1))
    block = weights.layers[0].mlp
    ref = block.forward(encode(x, 18).float(), CardOps(protocol_card(CARD), block.activation)).out
    assert_close(split, ref, 64 * ULP, "offline/online block vs plaintext emulation")


def test_online_traffic_is_only_masked_activations(session, weights):
    res, _ = session
    m = weights.meta
    params = m["V"] * m["C"] * (1 if m["tied"] else 2) + m["L"] * (
        m["C"] * (m["H"] + 2 * m["Hkv"]) * m["d"] + m["H"] * m["d"] * m["C"] + 3 * m["C"] * m["I"])
    assert res.offline["bytes"] == 16 * params  # every weight opened (masked) once: 8 bytes a word, both ways
    # the MLP block: today's path re-opens w_in and w_down on every query, the split opens them offline only
    b, block_words = res.block, 3 * m["C"] * m["I"]
    assert b["offline"]["bytes"] == 16 * block_words
    assert b["today"]["bytes"] - b["online"]["bytes"] == 16 * block_words
    assert b["online"]["rounds"] == b["today"]["rounds"]  # same protocol, minus the weight openings


# -- faults: one line and an exit code, never a hang ---------------------------------------------

def _party0(tmp_path, peer: str, timeout: float):
    import subprocess
    import sys

    (tmp_path / "ids.json").write_text('{"ids": [1, 2]}')
    return subprocess.run([sys.executable, "-m", "privinf.mpc.genparty", "--rank", "0", "--peer", peer, "--card", CARD,
                           "--input", str(tmp_path / "ids.json"), "--out", str(tmp_path), "--timeout", str(timeout)],
                          capture_output=True, text=True, timeout=300)


def test_port_taken_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        peer = f"127.0.0.1:{s.getsockname()[1]}"
        proc = _party0(tmp_path, peer, 5.0)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 4 and len(lines) == 1, proc.stderr
    assert "already in use" in lines[0] and peer in lines[0]


def test_missing_peer_names_the_address(tmp_path):
    from privinf.backends.crypten_mpc import free_port

    peer = f"127.0.0.1:{free_port()}"
    proc = _party0(tmp_path, peer, 2.0)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert peer in lines[0] and "did not connect within 2 s" in lines[0]


@pytest.mark.slow
def test_dead_peer_and_watchdog_are_one_line(tmp_path, monkeypatch):
    from privinf.backends.crypten_mpc import MPCRunError
    from privinf.mpc.session import generate_2pc

    folder = tmp_path / "tiny-llama"
    from privinf.models import tiny_model
    tiny_model("llama", seed=0).save_pretrained(folder)
    _tokenizer(folder)
    monkeypatch.setenv("PRIVINF_FAULT_EXIT_RANK", "1")  # party 1 exits right after the offline phase
    with pytest.raises(MPCRunError, match=r"rank 0 exit 5: privinf party: .*went away mid-protocol"):
        generate_2pc(str(folder), PROMPT, CARD, 2, timeout_s=300, protocol_timeout_s=600)
    monkeypatch.delenv("PRIVINF_FAULT_EXIT_RANK")
    with pytest.raises(MPCRunError, match=r"exit 5: privinf party: .*did not finish within 0.5 s"):
        generate_2pc(str(folder), PROMPT, CARD, 64, timeout_s=300, protocol_timeout_s=0.5)


def test_unknown_architecture_is_refused():
    from privinf.models import tiny_model
    from privinf.mpc.model import ModelWeights, UnsupportedModel

    with pytest.raises(UnsupportedModel, match="gpt2"):
        ModelWeights.from_model(tiny_model("gpt2"))


def test_generate_command_plaintext_and_compare(tiny_model_dir):
    from click.testing import CliRunner

    from privinf.cli import main

    args = ["generate", "--model", str(tiny_model_dir), "--backend", "plaintext", "--card", "bolt", "--no-chat",
            "--prompt", "w3 w17 w5 w88", "--max-new-tokens", "3"]
    res = CliRunner().invoke(main, args + ["--compare"])
    assert res.exit_code == 0, res.output
    assert "4 prompt tokens, 3 new tokens, backend plaintext" in res.output
    assert "clean model" in res.output and "whole-model twin (bolt)" in res.output


def test_generate_command_refuses_a_card_mpc_cannot_run(tiny_model_dir):
    from click.testing import CliRunner

    from privinf.cli import main

    res = CliRunner().invoke(main, ["generate", "--model", str(tiny_model_dir), "--card", "nexus"])
    assert res.exit_code != 0 and "nexus" in res.output and "Traceback" not in res.output


# -- faults through `privinf generate --backend crypten`: one line and exit code 1 ----------------

def _generate_cli(folder, *extra, env=None):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "privinf.cli", "generate", "--model", str(folder), "--backend", "crypten",
           "--card", CARD, "--no-chat", "--prompt", "w3 w17 w5", "--max-new-tokens", "2", *extra]
    import os
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def _one_line(proc) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, proc.stderr)
    return lines[0]


def test_generate_port_taken_is_one_line(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _one_line(_generate_cli(tiny_model_dir, "--port", str(port), "--timeout", "3"))
    assert "already in use" in line and f"127.0.0.1:{port}" in line


def test_generate_missing_peer_is_one_line(tiny_model_dir):
    line = _one_line(_generate_cli(tiny_model_dir, "--timeout", "2", env={"PRIVINF_FAULT_SKIP_RANK": "1"}))
    assert "rank 0 exit 3" in line and "did not connect within 2 s" in line


@pytest.mark.slow
def test_generate_dead_peer_and_watchdog_are_one_line(tiny_model_dir):
    line = _one_line(_generate_cli(tiny_model_dir, env={"PRIVINF_FAULT_EXIT_RANK": "1"}))
    assert "rank 0 exit 5" in line and "went away mid-protocol" in line
    # 64 tokens: the tiny model decodes a token in about 0.1 s, so 2 tokens could finish within 0.5 s
    line = _one_line(_generate_cli(tiny_model_dir, "--protocol-timeout", "0.5", "--max-new-tokens", "64"))
    assert "exit 5" in line and "did not finish within 0.5 s" in line
