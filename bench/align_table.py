"""Before/after table of an alignment: two ``privinf safety eval`` JSON files (the same prompts,
e.g. the base model and the model with an adapter), paired per prompt.

    python bench/align_table.py results/safety/eval-base.json results/safety/eval-safe.json \
        --labels base,aligned --out adapters/smollm2-135m-safe/evaluation

Prints (and writes as JSON + Markdown) raw and coherent ASR, degenerate rate, over-refusal and
perplexity with 95% intervals, then the paired flips of B against A with McNemar's exact p and a
bootstrap interval of the difference, and the perplexity ratio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from privinf.report import table
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


def markdown(d: dict) -> str:
    headers, rows = reports.eval_rows([d["a"], d["b"]], [None, None])
    rows[0][0], rows[1][0] = d["labels"]
    ph, pr = reports.paired_rows(d["paired"])
    out = [table(headers, rows, markdown=True), "",
           f"Paired on the same prompts, {d['labels'][1]} against {d['labels'][0]}:", "",
           table(ph, pr, markdown=True)]
    if d["ppl_ratio"] is not None:
        out += ["", f"Perplexity ratio {d['labels'][1]} / {d['labels'][0]}: {d['ppl_ratio']:.3f}"]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--labels", default="before,after")
    ap.add_argument("--out", default=None, help="stem for <out>.json and <out>.md")
    args = ap.parse_args()
    d = before_after(load(args.a), load(args.b), tuple(args.labels.split(",", 1)))
    md = markdown(d)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".json").write_text(json.dumps(d, indent=1), encoding="utf-8")
        Path(args.out + ".md").write_text(md, encoding="utf-8")


if __name__ == "__main__":
    main()
