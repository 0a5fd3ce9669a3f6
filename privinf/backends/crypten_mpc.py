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
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from privinf.backends.base import Backend, BlockResult, CostReport, UnsupportedCard
from privinf.blocks import BlockOutput, MLPBlock
from privinf.cards import ProtocolCard
from privinf.errors import RuntimeFault

FRACTION_BITS, RING_BITS = 16, 64  # CrypTen's defaults; a run uses the card's fraction bits
MPC_METHODS = ("exact", "piecewise", "fixed-point-tanh", "crypten-native")

TRUST = {
    "tfp": ("semi-honest 2PC with a trusted first party: party 0 generates every Beaver triple itself "
            "(CrypTen's default TFP provider), so party 1's weights are hidden from party 0 only if party 0 "
            "follows the protocol and forgets the triples; it models a separate offline phase, for benchmarking"),
    "ttp": ("semi-honest 2PC with a trusted third party: a third process deals the Beaver triples; "
            "inputs and weights stay hidden as long as no two of the three processes collude"),
}


def check_card(card: ProtocolCard) -> None:
    """Raise :class:`UnsupportedCard` with the reason MPC cannot run ``card``."""
    if not card.runs_on("crypten"):
        why = {"fhe": "its approximations are CKKS polynomials with sign-polynomial interval tests (an FHE "
                      "technique; run it on the tenseal backend)",
               "sparsity": "it sparsifies activations with thresholds calibrated in the clear",
               "quantization": "it fake-quantizes activations per token, which needs plaintext min/max"}
        raise UnsupportedCard(f"card {card.name!r} cannot run on the crypten backend: "
                              f"{why.get(card.kind, 'its card does not list the crypten backend')} "
                              f"(backends: {', '.join(card.backends)})")
    for name, spec in card.activations.items():
        if spec.method not in MPC_METHODS:
            raise UnsupportedCard(f"card {card.name!r}: {name} method {spec.method!r} has no MPC evaluation")
        if spec.method == "piecewise" and spec.comparison != "exact":
            raise UnsupportedCard(f"card {card.name!r}: {name} uses {spec.comparison} interval tests; "
                                  "MPC compares exactly")
    for site, spec in card.sites.items():
        if spec.method != "none":
            raise UnsupportedCard(f"card {card.name!r}: site {site!r} transform {spec.method!r} is not an MPC protocol")


class MPCRunError(RuntimeFault):
    """A party process failed; the message carries each party's own error."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def party_command(rank: int, peer: str, cards, out_dir, *, input_path=None, weights_path=None, provider="tfp",
                  timeout_s=60.0, protocol_timeout_s=600.0, threads=1, repeat=1) -> list[str]:
    cmd = [sys.executable, "-m", "privinf.cli", "party", "--rank", str(rank), "--peer", peer, "--out", str(out_dir),
           "--provider", provider, "--timeout", str(timeout_s), "--protocol-timeout", str(protocol_timeout_s),
           "--threads", str(threads), "--repeat", str(repeat)]
    for c in cards:
        cmd += ["--card", c]
    if input_path:
        cmd += ["--input", str(input_path)]
    if weights_path:
        cmd += ["--weights", str(weights_path)]
    return cmd


def launch(commands: list[list[str]], deadline_s: float, workdir: Path) -> None:
    """Start every party, wait for all; on a failure give the rest 10 s, then stop them and raise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs, logs = [], []
    for i, cmd in enumerate(commands):
        log = open(workdir / f"rank{i}.log", "w+")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    end = time.monotonic() + deadline_s
    failed_at = None
    try:
        while any(p.poll() is None for p in procs):
            if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                failed_at = time.monotonic()
            if time.monotonic() > end or (failed_at is not None and time.monotonic() > failed_at + 10):
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    if any(codes):
        tails = []
        for i, code in enumerate(codes):
            text = (workdir / f"rank{i}.log").read_text().strip().splitlines()
            msg = next((line for line in reversed(text) if line.startswith("privinf party:")), None)
            msg = msg or (text[-1] if text else "(no output)")
            tails.append(f"rank {i} exit {code}: {msg}")
        raise MPCRunError("two-party run failed: " + "; ".join(tails))


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
                   "provider": self.provider, "trust": self.trust,
                   "fraction_bits": p0.get("fraction_bits", FRACTION_BITS),
                   "ring_bits": RING_BITS, "session_s": session_s},
        )
