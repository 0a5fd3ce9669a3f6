"""Record an adapter's measured evaluation in its provenance.json, from `privinf safety compare` JSONs.

Every cell of the given weights label is copied (its ASR, perplexity, over-refusal and paired
statistics; per-run detail left out: the compare JSON beside the generations keeps it) under the
name of the compare run it came from, with the command that measured it.

    python bench/record_evaluation.py adapters/smollm2-135m-safe-quada-all --label all-layers \\
        --compare ablations=adapters/.../table5.json --command ablations="privinf safety compare --ablations ..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DROP = ("runs", "labels")


def cells_of(compare: dict, label: str) -> dict:
    cells = {c["perturbation"]: {k: v for k, v in c.items() if k not in DROP}
             for c in compare["cells"] if c["weights"] == label}
    if not cells:
        have = sorted({c["weights"] for c in compare["cells"]})
        raise SystemExit(f"label {label!r} is not in this compare JSON; it has {', '.join(have)}")
    return cells


def pairs(specs: list[str], option: str) -> dict[str, str]:
    out = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"{option} {spec!r}: write NAME=VALUE")
        out[name] = value
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapter", type=Path, help="adapter folder holding provenance.json")
    ap.add_argument("--label", required=True, help="the adapter's --weights label in the compare runs")
    ap.add_argument("--compare", action="append", default=[], help="NAME=compare JSON (repeat)")
    ap.add_argument("--command", action="append", default=[], help="NAME=the command that wrote it (repeat)")
    args = ap.parse_args(argv)
    compares, commands = pairs(args.compare, "--compare"), pairs(args.command, "--command")
    if not compares:
        ap.error("give at least one --compare NAME=JSON")
    missing = sorted(set(compares) - set(commands))
    if missing:
        ap.error(f"no --command for {', '.join(missing)}: every recorded number names the command that measured it")
    path = args.adapter / "provenance.json"
    for f in [path, *map(Path, compares.values())]:
        if not f.is_file():
            ap.error(f"{f} does not exist: give an adapter folder with a provenance.json and compare JSONs "
                     "written by `privinf safety compare`")
    prov = json.loads(path.read_text())
    ev = prov.setdefault("evaluation", {})
    ev.setdefault("command", {}).update(commands)
    ev.setdefault("references", {}).update(compares)
    for name, file in compares.items():
        ev[name] = cells_of(json.loads(Path(file).read_text()), args.label)
    path.write_text(json.dumps(prov, indent=2))
    print(f"{path}: evaluation {', '.join(compares)} recorded ({sum(len(ev[n]) for n in compares)} cells)")


if __name__ == "__main__":
    main()
