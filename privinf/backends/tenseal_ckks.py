"""The TenSEAL CKKS backend: the MLP block on ciphertexts (:mod:`privinf.fhe`), client and server
in this process talking only through serialised bytes; ``privinf demo --backend tenseal`` runs them
as two processes."""

from __future__ import annotations

import time

import torch

from privinf.approx.ops import CardOps
from privinf.backends.base import Backend, BlockResult, CostReport
from privinf.blocks import MLPBlock
from privinf.cards import ProtocolCard
from privinf.fhe.check import check_card
from privinf.fhe.params import CKKSParams
from privinf.fhe.circuit import Layout
from privinf.fhe.protocol import LocalLink, ServerSession, Transcript, run_client


class TenSEALBackend(Backend):
    name = "tenseal"
    trust = ("client keeps the CKKS secret key; the server sees only ciphertexts (and its own "
             "plaintext weights); semi-honest server, no bootstrapping")

    def check(self, card: ProtocolCard) -> None:
        check_card(card)

    def run(self, block: MLPBlock, x: torch.Tensor, card: ProtocolCard, *, ops: CardOps | None = None,
            min_degree: int = 8192, **options) -> BlockResult:
        """Client and server in this process, talking only through serialised bytes.

        ``min_degree`` forces a larger ring than the depth needs (e.g. more tokens per ciphertext).
        """
        self.check(card)
        start = time.perf_counter()
        out, tr, params, layout = run_client(block, x, card, LocalLink(ServerSession(block)), ops, min_degree)
        return BlockResult(out, cost_report(self.name, time.perf_counter() - start, tr, params, layout))


def cost_report(backend: str, wall_s: float, tr: Transcript, params: CKKSParams, layout: Layout) -> CostReport:
    return CostReport(
        backend=backend, wall_s=wall_s, bytes_sent=tr.to_server + tr.to_client, rounds=tr.rounds,
        depth=params.depth, ring_dim=params.poly_modulus_degree, parties=2,
        per_party=({"party": "client", "wall_s": tr.client_s, "bytes_sent": tr.to_server},
                   {"party": "server", "wall_s": tr.server_s, "bytes_sent": tr.to_client}),
        extra={"coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes), "scale_bits": params.scale_bits,
               "levels_used": tr.levels, "slots": layout.slots, "feature_block": layout.block,
               "token_slots": layout.t_pad, "bytes_to_server": tr.to_server, "bytes_to_client": tr.to_client,
               "measurement_bytes": tr.measurement, **(tr.counters or {})},
    )
