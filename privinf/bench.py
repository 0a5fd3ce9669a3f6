"""``privinf bench``: latency and communication of the MLP block across cards and backends.

A scenario (``bench/*.toml``) is a grid of (backend x card x token count). Every cell runs the
block ``repeats`` times on real hidden states of the scenario's model and records the backend's
own CostReport: wall time (median, min, max), bytes sent, rounds, depth. Speedups are against the
no-polynomial baseline *of the same backend measured in the same run*, printed beside the
paper's Table 1 figure for the same technique. ``[[scaling]]`` rows run a random block of a
larger model's shape (e.g. Llama-3.1-8B's 4096/14336) to show how cost grows with hidden size.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from privinf.cards import BACKENDS, DEFAULT_MODEL, protocol_card
from privinf.errors import UsageError
from privinf.tomlreader import CardError, TomlReader, read_toml
from privinf.report import table


@dataclass(frozen=True)
class GridSpec:
    backend: str
    cards: tuple[str, ...]
    tokens: tuple[int, ...]
    repeats: int
    hidden_size: int | None = None  # set: a random block of this shape instead of the model's
    intermediate_size: int | None = None
    kind: str = "grid"  # "grid" or "scaling"


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    layer: int
    baselines: dict[str, str]
    rows: tuple[GridSpec, ...]
    extras: dict | None = None  # {"safety_throughput": {...}, "emulator_overhead": {...}}
    path: str = ""


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a bench scenario; errors name the file and the field."""
    path = Path(path)
    r = TomlReader(path, read_toml(path))
    r.check_unknown({"name", "model", "layer", "tokens", "repeats", "baselines", "grid", "scaling", "extras"})
    tokens = tuple(int(t) for t in r.get("tokens", list, [16]))
    repeats = r.get("repeats", int, 3)
    rows = []
    for kind in ("grid", "scaling"):
        for i, item in enumerate(r.get(kind, list, [])):
            g = TomlReader(path, item, f"{kind}[{i}].")
            g.check_unknown({"backend", "cards", "tokens", "repeats", "hidden_size", "intermediate_size"})
            cards = tuple(g.get("cards", list))
            for c in cards:
                protocol_card(c)  # raises CardError naming the unknown card
            hidden, inter = g.get("hidden_size", int, None), g.get("intermediate_size", int, None)
            if kind == "scaling" and (hidden is None or inter is None):
                raise g.fail("hidden_size", "and intermediate_size are required in a [[scaling]] row")
            rows.append(GridSpec(g.get("backend", str, choices=BACKENDS), cards,
                                 tuple(int(t) for t in g.get("tokens", list, list(tokens))),
                                 g.get("repeats", int, repeats), hidden, inter, kind))
    if not rows:
        raise r.fail("grid", "must list at least one [[grid]] row")
    extras = r.sub("extras", {})
    extras.check_unknown(set(EXTRAS))
    return Scenario(r.get("name", str), r.get("model", str, DEFAULT_MODEL), r.get("layer", int, 1),
                    dict(r.get("baselines", dict, {})), tuple(rows), dict(extras.table), str(path))


def scenario_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml":
        return p
    here = Path(__file__).resolve().parent
    for folder in (here / "_data" / "bench", here.parent / "bench"):
        if (folder / f"{name_or_path}.toml").exists():
            return folder / f"{name_or_path}.toml"
    known = sorted({f.stem for folder in (here / "_data" / "bench", here.parent / "bench") if folder.is_dir()
                    for f in folder.glob("*.toml")})
    raise CardError(p, "<name>", f"no bench scenario with this name; known: {', '.join(known)}; "
                                 "or pass a path to a .toml file")


