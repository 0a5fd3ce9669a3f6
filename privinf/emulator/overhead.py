"""Emulator overhead: greedy generation with the emulator attached vs plain, measured in one run.

Every mode generates exactly ``tokens`` new tokens (``min_new_tokens``) for the same prompts;
modes are interleaved within each repeat so machine drift hits all of them alike. A mode's figure
is its wall time divided by plain's: by the median of repeat totals, and by "best" (per prompt the
fastest repeat, summed: the robust figure on a shared machine). Issue target: at most 1.15x.
Used by ``bench/emulator_overhead.py`` and by ``privinf bench``'s ``emulator_overhead`` extra.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

PROMPTS = (
    "Explain how private inference keeps a user's prompt secret.",
    "Write a short poem about the sea.",
    "What are three tips for staying focused while studying?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
)


def _synthetic_profile(card: str, model_name: str):
    """A profile for noise mode when no measured one is at hand (its cost does not depend on the scales)."""
    import numpy as np

    from privinf.errormodel import Profile, fit_site
    rng = np.random.default_rng(0)
    sites = {"up": fit_site(rng.normal(0, 1e-3, 10_000)), "down": fit_site(rng.laplace(0, 1e-3, 10_000))}
    return Profile(card=card, backend="synthetic", model=model_name, layers=[], tokens=0, seed=0, sites=sites)


def measure_overhead(model, tokenizer, cards: list[str], *, profile=None, tokens: int = 32, repeats: int = 3,
                     prompts=PROMPTS, model_name: str = "") -> dict:
    """Time plain generation and every emulator mode on ``prompts``; returns rows with both ratios."""
    from privinf.emulator import emulate

    from privinf.emulator.hookpoints import decoder_layers

    profile = profile or _synthetic_profile(cards[0], model_name)
    first = list(range(min(4, len(decoder_layers(model)))))  # the sensitive layers 0-3
    modes = {
        "plain": lambda: nullcontext(),
        "exact (card exact)": lambda: emulate(model, "exact", card="exact"),
        **{f"exact (card {c})": (lambda c=c: emulate(model, "exact", card=c)) for c in cards},
        "noise (profile)": lambda: emulate(model, "noise", profile=profile),
        f"gaussian, layers 0-{first[-1]}": lambda: emulate(model, "gaussian", scale=0.01, layers=first),
    }
    encoded = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             return_tensors="pt", return_dict=True) for p in prompts]

    def run(ctx, enc) -> float:
        start = time.perf_counter()
        with torch.no_grad(), ctx():
            model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)
        return time.perf_counter() - start

    for enc in encoded:  # warm-up
        run(modes["plain"], enc)
    per = {name: [[0.0] * len(encoded) for _ in range(repeats)] for name in modes}  # [repeat][prompt]
    for rep in range(repeats):  # interleaved per prompt: drift and load spikes hit every mode alike
        for i, enc in enumerate(encoded):
            for name, ctx in modes.items():
                per[name][rep][i] = run(ctx, enc)
    med = {n: statistics.median(sum(r) for r in t) for n, t in per.items()}
    best = {n: sum(min(t[r][i] for r in range(repeats)) for i in range(len(encoded))) for n, t in per.items()}
    n_tok = tokens * len(prompts)
    rows = [{"mode": n, "median_s": med[n], "best_s": best[n], "times_s": per[n], "tokens_per_s": n_tok / best[n],
             "ratio_median": med[n] / med["plain"], "ratio_best": best[n] / best["plain"]} for n in per]
    return {"model": model_name, "cards": list(cards), "tokens": tokens, "prompts": len(prompts),
            "threads": torch.get_num_threads(), "repeats": repeats, "rows": rows}
