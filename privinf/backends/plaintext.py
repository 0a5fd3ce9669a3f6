"""The plaintext backend: the reference oracle. Runs the block in torch, exactly or under a card."""

from __future__ import annotations

import time

import torch

from privinf.approx.ops import CardOps
from privinf.backends.base import Backend, BlockResult, CostReport, UnsupportedCard
from privinf.blocks import MLPBlock
from privinf.cards import ProtocolCard


class PlaintextBackend(Backend):
    name = "plaintext"
    trust = "none: one party sees inputs and weights in the clear (a reference, not a protocol)"

    def check(self, card: ProtocolCard) -> None:
        if not card.runs_on("plaintext"):
            raise UnsupportedCard(f"card {card.name!r} does not list the plaintext backend")

    def run(self, block: MLPBlock, x: torch.Tensor, card: ProtocolCard, *,
            ops: CardOps | None = None, **options) -> BlockResult:
        """``ops`` carries calibration (TEAL thresholds); one is built from ``card`` when omitted."""
        self.check(card)
        ops = ops or CardOps(card, block.activation)
        start = time.perf_counter()
        with torch.no_grad():
            out = block.forward(x.float(), None if ops.exact else ops)
        return BlockResult(out, CostReport(backend=self.name, wall_s=time.perf_counter() - start))
