"""Tables (text/Markdown) and a bar chart of an attack grid (``runner.run_grid``'s result)."""

from __future__ import annotations

from pathlib import Path

from privinf.report import table
from privinf.safety.reports import rate_cell


def row_name(row: dict) -> str:
    w = row["weights"]
    return f"{'base' if not w else Path(w).name} / {row['label']}"


def _cell(r: dict | None) -> str:
    if not r or r.get("n", 0) == 0:
        return "-"
    return f"{100 * r['value']:.1f} [{100 * r['lo']:.0f}, {100 * r['hi']:.0f}]"


def grid_rows(data: dict, kind: str = "coherent_asr") -> tuple[list[str], list[list[str]]]:
    """Table 4 layout: one row per (adapter, config), one column per attack, best-of-k ASR %."""
    headers = ["model / config", *data["attacks"]]
    rows = [[row_name(r), *[_cell(r["cells"][a]["best_of_k"].get(kind)) if a in r["cells"] else "-" for a in data["attacks"]]]
            for r in data["rows"]]
    return headers, rows


def detail_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """One line per (row, attack): k, best-of-k raw/coherent, mean over templates, paired vs none."""
    headers = ["model / config", "attack", "k", "n", "best-of-k raw %", "best-of-k coherent %", "mean raw %",
               "mean coherent %", "coherent vs none"]
    rows = []
    for r in data["rows"]:
        for a, c in r["cells"].items():
            p = c.get("vs_none", {}).get("coherent_success")
            rows.append([row_name(r), a, c["k"], c["n_prompts"], rate_cell(c["best_of_k"]["raw_asr"]),
                         rate_cell(c["best_of_k"]["coherent_asr"]), f"{100 * c['mean_template']['raw_asr']:.1f}",
                         f"{100 * c['mean_template']['coherent_asr']:.1f}",
                         "-" if p is None else f"{100 * p['diff']:+.1f} pts, +{p['to_success']}/-{p['to_failure']}, "
                                               f"p={p['p_mcnemar']:.3g}"])
    return headers, rows


def template_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    headers = ["model / config", "template", "raw ASR %", "coherent ASR %", "degenerate %"]
    rows = []
    for r in data["rows"]:
        for c in r["cells"].values():
            for t in c["templates"]:
                rows.append([row_name(r), t["id"], rate_cell(t["raw_asr"]), rate_cell(t["coherent_asr"]),
                             rate_cell(t["degenerate"])])
    return headers, rows


def gcg_lines(data: dict) -> list[str]:
    out = []
    for r in data["rows"]:
        g = r["cells"].get("gcg")
        if g:
            s = g["settings"]
            out.append(f"- {row_name(r)}: adaptive GCG on {g['prompts']} prompt{'s' if g['prompts'] != 1 else ''} (optimised against "
                       f"{'the evaluated config' if g['against'] == 'config' else 'the clean model'}), "
                       f"steps {s['steps']} (mean used {g['steps_mean']:.1f}, early stops {g['early_stopped']}), "
                       f"search width {s['search_width']}, top-k {s['topk']}, suffix {s['suffix_len']} tokens; "
                       f"{g['seconds_per_prompt']:.1f} s per prompt (max {g['seconds_max']:.1f}; CPU "
                       f"{g.get('cpu_seconds_per_prompt', 0):.1f} s); target loss "
                       f"{g['loss_initial_mean']:.3f} -> {g['loss_final_mean']:.3f}")
    return out


def markdown(data: dict, title: str, notes: list[str]) -> str:
    md = [f"# {title}", "", *notes, "",
          "## Best-of-k coherent ASR % [95% Wilson] (a prompt falls if any template succeeds)", "",
          table(*grid_rows(data, "coherent_asr"), markdown=True), "",
          "## Best-of-k raw (keyword) ASR %", "", table(*grid_rows(data, "raw_asr"), markdown=True), "",
          "## Best-of-k strict ASR % (coherent, and none of the refusal sentences privinf's alignment data "
          "teaches: `judges.has_trained_refusal`)", "", table(*grid_rows(data, "strict_asr"), markdown=True), "",
          "## Per attack, paired against no attack on the same prompts", "",
          table(*detail_rows(data), markdown=True), ""]
    gl = gcg_lines(data)
    if gl:
        md += ["## Adaptive GCG", "", *gl, ""]
    md += ["## Per template", "", table(*template_rows(data), markdown=True), ""]
    return "\n".join(md)


def plot(data: dict, path: Path, title: str) -> Path:
    """Grouped bars: best-of-k coherent ASR per attack, one bar per (adapter, config), with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attacks, rows = data["attacks"], data["rows"]
    x = np.arange(len(attacks))
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(1.4 * len(attacks) + 2, 3.6))
    for i, r in enumerate(rows):
        vals, lo, hi = [], [], []
        for a in attacks:
            c = r["cells"].get(a, {}).get("best_of_k", {}).get("coherent_asr") or {"value": 0, "lo": 0, "hi": 0}
            vals.append(100 * c["value"])
            lo.append(100 * (c["value"] - c["lo"]))
            hi.append(100 * (c["hi"] - c["value"]))
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2, label=row_name(r))
    ax.set_xticks(x, attacks)
    ax.set_ylabel("best-of-k coherent ASR %")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
