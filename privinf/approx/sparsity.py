"""TEAL-style magnitude sparsification (Liu et al., "Training-Free Activation Sparsity", 2024).

Activations with |x| below a per-site threshold t are zeroed; t is calibrated on real
activations as the p-quantile of |x| so that a fraction p of entries is zeroed.
"""

from __future__ import annotations

import torch


def calibrate_threshold(samples: torch.Tensor, sparsity: float) -> float:
    """t = inverse CDF of |x| at ``sparsity`` (so that fraction ``sparsity`` of |x| falls below t)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if sparsity == 0.0:
        return 0.0
    flat = samples.detach().abs().flatten().float()
    if flat.numel() > 2_000_000:  # torch.quantile's input limit; a strided subsample is plenty
        flat = flat[:: flat.numel() // 2_000_000 + 1]
    return float(torch.quantile(flat, sparsity))


def sparsify(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero the entries with |x| < threshold."""
    return torch.where(x.abs() < threshold, torch.zeros_like(x), x)
