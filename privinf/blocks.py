"""The transformer MLP block every backend runs: pre-norm + MLP + residual.

Gated (Llama, Mistral, Qwen2, Phi-3, Gemma):   y = x + W_down( act(W_gate n) * (W_up n) ),  n = norm(x)
Plain GELU MLP (GPT-2 style):                  y = x + W_down( act(W_up n + b_up) ) + b_down

The two error *sites* of the paper are ``up`` (n, the input of W_up) and ``down`` (the input of
W_down). ``MLPBlock.forward`` returns both so a backend's error can be measured at each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from privinf.approx.ops import CardOps
from privinf.emulator.hookpoints import activation_family, arch_spec, decoder_layers, hidden_act
from privinf.errors import LayerRangeError, UsageError


@dataclass
class BlockOutput:
    out: torch.Tensor  # (T, C) block output including the residual
    up: torch.Tensor  # (T, C) site before W_up: the normalised input
    down: torch.Tensor  # (T, I) site before W_down: the activation output


@dataclass
class MLPBlock:
    """Weights of one MLP block, in float32, detached from the model they came from."""

    w_up: torch.Tensor  # (I, C)
    w_down: torch.Tensor  # (C, I)
    norm_weight: torch.Tensor  # (C,)
    activation: str  # "silu" | "gelu"
    w_gate: torch.Tensor | None = None  # (I, C); None for a plain GELU MLP
    b_up: torch.Tensor | None = None
    b_down: torch.Tensor | None = None
    norm_bias: torch.Tensor | None = None
    norm_kind: str = "rms"
    norm_eps: float = 1e-6
    layer: int = 0
    source: str = ""

    @property
    def hidden_size(self) -> int:
        return self.w_up.shape[1]

    @property
    def intermediate_size(self) -> int:
        return self.w_up.shape[0]

    @property
    def gated(self) -> bool:
        return self.w_gate is not None

    def norm(self, x: torch.Tensor, ops: CardOps | None = None) -> torch.Tensor:
        if self.norm_kind == "layer":
            x = x - x.mean(dim=-1, keepdim=True)
        ms = x.pow(2).mean(dim=-1, keepdim=True) + self.norm_eps  # (T, 1)
        r = ops.rsqrt(ms) if ops is not None else torch.rsqrt(ms)
        n = x * r * self.norm_weight
        return n + self.norm_bias if self.norm_bias is not None else n

    def forward(self, x: torch.Tensor, ops: CardOps | None = None) -> BlockOutput:
        """Run the block exactly (``ops=None``) or under a card's plaintext arithmetic."""
        fp = ops.fp if ops is not None else (lambda t: t)
        act = ops.act if ops is not None else _exact_act(self.activation)
        n = fp(self.norm(fp(x), ops))  # (T, C)
        if ops is not None:
            n = ops.site("up", n)
        u = fp(n @ self.w_up.T)  # (T, I)
        if self.b_up is not None:
            u = u + self.b_up
        h = fp(act(fp(n @ self.w_gate.T)) * u) if self.gated else fp(act(u))  # (T, I)
        if ops is not None:
            h = ops.site("down", h)
        y = h @ self.w_down.T  # (T, C)
        if self.b_down is not None:
            y = y + self.b_down
        return BlockOutput(out=fp(x + y), up=n, down=h)

    __call__ = forward

    @classmethod
    def from_model(cls, model, layer: int) -> "MLPBlock":
        """Copy layer ``layer``'s MLP block out of a Hugging Face causal LM."""
        cfg = model.config
        spec = arch_spec(cfg.model_type)
        if spec.moe:
            raise UsageError(f"{cfg.model_type} is a mixture-of-experts model: its MLP is a router over "
                             "experts, not one block; the emulator hooks it, the block backends cannot")
        layers = decoder_layers(model)
        if not 0 <= layer < len(layers):
            raise LayerRangeError(f"layer {layer} out of range: the model has {len(layers)} decoder layers "
                                  f"(0-{len(layers) - 1})")
        mod = layers[layer]
        get = lambda name: mod.get_submodule(name)  # noqa: E731
        f32 = lambda t: None if t is None else t.detach().to("cpu", torch.float32).clone()  # noqa: E731
        norm = get(spec.norm)
        weight = f32(norm.weight) + spec.norm_offset
        eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
        up, down = get(spec.up), get(spec.down)
        w_up, w_down = f32(up.weight), f32(down.weight)
        if spec.conv1d:
            w_up, w_down = w_up.T.contiguous(), w_down.T.contiguous()
        w_gate = f32(get(spec.gate).weight) if spec.gate else None
        if spec.fused_gate_up:
            w_gate, w_up = w_up.chunk(2, dim=0)
        return cls(
            w_up=w_up, w_down=w_down, w_gate=w_gate, norm_weight=weight,
            norm_bias=f32(getattr(norm, "bias", None)), norm_kind=spec.norm_kind, norm_eps=float(eps),
            b_up=f32(getattr(up, "bias", None)), b_down=f32(getattr(down, "bias", None)),
            activation=activation_family(hidden_act(cfg)),
            layer=layer, source=getattr(cfg, "_name_or_path", "") or cfg.model_type,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, for shipping weights to another process (use with safetensors)."""
        names = ("w_up", "w_down", "w_gate", "b_up", "b_down", "norm_weight", "norm_bias")
        return {n: getattr(self, n).contiguous() for n in names if getattr(self, n) is not None}

    def meta(self) -> dict[str, str]:
        return {"activation": self.activation, "norm_kind": self.norm_kind, "norm_eps": repr(self.norm_eps),
                "layer": str(self.layer), "source": self.source}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> "MLPBlock":
        return cls(**tensors, activation=meta["activation"], norm_kind=meta["norm_kind"],
                   norm_eps=float(meta["norm_eps"]), layer=int(meta["layer"]), source=meta["source"])

    def save(self, path) -> None:
        from safetensors.torch import save_file
        save_file(self.state_dict(), str(path), metadata=self.meta())

    @classmethod
    def load(cls, path) -> "MLPBlock":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return cls.from_state({k: f.get_tensor(k) for k in f.keys()}, f.metadata())


def _exact_act(name: str):
    from privinf.approx.functions import EXACT
    return EXACT[name]
