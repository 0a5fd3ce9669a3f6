"""Emulator overhead: greedy generation with the emulator attached vs plain, in one run.

    .venv/bin/python bench/emulator_overhead.py                 # default model, 1 thread
    .venv/bin/python bench/emulator_overhead.py --card puma --tokens 32 --repeats 3
    .venv/bin/python bench/emulator_overhead.py --card bolt,iron,bumblebee,puma,crypten --repeats 5

Every mode generates exactly ``--tokens`` new tokens (``min_new_tokens``) for the same prompts;
modes are interleaved within each repeat so machine drift hits all of them alike. The figure is
a mode's wall time divided by plain's: by the median of repeat totals, and by "best" (per prompt
the fastest repeat, summed: the robust figure on a shared machine); target: at most 1.15x.
Writes results/bench/emulator_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

PROMPTS = [
    "Explain how private inference keeps a user's prompt secret.",
    "Write a short poem about the sea.",
    "What are three tips for staying focused while studying?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
]


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

    from privinf.emulator import emulate
    from privinf.models import load_model
    from privinf.profile import Profile, fit_site

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    cards = args.card.split(",")
    path = Path(args.profile or f"results/profiles/{cards[0]}-plaintext-{args.model}.json")
    if path.exists():
        profile = Profile.load(path)
    else:  # the noise mode's cost does not depend on the fitted scales
        import numpy as np
        rng = np.random.default_rng(0)
        sites = {"up": fit_site(rng.normal(0, 1e-3, 10_000)), "down": fit_site(rng.laplace(0, 1e-3, 10_000))}
        profile = Profile(card=cards[0], backend="synthetic", model=args.model, layers=[], tokens=0, seed=0,
                          sites=sites)
    modes = {
        "plain": lambda: nullcontext(),
        "exact (card exact)": lambda: emulate(model, "exact", card="exact"),
        **{f"exact (card {c})": (lambda c=c: emulate(model, "exact", card=c)) for c in cards},
        "noise (profile)": lambda: emulate(model, "noise", profile=profile),
        "gaussian, layers 0-3": lambda: emulate(model, "gaussian", scale=0.01, layers=[0, 1, 2, 3]),
    }
    encoded = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True) for p in PROMPTS]

    def run(ctx, enc) -> float:
        start = time.perf_counter()
        with torch.no_grad(), ctx():
            model.generate(**enc, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                           do_sample=False, pad_token_id=tok.pad_token_id)
        return time.perf_counter() - start

    for enc in encoded:  # warm-up
        run(modes["plain"], enc)
    per = {name: [[0.0] * len(encoded) for _ in range(args.repeats)] for name in modes}  # [repeat][prompt]
    for rep in range(args.repeats):  # interleaved per prompt: drift and load spikes hit every mode alike
        for i, enc in enumerate(encoded):
            for name, ctx in modes.items():
                per[name][rep][i] = run(ctx, enc)
    # median of the repeat totals, and "best": per prompt the fastest repeat, summed (robust to load)
    med = {n: statistics.median(sum(r) for r in t) for n, t in per.items()}
    best = {n: sum(min(t[r][i] for r in range(args.repeats)) for i in range(len(encoded))) for n, t in per.items()}
    n_tok = args.tokens * len(PROMPTS)
    print(f"model {args.model}, {len(PROMPTS)} prompts x {args.tokens} new tokens (greedy), "
          f"{args.threads} thread(s), {args.repeats} repeats")
    print(f"{'mode':28s} {'median s':>9s} {'best s':>7s} {'tok/s':>7s} {'median ratio':>13s} {'best ratio':>11s}")
    rows = []
    for name, ts in per.items():
        rm, rb = med[name] / med["plain"], best[name] / best["plain"]
        rows.append({"mode": name, "median_s": med[name], "best_s": best[name], "times_s": ts,
                     "tokens_per_s": n_tok / best[name], "ratio_median": rm, "ratio_best": rb})
        print(f"{name:28s} {med[name]:9.2f} {best[name]:7.2f} {n_tok / best[name]:7.1f} {rm:12.3f}x {rb:10.3f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "card": args.card, "tokens": args.tokens, "prompts": len(PROMPTS),
                               "threads": args.threads, "repeats": args.repeats, "rows": rows}, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
