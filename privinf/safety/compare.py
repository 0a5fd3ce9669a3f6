"""``privinf safety compare``: several weights x several perturbations, each paired against the
same weights' clean run, plus Table 5's ablation rows and Figures 7/8's curves.

- weights: ``label=adapter`` (``none`` = the base model), e.g. base, the aligned baseline, +DPO, +QuadA;
- perturbations: clean; the MVA (one configuration per site it names, since a configuration
  carries one noise family: N(0, s^2) before W_up, Lap(0, b) before W_down, on its layers);
  protocol cards in exact mode (every layer, both sites); measured profiles in noise mode;
- per cell: raw, coherent and strict ASR (strict: coherent, and holding no refusal sentence of
  privinf's alignment data, ``judges.has_trained_refusal``), PPL, over-refusal (mean ± sd over
  seeds where the noise is random, one run where it is not), and paired against the same
  weights' clean run: flips each way, McNemar's exact p and a bootstrap 95% interval, pooled over
  seeds (every prompt x seed is a pair; per-seed p-values are kept too); and against the baseline weights' clean run (coherent and
  strict ASR, PPL ratio, over-refusal difference), the numbers the QuadA targets are stated in.

Every generation goes through the harness's results store, so an interrupted grid resumes and a
grid run in pieces (a few cards or weights at a time) costs nothing to assemble at the end.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from privinf.errors import UsageError
from privinf.report import table
from privinf.safety import stats
from privinf.safety.config import RunConfig, layer_spec
from privinf.safety.mvaspec import MVA
from privinf.safety.reports import save_figure, spread_cell
from privinf.safety.runner import EvalTask, Harness, strip, sweep, sweep_configs

DEFAULT_CARDS = ("iron", "bolt", "bumblebee", "puma", "nexus", "teal-25", "teal-50",
                 "smoothquant-a8", "smoothquant-a4", "omniquant-a8", "omniquant-a4")
PAPER_TABLE5 = {"NA": 61.84, "LA": 45.79, "MVA": 0.19}  # ASR % under approximation, Llama-3.1-8B
KINDS = {"success": "raw ASR", "coherent_success": "coherent ASR", "strict_success": "strict ASR",
         "benign_refused": "over-refusal"}


@dataclass(frozen=True)
class Weights:
    label: str
    path: str | None  # None: the base model


def parse_weights(specs, option: str = "--weights") -> list[Weights]:
    """``label=adapter``, ``adapter`` (labelled by its folder name) or ``label=none`` (the base model)."""
    out = []
    for spec in specs or ("base=none",):
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = Path(spec).name or spec, spec
        label, path = label.strip(), path.strip()
        if not label:
            raise UsageError(f"{option} {spec!r}: empty label; write label=adapter, e.g. quada=results/align/quada/adapter")
        out.append(Weights(label, None if path.lower() in ("none", "base", "") else path))
    labels = [w.label for w in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UsageError(f"{option}: label {dup[0]!r} is given twice; each weights needs its own label")
    return out


@dataclass(frozen=True)
class Perturbation:
    label: str
    kind: str  # clean | mva | card | profile
    fields: tuple  # RunConfig fields, as (name, value) pairs
    random: bool  # noise: one run per seed

    def config(self, base: RunConfig, seed: int) -> RunConfig:
        return base.clean() if self.kind == "clean" else base.with_(**dict(self.fields), seed=seed if self.random else 0)


def perturbations(cards=(), mva: MVA | None = None, mva_layers=None, profiles=()) -> list[Perturbation]:
    out = [Perturbation("clean", "clean", (), False)]
    if mva is not None:
        base = RunConfig()
        for c in mva.site_configs(base, mva_layers):
            where = "all" if mva_layers is None else layer_spec(mva_layers)
            label = f"MVA {c.sites[0]} {c.mode} {c.scale:g}{'x std' if c.relative else ''} L{where}"
            out.append(Perturbation(label, "mva", (("mode", c.mode), ("scale", c.scale), ("relative", c.relative),
                                                   ("sites", c.sites), ("layers", c.layers)), True))
    for card in cards:
        out.append(Perturbation(card, "card", (("mode", "exact"), ("card", card)), False))
    for prof in profiles:
        out.append(Perturbation(f"profile {Path(prof).stem}", "profile", (("mode", "noise"), ("profile", str(prof))), True))
    return out


# ------------------------------------------------------------------------------------------ one cell


def pooled(clean: dict, runs: list[dict], kind: str) -> dict | None:
    """Paired stats of ``runs`` against ``clean`` with every (prompt, seed) a pair."""
    if not runs or any(kind not in r["outcomes"] for r in runs + [clean]):
        return None
    a = [x for _ in runs for x in clean["outcomes"][kind]]
    b = [x for r in runs for x in r["outcomes"][kind]]
    out = stats.paired(a, b).to_dict()
    out["p_per_seed"] = [stats.paired(clean["outcomes"][kind], r["outcomes"][kind]).p_mcnemar for r in runs]
    return out


def summarize(runs: list[dict], clean: dict) -> dict:
    def sp(key):
        return stats.spread([r[key]["value"] for r in runs if r.get(key)])

    return {"seeds": [r["config"]["seed"] for r in runs], "labels": [r["label"] for r in runs],
            "raw_asr": sp("raw_asr"), "coherent_asr": sp("coherent_asr"), "strict_asr": sp("strict_asr"),
            "degenerate": sp("degenerate"),
            "over_refusal": sp("over_refusal"), "ppl": sp("ppl"),
            "vs_clean": {k: pooled(clean, runs, k) for k in KINDS}}


def _versus_baseline(cell: dict, runs: list[dict], base_clean: dict) -> dict:
    ppl0 = (base_clean.get("ppl") or {}).get("value")
    orr0 = (base_clean.get("over_refusal") or {}).get("value")
    return {"coherent_success": pooled(base_clean, runs, "coherent_success"),
            "success": pooled(base_clean, runs, "success"),
            "strict_success": pooled(base_clean, runs, "strict_success"),
            "ppl_ratio": None if not ppl0 or not cell["ppl"]["n"] else cell["ppl"]["mean"] / ppl0,
            "over_refusal_diff": None if orr0 is None or not cell["over_refusal"]["n"]
            else cell["over_refusal"]["mean"] - orr0}


# ------------------------------------------------------------------------------------------ the grid


HarnessFor = Callable[[Weights], tuple[Harness, RunConfig]]


def grid(harness_for: HarnessFor, weights: list[Weights], perts: list[Perturbation], seeds: list[int],
         baseline: str | None = None, benign: bool = True) -> dict:
    """Evaluate every (weights, perturbation); ``harness_for`` loads one weights at a time."""
    cells, cleans, runs_of = [], {}, {}
    for w in weights:
        h, base = harness_for(w)
        h.prefetch([EvalTask(base.clean(), benign)] + [EvalTask(p.config(base, s), benign) for p in perts
                                                        if p.kind != "clean" for s in (seeds if p.random else seeds[:1])])
        clean = h.evaluate(base.clean(), benign=benign)
        cleans[w.label] = clean
        for p in perts:
            runs = [clean] if p.kind == "clean" else [
                h.evaluate(p.config(base, s), benign=benign) for s in (seeds if p.random else seeds[:1])]
            cells.append({"weights": w.label, "adapter": w.path, "perturbation": p.label, "kind": p.kind,
                          **summarize(runs, clean), "runs": [strip(r) for r in runs]})
            runs_of[(w.label, p.label)] = runs
        del h
        gc.collect()
    if baseline is not None:
        for c in cells:
            c["vs_baseline"] = _versus_baseline(c, runs_of[(c["weights"], c["perturbation"])], cleans[baseline])
    return {"kind": "compare", "weights": [w.__dict__ for w in weights], "perturbations": [p.label for p in perts],
            "seeds": list(seeds), "baseline": baseline, "cells": cells,
            "clean": {k: strip(v) for k, v in cleans.items()}}


def _paired_cell(p: dict | None) -> str:
    if not p:
        return "-"
    return f"{100 * p['diff']:+.1f} [{100 * p['diff_lo']:+.1f}, {100 * p['diff_hi']:+.1f}]"


def grid_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    headers = ["weights", "perturbation", "runs", "raw ASR %", "coherent ASR %", "strict ASR %", "PPL", "over-refusal %",
               "coh. vs clean (pts) [95% CI]", "coh. flips +/-", "McNemar p", "over-ref. vs clean"]
    if res.get("baseline"):
        headers += [f"coh. vs {res['baseline']} clean [CI]", "p", f"strict vs {res['baseline']} clean [CI], p",
                    f"PPL / {res['baseline']} clean",
                    f"over-ref. vs {res['baseline']} clean"]
    rows = []
    for c in res["cells"]:
        vc = c["vs_clean"]["coherent_success"] if c["kind"] != "clean" else None
        vo = c["vs_clean"]["benign_refused"] if c["kind"] != "clean" else None
        row = [c["weights"], c["perturbation"], len(c["seeds"]), spread_cell(c["raw_asr"]),
               spread_cell(c["coherent_asr"]), spread_cell(c.get("strict_asr")),
               spread_cell(c["ppl"], pct=False), spread_cell(c["over_refusal"]),
               _paired_cell(vc), "-" if not vc else f"+{vc['to_success']}/-{vc['to_failure']}",
               "-" if not vc else f"{vc['p_mcnemar']:.3g}", _paired_cell(vo)]
        if res.get("baseline"):
            b = c["vs_baseline"]
            row += [_paired_cell(b["coherent_success"]),
                    "-" if not b["coherent_success"] else f"{b['coherent_success']['p_mcnemar']:.3g}",
                    "-" if not b.get("strict_success") else
                    f"{_paired_cell(b['strict_success'])}, {b['strict_success']['p_mcnemar']:.3g}",
                    "-" if b["ppl_ratio"] is None else f"{b['ppl_ratio']:.3f}",
                    "-" if b["over_refusal_diff"] is None else f"{100 * b['over_refusal_diff']:+.1f}"]
        rows.append(row)
    return headers, rows


def grid_markdown(res: dict, title: str, notes: list[str]) -> str:
    h, rows = grid_rows(res)
    return "\n".join([f"# {title}", "", *notes, "",
                      "Rates in %, mean ± sd over seeds where the noise is random (one run otherwise). Paired "
                      "columns: the cell against the same weights' clean run on the same prompts, every "
                      "(prompt, seed) one pair: difference with a bootstrap 95% interval, flips (+ success only "
                      "here, - success only clean) and McNemar's exact p"
                      + (f"; and against {res['baseline']}'s clean run." if res.get("baseline") else "."), "",
                      table(h, rows, markdown=True), ""]) + "\n"


def plot_grid(res: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    perts, labels = res["perturbations"], [w["label"] for w in res["weights"]]
    cell = {(c["weights"], c["perturbation"]): c for c in res["cells"]}
    panels = [("coherent_asr", 100, "coherent ASR %")]
    if any(c["ppl"]["n"] for c in res["cells"]):  # --ppl-tokens 0 measures none: no perplexity panel
        panels.append(("ppl", 1, "perplexity"))
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(max(8, 0.9 * len(perts) * max(1, len(labels)) / 2), 3.5 * len(panels)))
    axes = axes[:, 0]
    width = 0.8 / max(1, len(labels))
    for j, w in enumerate(labels):
        xs = [i + j * width for i in range(len(perts))]
        for ax, (key, scale, _) in zip(axes, panels):
            ys = [scale * cell[(w, p)][key]["mean"] for p in perts]
            sd = [scale * cell[(w, p)][key]["sd"] for p in perts]
            ax.bar(xs, ys, width, yerr=sd, capsize=2, label=w)
    for ax, (key, _, name) in zip(axes, panels):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(perts))], perts, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(name)
        if key == "ppl":
            ax.set_yscale("log")
    axes[0].set_ylim(0, max(5.0, axes[0].get_ylim()[1]))
    axes[0].legend(fontsize=8)
    return save_figure(fig, path, title)


# ------------------------------------------------------------------------------------------ Table 5


def ablation_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    """Table 5: one row per weights (NA, LA, MVA, all layers, lambda = 0, ...), its ASR under each
    MVA site beside its clean ASR, with the paper's figure where the label matches."""
    mva = [p for p in res["perturbations"] if p != "clean"]
    cell = {(c["weights"], c["perturbation"]): c for c in res["cells"]}
    headers = ["weights", "clean coherent ASR %"]
    for p in mva:
        headers += [f"{p}: coherent ASR %", "raw ASR %", "PPL", "vs clean [CI]"]
    headers += ["paper ASR % (Llama-3.1-8B)"]
    rows = []
    for w in [w["label"] for w in res["weights"]]:
        row = [w, spread_cell(cell[(w, "clean")]["coherent_asr"])]
        for p in mva:
            c = cell[(w, p)]
            row += [spread_cell(c["coherent_asr"]), spread_cell(c["raw_asr"]), spread_cell(c["ppl"], pct=False),
                    _paired_cell(c["vs_clean"]["coherent_success"])]
        row.append(f"{PAPER_TABLE5[w]:g}" if w in PAPER_TABLE5 else "-")
        rows.append(row)
    return headers, rows


