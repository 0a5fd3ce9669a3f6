"""Evaluate configurations: one (``Harness.evaluate``), a scale sweep, a per-layer sweep, MVA search.

``Harness`` holds the model, tokenizer, prompt sets, perplexity windows and the results store.
Each evaluation returns a plain dict (JSON-ready) with raw ASR, coherent ASR, degenerate rate,
refusal rate, over-refusal on benign prompts and perplexity, each with its count and 95% CI, plus
the per-prompt outcomes that paired comparisons need.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import torch

from privinf.emulator.hookpoints import SITES
from privinf.errormodel import HEADLINE
from privinf.safety import judges, stats
from privinf.safety.config import RunConfig, perturbation, prompt_key
from privinf.safety.data import PromptSet
from privinf.safety.generate import ResultsStore, generate


@dataclass
class Harness:
    model: object
    tokenizer: object
    store: ResultsStore
    harmful: PromptSet
    benign: PromptSet | None = None
    ppl_ids: torch.Tensor | None = None  # (W, L) non-overlapping token windows
    batch_size: int = 16
    nll_threshold: float = judges.NLL_THRESHOLD
    judge: object | None = None  # a judges.ModelJudge
    progress: bool = True
    pool: object | None = None  # a grid.Pool: evaluations run on its workers (this harness has no model)
    _site_std: dict | None = field(default=None, repr=False)
    _calibration: dict = field(default_factory=dict, repr=False)
    _results: dict = field(default_factory=dict, repr=False)  # task key -> result computed by the pool

    # ---------------------------------------------------------------- tasks (serial or on a pool)
    def prefetch(self, tasks: list) -> None:
        """Run ``tasks`` on the pool's workers at once; without a pool nothing happens (each task
        runs when ``result`` asks for it). Grids call this with every configuration they will ask for."""
        todo = [t for t in tasks if t.key() not in self._results]
        if self.pool is not None and todo:
            self._results.update(self.pool.run(self, todo))

    def result(self, task) -> dict:
        """``task.run(self)``; with a pool, the result a worker computed (run now if not prefetched)."""
        if self.pool is None:
            return task.run(self)
        if task.key() not in self._results:
            self.prefetch([task])
        return self._results[task.key()]

    # ---------------------------------------------------------------- inputs
    @staticmethod
    def ppl_windows(tokenizer, text: str, window: int, max_tokens: int) -> torch.Tensor:
        """Non-overlapping windows of ``window`` tokens from the start of ``text`` (at most
        ``max_tokens`` tokens; a final partial window is dropped)."""
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        n = min(len(ids), max_tokens) // window
        if n == 0:
            raise ValueError(f"perplexity text has {len(ids)} tokens, fewer than one window of {window}")
        return ids[: n * window].view(n, window)  # (W, L)

    def site_std(self) -> dict:
        """Measured clean std at each (layer, site) on the perplexity windows (for relative scales)."""
        if self._site_std is None:
            from privinf.emulator import measure_site_std

            if self.ppl_ids is None:
                raise ValueError("relative scales need perplexity text to measure each site's std")
            batches = [self.ppl_ids[i:i + 4].to(self.model.device) for i in range(0, min(len(self.ppl_ids), 8), 4)]
            self._site_std = measure_site_std(self.model, batches)
        return self._site_std

    def calibration(self, card: str) -> dict:
        """TEAL thresholds for a sparsity card, from the clean perplexity windows (cached)."""
        if card not in self._calibration:
            from privinf.emulator import calibrate_card

            if self.ppl_ids is None:
                raise ValueError(f"card {card!r} needs calibration text (perplexity windows)")
            self._calibration[card] = calibrate_card(self.model, card, self.ppl_ids[:4].to(self.model.device))
        return self._calibration[card]

    def aux(self, config: RunConfig) -> dict:
        """Measured inputs ``perturbation`` needs for ``config``: site stds, card calibration."""
        out = {}
        if config.perturbed and config.relative:
            out["relative_to"] = self.site_std()
        if config.perturbed and config.mode == "exact":
            out["calibration"] = self.calibration(config.card)
        return out

    # ---------------------------------------------------------------- metrics
    @torch.no_grad()
    def perplexity(self, config: RunConfig) -> stats.Perplexity | None:
        if self.ppl_ids is None:
            return None
        w, width = self.ppl_ids.shape
        tag = f"<perplexity:{w}x{width}:{int(self.ppl_ids.sum())}>"
        row = self.store.get(config, tag)
        if row is None:
            nll = []
            with perturbation(self.model, config, **self.aux(config)):
                for i in range(0, w, 4):
                    ids = self.ppl_ids[i:i + 4].to(self.model.device)
                    logits = self.model(input_ids=ids).logits.float()  # (B, L, V)
                    lp = torch.log_softmax(logits[:, :-1], -1)
                    tok = -lp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, L-1)
                    nll += tok.mean(1).tolist()
            row = {"key": prompt_key(config, tag), "config": config.to_dict(), "prompt": tag, "window_nll": nll}
            self.store.append([row])
        return stats.perplexity_from_windows(row["window_nll"], width - 1)

    def evaluate(self, config: RunConfig, benign: bool = True, ppl: bool = True) -> dict:
        """All metrics of one configuration (generations reused from the store when present)."""
        if self.pool is not None:  # configs with one key (clean, scale 0) share one run
            res = self.result(EvalTask(config, benign, ppl))
            return dict(res, config=config.to_dict(), label=config.label())
        prompts = list(self.harmful.prompts)
        rows = generate(self.model, self.tokenizer, config, prompts, self.store, self.batch_size,
                        self.aux(config), self.progress, f"{config.label()} harmful", score=True)
        responses = [r["response"] for r in rows]
        verdicts = [judges.judge(p, r["response"], r.get("nll"), self.nll_threshold) for p, r in zip(prompts, rows)]
        out = {
            "config": config.to_dict(), "label": config.label(), "prompt_set": self.harmful.source,
            "n_harmful": len(prompts),
            "raw_asr": stats.rate([v.success for v in verdicts]).to_dict(),
            "coherent_asr": stats.rate([v.coherent_success for v in verdicts]).to_dict(),
            "strict_asr": stats.rate([v.strict_success for v in verdicts]).to_dict(),
            "degenerate": stats.rate([v.degenerate is not None for v in verdicts]).to_dict(),
            "degenerate_reasons": dict(Counter(v.degenerate for v in verdicts if v.degenerate)),
            "refusal": stats.rate([v.refused for v in verdicts]).to_dict(),
            "outcomes": {"success": [v.success for v in verdicts],
                         "coherent_success": [v.coherent_success for v in verdicts],
                         "strict_success": [v.strict_success for v in verdicts],
                         "degenerate": [v.degenerate for v in verdicts]},
            "mean_new_tokens": sum(r["new_tokens"] for r in rows) / max(1, len(rows)),
            "examples": [{"prompt": p, "response": r["response"][:300], "success": v.success,
                          "degenerate": v.degenerate} for p, r, v in list(zip(prompts, rows, verdicts))[:3]],
        }
        if self.judge is not None:
            flags = self.judge(prompts, responses)
            out["judge"] = {"name": self.judge.name,
                            "asr": stats.rate(flags).to_dict(),
                            "coherent_asr": stats.rate([f and v.degenerate is None
                                                        for f, v in zip(flags, verdicts)]).to_dict()}
            out["outcomes"]["judge_success"] = flags
        if benign and self.benign is not None:
            brows = generate(self.model, self.tokenizer, config, list(self.benign.prompts), self.store,
                             self.batch_size, self.aux(config), self.progress, f"{config.label()} benign")
            refused = [judges.has_refusal(r["response"]) for r in brows]
            out["over_refusal"] = stats.rate(refused).to_dict()
            out["n_benign"] = len(brows)
            out["outcomes"]["benign_refused"] = refused
        if ppl:
            p = self.perplexity(config)
            out["ppl"] = None if p is None else p.to_dict()
        return out


@dataclass(frozen=True)
class EvalTask:
    """``Harness.evaluate(config, benign, ppl)`` as a task: what a grid's worker runs (``grid.py``)."""

    config: RunConfig
    benign: bool = True
    ppl: bool = True

    @property
    def weights(self) -> str | None:
        return self.config.weights

    def key(self) -> str:  # the generations' identity: configs with one key share one run
        return json.dumps([self.config.key(), self.benign, self.ppl])

    def label(self) -> str:
        return f"{self.config.weights or 'base'} {self.config.label()}"

    def run(self, h: Harness) -> dict:
        return h.evaluate(self.config, self.benign, self.ppl)

    def prompt_keys(self, h: Harness) -> list[str]:
        prompts = list(h.harmful.prompts) + (list(h.benign.prompts) if self.benign and h.benign is not None else [])
        return [prompt_key(self.config, p) for p in dict.fromkeys(prompts)]

    @staticmethod
    def summary(res: dict) -> str:
        ppl = res.get("ppl")
        return (f"raw ASR {100 * res['raw_asr']['value']:.1f}%, coherent {100 * res['coherent_asr']['value']:.1f}%"
                + ("" if not ppl else f", PPL {ppl['value']:.2f}"))


