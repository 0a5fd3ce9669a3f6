"""Safety grids on Ray (``--workers``): the same generations as serial, a killed worker replaced,
every configuration stored exactly once; Ray stays unimported without the options.

One local Ray (2 CPUs) for the module; a tiny random model; each pool starts its own actors."""

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

WORDS = [f"w{i}" for i in range(3, 90)]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random llama folder (word-level tokenizer with a chat template) and a prompt file."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from privinf.models import tiny_model

    d = tmp_path_factory.mktemp("tiny")
    model = tiny_model("llama", seed=0)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(d / "model")
    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2} | {w: i for i, w in enumerate(WORDS, 3)} | {"[UNK]": 98}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    tok.chat_template = "{% for m in messages %}w3 {{ m['content'] }} w4 {% endfor %}w5"
    tok.save_pretrained(d / "model")
    (d / "harmful.txt").write_text("\n".join(" ".join(WORDS[i:i + 3 + i % 4]) for i in range(0, 40, 5)) + "\n")
    return d


def _args(tiny, results):
    return ["--model", str(tiny / "model"), "--prompts", str(tiny / "harmful.txt"), "--benign-limit", "0",
            "--ppl-tokens", "32", "--ppl-window", "8", "--max-new-tokens", "8", "--batch-size", "3",
            "--train-prompts", "", "--results", str(results), "--no-progress"]


def _cli(args):
    from privinf.cli import main

    res = CliRunner().invoke(main, ["safety", *args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def _store(results) -> list[dict]:
    lines = (results / "safety" / "generations.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def test_help_does_not_import_ray():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom privinf.cli import main\n"
            "for a in (['--help'], ['safety', 'sweep', '--help']):\n"
            "    r = CliRunner().invoke(main, a)\n    assert r.exit_code == 0, r.output\n"
            "assert '--workers' in r.output and '--ray-address' in r.output\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bad_workers_and_unreachable_address_are_usage_errors(tiny, tmp_path):
    from privinf.cli import main

    res = CliRunner().invoke(main, ["safety", "sweep", *_args(tiny, tmp_path), "--workers", "0"])
    assert res.exit_code == 2 and "--workers 0: must be >= 1" in res.output
    res = CliRunner().invoke(main, ["safety", "layers", *_args(tiny, tmp_path), "--ray-address", "127.0.0.1:9"])
    assert res.exit_code == 2 and "--ray-address 127.0.0.1:9: nothing answers there" in res.output
    res = CliRunner().invoke(main, ["safety", "mva", *_args(tiny, tmp_path), "--ray-address", "nohost"])
    assert res.exit_code == 2 and "HOST:PORT" in res.output


def test_workers_make_the_same_generations_as_serial(ray_local, tiny, tmp_path):
    grid = ["sweep", "--scales", "0.5,4", "--seeds", "0,1", "--layers", "0-1"]
    _cli([*grid, *_args(tiny, tmp_path / "serial")])
    out = _cli([*grid, *_args(tiny, tmp_path / "pool"), "--workers", "2"])
    assert out.count("done ") == 5  # a line per configuration: clean + 2 scales x 2 seeds
    serial, pool = _store(tmp_path / "serial"), _store(tmp_path / "pool")
    assert len(serial) == 5 * 8 + 5  # 8 prompts and one perplexity row per configuration
    assert {r["key"]: r.get("response", r.get("window_nll")) for r in serial} == \
        {r["key"]: r.get("response", r.get("window_nll")) for r in pool}
    a, b = ([json.loads(p.read_text()) for p in sorted((d / "safety").glob("sweep-*.json"))]
            for d in (tmp_path / "serial", tmp_path / "pool"))
    assert [x["points"] for x in a] == [x["points"] for x in b] and a[0]["clean"] == b[0]["clean"]


def test_a_killed_worker_is_replaced_and_the_rerun_stores_nothing_twice(ray_local, tiny, tmp_path):
    from privinf.commands import gridopts
    from privinf.safety.config import RunConfig
    from privinf.safety.grid import Pool
    from privinf.safety.runner import EvalTask, load_harness

    kw = dict(harmful=str(tiny / "harmful.txt"), benign_limit=0, ppl_tokens=0, store_path=tmp_path / "g.jsonl",
              batch_size=2, train_prompts=None, progress=False)
    base = RunConfig(model=str(tiny / "model"), mode="gaussian", scale=1.0, max_new_tokens=24)
    tasks = [EvalTask(base.with_(seed=s), ppl=False) for s in range(6)]
    pool = Pool(lambda w: gridopts.worker_harness(str(tiny / "model"), kw, w), workers=2)
    pids, killed = pool.pids(), []

    def kill_the_other(p, i, task, res):
        if not killed:
            killed.append(pids[1 - i])
            os.kill(pids[1 - i], signal.SIGKILL)

    h = load_harness(str(tiny / "model"), load_weights=False, **kw)
    try:
        got = pool.run(h, tasks, on_result=kill_the_other)
        assert killed and pool.restarts == 1 and len(got) == 6
        rows = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines() if x.strip().endswith("}")]
        keys = [r["key"] for r in rows]
        want = {k for t in tasks for k in t.prompt_keys(h)}
        assert len(keys) == len(set(keys)) == len(want) and set(keys) == want  # each generation once
        size = (tmp_path / "g.jsonl").stat().st_size
        again = pool.run(h, tasks)  # the rerun finds everything stored
        assert (tmp_path / "g.jsonl").stat().st_size == size and again.keys() == got.keys()
    finally:
        pool.close()
    serial = load_harness(str(tiny / "model"), **(kw | {"store_path": tmp_path / "serial.jsonl"}))
    for t in tasks:  # the pooled results are the serial ones
        assert t.run(serial)["outcomes"] == got[t.key()]["outcomes"]
