"""Write the unseen-harm evaluation prompts of an alignment run to a text file, for
``privinf safety eval --prompts FILE``: past/future-tense JailbreakBench prompts that no run
trains on, minus near duplicates of HarmBench and minus the validation sample
(``privinf.align.data.unseen_harmful_eval``).

    python bench/unseen_harmful.py --n 200 --out results/align/unseen_harmful.txt
    privinf safety eval --weights smollm2-135m-safe --prompts results/align/unseen_harmful.txt --limit 0 --benign-limit 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from privinf.align.data import unseen_harmful_eval


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="the alignment run's --seed (its validation sample is left out)")
    ap.add_argument("--out", default="results/align/unseen_harmful.txt")
    args = ap.parse_args()
    prompts = unseen_harmful_eval(args.n, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(prompts) + "\n", encoding="utf-8")
    print(f"wrote {len(prompts)} prompts to {args.out}")


if __name__ == "__main__":
    main()
