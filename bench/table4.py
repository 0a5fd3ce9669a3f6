"""The paper's Table 4 for one model from the JSONs of several `privinf safety attack` runs: one row
per (weights, configuration), one column per attack (best-of-k coherent ASR with its 95% Wilson
interval; coherent and strict judges), and each requested pair of weights compared prompt by prompt under every attack both
ran (flips each way, McNemar's exact p, a bootstrap interval on the difference).

    python bench/table4.py results/vuln-v3/safety/attack-*.json \
        --pair smollm2-135m-safe:smollm2-135m-safe-quada --pair smollm2-135m-safe-dpo:smollm2-135m-safe-quada \
        --out adapters/smollm2-135m-safe-quada/attacks/table4

Pieces come from separate runs (transfer attacks for every weights, adaptive GCG only where it was
run, the MVA rows), so a cell missing from every JSON is shown as "-". A cell given by two JSONs
must agree outcome for outcome (they read the same store); otherwise it is an error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from privinf.report import table
from privinf.safety import stats

ORDER = ["none", "gcg", "gcg-transfer", "autodan", "dra", "tap", "inthewild"]


def load_cells(paths: list[str]) -> tuple[dict, dict]:
    """{(weights, label): {attack: cell}} over all the JSONs, and the prompt set each came from."""
    rows: dict[tuple[str, str], dict] = {}
    sets = {}
    for p in paths:
        try:
            d = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{p}: cannot read it as a JSON of `privinf safety attack` ({e})")
        if not isinstance(d, dict) or d.get("kind") != "attack":
            raise SystemExit(f"{p} is not the JSON of `privinf safety attack`")
        sets[p] = d.get("prompt_set")
        for r in d["rows"]:
            key = (str(r["weights"] or "base"), r["label"])
            have = rows.setdefault(key, {})
            for a, cell in r["cells"].items():
                if a in have and have[a]["outcomes"] != cell["outcomes"]:
                    raise SystemExit(f"{key} {a}: two JSONs disagree on the outcomes (different stores or prompts?)")
                have.setdefault(a, cell)
    if len(set(sets.values())) > 1:
        raise SystemExit(f"the JSONs were run on different prompt sets: {sets}")
    return rows, sets


def pct(r: dict) -> str:
    return f"{100 * r['value']:.0f} [{100 * r['lo']:.0f}, {100 * r['hi']:.0f}]"


def build(rows: dict, pairs: list[tuple[str, str]]) -> dict:
    attacks = [a for a in ORDER if any(a in c for c in rows.values())]
    attacks += sorted({a for c in rows.values() for a in c} - set(attacks))
    table = []
    for (w, label), cells in rows.items():
        table.append({"weights": w, "label": label, "cells": {
            a: {"k": c["k"], "n": c["n_prompts"], "best_of_k_coherent": c["best_of_k"]["coherent_asr"],
                "best_of_k_raw": c["best_of_k"]["raw_asr"], "best_of_k_strict": c["best_of_k"].get("strict_asr"),
                "vs_none": c.get("vs_none")}
            for a, c in cells.items()}})
    compared = []
    for a_w, b_w in pairs:
        for label in dict.fromkeys(lab for _, lab in rows):
            ca, cb = rows.get((a_w, label)), rows.get((b_w, label))
            if ca is None or cb is None:
                continue
            for att in attacks:
                if att in ca and att in cb:
                    out = {"a": a_w, "b": b_w, "label": label, "attack": att}
                    for kind in ("coherent_success", "success", "strict_success"):
                        if kind in ca[att]["outcomes"] and kind in cb[att]["outcomes"]:
                            out[kind] = stats.paired(ca[att]["outcomes"][kind], cb[att]["outcomes"][kind]).to_dict()
                    compared.append(out)
    return {"kind": "privinf-table4", "attacks": attacks, "rows": table, "pairs": compared}


JUDGES = [("coherent", "coherent ASR (keyword judge of Zou et al., degenerate responses excluded)"),
          ("strict", "strict ASR (coherent, and none of the refusal sentences privinf's alignment data teaches)")]


def markdown(res: dict, sources: dict) -> str:
    atts = res["attacks"]
    lines = ["# Table 4: jailbreak attacks, best-of-k ASR % [95% Wilson]", "",
             f"Prompts: {next(iter(sources.values()))}. From: " + ", ".join(f"`{Path(p).name}`" for p in sources) + ".",
             "A prompt falls if any of the attack's k templates succeeds (k in the JSON); '-' = not run."]
    for judge, title in JUDGES:
        rows = [[f"{r['weights']} / {r['label']}",
                 *[pct(r["cells"][a][f"best_of_k_{judge}"]) if r["cells"].get(a, {}).get(f"best_of_k_{judge}") else "-"
                   for a in atts]] for r in res["rows"]]
        lines += ["", f"## {title}", "", table(["weights / config", *atts], rows, markdown=True)]
    for judge, title in JUDGES:
        rows = []
        for p in res["pairs"]:
            c = p.get(f"{judge}_success")
            if c:
                rows.append([p["a"], p["b"], p["label"], p["attack"], f"{100 * c['rate_a']:.0f}", f"{100 * c['rate_b']:.0f}",
                             f"{100 * c['diff']:+.0f} [{100 * c['diff_lo']:+.0f}, {100 * c['diff_hi']:+.0f}]",
                             f"+{c['to_success']}/-{c['to_failure']}", f"{c['p_mcnemar']:.3g}"])
        if rows:
            lines += ["", f"## Paired, same prompts (B against A): {title.split(' (')[0]}, best-of-k", "",
                      table(["A", "B", "config", "attack", "A %", "B %", "B - A pts [95% CI]", "flips up/down",
                             "McNemar p"], rows, markdown=True)]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jsons", nargs="+", help="JSONs written by `privinf safety attack`")
    ap.add_argument("--pair", action="append", default=[], metavar="A:B",
                    help="compare weights B against weights A prompt by prompt (repeatable)")
    ap.add_argument("--out", required=True, help="output stem: writes STEM.json and STEM.md")
    args = ap.parse_args()
    pairs = []
    for p in args.pair:
        a, sep, b = p.partition(":")
        if not sep or not a or not b:
            raise SystemExit(f"--pair {p!r}: give A:B (weights names as the attack JSONs show them)")
        pairs.append((a, b))
    rows, sources = load_cells(args.jsons)
    known = {w for w, _ in rows}
    for a, b in pairs:
        for w in (a, b):
            if w not in known:
                raise SystemExit(f"--pair names weights {w!r}, not in any JSON (have: {', '.join(sorted(known))})")
    res = build(rows, pairs)
    res["sources"] = sources
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res, sources))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
