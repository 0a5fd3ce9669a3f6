"""A protocol card applied in plaintext: the arithmetic every backend is compared against.

``CardOps`` bundles what a card does to one MLP block: the activation, the RMSNorm inverse
square root, the site transforms (TEAL sparsity, fake quantization) and fixed-point rounding.
The plaintext backend and the emulator's ``exact`` mode both call it, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from privinf.approx import functions, polynomial
from privinf.approx.fixed_point import fixed_point
from privinf.approx.quant import fake_quant
from privinf.approx.sparsity import calibrate_threshold, sparsify
from privinf.cards import ProtocolCard
from privinf.errors import RuntimeFault


class CalibrationError(RuntimeFault):
    """A card needs calibration (TEAL thresholds) that has not been done."""


def activation_fn(card: ProtocolCard, name: str):
    """The plaintext function computing activation ``name`` (gelu/silu) as ``card`` does."""
    spec = card.activation(name)
    if spec.method == "exact":
        return functions.EXACT[name]
    if spec.method == "piecewise":
        return lambda x: polynomial.evaluate(x, spec)
    if spec.method == "fixed-point-tanh":
        bits = spec.fraction_bits
        return lambda x: functions.FIXED_POINT[name](x, bits)
    if spec.method == "crypten-native":  # rounded at the card's precision (CrypTen's 16 bits)
        bits = card.fraction_bits
        return lambda x: functions.CRYPTEN_NATIVE[name](x, bits)
    raise ValueError(f"{card.path}: unknown activation method {spec.method!r}")


@dataclass
class CardOps:
    """Plaintext arithmetic of ``card`` for a block whose activation is ``activation``.

    ``thresholds`` maps a site ("up"/"down") to its TEAL |x| threshold; fill it with
    :meth:`calibrate` on real activations before using a sparsity card.
    """

    card: ProtocolCard
    activation: str
    thresholds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self._act = activation_fn(self.card, self.activation)

    @property
    def exact(self) -> bool:
        c = self.card
        return (c.activation(self.activation).method == "exact" and c.rsqrt.method == "exact"
                and c.fraction_bits is None and all(s.method == "none" for s in c.sites.values()))

    def fp(self, x: torch.Tensor) -> torch.Tensor:
        """Round to the card's fixed-point grid (identity for floating-point cards)."""
        if self.card.fraction_bits is None:
            return x
        return fixed_point(x, self.card.fraction_bits, self.card.ring_bits, on_wrap="clip")

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return self._act(x)

    def rsqrt(self, x: torch.Tensor) -> torch.Tensor:
        if self.card.rsqrt.method == "newton":
            return functions.newton_rsqrt(x, self.card.rsqrt.iterations)
        if self.card.rsqrt.method == "newton-normalized":
            return functions.normalized_rsqrt(x, self.card.rsqrt.iterations)
        return torch.rsqrt(x)

    def needs_calibration(self) -> list[str]:
        return [s for s, spec in self.card.sites.items() if spec.method == "sparsify" and s not in self.thresholds]

    def calibrate(self, samples: dict[str, torch.Tensor]) -> dict[str, float]:
        """Set TEAL thresholds from activation samples at each sparsified site; returns them."""
        for site, spec in self.card.sites.items():
            if spec.method == "sparsify":
                if site not in samples:
                    raise CalibrationError(f"card {self.card.name!r} sparsifies site {site!r}; "
                                           f"no calibration samples were given for it")
                self.thresholds[site] = calibrate_threshold(samples[site], spec.sparsity)
        return dict(self.thresholds)

    def site(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Apply the card's transform at site ``name`` ("up": before W_up, "down": before W_down)."""
        spec = self.card.sites[name]
        if spec.method == "none":
            return x
        if spec.method == "fake-quant":
            return fake_quant(x, spec.bits, spec.scheme)
        if name not in self.thresholds:
            raise CalibrationError(f"card {self.card.name!r} sparsifies site {name!r} but no threshold "
                                   "is calibrated; call CardOps.calibrate() on real activations first")
        return sparsify(x, self.thresholds[name])
