"""``privinf safety compare``: weights x perturbations (and Table 5, Figures 7/8); registered into
the ``safety`` group from the bottom of ``commands/safety.py``. Light imports at module level."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from privinf import validate
from privinf.commands import gridopts
from privinf.commands.safety import COST, _base, _done, _harness, _slug, common, safety
from privinf.errors import UsageError

CARDS = "iron,bolt,bumblebee,puma,nexus,teal-25,teal-50,smoothquant-a8,smoothquant-a4,omniquant-a8,omniquant-a4"


def _drop(name: str):
    """Remove the option ``name`` that ``common`` added (compare takes several --weights instead)."""
    def deco(f):
        f.__click_params__ = [p for p in f.__click_params__ if p.name != name]
        return f
    return deco


@safety.command("compare")
@_drop("weights")
@common
@gridopts.grid_options
@click.option("--weights", "weight_specs", multiple=True,
              help="label=adapter (folder or shipped name; label=none: the base model); repeat for each "
                   "[default: base=none]")
@click.option("--baseline", default=None,
              help="label of the weights every cell is also compared with (its clean run) [default: the second --weights]")
@click.option("--cards", default=CARDS, show_default=True, help="protocol cards in exact mode ('none' to skip)")
@click.option("--mva", default=None, help="the MVA: up:gaussian:0.05,down:laplace:0.03 or the JSON of `privinf safety mva`")
@click.option("--relative", is_flag=True, help="--mva scales multiply each (layer, site)'s clean std")
@click.option("--mva-layers", default=None,
              help="layers the MVA perturbs [default: the MVA JSON's sensitive layers, else the model card's, else 0-3]")
@click.option("--profiles", default="", help="measured error profiles (comma-separated JSON files of `privinf profile`; its -propagated.json is the card's all-layer error), noise mode on every layer")
@click.option("--seeds", default="0,1,2", show_default=True, help="noise seeds wherever the noise is random")
@click.option("--ablations", is_flag=True, help="Table 5 instead of the grid: each --weights under the MVA only")
@click.option("--curves", is_flag=True, help="Figures 7/8 instead of the grid: ASR and PPL against noise scale")
@click.option("--curve-factors", default="0.25,0.5,1,1.5,2", show_default=True,
              help="--curves: noise scales as multiples of each MVA site's scale")
def compare(weight_specs, baseline, cards, mva, relative, mva_layers, profiles, seeds, ablations, curves,
            curve_factors, **o):
    """Weights x perturbations in one table: before and after QuadA under every approximation.

    Rows: each --weights under clean, the MVA (one row per site), each card in exact mode and each
    profile in noise mode. Columns: raw, coherent and strict ASR, PPL, over-refusal; paired against
    the same weights' clean run (difference with a bootstrap interval, flips each way, McNemar p,
    pooled over seeds) and against the --baseline weights' clean run. --ablations gives Table 5's
    rows (label the weights NA, LA, MVA, ... to see the paper's figures beside them); --curves
    Figures 7/8.

    \b
    Examples:
      privinf safety compare --weights base=none --weights aligned=smollm2-135m-safe \\
          --weights dpo=results/align/dpo/adapter --weights quada=results/align/quada/adapter \\
          --mva results/safety/mva-smollm2-135m-instruct.json --limit 0 --benign-limit -1
      privinf safety compare --ablations --mva up:0.05 --weights NA=runs/na --weights MVA=runs/quada
      privinf safety compare --curves --mva up:0.05 --weights aligned=smollm2-135m-safe --weights quada=runs/quada
    """
    from privinf.commands.quada_options import default_layers
    from privinf.safety import compare as lib
    from privinf.safety import mvaspec

    o = dict(o, weights=None)
    weights = lib.parse_weights(weight_specs)
    card_list = [] if cards.strip().lower() in ("", "none") else [c.strip() for c in cards.split(",") if c.strip()]
    m = mvaspec.parse(mva, relative=relative) if mva else None
    info = validate.safety_options(o, relative=bool(m and m.relative), cards=[] if ablations or curves else card_list)
    for w in weights:
        if w.path is not None:
            validate.weights(w.path, "--weights")
    labels = [w.label for w in weights]
    if baseline is None:
        baseline = labels[1] if len(labels) > 1 else None
    elif baseline not in labels:
        raise UsageError(f"--baseline {baseline!r} is not a --weights label; labels: {', '.join(labels)}")
    if (ablations or curves) and m is None:
        raise UsageError(f"--{'ablations' if ablations else 'curves'} needs --mva (a spec or the JSON of `privinf safety mva`)")
    layers = None
    if m is not None:
        layers = validate.layers(mva_layers, info, "--mva-layers") if mva_layers else (m.layers or default_layers(info))
        if layers is not None and info.depth is not None and max(layers) >= info.depth:
            raise UsageError(f"--mva: layers {list(layers)} are beyond {info.name} ({info.depth} layers); give --mva-layers")
    prof_list = [p.strip() for p in profiles.split(",") if p.strip()]
    for p in prof_list:
        validate.profile_file(p, "--profiles")
    sd = validate.integers(seeds)
    factors = validate.numbers(curve_factors, "--curve-factors")

    def harness_for(w):
        ow = dict(o, weights=w.path)
        return _harness(ow), _base(ow)

    from privinf.report import table
    from privinf.safety import reports

    out = Path(o["results_dir"]) / "safety"
    model = _slug(Path(o["model_name"]).name)
    tag = _slug("-".join(labels))
    notes = [f"Model {o['model_name']}; harmful prompts {o['prompts']} (limit {o['limit'] or 'all'}), benign limit "
             f"{o['benign_limit']}; max_new_tokens {o['max_new_tokens']}; seeds {sd}.",
             "Weights: " + ", ".join(f"{w.label} = {w.path or 'base model'}" for w in weights) + ".",
             f"MVA: {m.label() if m else 'none'} on layers {'all' if layers is None else list(layers)}"
             f"{' (from ' + m.source + ')' if m else ''}; one row per site (one noise family per configuration)."]
    if not ablations and not curves:
        perts = lib.perturbations(card_list, m, layers, prof_list)
        res = lib.grid(harness_for, weights, perts, sd, baseline)
        res["meta"] = _meta_light(o)
        res["mva"] = None if m is None else m.to_dict()
        h, rows = lib.grid_rows(res)
        click.echo(table(h, rows))
        stem = f"compare-{model}-{tag}"
        paths = reports.write(out, stem, res, lib.grid_markdown(res, f"privinf safety compare: {o['model_name']}", notes))
        paths["png"] = lib.plot_grid(res, out / f"{stem}.png", f"{o['model_name']}: coherent ASR and PPL")
        _done(paths)
    if ablations:
        res = lib.grid(harness_for, weights, lib.perturbations((), m, layers), sd, baseline)
        res["meta"], res["mva"] = _meta_light(o), m.to_dict()
        h, rows = lib.ablation_rows(res)
        click.echo(table(h, rows))
        gh, grows = lib.grid_rows(res)
        stem = f"ablations-{model}-{tag}"
        md = "\n".join([f"# Table 5 ablations under the MVA: {o['model_name']}", "", *notes, "",
                        "Paper (Llama-3.1-8B-Instruct): ASR under approximation after training with no perturbation "
                        "(NA) 61.84, 10% above the MVA (LA) 45.79, at the MVA 0.19.", "",
                        table(h, rows, markdown=True), "", "## Every cell", "", table(gh, grows, markdown=True), ""])
        paths = reports.write(out, stem, res, md + "\n")
        paths["png"] = lib.plot_grid(res, out / f"{stem}.png", f"{o['model_name']}: ablations under the MVA")
        _done(paths)
    if curves:
        res = lib.curves(harness_for, weights, m, layers, factors, sd)
        res["meta"] = _meta_light(o)
        h, rows = lib.curve_rows(res)
        click.echo(table(h, rows))
        stem = f"curves-{model}-{tag}"
        md = "\n".join([f"# ASR and perplexity against noise scale (Figures 7/8): {o['model_name']}", "", *notes, "",
                        f"Scales: {factors} x each site's MVA scale; mean ± sd over seeds.", "",
                        table(h, rows, markdown=True), ""])
        paths = reports.write(out, stem, res, md + "\n")
        paths["png"] = lib.plot_curves(res, out / f"{stem}.png", f"{o['model_name']}: noise scale curves")
        _done(paths)


def _meta_light(o: dict) -> dict:
    from privinf.safety.reports import metadata_block

    return metadata_block({"options": o})


compare.help = inspect.cleandoc(compare.help or "") + "\n\n" + COST
