"""Copy the generations of some weights out of a results store into a compressed JSONL, to commit
beside a reference table so that its verdicts can be re-judged without generating again.

    python bench/export_generations.py results/vuln-v3/safety/generations.jsonl \
        --weights smollm2-135m-safe-dpo,smollm2-135m-safe-quada --out adapters/smollm2-135m-safe-quada/compare/generations.jsonl.gz

Rows are the store's own (key, config, prompt, response, ...), sorted by key, so the file is the
same whatever order the runs appended them in; gunzip it into a store to reuse them
(``privinf safety ... --results DIR`` reads ``DIR/safety/generations.jsonl``).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from privinf.safety.store import ResultsStore


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a results store (<results>/safety/generations.jsonl)")
    ap.add_argument("--weights", required=True,
                    help="comma-separated weights as the store names them (the --weights given); 'none' = the base model")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="only rows generated at this length")
    ap.add_argument("--modes", default="", help="only these modes, comma-separated (clean, exact, gaussian, ...; default: all)")
    ap.add_argument("--gcg", action="store_true",
                    help="also the adaptive-GCG suffix rows (so `safety attack --attack gcg` resumes without optimising again)")
    ap.add_argument("--exclude", action="append", default=[], metavar="JSONL_GZ",
                    help="leave out rows whose key is in this earlier export (repeatable): commit only what is new")
    ap.add_argument("--out", required=True, help="output .jsonl.gz")
    args = ap.parse_args()
    wanted = {None if w.strip().lower() == "none" else w.strip() for w in args.weights.split(",") if w.strip()}
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    store = ResultsStore(args.store)
    kinds = ("response", "gcg") if args.gcg else ("response",)  # not perplexity windows; suffixes on request
    seen = set()
    for path in args.exclude:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            seen.update(json.loads(line)["key"] for line in f if line.strip())
    rows = [r for r in store.rows() if any(k in r for k in kinds) and r["config"].get("weights") in wanted
            and r["key"] not in seen
            and r["config"].get("max_new_tokens") == args.max_new_tokens
            and (not modes or r["config"].get("mode") in modes)]
    if not rows:
        raise SystemExit(f"no rows for weights {sorted(map(str, wanted))} at {args.max_new_tokens} new tokens in {args.store}")
    rows.sort(key=lambda r: r["key"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    by = {}
    for r in rows:
        by[str(r["config"].get("weights"))] = by.get(str(r["config"].get("weights")), 0) + 1
    print(f"wrote {len(rows)} rows to {out} ({', '.join(f'{k}: {v}' for k, v in sorted(by.items()))})")


if __name__ == "__main__":
    main()
