"""Per-token activation fake quantization (quantize then dequantize, in the input's dtype).

- symmetric (SmoothQuant, Xiao et al. 2023): scale = absmax / q_max per token, q_max = 2**(b-1) - 1,
  values rounded to integers in [-q_max, q_max].
- asymmetric (OmniQuant, Shao et al. 2024): per-token min/max, scale = (max - min) / (2**b - 1),
  zero point round(-min / scale), integers in [0, 2**b - 1].

Error per entry is at most half a quantization step; tokens with large outliers lose the most.
"""

from __future__ import annotations

import torch

_EPS = 1e-8


def fake_quant(x: torch.Tensor, bits: int, scheme: str = "symmetric") -> torch.Tensor:
    """Quantize each token (last dimension) of x to ``bits`` bits and dequantize."""
    if scheme == "symmetric":
        q_max = 2 ** (bits - 1) - 1
        scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=_EPS) / q_max
        return torch.clamp(torch.round(x / scale), -q_max, q_max) * scale
    if scheme == "asymmetric":
        levels = 2 ** bits - 1
        lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
        scale = (hi - lo).clamp(min=_EPS) / levels
        zero = torch.round(-lo / scale)
        q = torch.clamp(torch.round(x / scale) + zero, 0, levels)
        return (q - zero) * scale
    raise ValueError(f"scheme must be 'symmetric' or 'asymmetric', got {scheme!r}")
