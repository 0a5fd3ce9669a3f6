"""One party of the two-party MLP-block protocol, as its own OS process.

Party 0 (the client) holds the hidden states, party 1 (the server) the block's weights; with the
``ttp`` provider a third process (rank 2) deals Beaver triples. The parties meet over TCP
(torch.distributed gloo, CrypTen's communicator), exchange public shapes as JSON, check they run
the same cards, run each card once, and party 0 writes the revealed outputs and both sites.

Failure modes end the process with a message and a non-zero exit code, never a hang:
no peer within ``timeout_s`` (names the address), the port taken, the peer dying mid-protocol,
mismatched cards or shapes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from privinf.errors import RuntimeFault

PROVIDERS = {"tfp": "TFP", "ttp": "TTP"}
EXIT_PEER, EXIT_PORT, EXIT_PROTOCOL, EXIT_CONFIG = 3, 4, 5, 6


class PartyError(RuntimeFault):
    """A party could not connect or the protocol failed; ``code`` is the party process's exit status."""

    def __init__(self, message: str, code: int = EXIT_PROTOCOL):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PartyConfig:
    rank: int  # 0 = data owner, 1 = weight owner, 2 = triple dealer (provider ttp)
    peer: str  # HOST:PORT of party 0's rendezvous (party 0 listens on it)
    cards: tuple[str, ...]
    out_dir: str
    input_path: str | None = None  # party 0: safetensors with "x" (T, C)
    weights_path: str | None = None  # party 1: MLPBlock.save() file
    provider: str = "tfp"
    timeout_s: float = 60.0  # waiting for the peer(s) to connect
    protocol_timeout_s: float = 600.0  # the whole run after connecting
    threads: int = 1
    repeat: int = 1  # run each card this many times; wall time = median (bytes/rounds are deterministic)


def _die(message: str, code: int) -> None:
    sys.stderr.write(f"privinf party: {message}\n")
    sys.stderr.flush()
    os._exit(code)


class Watchdog:
    """Ends the process with ``message`` unless ``cancel()`` comes within ``seconds``."""

    def __init__(self, seconds: float, message: str, code: int):
        self._timer = threading.Timer(seconds, _die, args=(message, code))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


def _env(cfg: PartyConfig) -> None:
    """CrypTen reads its rendezvous from the environment; two parties (+ the dealer, rank 2)."""
    host, _, port = cfg.peer.rpartition(":")
    if not host or not port.isdigit():
        raise PartyError(f"--peer must be HOST:PORT, got {cfg.peer!r}", EXIT_CONFIG)
    os.environ.update({"RANK": str(cfg.rank), "WORLD_SIZE": "2", "RENDEZVOUS": f"tcp://{cfg.peer}",
                       "DISTRIBUTED_BACKEND": "gloo"})
    if host in ("127.0.0.1", "localhost") and sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep loopback runs off other interfaces


def _connect(cfg: PartyConfig, crypten) -> None:
    """crypten.init() under a watchdog; rewrites the rendezvous errors into actionable ones."""
    who = {0: "party 1", 1: "party 0", 2: "the parties"}[cfg.rank]
    role = "listening on" if cfg.rank == 0 else "connecting to"
    dog = Watchdog(cfg.timeout_s, f"rank {cfg.rank}: {who} did not connect within {cfg.timeout_s:g} s "
                   f"({role} {cfg.peer}); start the other party with --peer {cfg.peer} or raise --timeout",
                   EXIT_PEER)
    try:
        crypten.init()
    except Exception as exc:  # torch's DistNetworkError and friends
        text = str(exc)
        if "address already in use" in text.lower() or "EADDRINUSE" in text:
            raise PartyError(f"rank {cfg.rank}: port {cfg.peer} is already in use; pick another --peer port",
                             EXIT_PORT) from None
        raise PartyError(f"rank {cfg.rank}: could not connect to {cfg.peer}: {text.splitlines()[0]}",
                         EXIT_PEER) from None
    finally:
        dog.cancel()


def _exchange(crypten, info: dict) -> list[dict]:
    """All-gather one JSON dict per party (no pickle: peers are not trusted with code execution)."""
    comm = crypten.communicator.get()
    data = torch.tensor(list(json.dumps(info).encode()), dtype=torch.long)
    sizes = comm.all_gather(torch.tensor([data.numel()]))
    width = int(max(int(s) for s in sizes))
    padded = torch.zeros(width, dtype=torch.long)
    padded[: data.numel()] = data
    parts = comm.all_gather(padded)
    return [json.loads(bytes(p[: int(s)].tolist()).decode()) for p, s in zip(parts, sizes)]