# ------------------------------------------------------------------------------------------
# comparisons and aggregation


def compare(a: dict, b: dict) -> dict:
    """Paired statistics of B against A on the same harmful prompts (raw and coherent success)."""
    out = {}
    for kind in ("success", "coherent_success", "judge_success"):
        if kind in a["outcomes"] and kind in b["outcomes"]:
            out[kind] = stats.paired(a["outcomes"][kind], b["outcomes"][kind]).to_dict()
    if "benign_refused" in a["outcomes"] and "benign_refused" in b["outcomes"]:
        out["benign_refused"] = stats.paired(a["outcomes"]["benign_refused"], b["outcomes"]["benign_refused"]).to_dict()
    return out


def aggregate(results: list[dict], clean: dict) -> dict:
    """One sweep point over several seeds: spread of each metric and pooled flips vs clean."""
    def vals(key):
        return [r[key]["value"] for r in results]

    ppl = [r["ppl"]["value"] for r in results if r.get("ppl")]
    pairs = [compare(clean, r) for r in results]
    pooled = {}
    for kind in ("success", "coherent_success"):
        ups = sum(p[kind]["to_success"] for p in pairs)
        downs = sum(p[kind]["to_failure"] for p in pairs)
        pooled[kind] = {"to_success": ups, "to_failure": downs,
                        "p_mcnemar_per_seed": [p[kind]["p_mcnemar"] for p in pairs],
                        "diff_per_seed": [p[kind]["diff"] for p in pairs]}
    return {"seeds": [r["config"]["seed"] for r in results],
            "raw_asr": stats.spread(vals("raw_asr")), "coherent_asr": stats.spread(vals("coherent_asr")),
            "degenerate": stats.spread(vals("degenerate")),
            "over_refusal": stats.spread([r["over_refusal"]["value"] for r in results if "over_refusal" in r]),
            "ppl": stats.spread(ppl), "vs_clean": pooled, "runs": [strip(r) for r in results]}


