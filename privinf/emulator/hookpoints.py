"""Where the emulator hooks a Hugging Face causal LM: one table (``blocks.ARCHITECTURES``), no
per-architecture code.

Per decoder layer the two sites of the paper are reached with ordinary module hooks:

- ``up`` (before W_up): a forward hook on the MLP-input norm (``spec.norm``) sees and may replace
  its output, the normalised MLP input that feeds the gate/up projections.
- ``down`` (before W_down): a forward pre-hook on ``spec.down`` sees and may replace its input,
  ``act(gate) * up``. Mixture-of-experts layers compute every expert inside one kernel, so there
  the site is the expert activation's output (``spec.down_hook == "act"``), before the product
  with ``up``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from privinf.blocks import ArchSpec, arch_spec
from privinf.errors import LayerRangeError, UsageError

SITES = ("up", "down")


class HookpointError(UsageError, LookupError):
    """A module name from the hookpoint table does not exist in the model."""


@dataclass(frozen=True)
class LayerModules:
    """The modules of one decoder layer the emulator hooks."""

    layer: int
    norm: torch.nn.Module
    act: torch.nn.Module | None
    gate: torch.nn.Module | None  # None: fused into ``up`` (Phi-3), plain MLP (GPT-2) or MoE
    up: torch.nn.Module | None  # None for MoE (expert weights are parameters, not modules)
    down: torch.nn.Module | None  # None for MoE


def _get(layer_mod: torch.nn.Module, name: str | None, where: str) -> torch.nn.Module | None:
    if name is None:
        return None
    try:
        return layer_mod.get_submodule(name)
    except AttributeError:
        raise HookpointError(f"{where}: module {name!r} not found; the hookpoint table in "
                             "privinf/blocks.py (ARCHITECTURES) does not match this model") from None


def resolve(model, layers=None) -> tuple[ArchSpec, list[LayerModules]]:
    """The architecture's spec and the hooked modules of each selected layer (default: all)."""
    spec = arch_spec(model.config.model_type)
    try:
        stack = model.get_submodule(spec.layers)
    except AttributeError:
        raise HookpointError(f"{model.config.model_type}: decoder layer list {spec.layers!r} not found") from None
    n = len(stack)
    chosen = range(n) if layers is None else list(layers)
    out = []
    for i in chosen:
        if not isinstance(i, int) or not 0 <= i < n:
            raise LayerRangeError(f"layer {i!r} out of range: the model has {n} decoder layers (0-{n - 1})")
        mod, where = stack[i], f"{model.config.model_type} layer {i}"
        dense = not spec.moe
        out.append(LayerModules(
            layer=i, norm=_get(mod, spec.norm, where), act=_get(mod, spec.act, where),
            gate=_get(mod, spec.gate, where) if dense else None,
            up=_get(mod, spec.up, where) if dense else None,
            down=_get(mod, spec.down, where) if dense else None))
    if spec.down_hook == "act" and any(m.act is None for m in out):
        raise HookpointError(f"{model.config.model_type}: the down site needs an activation module (spec.act)")
    return spec, out


def hook_site(spec: ArchSpec, mods: LayerModules, site: str,
              fn: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.utils.hooks.RemovableHandle:
    """Register ``fn(value) -> replacement or None`` at ``site`` of one layer; returns the handle."""
    if site == "up" or (site == "down" and spec.down_hook == "act"):
        module = mods.norm if site == "up" else mods.act

        def forward_hook(_mod, _args, output):
            return fn(output)

        return module.register_forward_hook(forward_hook)
    if site == "down":
        def pre_hook(_mod, args):
            new = fn(args[0])
            return None if new is None else (new, *args[1:])

        return mods.down.register_forward_pre_hook(pre_hook)
    raise ValueError(f"unknown site {site!r}; sites are {', '.join(SITES)}")


def input_device(model) -> torch.device:
    """Where input ids must go: the embedding's device (right for ``device_map="auto"`` too)."""
    return model.get_input_embeddings().weight.device
