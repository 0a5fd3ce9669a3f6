"""Every mistake a user can make ends in one line ("Error: ...") with exit code 2, before any model
loads; runtime faults exit 1; PRIVINF_DEBUG=1 shows the traceback. Each ``privinf`` call below runs
with ``load_model`` replaced by a function that records the call and fails, so a test also proves
that validation came first."""

import json

import pytest
from click.testing import CliRunner

from privinf.cli import main

PEER = "127.0.0.1:29999"


@pytest.fixture
def loads(monkeypatch, tmp_path):
    """Calls that would have loaded a model (the test asserts there were none); cwd is a tmp folder."""
    import privinf.models

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(privinf.models, "load_model", refuse)
    monkeypatch.setattr(privinf.models, "resolve_model_path", refuse)
    monkeypatch.delenv("PRIVINF_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    return calls


def run(args, loads, code=2) -> str:
    """Run ``privinf ARGS``; assert the exit code, one output line, and no model load; return the line."""
    res = CliRunner().invoke(main, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == code, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert loads == [], "a model was loaded before validation"
    return lines[0]


# ------------------------------------------------------------------------------------------ reported cases


def test_unknown_card_fails_before_generating(loads):
    line = run(["safety", "eval", "--card", "nosuch"], loads)
    assert "--card 'nosuch': no protocol card by that name; known: bolt" in line


def test_missing_weights_folder(loads):
    line = run(["safety", "eval", "--weights", "/nonexistent"], loads)
    assert line == "Error: --weights: adapter folder /nonexistent does not exist"


def test_missing_prompt_file(loads):
    line = run(["safety", "eval", "--prompts", "/nonexistent.txt"], loads)
    assert "--prompts: prompt file /nonexistent.txt does not exist; allowed: harmbench, donotanswer" in line


def test_profile_layer_beyond_depth(loads):
    line = run(["profile", "--card", "bolt", "--layers", "99"], loads)
    assert "--layers '99': layer 99 is beyond the model; smollm2-135m-instruct has 30 decoder layers (0-29)" in line


def test_reversed_layer_range(loads):
    line = run(["safety", "eval", "--mode", "gaussian", "--scale", "0.1", "--layers", "5-2"], loads)
    assert "--layers '5-2': range 5-2 is reversed (did you mean 2-5?)" in line


def test_model_path_that_does_not_exist(loads):
    line = run(["safety", "eval", "--model", "/nonexistent"], loads)
    assert line == "Error: --model: model folder /nonexistent does not exist"


# ------------------------------------------------------------------------------------------ safety commands


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("w3 w4 w5\nw6 w7\n")
    return path


def _ev(prompts, *extra):
    return ["safety", "eval", "--prompts", str(prompts), "--train-prompts", "", *extra]


@pytest.mark.parametrize("extra, want", [
    (["--model", "nosuch-model"], "--model 'nosuch-model': no model card by that name and no such folder; known cards:"),
    (["--model-path", "/nonexistent"], "--model-path: model folder /nonexistent does not exist"),
    (["--layers", ""], "--layers '' names no layer"),
    (["--layers", "a-b"], "--layers 'a-b': 'a-b' is not a layer index or range"),
    (["--mode", "gaussian", "--scale", "-0.1"], "--scale -0.1: a noise scale must be a finite number >= 0"),
    (["--mode", "gaussian"], "--mode gaussian needs a noise scale (--scale, >= 0)"),
    (["--scale", "0.1"], "--scale needs --mode gaussian or --mode laplace"),
    (["--card", "bolt", "--mode", "gaussian"], "give at most one of --card, --profile, --mode"),
    (["--profile", "/nonexistent.json"], "--profile: profile file /nonexistent.json does not exist"),
    (["--mode", "gaussian", "--scale", "1", "--relative", "--ppl-tokens", "0"],
     "--ppl-tokens 0: relative scales (--relative) needs the perplexity text"),
    (["--card", "teal-25", "--ppl-tokens", "0"], "--ppl-tokens 0: card 'teal-25'"),
    (["--ppl-tokens", "100", "--ppl-window", "256"], "--ppl-tokens 100: fewer than one --ppl-window (256)"),
    (["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    (["--judge", "/nonexistent"], "--judge: model-judge folder /nonexistent does not exist"),
    (["--train-prompts", "nosuch.txt"], "--train-prompts: prompt file nosuch.txt does not exist"),
])
def test_eval_option_errors(loads, prompts, extra, want):
    assert want in run(_ev(prompts, *extra), loads)


def test_weights_folder_must_hold_an_adapter(loads, prompts, tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    assert "has no adapter_config.json" in run(_ev(prompts, "--weights", str(folder)), loads)
    (folder / "adapter_config.json").write_text("{}")
    assert "has no .safetensors file" in run(_ev(prompts, "--weights", str(folder)), loads)


def test_prompt_files_are_checked(loads, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert f"prompt file {empty} holds no prompts" in run(_ev(empty), loads)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "cut\n')
    assert f"{bad}: row 2 is not valid JSON" in run(_ev(bad), loads)
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"text": "hi"}\n')
    assert "row 1 needs a 'prompt' field" in run(_ev(nofield), loads)


def test_local_model_depth_comes_from_config_json(loads, prompts, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    assert "has no config.json" in run(_ev(prompts, "--model", str(folder)), loads)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    line = run(_ev(prompts, "--model", str(folder), "--mode", "gaussian", "--scale", "1", "--layers", "0-2"), loads)
    assert "layer 2 is beyond the model" in line and "has 2 decoder layers (0-1)" in line


def test_sweep_layers_mva_errors(loads, prompts):
    common = ["--prompts", str(prompts), "--train-prompts", ""]
    assert "--scales -1: noise scales must be finite numbers >= 0" in run(
        ["safety", "sweep", *common, "--scales", "0.1,-1"], loads)
    assert "--scales 'x': expected comma-separated numbers" in run(["safety", "sweep", *common, "--scales", "x"], loads)
    assert "--layers '5-2': range 5-2 is reversed" in run(["safety", "sweep", *common, "--layers", "5-2"], loads)
    assert "--seeds '': expected comma-separated integers" in run(["safety", "sweep", *common, "--seeds", ""], loads)
    assert "layer 40 is beyond the model" in run(["safety", "layers", *common, "--layers", "0,40"], loads)
    assert "--scale -1: noise scales must be" in run(["safety", "layers", *common, "--scale", "-1"], loads)
    assert "--candidate-layers '9-3': range 9-3 is reversed" in run(
        ["safety", "mva", *common, "--candidate-layers", "9-3"], loads)
    assert "--ppl-factor 0.5: must be >= 1" in run(["safety", "mva", *common, "--ppl-factor", "0.5"], loads)
    assert "--model 'x': no model card" in run(["safety", "throughput", "--model", "x"], loads)


# ------------------------------------------------------------------------------------------ other commands


@pytest.mark.parametrize("args, want", [
    (["demo", "--card", "nosuch"], "--card 'nosuch': no protocol card by that name"),
    (["demo", "--layer", "99"], "--layer 99: no such decoder layer; smollm2-135m-instruct has 30 decoder layers"),
    (["demo", "--model", "./nowhere"], "--model: model folder ./nowhere does not exist"),
    (["demo", "--card", "teal-25"], "card 'teal-25' cannot run on the crypten backend"),
    (["demo", "--backend", "plaintext", "--tokens", "0"], "--tokens 0: must be >= 1"),
    (["profile", "--card", "nosuch"], "--card 'nosuch': no protocol card by that name"),
    (["profile", "--card", "bolt", "--backend", "nope"], "--backend 'nope': unknown backend 'nope'"),
    (["profile", "--card", "bolt", "--layers", "3-1"], "--layers '3-1': range 3-1 is reversed"),
    (["profile", "--card", "bolt", "--model", "~/no/such/model"], "--model: model folder ~/no/such/model does not exist"),
    (["bench", "--scenario", "nosuch"], "no bench scenario with this name; known:"),
    (["bench", "--quick", "--backend", "sgx"], "--backend sgx: scenario quick has no grid rows for it"),
    (["party", "--rank", "0", "--peer", "nohost", "--card", "bolt"], "--peer 'nohost': must be HOST:PORT"),
    (["party", "--rank", "0", "--peer", PEER, "--card", "nosuch"], "--card 'nosuch': no protocol card"),
    (["party", "--rank", "0", "--peer", PEER, "--card", "bolt", "--model", "smollm2-135m-instruct", "--layer", "30"],
     "--layer 30: no such decoder layer"),
    (["party", "--rank", "0", "--peer", PEER, "--card", "bolt", "--timeout", "0"], "--timeout 0: must be > 0"),
])
def test_other_commands(loads, args, want):
    assert want in run(args, loads)


def test_bench_scenario_model_and_layer_are_checked(loads, tmp_path):
    sc = tmp_path / "s.toml"
    sc.write_text('name = "s"\nmodel = "smollm2-135m-instruct"\nlayer = 30\n[[grid]]\nbackend = "plaintext"\n'
                  'cards = ["exact"]\n')
    assert f"{sc}: field 'layer' 30: no such decoder layer" in run(["bench", "--scenario", str(sc)], loads)


# ------------------------------------------------------------------------------------------ runtime faults, debug


def test_runtime_fault_exits_1_in_one_line(loads, monkeypatch):
    import privinf.demo
    from privinf.backends.crypten_mpc import MPCRunError

    def fail(*args, **kwargs):
        raise MPCRunError("two-party run failed: rank 0 exit 5: privinf party: the peer went away")

    monkeypatch.setattr(privinf.demo, "run_mpc_demo", fail)
    line = run(["demo", "--card", "bolt"], loads, code=1)
    assert line == "Error: two-party run failed: rank 0 exit 5: privinf party: the peer went away"


def test_debug_shows_the_traceback(loads, monkeypatch):
    from privinf.errors import UsageError

    monkeypatch.setenv("PRIVINF_DEBUG", "1")
    res = CliRunner().invoke(main, ["safety", "eval", "--model", "/nonexistent"])
    assert isinstance(res.exception, UsageError) and res.exception.exit_code == 2
    assert "model folder /nonexistent does not exist" in str(res.exception)


def test_error_family():
    from privinf.backends.crypten_mpc import MPCRunError
    from privinf.fhe.params import DepthError
    from privinf.cards import CardError
    from privinf.emulator import HookpointError
    from privinf.errors import PrivinfError, RuntimeFault, UsageError
    from privinf.models import ModelNotAvailable
    from privinf.mpc.party import PartyError
    from privinf.safety.data import OverlapError

    for cls in (HookpointError, DepthError, CardError, ModelNotAvailable, OverlapError):
        assert issubclass(cls, UsageError) and cls.exit_code == 2, cls
    for cls in (MPCRunError, PartyError):
        assert issubclass(cls, RuntimeFault) and cls.exit_code == 1, cls
    assert issubclass(UsageError, PrivinfError) and issubclass(UsageError, ValueError)
    assert issubclass(ModelNotAvailable, FileNotFoundError) and issubclass(HookpointError, LookupError)


def test_evaluating_on_a_training_set_is_refused_before_loading(loads):
    # privinf align trains on AdvBench: evaluating on it is refused by default, and names both sets
    line = run(["safety", "eval", "--prompts", "advbench", "--limit", "4"], loads)
    assert "overlap the evaluation prompts" in line
    line = run(["safety", "eval", "--train-prompts", "donotanswer,nosuch"], loads)
    assert "--train-prompts" in line and "nosuch" in line
