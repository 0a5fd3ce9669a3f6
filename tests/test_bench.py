import json

from click.testing import CliRunner

from privinf.cli import main


def _scenario(tmp_path, model_dir, extra=""):
    path = tmp_path / "tiny.toml"
    path.write_text(f'''name = "tiny"
model = "{model_dir}"
layer = 1
tokens = [2, 4]
repeats = 2
baselines = {{ plaintext = "exact", crypten = "crypten" }}
[[grid]]
backend = "plaintext"
cards = ["exact", "bolt", "teal-50"]
[[grid]]
backend = "crypten"
cards = ["crypten", "bolt"]
tokens = [4]
repeats = 1
[[scaling]]
backend = "plaintext"
cards = ["exact", "puma"]
hidden_size = 48
intermediate_size = 61
tokens = [1]
repeats = 1
[extras]
safety_throughput = {{ prompts = 2, max_new_tokens = 4, batch_size = 2 }}
emulator_overhead = {{ cards = ["bolt"], tokens = 3, repeats = 1 }}
{extra}''')
    return path


def test_bench_runs_a_tiny_grid_and_every_number_is_measured(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("privinf.bench._WIKI_SAMPLE", " ".join(f"w{i}" for i in range(40)) + " ")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["bench", "--scenario", str(_scenario(tmp_path, tiny_model_dir)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text().startswith("# privinf bench: tiny")
    assert (out / "bench.png").stat().st_size > 1000
    cells = data["cells"]
    assert len(cells) == 3 * 2 + 2 + 2
    for c in cells:
        assert "skipped" not in c, c
        w = c["wall_s"]
        assert w["n"] == (1 if c["kind"] == "scaling" or c["backend"] == "crypten" else 2)
        assert 0 < w["min"] <= w["median"] <= w["max"]
        assert c["speedup"] is not None and c["speedup"] > 0
    exact = [c for c in cells if c["card"] == "exact"]
    assert all(c["max_abs_error"] == 0 and abs(c["speedup"] - 1) < 1e-12 for c in exact)
    bolt = next(c for c in cells if c["card"] == "bolt")
    assert bolt["paper_speedup"] == 24.6 and bolt["max_abs_error"] > 0
    mpc = {c["card"]: c for c in cells if c["backend"] == "crypten"}
    for c in mpc.values():  # real two-party runs: bytes, rounds and the activation phase are metered
        assert c["bytes_sent"] > 0 and c["rounds"] > 0
        assert c["activation"]["bytes_sent"] > 0 and c["activation"]["wall_s"]["median"] > 0
    assert mpc["bolt"]["activation"]["bytes_sent"] < mpc["crypten"]["activation"]["bytes_sent"]
    assert mpc["bolt"]["activation"]["bytes_ratio"] > 1
    scaling = [c for c in cells if c["kind"] == "scaling"]
    assert {c["hidden_size"] for c in scaling} == {48}
    assert "24.6x vs SIRNN" in res.output
    st = data["extras"]["safety_throughput"]
    assert st["prompts"] == 2 and st["single_tok_s"] > 0 and st["batched_tok_s"] > 0 and st["speedup"] > 0
    assert "safety harness generation" in res.output
    eo = {r["mode"]: r for r in data["extras"]["emulator_overhead"]["rows"]}
    assert set(eo) >= {"plain", "exact (card bolt)", "noise (profile)"} and eo["plain"]["ratio_best"] == 1.0
    assert all(r["best_s"] > 0 and r["ratio_best"] > 0 for r in eo.values())
    assert "emulator: exact (card bolt)" in res.output


def test_bench_rejects_bad_scenario(tmp_path, tiny_model_dir):
    bad = _scenario(tmp_path, tiny_model_dir, '[[grid]]\nbackend = "sgx"\ncards = ["exact"]\n')
    res = CliRunner().invoke(main, ["bench", "--scenario", str(bad)])
    assert res.exit_code != 0
    assert "grid[2].backend" in res.output and "allowed: plaintext, crypten, tenseal" in res.output, res.output