def _public_meta(cfg: PartyConfig, block, x) -> dict:
    meta = {"rank": cfg.rank, "cards": list(cfg.cards), "provider": cfg.provider, "repeat": cfg.repeat}
    if x is not None:
        meta.update(T=int(x.shape[0]), C_x=int(x.shape[1]))
    if block is not None:
        meta.update(C=block.hidden_size, I=block.intermediate_size, gated=block.gated, activation=block.activation,
                    norm_kind=block.norm_kind, norm_eps=block.norm_eps,
                    present=[n for n in ("norm_bias", "b_up", "b_down") if getattr(block, n) is not None])
    return meta


def _agree(metas: list[dict]) -> dict:
    p0, p1 = metas[0], metas[1]
    if p0["cards"] != p1["cards"]:
        raise PartyError(f"the parties run different cards: party 0 {p0['cards']}, party 1 {p1['cards']}", EXIT_CONFIG)
    if p0["repeat"] != p1["repeat"]:
        raise PartyError(f"the parties repeat differently: {p0['repeat']} vs {p1['repeat']}", EXIT_CONFIG)
    if p0["provider"] != p1["provider"]:
        raise PartyError(f"the parties use different triple providers: {p0['provider']} vs {p1['provider']}",
                         EXIT_CONFIG)
    if p0["C_x"] != p1["C"]:
        raise PartyError(f"party 0's input has {p0['C_x']} features, party 1's block expects {p1['C']}", EXIT_CONFIG)
    return {**p1, "T": p0["T"]}


def run(cfg: PartyConfig) -> list[dict]:
    """Run the protocol as rank ``cfg.rank``; returns per-card cost records (party 0 also writes outputs)."""
    from privinf.blocks import MLPBlock
    from privinf.cards import protocol_card
    from privinf.mpc.shim import import_crypten

    torch.set_num_threads(cfg.threads)
    if cfg.provider not in PROVIDERS:
        raise PartyError(f"--provider must be one of {', '.join(PROVIDERS)}, got {cfg.provider!r}", EXIT_CONFIG)
    cards = [protocol_card(c) for c in cfg.cards]  # fails before connecting on an unknown card
    from privinf.mpc.check import check_card
    for card in cards:
        check_card(card)
    x = block = None
    if cfg.rank == 0:
        from safetensors.torch import load_file
        x = load_file(cfg.input_path)["x"].float()
    elif cfg.rank == 1:
        block = MLPBlock.load(cfg.weights_path)
    _env(cfg)
    crypten = import_crypten()
    overrides = {"communicator.verbose": True, "mpc.provider": PROVIDERS[cfg.provider]}
    with crypten.cfg.temp_override(overrides):
        if cfg.rank == 2:
            return _serve_triples(cfg, crypten)
        _connect(cfg, crypten)
        dog = Watchdog(cfg.protocol_timeout_s, f"rank {cfg.rank}: protocol did not finish within "
                       f"{cfg.protocol_timeout_s:g} s (peer {cfg.peer} stalled?)", EXIT_PROTOCOL)
        try:
            meta = _agree(_exchange(crypten, _public_meta(cfg, block, x)))
            records = [_repeated(cfg, crypten, card, meta, x, block) for card in cards]
        except RuntimeError as exc:
            if isinstance(exc, PartyError):
                raise
            raise PartyError(f"rank {cfg.rank}: the peer went away mid-protocol ({str(exc).splitlines()[0]})",
                             EXIT_PROTOCOL) from None
        finally:
            dog.cancel()
        crypten.uninit()
    return records


def _serve_triples(cfg: PartyConfig, crypten) -> list[dict]:
    """Rank 2: CrypTen's trusted third party; returns when party 0 sends "terminate" or the peers go."""
    Watchdog(cfg.timeout_s + cfg.protocol_timeout_s, f"rank 2 (triple dealer): no end of protocol from the "
             f"parties at {cfg.peer} within {cfg.timeout_s + cfg.protocol_timeout_s:g} s", EXIT_PROTOCOL)
    crypten.mpc.provider.TTPServer()
    return []


