"""The generations store under faults: two processes appending to one file, lines cut short by a
killed process, rows appended by another writer after this one started reading."""

import json
import multiprocessing as mp
import warnings

import pytest

ROWS, BATCH = 120, 3  # per writer: 120 rows in batches of 3, each line about 6 KB


def _writer(path: str, name: str, start) -> None:
    from privinf.safety.store import ResultsStore  # no torch: the writers start fast

    store = ResultsStore(path)
    start.wait(60)  # both writers begin together
    for i in range(0, ROWS, BATCH):
        store.append([{"key": f"{name}-{j}", "prompt": f"p{j}", "response": name * 6000} for j in range(i, i + BATCH)])
    assert len(store) >= ROWS


def test_two_processes_append_without_losing_or_mixing_lines(tmp_path):
    from privinf.safety.store import ResultsStore

    path = tmp_path / "generations.jsonl"
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), name, start)) for name in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(600)
    assert [p.exitcode for p in procs] == [0, 0]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # the file ends with a complete line
    rows = [json.loads(ln) for ln in lines[:-1]]  # every line parses
    assert len(rows) == 2 * ROWS
    assert {r["key"] for r in rows} == {f"{n}-{j}" for n in "ab" for j in range(ROWS)}
    assert all(r["response"] == r["key"][0] * 6000 for r in rows)  # no line mixes two writers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unreadable line
        assert len(ResultsStore(path)) == 2 * ROWS


def test_readers_see_rows_other_writers_appended(tmp_path):
    from privinf.safety.config import RunConfig, prompt_key
    from privinf.safety.store import ResultsStore

    path = tmp_path / "g.jsonl"
    cfg = RunConfig(model="m")
    a, b = ResultsStore(path), ResultsStore(path)
    b.append([{"key": prompt_key(cfg, "p1"), "prompt": "p1", "response": "from b"}])
    assert a.get(cfg, "p1")["response"] == "from b"  # an unseen key looks at the file again
    b.append([{"key": prompt_key(cfg, "p2"), "prompt": "p2", "response": "from b"}])
    assert a.refresh() == 1 and len(a) == 2
    # both wrote p3 (a race): the first stored row is the one every reader uses, the second is not written
    first = b.append([{"key": prompt_key(cfg, "p3"), "prompt": "p3", "response": "first"}])
    second = a.append([{"key": prompt_key(cfg, "p3"), "prompt": "p3", "response": "second"}])
    assert first[0]["response"] == second[0]["response"] == "first"
    assert len(path.read_text().splitlines()) == 3
    assert ResultsStore(path).get(cfg, "p3")["response"] == "first"
    b.append([{"key": prompt_key(cfg, "p4"), "prompt": "p4", "response": "from b"}])
    assert [r["prompt"] for r in a.rows()] == ["p1", "p2", "p3", "p4"]  # rows() reads the others' first


def test_cut_and_garbage_lines_are_skipped_with_a_warning_and_regenerated(tiny_model_dir, tmp_path):
    from privinf.models import load_model
    from privinf.safety.config import RunConfig
    from privinf.safety.generate import ResultsStore, generate

    model, tok = load_model(str(tiny_model_dir))
    cfg = RunConfig(model=str(tiny_model_dir), max_new_tokens=5)
    prompts = [f"w{i} w{i + 1} w{i + 2}" for i in range(3, 30, 3)]  # 9 prompts
    path = tmp_path / "generations.jsonl"
    first = generate(model, tok, cfg, prompts, ResultsStore(path), batch_size=4, progress=False)
    lines = path.read_text().splitlines()
    assert len(lines) == len(prompts)
    lost = {json.loads(lines[4])["prompt"], json.loads(lines[-1])["prompt"]}
    lines[4] = "\x00garbage{not json"  # a damaged middle line
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-line

    with pytest.warns(RuntimeWarning, match=r"skipped 2 unreadable line\(s\)") as caught:
        store = ResultsStore(path)
    assert len(caught) == 1 and store.skipped == 2 and len(store) == len(prompts) - 2
    batches = []
    again = generate(model, tok, cfg, prompts, store, batch_size=4, progress=False, on_batch=batches.append)
    assert batches == [0]  # one batch: the two lost prompts only
    assert {r["prompt"] for r in again} == set(prompts) and [r["prompt"] for r in again] == prompts
    assert [r["response"] for r in again] == [r["response"] for r in first]  # greedy: the same responses
    assert {json.loads(ln)["prompt"] for ln in path.read_text().splitlines()[-2:]} == lost
    with pytest.warns(RuntimeWarning):  # the damaged lines stay in the file; every new reader skips them
        assert len(ResultsStore(path)) == len(prompts)


def test_append_waits_for_the_lock(tmp_path):
    import threading
    import time

    from filelock import FileLock

    from privinf.safety.store import ResultsStore

    store = ResultsStore(tmp_path / "g.jsonl")
    other = FileLock(str(store.path) + ".lock")  # another writer (flock: a separate open file conflicts)
    with other:
        t = threading.Thread(target=store.append, args=([{"key": "k", "response": "r"}],))
        t.start()
        time.sleep(0.5)
        assert t.is_alive() and not store.path.exists()  # blocked while the other writer holds the lock
    t.join(10)
    assert not t.is_alive() and json.loads(store.path.read_text())["key"] == "k"
