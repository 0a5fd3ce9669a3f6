"""Where the emulator hooks a Hugging Face causal LM: one table (``ARCHITECTURES``, Hugging Face
module names per architecture), no per-architecture code. The MLP block (:mod:`privinf.blocks`)
reads the same table to copy a layer's weights out.

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

from typing import TYPE_CHECKING

from privinf.errors import LayerRangeError, UsageError

if TYPE_CHECKING:  # torch is not imported at run time here: card validation reads this table
    import torch

SITES = ("up", "down")  # the paper's two error sites: before W_up, before W_down
MODES = ("exact", "noise", "gaussian", "laplace")  # what the emulator does at a site (see core.emulate)


@dataclass(frozen=True)
class ArchSpec:
    """Hugging Face module names of one decoder layer's MLP path (relative to the layer)."""

    norm: str  # the norm feeding the MLP
    up: str
    down: str
    gate: str | None = None  # None: plain MLP, or fused into ``up`` when fused_gate_up
    act: str | None = None  # the activation module, when the architecture has one
    fused_gate_up: bool = False  # Phi-3: up = [gate; up] stacked on the output dim
    norm_kind: str = "rms"  # "rms" or "layer"
    norm_offset: float = 0.0  # Gemma scales by (1 + weight)
    conv1d: bool = False  # GPT-2's Conv1D stores weights as (in, out)
    layers: str = "model.layers"  # the ModuleList of decoder layers, from the model root
    moe: bool = False  # mixture of experts: hooks work, a single block cannot be extracted
    # how the emulator reaches the site before W_down: "pre" = forward pre-hook on ``down``'s
    # input (act(gate) * up); "act" = forward hook on ``act``'s output (MoE experts multiply by up
    # inside one kernel, so act(gate) is the last value a hook can see)
    down_hook: str = "pre"


_LLAMA = ArchSpec(norm="post_attention_layernorm", gate="mlp.gate_proj", up="mlp.up_proj",
                  down="mlp.down_proj", act="mlp.act_fn")

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gemma": ArchSpec(norm="post_attention_layernorm", gate="mlp.gate_proj", up="mlp.up_proj",
                      down="mlp.down_proj", act="mlp.act_fn", norm_offset=1.0),
    "gemma2": ArchSpec(norm="pre_feedforward_layernorm", gate="mlp.gate_proj", up="mlp.up_proj",
                       down="mlp.down_proj", act="mlp.act_fn", norm_offset=1.0),
    "phi3": ArchSpec(norm="post_attention_layernorm", up="mlp.gate_up_proj", down="mlp.down_proj",
                     act="mlp.activation_fn", fused_gate_up=True),
    "mixtral": ArchSpec(norm="post_attention_layernorm", up="mlp.experts", down="mlp.experts",
                        act="mlp.experts.act_fn", moe=True, down_hook="act"),
    "gpt2": ArchSpec(norm="ln_2", up="mlp.c_fc", down="mlp.c_proj", act="mlp.act", norm_kind="layer",
                     conv1d=True, layers="transformer.h"),
}

_ACT_NAMES = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
              "gelu_fast": "gelu", "gelu_python": "gelu"}


def arch_spec(model_type: str) -> ArchSpec:
    if model_type not in ARCHITECTURES:
        raise UsageError(f"architecture {model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def activation_family(hidden_act: str) -> str:
    """Map a Hugging Face ``hidden_act`` name to the card's non-linearity name (silu/gelu)."""
    if hidden_act not in _ACT_NAMES:
        raise UsageError(f"activation {hidden_act!r} has no card counterpart; known: {', '.join(_ACT_NAMES)}")
    return _ACT_NAMES[hidden_act]


def hidden_act(cfg) -> str:
    for attr in ("hidden_activation", "hidden_act", "activation_function"):  # gemma2, llama, gpt2
        if getattr(cfg, attr, None):
            return getattr(cfg, attr)
    raise UsageError(f"{cfg.model_type} config names no activation")


def decoder_layers(model) -> torch.nn.ModuleList:
    spec = arch_spec(model.config.model_type)
    return model.get_submodule(spec.layers)


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
                             "privinf/emulator/hookpoints.py (ARCHITECTURES) does not match this model") from None


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