def reveal(t) -> torch.Tensor:
    """Open a shared fixed-point tensor to party 0 and decode it exactly.

    CrypTen 0.4.1's ``FixedPointEncoder.decode`` divides negative values by (scale - 1), which turns
    e.g. -2.99997 into -3.99997 when the raw value sits a few units above a multiple of -2**16;
    dividing the opened integers ourselves avoids it. Party 1 gets None.
    """
    raw = t._tensor.reveal(dst=0)
    return None if raw is None else (raw.double() / t.encoder.scale).float()


def _repeated(cfg, crypten, card, meta, x, block) -> dict:
    """The record of the run with the median wall time over ``cfg.repeat`` runs (outputs of the first)."""
    runs = [_run_card(cfg, crypten, card, meta, x, block, save=(i == 0)) for i in range(cfg.repeat)]
    median = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]  # phases stay consistent with wall_s
    return {**median, "wall_s_runs": [r["wall_s"] for r in runs]}


def _run_card(cfg, crypten, card, meta, x, block, save: bool = True) -> dict:
    """One card at the card's own fraction bits (CrypTen's encoder precision; the ring stays int64)."""
    from privinf.mpc.block import card_fraction_bits

    bits = card_fraction_bits(card)
    with crypten.cfg.temp_override({"encoder.precision_bits": bits}):
        return _run_card_at(cfg, crypten, card, meta, x, block, bits, save)


def _stats(comm, start: float) -> dict:
    s = comm.get_communication_stats()
    return {"wall_s": time.perf_counter() - start, "bytes": int(s["bytes"]), "rounds": int(s["rounds"]),
            "comm_s": float(s["time"])}


def _run_card_at(cfg, crypten, card, meta, x, block, bits: int, save: bool) -> dict:
    """Offline: the weights shared and (TFP) their Beaver masks opened once (``privinf.mpc.offline``);
    online: the client's input shared and the block run, opening only masked activations. With the
    ttp provider the dealer is a third process: CrypTen's own products, all online."""
    from privinf.mpc.block import Meter, encode, mlp_block, share_weights
    from privinf.mpc.offline import block_matmul, prepare_block

    comm = crypten.communicator.get()
    comm.reset_communication_stats()
    meter = Meter()
    split = cfg.provider == "tfp"
    start = time.perf_counter()
    with meter.phase("share"):
        w = prepare_block(block, meta, bits) if split else None
    offline = _stats(comm, start)
    comm.reset_communication_stats()
    start = time.perf_counter()
    with meter.phase("share"):
        xs = crypten.cryptensor(encode(x, bits) if x is not None else torch.zeros(meta["T"], meta["C"]), src=0)
        w = w if split else share_weights(block, meta, bits)
    if os.environ.get("PRIVINF_FAULT_EXIT_RANK") == str(cfg.rank):  # tests: die mid-protocol
        os._exit(9)
    out, up, down = mlp_block(xs, w, meta, card, meter, **({"matmul": block_matmul} if split else {}))
    online = _stats(comm, start)
    record = {"card": card.name, "rank": cfg.rank, "wall_s": offline["wall_s"] + online["wall_s"],
              "bytes": offline["bytes"] + online["bytes"], "rounds": offline["rounds"] + online["rounds"],
              "comm_s": offline["comm_s"] + online["comm_s"], "offline": offline, "online": online,
              "phases": meter.phases, "T": meta["T"], "C": meta["C"], "I": meta["I"], "fraction_bits": bits}
    # evaluation only: reveal output and both sites to party 0 (not part of the protocol's cost)
    revealed = {k: reveal(v) for k, v in (("out", out), ("up", up), ("down", down))}
    if cfg.rank == 0 and save:
        from safetensors.torch import save_file
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in revealed.items()}, str(Path(cfg.out_dir) / f"{card.name}.safetensors"))
    return record


def main(cfg: PartyConfig) -> int:
    """Run and write ``cost-rank{r}.json``; returns the exit code (0, or a PartyError code)."""
    try:
        records = run(cfg)
    except PartyError as exc:
        # a broken process group aborts the interpreter at exit (gloo): leave without teardown
        _die(str(exc), exc.code)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / f"cost-rank{cfg.rank}.json").write_text(json.dumps(records, indent=1))
    return 0
