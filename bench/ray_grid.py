"""A safety sweep serial (one process, 2 torch threads) against the same sweep on Ray workers
(``--workers 2``, one thread each), side by side in one run, each from an empty results store.

    python bench/ray_grid.py                       # default model, clean + 3 noise scales
    python bench/ray_grid.py --limit 8 --max-new-tokens 16   # a quick check

Each leg is the whole ``privinf safety sweep`` command (model load and Ray start included),
timed from the outside. Writes results/bench/ray_grid.json and .md: wall seconds of each leg,
the ratio serial / workers, whether the two legs stored the same generations, and the load
average around each leg (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


def sweep_command(a, results: Path, pooled: bool) -> list[str]:
    cmd = [sys.executable, "-m", "privinf.cli", "safety", "sweep", "--model", a.model, "--prompts", a.prompts,
           "--limit", str(a.limit), "--benign-limit", str(a.benign_limit), "--ppl-tokens", str(a.ppl_tokens),
           "--ppl-window", str(a.ppl_window), "--max-new-tokens", str(a.max_new_tokens), "--batch-size",
           str(a.batch_size), "--site", "up", "--scales", a.scales, "--seeds", "0", "--layers", a.layers,
           "--train-prompts", a.train_prompts, "--results", str(results), "--no-progress"]
    return cmd + (["--workers", str(a.workers), "--threads", "1"] if pooled else ["--threads", str(a.serial_threads)])


def leg(cmd: list[str], log: Path) -> dict:
    load0, quiet = os.getloadavg(), os.path.exists("/tmp/privinf-quiet")
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"}).returncode
    secs = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"leg failed (exit {rc}): {shlex.join(cmd)}\n" + log.read_text()[-3000:])
    return {"command": shlex.join(cmd), "seconds": round(secs, 2), "loadavg_before": load0,
            "loadavg_after": os.getloadavg(), "quiet_flag": quiet,
            "log": str(log)}


def generations(results: Path) -> dict:
    rows = [json.loads(x) for x in (results / "safety" / "generations.jsonl").read_text().splitlines() if x.strip()]
    return {r["key"]: r.get("response", r.get("window_nll")) for r in rows}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", default="harmbench")
    p.add_argument("--limit", type=int, default=32)
    p.add_argument("--benign-limit", type=int, default=0)
    p.add_argument("--ppl-tokens", type=int, default=1024)
    p.add_argument("--ppl-window", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--scales", default="0.01,0.02,0.04", help="with clean: len + 1 configurations")
    p.add_argument("--layers", default="0-3")
    p.add_argument("--train-prompts", default="donotanswer")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--serial-threads", type=int, default=2)
    p.add_argument("--out", default="results/bench")
    a = p.parse_args()

    out = Path(a.out)
    work = out / f"ray_grid-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    legs = {}
    for name, pooled in (("serial", False), ("workers", True)):
        legs[name] = leg(sweep_command(a, work / name, pooled), work / f"{name}.log")
        print(f"{name}: {legs[name]['seconds']:.1f} s  ({legs[name]['command']})", flush=True)
    gs, gw = generations(work / "serial"), generations(work / "workers")
    same = sum(gs[k] == gw.get(k) for k in gs)
    ratio = legs["serial"]["seconds"] / legs["workers"]["seconds"]
    n_cfg = len(a.scales.split(",")) + 1
    res = {"kind": "ray_grid", "configurations": n_cfg, "options": vars(a), "legs": legs, "ratio": round(ratio, 3),
           "target": 1.6, "same_generations": same, "rows": len(gs), "cpus": os.cpu_count(),
           "quiet_flag": os.path.exists("/tmp/privinf-quiet"), "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "work": str(work)}
    (out / "ray_grid.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [f"# Safety sweep serial vs Ray workers ({n_cfg} configurations of {a.model})", "",
          f"{res['date']}, {res['cpus']} CPUs; /tmp/privinf-quiet {'present' if res['quiet_flag'] else 'absent'}.", "",
          "| leg | seconds | load average before / after (1 min) | command |", "| --- | --- | --- | --- |"]
    for name, lg in legs.items():
        md.append(f"| {name} | {lg['seconds']:.1f} | {lg['loadavg_before'][0]:.2f} / {lg['loadavg_after'][0]:.2f} "
                  f"| `{lg['command'].replace(sys.executable, 'python')}` |")
    md += ["", f"Ratio serial / workers: **{ratio:.2f}x** (target >= 1.6x). Same stored rows (generations and "
           f"perplexity windows) in both legs: {same} of {len(gs)}.", ""]
    (out / "ray_grid.md").write_text("\n".join(md))
    print("\n".join(md[-2:]))
    print(f"wrote {out / 'ray_grid.json'}, {out / 'ray_grid.md'}")


if __name__ == "__main__":
    main()
