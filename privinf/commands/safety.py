"""``privinf safety``: ASR, perplexity and over-refusal of a model under approximation; sweeps and MVA.

Module-level imports stay light (click only); the harness, torch and transformers load inside commands.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click

from privinf.errors import UsageError
from privinf import validate
from privinf.commands import gridopts

COST = """\b
Cost (default model, 1 thread on a shared 2-core CPU, measured): the defaults (32 harmful + 16 benign
prompts, 64 new tokens, 4096 perplexity tokens) take about 100 s per configuration; a full run
(--limit 0 --benign-limit -1: 200 HarmBench + 160 benign prompts) about 6 min per configuration.
A sweep costs (scales x seeds + 1) configurations; generations are cached, so reruns are free."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()[:80]


def _who(o: dict) -> str:
    """The model as titles name it: with its adapter, when one is loaded."""
    return o["model_name"] + (f" + {Path(o['weights']).name}" if o.get("weights") else "")


def _stem(o: dict) -> str:
    """File-name part for the model (and adapter): runs of other weights do not overwrite it."""
    return _slug(Path(o["model_name"]).name) + (f"-{_slug(Path(o['weights']).name)}" if o.get("weights") else "")


def common(f):
    """Options every safety command shares (model, prompts, generation, outputs)."""
    opts = [
        click.option("--model", "model_name", default="smollm2-135m-instruct", show_default=True,
                     help="model card name or local Hugging Face folder"),
        click.option("--model-path", default=None, help="local weights folder for a model card"),
        click.option("--weights", default=None, help="PEFT LoRA adapter folder (merged into the model)"),
        click.option("--prompts", default="harmbench", show_default=True,
                     help="harmful prompts: harmbench, donotanswer, advbench, tense, or a .txt/.jsonl file of your own"),
        click.option("--limit", default=32, show_default=True, help="first N harmful prompts (0 = all)"),
        click.option("--benign-limit", default=16, show_default=True,
                     help="first N benign prompts for over-refusal (0 = skip; -1 = all 160)"),
        click.option("--ppl-tokens", default=4096, show_default=True, help="Wikipedia tokens for perplexity (0 = skip)"),
        click.option("--ppl-window", default=256, show_default=True, help="perplexity window (non-overlapping)"),
        click.option("--max-new-tokens", default=64, show_default=True),
        click.option("--batch-size", default=16, show_default=True),
        click.option("--threads", default=1, show_default=True, help="torch threads"),
        click.option("--judge", "judge_path", default=None,
                     help="local model-judge folder (sequence classifier or Yes/No causal LM)"),
        click.option("--nll-threshold", default=3.0, show_default=True,
                     help="mean NLL (nats/token, clean model) above which a response is degenerate"),
        click.option("--train-prompts", default="donotanswer,advbench", show_default=True,
                     help="training prompt sets (comma-separated: privinf align trains on both) that must not "
                          "overlap the evaluation prompts ('' to skip)"),
        click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(),
                     help="output folder (generations store under <results>/safety/)"),
        click.option("--progress/--no-progress", default=True, show_default=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _harness(o: dict):
    return gridopts.harness(o)  # with --workers/--ray-address: a driver whose workers hold the model


def _base(o: dict, **kw):
    from privinf.safety.config import RunConfig

    return RunConfig(model=o["model_name"], weights=o["weights"], max_new_tokens=o["max_new_tokens"], **kw)


def _meta(o: dict, h) -> dict:
    from privinf.safety.reports import metadata_block

    return metadata_block({"options": o, "prompt_set": h.harmful.source,
                           "benign_set": None if h.benign is None else h.benign.source,
                           "ppl_windows": None if h.ppl_ids is None else list(h.ppl_ids.shape)})


def _done(paths: dict):
    click.echo("\nwrote " + ", ".join(str(p) for p in paths.values()))


@click.group()
def safety():  # noqa: D401
    """Safety of a model under approximation: ASR, perplexity, over-refusal, sweeps, MVA search.

    \b
    Examples:
      privinf safety eval --limit 16                       # clean default model
      privinf safety eval --card bolt --limit 16           # BOLT's arithmetic, paired vs clean
      privinf safety sweep --site up --scales 0.01,0.02,0.04 --layers 0-3
      privinf safety layers --scale 0.5 --relative --layers 0-7
      privinf safety mva --candidate-layers 0-7

    Outputs go to <results>/safety/ (JSON, Markdown, PNG); every generation is stored in
    <results>/safety/generations.jsonl, so interrupted or repeated runs resume.
    """


# ------------------------------------------------------------------------------------------ eval


@safety.command("eval")
@common
@click.option("--card", default=None, help="protocol card in exact mode (its own arithmetic)")
@click.option("--profile", default=None, help="saved error profile (noise mode)")
@click.option("--mode", type=click.Choice(["gaussian", "laplace"]), default=None, help="explicit noise (needs --scale)")
@click.option("--scale", type=float, default=None, help="noise std (gaussian) or b (laplace)")
@click.option("--relative", is_flag=True, help="--scale multiplies each site's measured clean std")
@click.option("--site", "sites", multiple=True, type=click.Choice(["up", "down"]), help="sites (default both)")
@click.option("--layers", default="all", show_default=True, help="layers perturbed, e.g. 0-3,7")
@click.option("--seed", default=0, show_default=True)
@click.option("--compare-clean/--no-compare-clean", default=True, show_default=True,
              help="also evaluate the clean model and compare paired")
def eval_cmd(card, profile, mode, scale, relative, sites, layers, seed, compare_clean, **o):
    """Evaluate one configuration: clean, a card (exact), a profile (noise) or an explicit scale.

    Prints raw ASR (GCG keyword judge), coherent ASR (degenerate responses excluded), degenerate
    rate, refusal and over-refusal rates and perplexity, with 95% intervals and the paper's figure
    beside ours; a perturbed configuration is compared with clean on the same prompts (flips both
    ways, McNemar exact test, bootstrap interval of the difference).

    \b
    Examples:
      privinf safety eval --limit 16
      privinf safety eval --card bolt --limit 16
      privinf safety eval --mode gaussian --scale 0.02 --site up --layers 0-3 --seed 1
      privinf safety eval --prompts my_prompts.txt --weights runs/quada-adapter
    """
    o = dict(o)
    kind = "exact" if card else "noise" if profile else mode or "clean"
    if sum(x is not None for x in (card, profile, mode)) > 1:
        raise UsageError("give at most one of --card, --profile, --mode")
    if mode is None and (scale is not None or relative):
        raise UsageError(f"{'--scale' if scale is not None else '--relative'} needs --mode gaussian or --mode laplace")
    info = validate.safety_options(o, relative=relative, cards=[card] if card else [])
    validate.profile_file(profile)
    cfg = _base(o, mode=kind, card=card, profile=profile, scale=scale, relative=relative,
                sites=tuple(sites) or ("up", "down"), layers=validate.layers(layers, info), seed=seed)

    from privinf.cards import protocol_card
    from privinf.report import table
    from privinf.safety import reports
    from privinf.safety.runner import compare

    h = _harness(o)
    configs = [cfg.clean(), cfg] if cfg.perturbed and compare_clean else [cfg]
    results = [h.evaluate(c) for c in configs]
    paper = [protocol_card(card if c.mode == "exact" else "exact").reference.__dict__
             if (c.mode == "exact" or not c.perturbed) else None for c in configs]
    data = {"kind": "eval", "model": o["model_name"], "prompt_set": h.harmful.source,
            "benign_set": None if h.benign is None else h.benign.source, "max_new_tokens": o["max_new_tokens"],
            "results": results, "paper": paper, "meta": _meta(o, h)}
    if len(results) == 2:
        data["paired"] = compare(results[0], results[1])
    headers, rows = reports.eval_rows(results, paper)
    click.echo(table(headers, rows))
    if "paired" in data:
        ph, pr = reports.paired_rows(data["paired"])
        click.echo(f"\npaired on the same prompts: A = {results[0]['label']}, B = {results[1]['label']}")
        click.echo(table(ph, pr))
    out = Path(o["results_dir"]) / "safety"
    stem = f"eval-{_stem(o)}-{_slug(cfg.label())}"
    paths = reports.write(out, stem, data, reports.eval_markdown(data))
    paths["png"] = reports.plot_eval(data, out / f"{stem}.png")
    _done(paths)


# ------------------------------------------------------------------------------------------ sweep


@safety.command()
@common
@gridopts.grid_options
@click.option("--site", type=click.Choice(["up", "down"]), default="up", show_default=True,
              help="up: before W_up (Gaussian, paper Fig. 3); down: before W_down (Laplace, Fig. 4)")
@click.option("--scales", default="0.005,0.01,0.02,0.04", show_default=True,
              help="comma-separated noise scales (std or b; with --relative, multiples of each site's std)")
@click.option("--relative", is_flag=True, help="scales multiply each (layer, site)'s measured clean std")
@click.option("--dist", type=click.Choice(["gaussian", "laplace"]), default=None,
              help="noise family (default: gaussian for up, laplace for down)")
@click.option("--layers", default="all", show_default=True, help="layers perturbed, e.g. 0-3")
@click.option("--seeds", default="0,1", show_default=True, help="noise seeds per scale")
def sweep(site, scales, relative, dist, layers, seeds, **o):
    """ASR and perplexity against noise scale at one site (the paper's Figures 3 and 4).

    Each scale runs every seed; the table shows mean ± sd over seeds and the flips against clean.

    \b
    Example:
      privinf safety sweep --site up --scales 0.005,0.01,0.02 --layers 0-3 --limit 16 --seeds 0,1
    """
    o = dict(o)
    info = validate.safety_options(o, relative=relative)
    xs, sd, chosen = validate.numbers(scales, "--scales"), validate.integers(seeds), validate.layers(layers, info)

    from privinf.safety.config import layer_spec
    from privinf.safety.runner import SITE_MODE, sweep as run_sweep

    base = _base(o, mode=dist or SITE_MODE[site], scale=xs[0], relative=relative, sites=(site,), layers=chosen)
    h = _harness(o)
    res = run_sweep(h, base, xs, sd, benign=bool(h.benign))
    res["meta"] = _meta(o, h)
    card = _model_card(o["model_name"])
    ref = None if card is None else (card.mva_up_std if site == "up" else card.mva_down_b)
    where = "all" if base.layers is None else layer_spec(base.layers)
    title = (f"{_who(o)}: {base.mode} noise before W_{site} (layers {where}, "
             f"{'relative' if relative else 'absolute'} scale)")
    notes = [f"Prompts: {h.harmful.source}, n={len(h.harmful)}; seeds {sd}; max_new_tokens={o['max_new_tokens']}."]
    if ref is not None:
        notes.append(f"Paper Table 3 MVA for this model before W_{site}: {ref:g}.")
    _show_and_write(res, "scale", o, f"sweep-{_stem(o)}-{site}-{where}"
                    f"{'-rel' if relative else ''}", title, notes, ref if not relative else None)


def _model_card(name: str):
    from privinf.cards import CardError, model_card

    if Path(name).exists():  # a local model folder has no card
        return None
    try:
        return model_card(name)
    except (CardError, OSError):
        return None


def _show_and_write(res: dict, xkey: str, o: dict, stem: str, title: str, notes: list[str], ref_x=None):
    from privinf.report import table
    from privinf.safety import reports

    click.echo(title)
    h, rows = reports.sweep_rows(res["points"], xkey, res["clean"])
    click.echo(table(h, rows))
    out = Path(o["results_dir"]) / "safety"
    paths = reports.write(out, stem, res, reports.sweep_markdown(res, title, xkey, notes))
    paths["png"] = reports.plot_sweep(res, xkey, out / f"{stem}.png", title, ref_x, log_x=(xkey == "scale"))
    _done(paths)
    return paths


# ------------------------------------------------------------------------------------------ layers


@safety.command()
@common
@gridopts.grid_options
@click.option("--scale", default=0.5, show_default=True, type=float, help="noise scale in the one perturbed layer")
@click.option("--relative/--absolute", default=True, show_default=True,
              help="scale as a multiple of each site's clean std (default) or absolute")
@click.option("--dist", type=click.Choice(["gaussian", "laplace"]), default="gaussian", show_default=True)
@click.option("--site", "sites", multiple=True, type=click.Choice(["up", "down"]), help="sites (default both)")
@click.option("--layers", default="all", show_default=True, help="layers to try one at a time, e.g. 0-7")
@click.option("--seeds", default="0", show_default=True)
def layers(scale, relative, dist, sites, layers, seeds, **o):
    """Noise in one layer at a time (the paper's Figure 6): which layers are sensitive.

    \b
    Example:
      privinf safety layers --scale 0.5 --layers 0-7 --limit 16
    """
    o = dict(o)
    info = validate.safety_options(o, relative=relative)
    cand, sd = validate.layer_list(layers, info), validate.integers(seeds)
    base = _base(o, mode=dist, scale=validate.scales([scale], "--scale")[0], relative=relative,
                 sites=tuple(sites) or ("up", "down"))

    from privinf.safety.runner import layer_sweep, sensitive_layers

    h = _harness(o)
    res = layer_sweep(h, base, cand, sd)
    chosen, rule = sensitive_layers(res)
    res["sensitive_layers"], res["sensitive_rule"] = chosen, rule
    res["meta"] = _meta(o, h)
    card = _model_card(o["model_name"])
    notes = [f"{dist} noise {scale:g}{'x std' if relative else ''} at {'+'.join(base.sites)} in one layer at a time.",
             f"Sensitive layers found: {chosen or 'none'} ({rule})."]
    if card is not None:
        notes.append(f"Model card (paper Table 3 where given): sensitive layers {list(card.sensitive_layers)}.")
    _show_and_write(res, "layer", o, f"layers-{_stem(o)}-{_slug(f'{dist}{scale:g}')}"
                    f"{'-rel' if relative else ''}", f"{_who(o)}: noise in one layer at a time", notes)
    click.echo(f"sensitive layers: {chosen or 'none'} ({rule})")


# ------------------------------------------------------------------------------------------ mva


@safety.command()
@common
@gridopts.grid_options
@click.option("--candidate-layers", default="0-7", show_default=True, help="layers tried one at a time")
@click.option("--layer-scale", default=0.5, show_default=True, type=float,
              help="noise scale for the per-layer step (relative or absolute, see --relative)")
@click.option("--scales", default="0.1,0.25,0.5,1.0", show_default=True, help="scales searched on the sensitive layers")
@click.option("--relative/--absolute", default=True, show_default=True)
@click.option("--seeds", default="0,1", show_default=True)
@click.option("--ppl-factor", default=2.0, show_default=True, help="admissible perplexity, x clean")
def mva(candidate_layers, layer_scale, scales, relative, seeds, ppl_factor, **o):
    """Most vulnerable approximation (the paper's Table 3): sensitive layers, then the noise scale
    at each site where coherent ASR peaks with perplexity within --ppl-factor x clean (and the
    paper's raw-ASR peak, which has no perplexity limit).

    \b
    Example:
      privinf safety mva --candidate-layers 0-5 --scales 0.25,0.5,1 --limit 16 --seeds 0
    """
    o = dict(o)
    info = validate.safety_options(o, relative=relative)
    cand = validate.layer_list(candidate_layers, info, "--candidate-layers")
    xs, sd = validate.numbers(scales, "--scales"), validate.integers(seeds)
    validate.scales([layer_scale], "--layer-scale")
    validate.at_least(ppl_factor, 1, "--ppl-factor")

    from privinf.report import table
    from privinf.safety import reports
    from privinf.safety.runner import mva as run_mva

    h = _harness(o)
    card = _model_card(o["model_name"])
    fallback = list(card.sensitive_layers) if card else list(range(min(4, info.depth or 4)))
    base = _base(o, mode="gaussian", scale=layer_scale, relative=relative)
    res = run_mva(h, base, cand, layer_scale, xs, sd, fallback, ppl_factor)
    res["meta"] = _meta(o, h)
    res["paper"] = None if card is None else {"sensitive_layers": list(card.sensitive_layers),
                                              "mva_up_std": card.mva_up_std, "mva_down_b": card.mva_down_b}
    unit = "x std" if relative else ""
    rows = []
    for site, key in (("up", "mva_up_std"), ("down", "mva_down_b")):
        m = res["sites"][site]["mva"]
        rows.append([site, str(res["sensitive_layers"]),
                     "-" if m["coherent_peak_scale"] is None else f"{m['coherent_peak_scale']:g}{unit}",
                     reports._pct(m["coherent_peak_asr"]),
                     "-" if m["coherent_peak_ppl"] is None else f"{m['coherent_peak_ppl']:.2f}",
                     "-" if m["raw_peak_scale"] is None else f"{m['raw_peak_scale']:g}{unit}", reports._pct(m["raw_peak_asr"]),
                     "-" if not card else f"{list(card.sensitive_layers)} / {getattr(card, key) or '-'}"])
    headers = ["site", "sensitive layers", "MVA (coherent, PPL<=%gx)" % ppl_factor, "coherent ASR %", "PPL",
               "raw-ASR peak", "raw ASR %", "paper layers / MVA"]
    click.echo(table(headers, rows))
    out = Path(o["results_dir"]) / "safety"
    stem = f"mva-{_stem(o)}{'-rel' if relative else ''}"
    md = [f"# MVA search: {_who(o)}", "", f"Sensitive layers: {res['sensitive_layers']} ({res['sensitive_rule']}).",
          f"Scales are {'multiples of each site' + chr(39) + 's clean std' if relative else 'absolute'}; "
          f"paper Table 3 values are absolute, for the paper's models.", "", table(headers, rows, markdown=True), ""]
    for site in ("up", "down"):
        sh, sr = reports.sweep_rows(res["sites"][site]["sweep"]["points"], "scale", res["sites"][site]["sweep"]["clean"])
        md += [f"## Sweep before W_{site}", "", table(sh, sr, markdown=True), ""]
    lh, lr = reports.sweep_rows(res["layer_sweep"]["points"], "layer", res["layer_sweep"]["clean"])
    md += ["## One layer at a time", "", table(lh, lr, markdown=True), ""]
    paths = reports.write(out, stem, res, "\n".join(md) + "\n")
    paths["png_layers"] = reports.plot_sweep(res["layer_sweep"], "layer", out / f"{stem}-layers.png", "one layer at a time")
    for site in ("up", "down"):
        paths[f"png_{site}"] = reports.plot_sweep(res["sites"][site]["sweep"], "scale", out / f"{stem}-{site}.png",
                                                  f"before W_{site}", res["sites"][site]["mva"]["coherent_peak_scale"],
                                                  log_x=True)
    _done(paths)


# ------------------------------------------------------------------------------------------ throughput


@safety.command()
@click.option("--model", "model_name", default="smollm2-135m-instruct", show_default=True)
@click.option("--prompts", "n", default=16, show_default=True, help="first N HarmBench prompts")
@click.option("--max-new-tokens", default=32, show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--threads", default=1, show_default=True)
def throughput(model_name, n, max_new_tokens, batch_size, threads):
    """Generation throughput: one prompt at a time vs batched (left padding), same prompts.

    \b
    Example:
      privinf safety throughput --prompts 16 --max-new-tokens 32
    """
    validate.model(model_name)
    for value, option in ((n, "--prompts"), (max_new_tokens, "--max-new-tokens"), (batch_size, "--batch-size"),
                          (threads, "--threads")):
        validate.at_least(value, 1, option)
    import torch

    from privinf.models import load_model
    from privinf.report import table
    from privinf.safety import data
    from privinf.safety.generate import throughput as measure

    torch.set_num_threads(threads)
    m, tok = load_model(model_name)
    r = measure(m, tok, list(data.harmbench().prompts[:n]), max_new_tokens, batch_size)
    click.echo(table(["mode", "tokens", "seconds", "tokens/s"],
                     [["one at a time", r["single_tokens"], f"{r['single_seconds']:.1f}", f"{r['single_tok_s']:.1f}"],
                      [f"batched ({batch_size})", r["batched_tokens"], f"{r['batched_seconds']:.1f}",
                       f"{r['batched_tok_s']:.1f}"]]))
    click.echo(f"speedup: {r['speedup']:.1f}x tokens/s, {r['speedup_prompts_per_s']:.1f}x wall time "
               f"({n} prompts, {max_new_tokens} new tokens, {threads} thread(s))")


for _cmd in (safety, eval_cmd, sweep, layers, mva):
    _cmd.help = inspect.cleandoc(_cmd.help or "") + "\n\n" + COST
