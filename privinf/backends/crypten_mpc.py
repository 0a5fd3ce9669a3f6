"""The CrypTen backend: the MLP block as a real two-party computation between two OS processes.

Party 0 (client) holds the hidden states, party 1 (server) holds the weights; they talk over TCP
(loopback here, any HOST:PORT with ``privinf party``). Arithmetic secret sharing on the int64 ring
at the card's fraction bits (``[precision] fraction_bits``: 12 for BOLT/Iron, 18 for BumbleBee/PUMA;
CrypTen's default 16 for cards that name none), set through CrypTen's encoder configuration. The
ring is always CrypTen's int64: a card's smaller ring (BOLT/Iron's 37 bits) is not reproduced, so
values that would wrap there do not wrap here. Weights keep at least 16 fraction bits (see
:func:`privinf.mpc.block.share_weights`). Every card's activation runs in MPC primitives
(:mod:`privinf.mpc.activations`), the RMSNorm inverse square root by power-of-4 range reduction
plus CrypTen's Newton iteration. Costs come from CrypTen's own communicator counters.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from privinf.backends.base import Backend, BlockResult, CostReport
from privinf.blocks import BlockOutput, MLPBlock
from privinf.cards import ProtocolCard
from privinf.mpc.block import DEFAULT_FRACTION_BITS
from privinf.mpc.check import check_card
from privinf.mpc.launch import MPCRunError, free_port, launch, party_command  # noqa: F401 (MPCRunError: what run raises)

RING_BITS = 64  # CrypTen's int64 ring; a run uses the card's fraction bits (default DEFAULT_FRACTION_BITS)

TRUST = {
    "tfp": ("semi-honest 2PC with a trusted first party: party 0 generates every Beaver triple itself "
            "(CrypTen's default TFP provider), so party 1's weights are hidden from party 0 only if party 0 "
            "follows the protocol and forgets the triples; it models a separate offline phase, for benchmarking"),
    "ttp": ("semi-honest 2PC with a trusted third party: a third process deals the Beaver triples; "
            "inputs and weights stay hidden as long as no two of the three processes collude"),
}


class CrypTenBackend(Backend):
    name = "crypten"
    trust = TRUST["tfp"]

    def __init__(self, provider: str = "tfp", timeout_s: float = 60.0, protocol_timeout_s: float = 600.0,
                 threads: int = 1, repeat: int = 1):
        if provider not in TRUST:
            raise ValueError(f"provider must be one of {', '.join(TRUST)}, got {provider!r}")
        self.provider, self.timeout_s, self.protocol_timeout_s, self.threads, self.repeat = (
            provider, timeout_s, protocol_timeout_s, threads, repeat)
        self.trust = TRUST[provider]

    def check(self, card: ProtocolCard) -> None:
        check_card(card)

    def run(self, block: MLPBlock, x: torch.Tensor, card: ProtocolCard, *, ops=None, port: int | None = None,
            workdir: str | None = None) -> BlockResult:
        """``ops`` (plaintext calibration, e.g. TEAL thresholds) has no MPC meaning: such cards are refused."""
        return self.run_cards(block, x, [card], port=port, workdir=workdir)[0]

    def run_cards(self, block: MLPBlock, x: torch.Tensor, cards: list[ProtocolCard], *, port: int | None = None,
                  workdir: str | None = None) -> list[BlockResult]:
        """One two-party session running every card in turn (startup paid once), one result per card."""
        for card in cards:
            self.check(card)
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="privinf-mpc-") as tmp:
            work = Path(workdir or tmp)
            work.mkdir(parents=True, exist_ok=True)
            save_file({"x": x.float().contiguous()}, str(work / "input.safetensors"))
            block.save(work / "block.safetensors")
            peer = f"127.0.0.1:{port or free_port()}"
            names = [c.name for c in cards]
            common = dict(provider=self.provider, timeout_s=self.timeout_s, threads=self.threads, repeat=self.repeat,
                          protocol_timeout_s=self.protocol_timeout_s)
            cmds = [party_command(0, peer, names, work / "p0", input_path=work / "input.safetensors", **common),
                    party_command(1, peer, names, work / "p1", weights_path=work / "block.safetensors", **common)]
            if self.provider == "ttp":
                cmds.append(party_command(2, peer, names, work / "p2", **common))
            start = time.perf_counter()
            launch(cmds, self.timeout_s + self.protocol_timeout_s + 30, work)
            session_s = time.perf_counter() - start
            costs = [json.loads((work / f"p{r}" / f"cost-rank{r}.json").read_text()) for r in (0, 1)]
            from safetensors.torch import load_file
            results = []
            for i, card in enumerate(cards):
                t = load_file(str(work / "p0" / f"{card.name}.safetensors"))
                out = BlockOutput(out=t["out"], up=t["up"], down=t["down"])
                results.append(BlockResult(out, self._cost([c[i] for c in costs], len(cmds), session_s)))
            return results

    def _cost(self, per_party: list[dict], processes: int, session_s: float) -> CostReport:
        p0, p1 = per_party
        phases = {name: {"wall_s": max(p["phases"][name]["wall_s"] for p in per_party),
                         "bytes_sent": sum(p["phases"][name]["bytes"] for p in per_party) // 2,
                         "rounds": max(p["phases"][name]["rounds"] for p in per_party)}
                  for name in p0["phases"]}
        return CostReport(
            backend=self.name, wall_s=max(p0["wall_s"], p1["wall_s"]),
            bytes_sent=(p0["bytes"] + p1["bytes"]) // 2,  # CrypTen counts sent + received per party
            rounds=max(p0["rounds"], p1["rounds"]), parties=processes,
            per_party=tuple({k: p[k] for k in ("rank", "wall_s", "wall_s_runs", "bytes", "rounds", "comm_s")}
                            for p in per_party),
            extra={"rsqrt": phases.get("rsqrt"), "activation": phases.get("activation"), "phases": phases,
                   **{part: {"wall_s": max(p[part]["wall_s"] for p in per_party),
                             "bytes_sent": sum(p[part]["bytes"] for p in per_party) // 2,
                             "rounds": max(p[part]["rounds"] for p in per_party)}
                      for part in ("offline", "online") if part in p0},
                   "provider": self.provider, "trust": self.trust,
                   "fraction_bits": p0.get("fraction_bits", DEFAULT_FRACTION_BITS),
                   "ring_bits": RING_BITS, "session_s": session_s},
        )
