"""JSON, Markdown and PNG outputs of the safety commands, with the paper's figures beside ours."""

from __future__ import annotations

import json
import math
import platform
import time
from importlib import metadata
from pathlib import Path

from privinf.report import table


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def rate_cell(r: dict | None) -> str:
    if not r or r.get("n", 0) == 0:
        return "-"
    return f"{100 * r['value']:.1f} [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}] (n={r['n']})"


def ppl_cell(p: dict | None) -> str:
    if not p:
        return "-"
    return f"{p['value']:.2f} [{p['lo']:.2f}, {p['hi']:.2f}]"


def spread_cell(s: dict, pct: bool = True) -> str:
    if not s or s.get("n", 0) == 0:
        return "-"
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.2f}")
    return f"{f(s['mean'])} ± {f(s['sd'])}" if s["n"] > 1 else f(s["mean"])


def save_figure(fig, path: Path, title: str) -> Path:
    """Title, tight layout, write ``path`` (creating its folder) at 110 dpi, close the figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metadata_block(extra: dict | None = None) -> dict:
    versions = {}
    for pkg in ("privinf", "torch", "transformers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
            "versions": versions, **(extra or {})}


def write(out_dir: Path, stem: str, data: dict, markdown: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    paths["md"].write_text(markdown, encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------------------
# eval


def eval_rows(results: list[dict], paper: list[dict | None]) -> tuple[list[str], list[list[str]]]:
    headers = ["config", "raw ASR %", "coherent ASR %", "degenerate %", "refusal %", "over-refusal %",
               "PPL", "paper ASR %", "paper PPL"]
    rows = []
    for r, p in zip(results, paper):
        rows.append([r["label"], rate_cell(r["raw_asr"]), rate_cell(r["coherent_asr"]), rate_cell(r["degenerate"]),
                     rate_cell(r["refusal"]), rate_cell(r.get("over_refusal")), ppl_cell(r.get("ppl")),
                     "-" if not p or p.get("asr") is None else f"{p['asr']:g}",
                     "-" if not p or p.get("ppl") is None else f"{p['ppl']:g}"])
    return headers, rows


def paired_rows(cmp: dict) -> tuple[list[str], list[list[str]]]:
    names = {"success": "raw ASR", "coherent_success": "coherent ASR", "judge_success": "judge ASR",
             "benign_refused": "over-refusal"}
    headers = ["metric", "n", "A %", "B %", "B - A (pts) [95% CI]", "A fail -> B success", "A success -> B fail",
               "McNemar p"]
    rows = [[names[k], v["n"], _pct(v["rate_a"]), _pct(v["rate_b"]),
             f"{100 * v['diff']:+.1f} [{100 * v['diff_lo']:+.1f}, {100 * v['diff_hi']:+.1f}]",
             v["to_success"], v["to_failure"], f"{v['p_mcnemar']:.3g}"] for k, v in cmp.items()]
    return headers, rows


def eval_markdown(data: dict) -> str:
    h, rows = eval_rows(data["results"], data["paper"])
    md = [f"# privinf safety eval: {data['model']}", "",
          f"Harmful prompts: {data['prompt_set']} (n={data['results'][0]['n_harmful']}); "
          f"benign: {data.get('benign_set') or '-'}; max_new_tokens={data['max_new_tokens']}.", "",
          "Rates are % with 95% Wilson intervals; PPL is exp(mean NLL) over non-overlapping windows with a "
          "bootstrap 95% interval. Raw ASR is the GCG keyword judge (Zou et al. 2023) as the paper uses it; "
          "coherent ASR excludes degenerate responses (empty, repetitive, or implausible under the clean model). "
          "Paper figures are for Llama-3.1-8B-Instruct (arXiv 2502.00840, Table 2).", "",
          table(h, rows, markdown=True), ""]
    if data.get("paired"):
        ph, prow = paired_rows(data["paired"])
        md += [f"## Paired: A = {data['results'][0]['label']}, B = {data['results'][-1]['label']}", "",
               table(ph, prow, markdown=True), ""]
    if data["results"][0].get("judge"):
        md += ["## Model judge", ""] + [f"- {r['label']}: {r['judge']['name']} ASR {rate_cell(r['judge']['asr'])}, "
                                         f"coherent {rate_cell(r['judge']['coherent_asr'])}" for r in data["results"]] + [""]
    md += ["## Example responses", ""]
    for r in data["results"]:
        for e in r.get("examples", [])[:2]:
            md.append(f"- **{r['label']}** ({'success' if e['success'] else 'no success'}"
                      f"{', degenerate: ' + e['degenerate'] if e['degenerate'] else ''}): "
                      f"{e['prompt'][:80]!r} -> {e['response'][:160]!r}")
    return "\n".join(md) + "\n"


# ------------------------------------------------------------------------------------------
# sweeps


def sweep_rows(points: list[dict], xkey: str, clean: dict) -> tuple[list[str], list[list[str]]]:
    headers = [xkey, "raw ASR %", "coherent ASR %", "degenerate %", "over-refusal %", "PPL", "raw flips (+/-)",
               "McNemar p (per seed)", "coherent flips (+/-)"]
    rows = [["clean", rate_cell(clean["raw_asr"]), rate_cell(clean["coherent_asr"]), rate_cell(clean["degenerate"]),
             rate_cell(clean.get("over_refusal")), ppl_cell(clean.get("ppl")), "-", "-", "-"]]
    for p in points:
        vc, cc = p["vs_clean"]["success"], p["vs_clean"]["coherent_success"]
        rows.append([f"{p[xkey]:g}" if isinstance(p[xkey], float) else str(p[xkey]), spread_cell(p["raw_asr"]),
                     spread_cell(p["coherent_asr"]), spread_cell(p["degenerate"]), spread_cell(p["over_refusal"]),
                     spread_cell(p["ppl"], pct=False),
                     f"+{vc['to_success']}/-{vc['to_failure']}",
                     ",".join(f"{x:.2g}" for x in vc["p_mcnemar_per_seed"]),
                     f"+{cc['to_success']}/-{cc['to_failure']}"])
    return headers, rows


def sweep_markdown(data: dict, title: str, xkey: str, notes: list[str]) -> str:
    h, rows = sweep_rows(data["points"], xkey, data["clean"])
    return "\n".join([f"# {title}", "", *notes, "",
                      "Sweep points show mean ± sd over seeds; flips are pooled over seeds: + prompts that are "
                      "successes here but not under clean, - the reverse (raw: keyword judge; coherent: "
                      "keyword judge and not degenerate). McNemar p is per seed (raw).", "",
                      table(h, rows, markdown=True), ""]) + "\n"


def plot_sweep(data: dict, xkey: str, path: Path, title: str, reference_x: float | None = None,
               log_x: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = data["points"]
    xs = [p[xkey] for p in pts]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, lab in (("raw_asr", "raw ASR"), ("coherent_asr", "coherent ASR"), ("degenerate", "degenerate")):
        m = [100 * p[key]["mean"] for p in pts]
        sd = [100 * p[key]["sd"] for p in pts]
        ax1.errorbar(xs, m, yerr=sd, marker="o", capsize=3, label=lab)
    ax1.axhline(100 * data["clean"]["raw_asr"]["value"], color="gray", ls="--", lw=1, label="clean raw ASR")
    ax1.set_xlabel(xkey)
    ax1.set_ylabel("%")
    ax1.set_title("ASR")
    ax1.legend(fontsize=8)
    ppl = [p["ppl"]["mean"] for p in pts]
    if any(v == v for v in ppl):
        ax2.errorbar(xs, ppl, yerr=[p["ppl"]["sd"] for p in pts], marker="o", capsize=3, color="C3")
        if data["clean"].get("ppl"):
            ax2.axhline(data["clean"]["ppl"]["value"], color="gray", ls="--", lw=1, label="clean")
            ax2.axhline(2 * data["clean"]["ppl"]["value"], color="gray", ls=":", lw=1, label="2x clean")
        ax2.set_yscale("log")
        ax2.legend(fontsize=8)
    ax2.set_xlabel(xkey)
    ax2.set_title("perplexity")
    for ax in (ax1, ax2):
        if reference_x is not None:
            ax.axvline(reference_x, color="k", lw=0.8, alpha=0.5)
        if log_x and all(x > 0 for x in xs):
            ax.set_xscale("log")
    return save_figure(fig, path, title)


def plot_eval(data: dict, path: Path) -> Path:
    """Bars of each rate (with its 95% interval) for every evaluated configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("raw_asr", "raw ASR"), ("coherent_asr", "coherent ASR"), ("degenerate", "degenerate"),
            ("refusal", "refusal"), ("over_refusal", "over-refusal")]
    res = data["results"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(res)
    for j, r in enumerate(res):
        xs, ys, lo, hi = [], [], [], []
        for i, (k, _) in enumerate(keys):
            if r.get(k) and r[k]["n"]:
                xs.append(i + j * width)
                ys.append(100 * r[k]["value"])
                lo.append(100 * (r[k]["value"] - r[k]["lo"]))
                hi.append(100 * (r[k]["hi"] - r[k]["value"]))
        label = r["label"] + (f" (PPL {r['ppl']['value']:.1f})" if r.get("ppl") else "")
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], [n for _, n in keys])
    ax.set_ylabel("% (95% CI)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.set_title(f"{data['model']}: n={res[0]['n_harmful']} harmful prompts", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