# ------------------------------------------------------------------------------------------ Figures 7/8


def curves(harness_for: HarnessFor, weights: list[Weights], mva: MVA, mva_layers, factors: list[float],
           seeds: list[int]) -> dict:
    """ASR and PPL against noise scale (multiples of each MVA site's scale) for every weights."""
    out = {"kind": "curves", "factors": list(factors), "seeds": list(seeds), "mva": mva.to_dict(),
           "layers": None if mva_layers is None else list(mva_layers), "weights": [w.__dict__ for w in weights],
           "sweeps": {}}
    for w in weights:
        h, base = harness_for(w)
        h.prefetch([EvalTask(x, False) for c in mva.site_configs(base, mva_layers)
                    for x in sweep_configs(c, [c.scale * f for f in factors], seeds)])
        for c in mva.site_configs(base, mva_layers):
            scales = [c.scale * f for f in factors]
            out["sweeps"].setdefault(c.sites[0], {})[w.label] = sweep(h, c.with_(scale=scales[0]), scales, seeds,
                                                                     benign=False)
        del h
        gc.collect()
    return out


def plot_curves(res: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = list(res["sweeps"])
    fig, axes = plt.subplots(len(sites), 2, figsize=(10, 3.6 * len(sites)), squeeze=False)
    for row, site in zip(axes, sites):
        for k, (label, sw) in enumerate(res["sweeps"][site].items()):
            xs = [p["scale"] for p in sw["points"]]
            color = f"C{k}"
            row[0].errorbar(xs, [100 * p["coherent_asr"]["mean"] for p in sw["points"]],
                            yerr=[100 * p["coherent_asr"]["sd"] for p in sw["points"]], marker="o", capsize=3,
                            color=color, label=f"{label} coherent")
            row[0].plot(xs, [100 * p["raw_asr"]["mean"] for p in sw["points"]], ls="--", color=color,
                        label=f"{label} raw")
            row[1].errorbar(xs, [p["ppl"]["mean"] for p in sw["points"]], yerr=[p["ppl"]["sd"] for p in sw["points"]],
                            marker="o", capsize=3, color=color, label=label)
        mva_scale = next(n["scale"] for n in res["mva"]["noise"] if n["site"] == site)
        for ax, name in zip(row, ("ASR %", "perplexity")):
            ax.axvline(mva_scale, color="k", lw=0.8, alpha=0.5)
            ax.set_xlabel(f"noise scale before W_{site}" + (" (x std)" if res["mva"]["relative"] else ""))
            ax.set_ylabel(name)
            ax.legend(fontsize=7)
        row[1].set_yscale("log")
    return save_figure(fig, path, title)


def curve_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    headers = ["site", "weights", "scale", "coherent ASR %", "raw ASR %", "PPL", "coh. flips vs clean +/-"]
    rows = []
    for site, by_w in res["sweeps"].items():
        for label, sw in by_w.items():
            for p in sw["points"]:
                cc = p["vs_clean"]["coherent_success"]
                rows.append([site, label, f"{p['scale']:g}", spread_cell(p["coherent_asr"]), spread_cell(p["raw_asr"]),
                             spread_cell(p["ppl"], pct=False), f"+{cc['to_success']}/-{cc['to_failure']}"])
    return headers, rows