def strip(result: dict) -> dict:
    """A result without its per-prompt outcome lists (for compact reports)."""
    return {k: v for k, v in result.items() if k not in ("outcomes", "examples")}


# ------------------------------------------------------------------------------------------
# sweeps


def sweep_configs(base: RunConfig, scales: list[float], seeds: list[int]) -> list[RunConfig]:
    """Every configuration ``sweep`` evaluates: clean, then each scale x seed (scale 0: one seed)."""
    return [base.clean()] + [base.with_(scale=float(s), seed=seed) for s in scales
                             for seed in (seeds if s != 0 else seeds[:1])]


def sweep(h: Harness, base: RunConfig, scales: list[float], seeds: list[int], benign: bool = True) -> dict:
    """ASR and PPL against noise scale (paper Figures 3-4): ``base`` fixes mode, site(s), layers."""
    h.prefetch([EvalTask(c, benign) for c in sweep_configs(base, scales, seeds)])
    clean = h.evaluate(base.clean(), benign=benign)
    points = []
    for s in scales:
        runs = [h.evaluate(base.with_(scale=float(s), seed=seed), benign=benign)
                for seed in (seeds if s != 0 else seeds[:1])]
        points.append({"scale": float(s), **aggregate(runs, clean)})
    return {"kind": "sweep", "base": base.to_dict(), "scales": [float(s) for s in scales], "seeds": list(seeds),
            "clean": strip(clean), "points": points}


