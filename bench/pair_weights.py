"""Two weights paired on the same prompts under the same perturbation, from a results store: raw
keyword ASR of B against A (flips each way, McNemar's exact p pooled over seeds and per seed, a
bootstrap interval), clean and at each site of an MVA. `privinf safety compare` pairs each cell
with the same weights' clean run and the baseline's; this pairs +QuadA with +DPO directly.

    python bench/pair_weights.py results/vuln-v3/safety/generations.jsonl \
        --a smollm2-135m-safe-dpo --b smollm2-135m-safe-quada \
        --mva adapters/smollm2-135m-safe/vulnerability/mva-smollm2-135m-instruct-smollm2-135m-safe-rel.json \
        --out adapters/smollm2-135m-safe-quada/compare/quada-vs-dpo.json

Every needed generation must already be in the store (run the compare first); a missing one is
an error, never generated here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from privinf.safety import judges, stats
from privinf.safety.data import harmbench
from privinf.safety.mvaspec import parse
from privinf.safety.store import ResultsStore


def outcomes(rows: list[dict], prompts: list[str], weights: str | None, mode: str, scale=None, seed=0,
             site=None, layers=None) -> list[bool]:
    got = {}
    for r in rows:
        c = r["config"]
        if c.get("weights") != weights or c.get("mode") != mode or "response" not in r:
            continue
        if mode != "clean" and (c.get("scale") != scale or c.get("seed") != seed or c.get("sites") != [site]
                                or c.get("layers") != layers):
            continue
        got[r["prompt"]] = judges.keyword_success(r["prompt"], r["response"])
    missing = [p for p in prompts if p not in got]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(prompts)} prompts have no stored {mode} generation for weights "
                         f"{weights} (scale {scale}, seed {seed}); run `privinf safety compare` first")
    return [got[p] for p in prompts]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--a", required=True, help="weights A as the store names them ('none': the base model)")
    ap.add_argument("--b", required=True, help="weights B")
    ap.add_argument("--mva", required=True, help="the MVA JSON of `privinf safety mva` (or a spec; layers from it)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = ResultsStore(args.store).rows()
    prompts = list(harmbench().prompts)
    mva = parse(args.mva)
    layers = None if mva.layers is None else list(mva.layers)
    seeds = [int(s) for s in args.seeds.split(",")]
    a, b = (None if w == "none" else w for w in (args.a, args.b))
    cases = [("clean", "clean", None, None, [0])] + [(f"MVA {s}", f, v, s, seeds) for s, f, v in mva.noise]
    out = {"a": args.a, "b": args.b, "mva": mva.to_dict(), "metric": "raw keyword ASR, HarmBench", "cells": {}}
    for name, mode, scale, site, sd in cases:
        per = [(outcomes(rows, prompts, a, mode, scale, s, site, layers), outcomes(rows, prompts, b, mode, scale, s, site, layers))
               for s in sd]
        p = stats.paired([x for pa, _ in per for x in pa], [x for _, pb in per for x in pb]).to_dict()
        p["p_per_seed"] = [stats.paired(pa, pb).p_mcnemar for pa, pb in per]
        out["cells"][name] = p
        print(f"{name}: {args.a} {100 * p['rate_a']:.1f}% -> {args.b} {100 * p['rate_b']:.1f}%, "
              f"{100 * p['diff']:+.1f} [{100 * p['diff_lo']:+.1f}, {100 * p['diff_hi']:+.1f}] pts, "
              f"flips +{p['to_success']}/-{p['to_failure']}, McNemar p {p['p_mcnemar']:.3g} pooled, "
              f"per seed {', '.join(f'{x:.2g}' for x in p['p_per_seed'])}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
