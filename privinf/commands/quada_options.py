"""``privinf align --method quada`` options and their checks (light: click and the MVA parser only).

Kept beside ``commands/align.py`` so that command gains one decorator and one call; what the
options mean is in ``privinf/align/quada.py``.
"""

from __future__ import annotations

import click

from privinf import validate
from privinf.errors import UsageError

DEFAULT_CLUSTER_WEIGHT = 0.1


def quada_options(f):
    opts = [
        click.option("--mva", default=None,
                     help="quada: noise at the MVA, 'up:gaussian:0.05,down:laplace:0.03' (site[:family]:scale), "
                          "or the JSON `privinf safety mva` wrote (its sites, scales, absolute/relative, layers)"),
        click.option("--relative", is_flag=True, help="quada: --mva scales multiply each (layer, site)'s clean std"),
        click.option("--mva-scale", default=1.0, show_default=True, type=float,
                     help="quada: every MVA scale times this (Table 5's LA: 1.1)"),
        click.option("--layers", "perturb_layers", default=None,
                     help="quada: layers perturbed, e.g. 0-3, or 'all' (default: the MVA JSON's sensitive "
                          "layers, else the model card's, else 0-3)"),
        click.option("--perturb", type=click.Choice(["mva", "card", "none"]), default="mva", show_default=True,
                     help="quada: 'none' trains without noise (plain DPO when --cluster-weight is 0: "
                          "the +DPO row, Table 5's NA); 'card' runs the policy forward under --card's exact "
                          "arithmetic instead of noise (privinf's, beyond the paper)"),
        click.option("--card", "perturb_card", default=None,
                     help="quada --perturb card: the protocol card (e.g. nexus, bumblebee) whose arithmetic "
                          "the chosen layers compute during training"),
        click.option("--cluster-weight", default=None, type=float,
                     help=f"quada: lambda of the clustering term [default: {DEFAULT_CLUSTER_WEIGHT} with noise or a card, "
                          "0 with --perturb none]"),
        click.option("--cluster-tokens", type=click.Choice(["prompt", "content"]), default="prompt", show_default=True,
                     help="quada: the tokens the clustering term averages layer 0's output over: the whole prompt "
                          "(chat template included) or its content (minus the prefix and suffix every prompt of the "
                          "batch shares: the template's system block and assistant header)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def quada_config(method: str, init, info, mva, relative, mva_scale, perturb_layers, perturb, cluster_weight,
                 cluster_tokens="prompt", perturb_card=None) -> dict:
    """AlignConfig keyword arguments for QuadA, checked; ``{}`` for other methods."""
    given = [name for name, v in (("--mva", mva), ("--relative", relative), ("--layers", perturb_layers),
                                  ("--cluster-weight", cluster_weight), ("--mva-scale", mva_scale != 1.0),
                                  ("--perturb", perturb != "mva"), ("--cluster-tokens", cluster_tokens != "prompt"),
                                  ("--card", perturb_card)) if v]
    if method != "quada":
        if given:
            raise UsageError(f"{given[0]} applies only to --method quada, "
                             f"not --method {method}")
        return {}
    if init is None:
        raise UsageError("--method quada needs --init: the aligned baseline adapter it starts from "
                         "(and the unperturbed reference)")
    if not (mva_scale > 0 and mva_scale < float("inf")):
        raise UsageError(f"--mva-scale {mva_scale:g}: must be a finite number > 0")
    if cluster_weight is not None and not (0 <= cluster_weight < float("inf")):
        raise UsageError(f"--cluster-weight {cluster_weight:g}: must be a finite number >= 0")
    spec, rel, layers = None, False, None
    if perturb_card and perturb != "card":
        raise UsageError("--card applies with --perturb card")
    if perturb == "card":
        if not perturb_card:
            raise UsageError("--perturb card needs --card (a protocol card, e.g. nexus)")
        if mva or relative or mva_scale != 1.0:
            raise UsageError("--perturb card trains under the card's arithmetic: drop --mva/--relative/--mva-scale")
        card = validate.protocol_cards([perturb_card])[0]
        if any(site.method == "sparsify" for site in card.sites.values()):
            raise UsageError(f"--card {perturb_card}: a sparsifying card's thresholds are calibrated on the "
                             "model, which training changes; choose an MPC/FHE or quantization card")
    elif perturb == "mva":
        if not mva:
            raise UsageError("--method quada needs --mva (e.g. up:gaussian:0.05,down:laplace:0.03 or the MVA "
                             "JSON of `privinf safety mva`), or --perturb none")
        from privinf.safety import mvaspec

        m = mvaspec.parse(mva, relative=relative)
        spec, rel, layers = m.spec(), m.relative, m.layers
    elif mva or relative or mva_scale != 1.0:
        raise UsageError("--perturb none adds no noise: drop --mva/--relative/--mva-scale")
    if perturb_layers is not None:
        layers = validate.layers(perturb_layers, info)  # None for 'all'
    elif layers is None:
        layers = default_layers(info)
    elif info.depth is not None and max(layers) >= info.depth:
        raise UsageError(f"--mva: its sensitive layers {list(layers)} are beyond {info.name} "
                         f"({info.depth} decoder layers); give --layers")
    weight = cluster_weight if cluster_weight is not None else (DEFAULT_CLUSTER_WEIGHT if perturb != "none" else 0.0)
    return dict(perturb=perturb, mva=spec, relative=rel, mva_scale=mva_scale,
                perturb_layers=None if layers is None else tuple(layers), cluster_weight=weight,
                cluster_tokens=cluster_tokens, card=perturb_card)


def default_layers(info) -> tuple[int, ...]:
    """The model card's sensitive layers, else the first four (or fewer, for a shallow model)."""
    if info.card is not None and info.card.sensitive_layers:
        return tuple(info.card.sensitive_layers)
    return tuple(range(min(4, info.depth or 4)))