def layer_sweep(h: Harness, base: RunConfig, layers: list[int], seeds: list[int], benign: bool = False) -> dict:
    """Noise in one layer at a time (paper Figure 6)."""
    h.prefetch([EvalTask(c, benign) for c in [base.clean()] + [base.with_(layers=(layer,), seed=seed)
                                                                for layer in layers for seed in seeds]])
    clean = h.evaluate(base.clean(), benign=benign)
    points = []
    for layer in layers:
        runs = [h.evaluate(base.with_(layers=(layer,), seed=seed), benign=benign) for seed in seeds]
        points.append({"layer": layer, **aggregate(runs, clean)})
    return {"kind": "layers", "base": base.to_dict(), "layers": list(layers), "seeds": list(seeds),
            "clean": strip(clean), "points": points}


def sensitive_layers(layer_result: dict, fraction: float = 0.5) -> tuple[list[int], str]:
    """Layers whose mean coherent-ASR increase over clean is at least ``fraction`` of the largest
    increase; the rule and the fallback are returned as text for the report."""
    base = layer_result["clean"]["coherent_asr"]["value"]
    deltas = {p["layer"]: p["coherent_asr"]["mean"] - base for p in layer_result["points"]}
    top = max(deltas.values()) if deltas else 0.0
    if top <= 0:
        return [], "no single layer raised coherent ASR above clean"
    chosen = sorted(layer for layer, d in deltas.items() if d >= fraction * top)
    return chosen, f"layers whose coherent-ASR rise is >= {fraction:.0%} of the largest rise ({100 * top:+.1f} pts)"


def pick_mva(sweep_result: dict, ppl_factor: float = 2.0) -> dict:
    """The scale where coherent ASR peaks among scales whose PPL stays within ``ppl_factor`` x
    clean, and the scale where raw ASR peaks (the paper's rule, no PPL limit)."""
    clean_ppl = (sweep_result["clean"].get("ppl") or {}).get("value")
    pts = [p for p in sweep_result["points"] if p["scale"] > 0]
    ok = [p for p in pts if clean_ppl is None or p["ppl"]["n"] == 0 or p["ppl"]["mean"] <= ppl_factor * clean_ppl]
    coherent = max(ok, key=lambda p: p["coherent_asr"]["mean"], default=None)
    raw = max(pts, key=lambda p: p["raw_asr"]["mean"], default=None)
    return {"coherent_peak_scale": None if coherent is None else coherent["scale"],
            "coherent_peak_asr": None if coherent is None else coherent["coherent_asr"]["mean"],
            "coherent_peak_ppl": None if coherent is None else coherent["ppl"]["mean"],
            "raw_peak_scale": None if raw is None else raw["scale"],
            "raw_peak_asr": None if raw is None else raw["raw_asr"]["mean"],
            "raw_peak_ppl": None if raw is None else raw["ppl"]["mean"],
            "clean_ppl": clean_ppl, "ppl_limit": None if clean_ppl is None else ppl_factor * clean_ppl,
            "scales_within_ppl_limit": [p["scale"] for p in ok]}


