"""Plain-text and Markdown tables for the CLI and reports (no heavy imports)."""

from __future__ import annotations

from typing import Iterable, Sequence

from privinf.cards import all_model_cards, all_protocol_cards


def fmt(value, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence], markdown: bool = False) -> str:
    """A column-aligned text table, or a GitHub Markdown table."""
    rows = [[fmt(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def protocol_cards_table(markdown: bool = False) -> str:
    rows = []
    for c in all_protocol_cards():
        r = c.reference
        acts = ", ".join(f"{a}:{s.method}" for a, s in sorted(c.activations.items())) or "-"
        sites = ", ".join(f"{n}:{s.method}" for n, s in c.sites.items() if s.method != "none") or "-"
        rows.append([c.name, c.kind, "/".join(c.backends), acts, sites,
                     None if r.table1_speedup is None else f"{r.table1_speedup:g}x",
                     None if r.error_up_std is None else f"N(0,{r.error_up_std:g}^2)",
                     None if r.error_down_b is None else f"Lap({r.error_down_b:g})", r.ppl, r.asr])
    return table(["card", "kind", "backends", "activations", "sites", "paper speedup", "paper err up",
                  "paper err down", "paper PPL", "paper ASR%"], rows, markdown)


def model_cards_table(markdown: bool = False) -> str:
    rows = [[m.name, m.architecture, m.hidden_size, m.intermediate_size, m.num_layers,
             f"[{m.sensitive_layers[0]}-{m.sensitive_layers[-1]}]", m.mva_up_std, m.mva_down_b, m.source]
            for m in all_model_cards()]
    return table(["model", "arch", "hidden", "mlp", "layers", "sensitive", "MVA up (std)", "MVA down (b)",
                  "weights"], rows, markdown)
