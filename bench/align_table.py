"""Before/after table of an alignment: two ``privinf safety eval`` JSON files (the same prompts,
e.g. the base model and the model with an adapter), paired per prompt.

    python bench/align_table.py results/safety/eval-base.json results/safety/eval-safe.json \
        --labels base,aligned --out adapters/smollm2-135m-safe/evaluation

Prints (and writes as JSON + Markdown) raw and coherent ASR, degenerate rate, over-refusal and
perplexity with 95% intervals, then the paired flips of B against A with McNemar's exact p and a
bootstrap interval of the difference, and the perplexity ratio.

``--train RUN/data/train.jsonl`` adds a contamination check: the HarmBench prompts binned by the
similarity of their nearest harmful training prompt (content-word Jaccard,
``privinf.safety.data.nearest``), with both models' coherent ASR per bin. Refusals that hold only
next to the training prompts would show as a low ASR in the high bins and a high one in the low.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from privinf.report import table
from privinf.safety import data as sdata
from privinf.safety import stats
from privinf.safety import reports
from privinf.safety.runner import compare, strip


def load(path: str) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data["results"][0]  # the first configuration of an eval: clean when --weights alone


def before_after(a: dict, b: dict, labels: tuple[str, str]) -> dict:
    if a["n_harmful"] != b["n_harmful"] or a.get("n_benign") != b.get("n_benign"):
        raise SystemExit("the two evaluations used different prompt sets; rerun with the same --limit/--benign-limit")
    ratio = None
    if a.get("ppl") and b.get("ppl"):
        ratio = b["ppl"]["value"] / a["ppl"]["value"]
    return {"labels": list(labels), "a": strip(a), "b": strip(b), "paired": compare(a, b), "ppl_ratio": ratio}


BINS = (0.0, 0.1, 0.2, 0.3, 1.01)


def by_neighbour(a: dict, b: dict, train_rows: str) -> list[dict]:
    """Coherent ASR of A and B per bin of the nearest harmful training prompt's similarity."""
    rows = [json.loads(ln) for ln in Path(train_rows).read_text(encoding="utf-8").splitlines() if ln.strip()]
    train = sorted({r["prompt"] for r in rows if r.get("kind") == "harmful"})
    hb = sdata.harmbench().prompts[: a["n_harmful"]]
    sims = [j for j, _ in sdata.nearest(hb, train)]
    out = []
    for lo, hi in zip(BINS, BINS[1:]):
        idx = [i for i, j in enumerate(sims) if lo <= j < hi]
        cell = {"bin": f"[{lo:.1f}, {min(hi, 1.0):.1f}{']' if hi > 1 else ')'}", "n": len(idx)}
        for key, r in (("a", a), ("b", b)):
            cell[key] = stats.rate([r["outcomes"]["coherent_success"][i] for i in idx]).to_dict() if idx else None
        out.append(cell)
    return out


def neighbour_markdown(d: dict) -> str:
    la, lb = d["labels"]
    pct = lambda c: "-" if c is None else f"{100 * c['value']:.1f} [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]"
    rows = [[c["bin"], str(c["n"]), pct(c["a"]), pct(c["b"])] for c in d["by_neighbour"]]
    return ("\nHarmBench prompts by the similarity of their nearest harmful training prompt (coherent ASR, %):\n\n"
            + table(["nearest training prompt (Jaccard)", "prompts", la, lb], rows, markdown=True) + "\n")


def markdown(d: dict) -> str:
    headers, rows = reports.eval_rows([d["a"], d["b"]], [None, None])
    rows[0][0], rows[1][0] = d["labels"]
    ph, pr = reports.paired_rows(d["paired"])
    out = [table(headers, rows, markdown=True), "",
           f"Paired on the same prompts, {d['labels'][1]} against {d['labels'][0]}:", "",
           table(ph, pr, markdown=True)]
    if d["ppl_ratio"] is not None:
        out += ["", f"Perplexity ratio {d['labels'][1]} / {d['labels'][0]}: {d['ppl_ratio']:.3f}"]
    if d.get("by_neighbour"):
        out += [neighbour_markdown(d)]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--labels", default="before,after")
    ap.add_argument("--out", default=None, help="stem for <out>.json and <out>.md")
    ap.add_argument("--train", default=None, help="train.jsonl of the alignment run: adds the nearest-neighbour bins")
    args = ap.parse_args()
    a, b = load(args.a), load(args.b)
    d = before_after(a, b, tuple(args.labels.split(",", 1)))
    if args.train:
        d["by_neighbour"] = by_neighbour(a, b, args.train)
    md = markdown(d)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".json").write_text(json.dumps(d, indent=1), encoding="utf-8")
        Path(args.out + ".md").write_text(md, encoding="utf-8")


if __name__ == "__main__":
    main()