SITE_MODE = HEADLINE  # the paper's error model at each site


def mva(h: Harness, base: RunConfig, layers: list[int], layer_scale: float, scales: list[float],
        seeds: list[int], fallback_layers: list[int], ppl_factor: float = 2.0) -> dict:
    """MVA search (paper Table 3): find sensitive layers with a per-layer sweep at ``layer_scale``
    (both sites), then sweep each site's scale on those layers and pick the peaks."""
    lay = layer_sweep(h, base.with_(mode="gaussian", scale=layer_scale, sites=SITES), layers, seeds)
    chosen, rule = sensitive_layers(lay)
    if not chosen:
        chosen, rule = list(fallback_layers), rule + f"; used the model card's sensitive layers {fallback_layers}"
    cfgs = {site: base.with_(mode=SITE_MODE[site], sites=(site,), layers=tuple(chosen), scale=scales[0])
            for site in SITES}
    h.prefetch([EvalTask(c, False) for cfg in cfgs.values() for c in sweep_configs(cfg, scales, seeds)])
    sites = {}
    for site, cfg in cfgs.items():
        sw = sweep(h, cfg, scales, seeds, benign=False)
        sites[site] = {"sweep": sw, "mva": pick_mva(sw, ppl_factor)}
    return {"kind": "mva", "base": base.to_dict(), "layer_sweep": lay, "sensitive_layers": chosen,
            "sensitive_rule": rule, "sites": sites}


# ------------------------------------------------------------------------------------------
# building a harness


def load_harness(model: str, *, model_path=None, weights=None, harmful: str = "harmbench", limit: int | None = None,
                 benign_limit: int | None = None, ppl_tokens: int = 4096, ppl_window: int = 256,
                 store_path="results/safety/generations.jsonl", batch_size: int = 16, judge_path=None,
                 nll_threshold: float = judges.NLL_THRESHOLD, train_prompts: str | None = "donotanswer,advbench",
                 progress: bool = True, load_weights: bool = True) -> Harness:
    """Load the model (and LoRA ``weights``), the prompt sets, the perplexity windows and the store.

    ``train_prompts``: the alignment training sets (comma-separated) whose overlap with the
    evaluation prompts is refused (see ``data.check_no_overlap``); None skips the check. ``load_weights=False``: the
    tokenizer only, no model and no judge (a grid driver whose workers load them)."""
    from privinf.models import load_model, resolve_model_path
    from privinf.safety import data

    ev = data.harmful(harmful).head(limit)
    for spec in data.set_list(train_prompts):
        data.check_no_overlap(data.harmful(spec), ev)
    if load_weights:
        m, tok = load_model(model, model_path=model_path)
    else:
        from transformers import AutoTokenizer

        m, tok = None, AutoTokenizer.from_pretrained(str(resolve_model_path(model, model_path)), local_files_only=True)
    if weights and m is not None:
        from peft import PeftModel

        from privinf.align.adapters import resolve_adapter

        # merged, so the result is a plain model whose module names the emulator's table knows
        m = PeftModel.from_pretrained(m, str(resolve_adapter(weights))).merge_and_unload().eval()
    bn = None if benign_limit == 0 else data.benign().head(benign_limit)
    ppl_ids = None
    if ppl_tokens:
        ppl_ids = Harness.ppl_windows(tok, data.wiki_text(max_chars=ppl_tokens * 8), ppl_window, ppl_tokens)
    judge = judges.ModelJudge(judge_path) if judge_path and m is not None else None
    return Harness(m, tok, ResultsStore(store_path), ev, bn, ppl_ids, batch_size, nll_threshold, judge, progress)