def _inputs(model_name: str, layer: int, max_tokens: int):
    """(block, x) with x the real hidden states (T, C) entering ``layer``'s MLP block."""
    from privinf.emulator.measure import block_and_input
    from privinf.models import load_model

    return block_and_input(*load_model(model_name), _WIKI_SAMPLE * (1 + max_tokens // 40), layer, max_tokens)


_WIKI_SAMPLE = ("Private inference lets a server run a language model on a user's prompt without seeing it. "
                "Secure multi-party computation splits every value into random shares, and homomorphic "
                "encryption computes on ciphertexts; both make non-linear functions expensive. ")


def _random_block(hidden: int, inter: int, tokens: int, seed: int = 0):
    import torch

    from privinf.blocks import MLPBlock
    g = torch.Generator().manual_seed(seed)
    w = lambda *s: torch.randn(*s, generator=g) * 0.02  # noqa: E731
    block = MLPBlock(w_up=w(inter, hidden), w_down=w(hidden, inter), w_gate=w(inter, hidden),
                     norm_weight=torch.ones(hidden), activation="silu", source=f"random {hidden}/{inter}")
    return block, torch.randn(tokens, hidden, generator=g)


def _run_cell(backend, block, x, card, repeats: int) -> dict:
    from privinf.approx.ops import CardOps

    ops = CardOps(card, block.activation)
    kwargs = {}
    if ops.needs_calibration():
        exact = block(x)
        ops.calibrate({"up": block.norm(x), "down": exact.down})
        kwargs["ops"] = ops
    walls, act_walls, last = [], [], None
    for _ in range(repeats):
        last = backend.run(block, x, card, **kwargs)
        walls.append(last.cost.wall_s)
        act = (last.cost.extra or {}).get("activation")
        if act:
            act_walls.append(act["wall_s"])
    c = last.cost
    err = float((last.output.out - block(x).out).abs().max())
    cell = {"wall_s": _spread(walls), "bytes_sent": c.bytes_sent, "rounds": c.rounds, "depth": c.depth,
            "ring_dim": c.ring_dim, "max_abs_error": err}
    for part in ("offline", "online"):  # MPC: weights shared and masked once per connection / per query
        if (c.extra or {}).get(part):
            cell[part] = c.extra[part]
    if act_walls:  # the non-linearity alone (MPC backends meter it as a phase)
        cell["activation"] = {"wall_s": _spread(act_walls), "bytes_sent": act["bytes_sent"], "rounds": act["rounds"]}
    return cell


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def run_bench(scenario: Scenario, progress: bool = True) -> dict:
    """Run every cell of ``scenario``; returns the JSON-ready result."""
    from tqdm.auto import tqdm

    from privinf.backends.base import UnsupportedCard, get_backend

    max_t = max(t for g in scenario.rows if g.kind == "grid" for t in g.tokens)
    block, x_all = _inputs(scenario.model, scenario.layer, max_t)
    cells = []
    jobs = [(g, card, t) for g in scenario.rows for card in g.cards for t in g.tokens]
    for g, card_name, tokens in tqdm(jobs, desc="bench", disable=not progress):
        card = protocol_card(card_name)
        cell = {"kind": g.kind, "backend": g.backend, "card": card_name, "tokens": tokens,
                "paper_speedup": card.reference.table1_speedup, "paper_baseline": card.reference.table1_baseline}
        if g.kind == "scaling":
            b, x = _random_block(g.hidden_size, g.intermediate_size, tokens)
        else:
            b, x = block, x_all[:tokens]
        if x.shape[0] < tokens:
            raise UsageError(f"{scenario.path}: field 'tokens': the grid asks for {tokens} tokens, the prompt gives "
                             f"only {x.shape[0]}")
        cell.update(hidden_size=b.hidden_size, intermediate_size=b.intermediate_size)
        try:
            backend = get_backend(g.backend)
            backend.check(card)
            cell.update(_run_cell(backend, b, x, card, g.repeats))
        except (UnsupportedCard, ValueError) as exc:
            cell["skipped"] = str(exc)
        cells.append(cell)
    _speedups(cells, scenario.baselines)
    extras = {name: EXTRAS[name](scenario.model, **opts) for name, opts in (scenario.extras or {}).items()}
    return {"extras": extras, "scenario": scenario.name, "scenario_file": scenario.path, "model": scenario.model,
            "layer": scenario.layer, "block": {"hidden": block.hidden_size, "intermediate": block.intermediate_size},
            "machine": _machine(), "created": time.strftime("%Y-%m-%d %H:%M:%S"), "cells": cells}


def _safety_throughput(model_name: str, prompts: int = 8, max_new_tokens: int = 32, batch_size: int = 8) -> dict:
    """The safety harness's generation: batched vs one prompt at a time, same HarmBench prompts."""
    from privinf.models import load_model
    from privinf.safety import data
    from privinf.safety.generate import throughput

    model, tok = load_model(model_name)
    return throughput(model, tok, list(data.harmbench().prompts[:prompts]), max_new_tokens, batch_size)


def _emulator_overhead(model_name: str, cards: list[str] = ("bolt",), tokens: int = 32, repeats: int = 3) -> dict:
    """Greedy generation with the emulator attached (exact and noise modes) vs plain, interleaved."""
    from privinf.emulator.overhead import measure_overhead
    from privinf.models import load_model

    model, tok = load_model(model_name)
    return measure_overhead(model, tok, list(cards), tokens=tokens, repeats=repeats, model_name=model_name)


EXTRAS = {"safety_throughput": _safety_throughput, "emulator_overhead": _emulator_overhead}


def _speedups(cells: list[dict], baselines: dict[str, str]) -> None:
    """speedup = baseline median wall / cell median wall, same backend, tokens and shape."""
    key = lambda c: (c["kind"], c["backend"], c["tokens"], c["hidden_size"])  # noqa: E731
    base = {key(c): c["wall_s"]["median"] for c in cells
            if "wall_s" in c and c["card"] == baselines.get(c["backend"])}
    act_base = {key(c): c["activation"] for c in cells
                if "activation" in c and c["card"] == baselines.get(c["backend"])}
    for c in cells:
        b = base.get(key(c))
        c["baseline"] = baselines.get(c["backend"])
        c["speedup"] = b / c["wall_s"]["median"] if b is not None and "wall_s" in c else None
        a, ab = c.get("activation"), act_base.get(key(c))
        if a and ab:
            a["speedup"] = ab["wall_s"]["median"] / a["wall_s"]["median"]
            a["bytes_ratio"] = ab["bytes_sent"] / a["bytes_sent"] if a["bytes_sent"] else None


def _machine() -> dict:
    import os

    import torch
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


HEADERS = ["backend", "card", "tokens", "shape", "median s", "min s", "max s", "ms/token", "MB", "MB/token",
           "rounds", "offline s", "offline MB", "online s", "online MB", "online rounds", "depth", "speedup", "act s", "act MB", "act speedup (time, bytes)", "paper speedup", "max err"]


def rows(result: dict) -> list[list]:
    out = []
    for c in result["cells"]:
        shape = f"{c['hidden_size']}/{c['intermediate_size']}"
        if "skipped" in c:
            out.append([c["backend"], c["card"], c["tokens"], shape, f"skipped: {c['skipped'][:60]}",
                        *[None] * (len(HEADERS) - 5)])
            continue
        w, mb = c["wall_s"], None if c["bytes_sent"] is None else c["bytes_sent"] / 1e6
        paper = None if c["paper_speedup"] is None else f"{c['paper_speedup']:g}x vs {c['paper_baseline']}"
        a = c.get("activation") or {}
        act_sp = (f"{a['speedup']:.2f}x, {a['bytes_ratio']:.2f}x" if a.get("speedup") and a.get("bytes_ratio")
                  else None)
        off, on = c.get("offline") or {}, c.get("online") or {}
        split = [off.get("wall_s"), off["bytes_sent"] / 1e6 if off else None, on.get("wall_s"),
                 on["bytes_sent"] / 1e6 if on else None, on.get("rounds")]
        out.append([c["backend"], c["card"], c["tokens"], shape, w["median"], w["min"], w["max"],
                    1e3 * w["median"] / c["tokens"], mb, None if mb is None else mb / c["tokens"], c["rounds"],
                    *split, c["depth"], None if c["speedup"] is None else f"{c['speedup']:.2f}x vs {c['baseline']}",
                    a.get("wall_s", {}).get("median"), None if not a else a["bytes_sent"] / 1e6, act_sp,
                    paper, c["max_abs_error"]])
    return out


def extra_rows(result: dict) -> list[list]:
    out = []
    st = result.get("extras", {}).get("safety_throughput")
    if st:
        out.append(["safety harness generation", f"{st['prompts']} prompts x {st['max_new_tokens']} new tokens",
                    f"{st['single_tok_s']:.1f} tok/s one at a time", f"{st['batched_tok_s']:.1f} tok/s batched "
                    f"({st['batch_size']})", f"{st['speedup']:.2f}x"])
    eo = result.get("extras", {}).get("emulator_overhead")
    for row in (eo or {}).get("rows", []):
        out.append([f"emulator: {row['mode']}", f"{eo['prompts']} prompts x {eo['tokens']} new tokens",
                    f"{row['tokens_per_s']:.1f} tok/s", "vs plain generation", f"{row['ratio_best']:.3f}x"])
    return out


EXTRA_HEADERS = ["extra", "workload", "measured", "against", "ratio"]


def markdown(result: dict) -> str:
    m = result["machine"]
    head = (f"# privinf bench: {result['scenario']}\n\nModel {result['model']}, layer {result['layer']} MLP block "
            f"(hidden {result['block']['hidden']}, MLP {result['block']['intermediate']}); machine: "
            f"{m['cpus']} CPUs, {m['processor']}, torch {m['torch']}; run {result['created']}.\n"
            "Speedup: the same backend's baseline card (median wall time) divided by this card's, same run. "
            "Paper speedup: arXiv 2502.00840 Table 1, against the baseline it names.\n\n")
    extra = extra_rows(result)
    tail = "\n\n" + table(EXTRA_HEADERS, extra, markdown=True) + "\n" if extra else "\n"
    return head + table(HEADERS, rows(result), markdown=True) + tail


def plot(result: dict, path: Path) -> None:
    """One row per backend: ms per token and MB per token for each card, one bar per token count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in result["cells"] if "wall_s" in c and c["kind"] == "grid"]
    backends = list(dict.fromkeys(c["backend"] for c in cells))
    fig, axes = plt.subplots(len(backends), 2, figsize=(13, 3.2 * len(backends)), squeeze=False)
    for row, backend in zip(axes, backends):
        mine = [c for c in cells if c["backend"] == backend]
        cards = list(dict.fromkeys(c["card"] for c in mine))
        tokens = sorted({c["tokens"] for c in mine})
        width = 0.8 / len(tokens)
        for k, t in enumerate(tokens):
            by_card = {c["card"]: c for c in mine if c["tokens"] == t}
            xs = [i + k * width for i, card in enumerate(cards) if card in by_card]
            got = [by_card[card] for card in cards if card in by_card]
            row[0].bar(xs, [1e3 * c["wall_s"]["median"] / t for c in got], width, label=f"{t} tokens")
            row[1].bar(xs, [(c["bytes_sent"] or 0) / 1e6 / t for c in got], width, label=f"{t} tokens")
        for ax, label in zip(row, ("ms per token (median)", "MB sent per token")):
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cards))], cards, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(label)
            ax.set_title(backend, fontsize=10)
        if all(c["bytes_sent"] is None for c in mine):
            row[1].text(0.5, 0.5, "no communication", ha="center", va="center", transform=row[1].transAxes)
        row[0].set_yscale("log")
        row[0].legend(fontsize=7)
    fig.suptitle(f"privinf bench {result['scenario']}: MLP block of {result['model']}, layer {result['layer']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "md": out_dir / "bench.md", "png": out_dir / "bench.png"}
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["md"].write_text(markdown(result))
    plot(result, paths["png"])
    return paths

