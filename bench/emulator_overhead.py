"""Emulator overhead: greedy generation with the emulator attached vs plain, in one run.

    .venv/bin/python bench/emulator_overhead.py                 # default model, 1 thread
    .venv/bin/python bench/emulator_overhead.py --card puma --tokens 32 --repeats 3
    .venv/bin/python bench/emulator_overhead.py --card bolt,iron,bumblebee,puma,crypten --repeats 5

See privinf/emulator/overhead.py for the method (interleaved modes; median and "best" ratios;
target at most 1.15x). Writes results/bench/emulator_overhead.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--card", default="bolt", help="card(s) for the exact-mode runs, comma-separated")
    ap.add_argument("--profile", default=None, help="profile JSON for noise mode "
                    "[default: results/profiles/<card>-plaintext-<model>.json, else a synthetic one]")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/bench/emulator_overhead.json")
    args = ap.parse_args()

    from privinf.emulator.overhead import measure_overhead
    from privinf.models import load_model
    from privinf.errormodel import Profile

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    cards = args.card.split(",")
    path = Path(args.profile or f"results/profiles/{cards[0]}-plaintext-{args.model}.json")
    result = measure_overhead(model, tok, cards, profile=Profile.load(path) if path.exists() else None,
                              tokens=args.tokens, repeats=args.repeats, model_name=args.model)
    print(f"model {args.model}, {result['prompts']} prompts x {args.tokens} new tokens (greedy), "
          f"{args.threads} thread(s), {args.repeats} repeats")
    print(f"{'mode':28s} {'median s':>9s} {'best s':>7s} {'tok/s':>7s} {'median ratio':>13s} {'best ratio':>11s}")
    for r in result["rows"]:
        print(f"{r['mode']:28s} {r['median_s']:9.2f} {r['best_s']:7.2f} {r['tokens_per_s']:7.1f} "
              f"{r['ratio_median']:12.3f}x {r['ratio_best']:10.3f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
