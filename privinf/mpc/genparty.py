"""One party of private generation with the whole model, as its own OS process.

``python -m privinf.mpc.genparty --rank 0 --peer HOST:PORT --card bolt --input ids.json --out DIR``
(the client: token ids) and ``--rank 1 ... --model NAME_OR_FOLDER`` (the server: weights). The
rendezvous, watchdogs and fault handling are :mod:`privinf.mpc.party`'s: a missing peer (exit 3),
a port taken (4), a peer dying mid-protocol or a stalled run (5), mismatched settings (6), each one
line on stderr. Offline: weights shared and masks opened once. Online: prefill, then one forward per
new token with the KV cache in shares; party 0 writes ``result.json`` (tokens, offline and per-step
cost) and ``progress`` after every step; with ``--check`` also the logits of every step and of a
cache-free forward over the whole sequence, and layer 0's MLP block by today's path and by the
offline/online path (``check.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from privinf.mpc import channel
from privinf.mpc.party import (EXIT_CONFIG, EXIT_PEER, EXIT_PROTOCOL, PartyConfig, PartyError, Watchdog, _connect,
                               _die, _env, _exchange)


def _stats(crypten) -> tuple[int, int, float]:
    s = crypten.communicator.get().get_communication_stats()
    return int(s["bytes"]), int(s["rounds"]), float(s["time"])


class Clock:
    """Wall time, bytes (this party's sent + received, as CrypTen counts), rounds and the time spent
    in communication calls (sending, and waiting for the peer) over a stretch."""

    def __init__(self, crypten):
        self.crypten, self.t, (self.b, self.r, self.c) = crypten, time.perf_counter(), _stats(crypten)

    def read(self) -> dict:
        b, r, c = _stats(self.crypten)
        return {"wall_s": time.perf_counter() - self.t, "bytes": b - self.b, "rounds": r - self.r, "comm_s": c - self.c}


def load_server_model(name: str, adapter: str | None = None):
    """The server's model, with a PEFT LoRA adapter merged in when given."""
    from privinf.models import load_model

    model, _ = load_model(name)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    return model


def _meta(cfg, args, weights, ids) -> dict:
    if cfg.rank == 1:
        return {"rank": 1, "card": args.card, "model": weights.meta}
    score = bool(ids) and isinstance(ids[0], list)  # teacher-forced scoring of whole sequences
    return {"rank": 0, "card": args.card, "T": len(ids), "steps": args.max_new_tokens, "check": args.check,
            "lengths": [len(s) for s in ids] if score else None, "block": args.block or (5 if args.check else 0),
            "sites": args.sites}


def run(args) -> dict:
    from privinf.cards import protocol_card
    from privinf.mpc.block import Meter, card_fraction_bits
    from privinf.mpc.model import KVCache, check_model_card, forward, reveal_logits, share_model
    from privinf.mpc.shim import import_crypten

    if args.cpu is not None:  # before any thread starts: torch's and gloo's threads inherit it
        os.sched_setaffinity(0, {args.cpu})
    torch.set_num_threads(args.threads)
    cfg = PartyConfig(rank=args.rank, peer=args.peer, cards=(args.card,), out_dir=args.out,
                      timeout_s=args.timeout, protocol_timeout_s=args.protocol_timeout, threads=args.threads)
    card = protocol_card(args.card)
    check_model_card(card)
    weights = ids = None
    if args.rank == 0:
        spec = json.loads(Path(args.input).read_text())
        ids = [[int(i) for i in seq] for seq in spec["sequences"]] if "sequences" in spec else [int(i) for i in spec["ids"]]
    else:
        from privinf.errors import PrivinfError
        from privinf.mpc.model import ModelWeights
        try:
            model = load_server_model(args.model, args.weights)
            weights = ModelWeights.from_model(model)
        except (PrivinfError, OSError, ValueError) as exc:
            raise PartyError(f"rank 1: cannot use --model {args.model!r}: {str(exc).splitlines()[0]}",
                             EXIT_CONFIG) from None
        del model
    _env(cfg)
    crypten = import_crypten()
    bits = card_fraction_bits(card)
    overrides = {"communicator.verbose": True, "mpc.provider": "TFP", "encoder.precision_bits": bits}
    with crypten.cfg.temp_override(overrides):
        _connect(cfg, crypten)
        _open_channel(cfg)
        dog = Watchdog(cfg.protocol_timeout_s, f"rank {cfg.rank}: generation did not finish within "
                       f"{cfg.protocol_timeout_s:g} s (peer {cfg.peer} stalled?); raise --protocol-timeout",
                       EXIT_PROTOCOL)
        try:
            metas = _exchange(crypten, _meta(cfg, args, weights, ids))
            p0, p1 = metas
            if p0["card"] != p1["card"]:
                raise PartyError(f"the parties run different cards: {p0['card']} vs {p1['card']}", EXIT_CONFIG)
            result = _protocol(args, crypten, card, bits, p1["model"], p0, weights, ids,
                               Meter, KVCache, share_model, forward, reveal_logits)
        except RuntimeError as exc:
            if isinstance(exc, PartyError):
                raise
            raise PartyError(f"rank {cfg.rank}: the peer went away mid-protocol ({str(exc).splitlines()[0]})",
                             EXIT_PROTOCOL) from None
        finally:
            dog.cancel()
        channel.close()
        crypten.uninit()
    return result


def _open_channel(cfg) -> None:
    """The parties' openings over one TCP socket (:mod:`privinf.mpc.channel`), next to gloo's rendezvous."""
    try:
        channel.connect(cfg.peer.rpartition(":")[0], cfg.timeout_s)
    except OSError as exc:
        raise PartyError(f"rank {cfg.rank}: could not open the protocol socket to the peer at {cfg.peer}: {exc}",
                         EXIT_PEER) from None


def _protocol(args, crypten, card, bits, meta, p0, weights, ids, Meter, KVCache, share_model, forward,
              reveal_logits) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meter = Meter()
    clock = Clock(crypten)
    shared = share_model(weights, meta, bits)
    block0 = weights.layers[0].mlp if weights is not None else None  # for --check
    del weights
    offline = clock.read()
    if os.environ.get("PRIVINF_FAULT_EXIT_RANK") == str(args.rank):  # tests: die after the offline phase
        os._exit(9)
    if p0["lengths"]:
        return _score(args, crypten, card, bits, meta, p0["lengths"], shared, ids, offline, meter, KVCache, forward,
                      reveal_logits, p0["sites"])
    cache, tokens, steps, step_logits = KVCache(), [], [], []
    feed, T = ids, p0["T"]
    for step in range(p0["steps"]):
        clock, step_meter = Clock(crypten), Meter()
        logits = reveal_logits(forward(shared, meta, feed, T, card, step_meter, cache, bits))
        steps.append({**clock.read(), "phases": step_meter.phases})
        _accumulate(meter.phases, step_meter.phases)
        if args.rank == 0:
            nxt = int(logits[-1].argmax())
            tokens.append(nxt)
            step_logits.append(logits[-1])
            feed = [nxt]
            (out / "progress").write_text(json.dumps({"step": step + 1, "of": p0["steps"], **steps[-1]}))
        T = 1
    result = {"rank": args.rank, "card": card.name, "fraction_bits": bits, "prompt_tokens": p0["T"],
              "tokens": tokens, "offline": offline, "steps": steps, "phases": meter.phases, "model": meta}
    if args.rank == 0:
        from safetensors.torch import save_file
        save_file({"steps": torch.stack(step_logits).contiguous()}, str(out / "logits.safetensors"))
    saved = {}
    if p0["check"]:
        saved["full"] = _check(args, crypten, card, bits, meta, shared, ids, tokens, step_logits, forward,
                               reveal_logits, KVCache, Meter)
    if p0["block"]:
        result["block"], saved["block_today"], saved["block_split"] = block_costs(crypten, card, bits, meta, block0,
                                                                                  p0["block"])
    if saved and args.rank == 0:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in saved.items()}, str(out / "check.safetensors"))
    return result


def _accumulate(total: dict, phases: dict) -> None:
    for name, p in phases.items():
        t = total.setdefault(name, {"wall_s": 0.0, "bytes": 0, "rounds": 0})
        for k in t:
            t[k] += p[k]


def _score(args, crypten, card, bits, meta, lengths, shared, seqs, offline, meter, KVCache, forward, reveal_logits,
           p0_sites=False):
    """Teacher-forced: one cache-free forward per sequence, logits of every position to party 0."""
    out, steps, logits = Path(args.out), [], {}
    for i, n in enumerate(lengths):
        clock, sites = Clock(crypten), ([] if p0_sites else None)
        got = reveal_logits(forward(shared, meta, seqs[i] if seqs else None, n, card, meter, KVCache(), bits,
                                    all_positions=True, sites=sites))
        steps.append(clock.read())
        for layer, pair in enumerate(sites or []):  # evaluation only: both sites of every layer to party 0
            for name, value in zip(("up", "down"), pair):
                opened = reveal_logits(value)
                if args.rank == 0:
                    logits[f"seq{i}.L{layer}.{name}"] = opened.contiguous()
        if args.rank == 0:
            logits[f"seq{i}"] = got.contiguous()
            (out / "progress").write_text(json.dumps({"step": i + 1, "of": len(lengths), **steps[-1]}))
    if args.rank == 0:
        from safetensors.torch import save_file
        save_file(logits, str(out / "logits.safetensors"))
    return {"rank": args.rank, "card": card.name, "fraction_bits": bits, "prompt_tokens": lengths[0], "tokens": [],
            "offline": offline, "steps": steps, "phases": meter.phases, "model": meta}


def block_costs(crypten, card, bits, meta, block, rows: int):
    """Layer 0's MLP block on ``rows`` tokens (random rows from party 0): today's path (a fresh
    CrypTen triple per product, re-opening the masked weights) vs the offline/online split.
    Returns ({"today", "offline", "online"} costs of this party, today's output, the split's output)."""
    from privinf.mpc.block import Meter, encode, mlp_block, share_weights
    from privinf.mpc.model import mlp_meta, reveal_logits
    from privinf.mpc.offline import block_matmul, prepare_block

    mm = mlp_meta(meta)
    x = crypten.cryptensor(encode(torch.randn(rows, meta["C"], generator=torch.Generator().manual_seed(1)), bits),
                           src=0)
    clock = Clock(crypten)
    today = mlp_block(x, share_weights(block, mm, bits), mm, card, Meter())[0]
    costs = {"today": clock.read()}
    clock = Clock(crypten)
    w = prepare_block(block, mm, bits)
    costs["offline"] = clock.read()
    clock = Clock(crypten)
    split = mlp_block(x, w, mm, card, Meter(), matmul=block_matmul)[0]
    costs["online"] = clock.read()
    return costs, reveal_logits(today), reveal_logits(split)


def _check(args, crypten, card, bits, meta, shared, ids, tokens, step_logits, forward, reveal_logits, KVCache,
           Meter):
    """Evaluation only: the cache-free logits of the whole sequence."""
    n = (len(ids) + len(tokens) - 1) if args.rank == 0 else None
    n = int(_exchange(crypten, {"n": n})[0]["n"])
    seq = (ids + tokens)[:n] if args.rank == 0 else None
    return reveal_logits(forward(shared, meta, seq, n, card, Meter(), KVCache(), bits, all_positions=True))


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m privinf.mpc.genparty", description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, choices=(0, 1), required=True)
    p.add_argument("--peer", required=True, help="HOST:PORT where party 0 listens")
    p.add_argument("--card", required=True)
    p.add_argument("--input", help="rank 0: JSON {\"ids\": [...]}")
    p.add_argument("--model", help="rank 1: model card name or local folder")
    p.add_argument("--weights", help="rank 1: PEFT LoRA adapter folder merged into the model")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--protocol-timeout", type=float, default=1800.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cpu", type=int, default=None, help="run on this CPU only (two parties on one host: one each)")
    p.add_argument("--check", action="store_true")
    p.add_argument("--block", type=int, default=0, help="also run layer 0's MLP block on N rows both ways")
    p.add_argument("--sites", action="store_true", help="scoring: also reveal both MLP sites of every layer")
    args = p.parse_args(argv)
    if (args.rank == 0) != bool(args.input) or (args.rank == 1) != bool(args.model):
        p.error("rank 0 takes --input, rank 1 takes --model")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    try:
        result = run(args)
    except PartyError as exc:
        _die(str(exc), exc.code)  # a broken process group aborts at exit (gloo): leave without teardown
    (Path(args.out) / f"result-rank{args.rank}.json").write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # gloo may abort in interpreter teardown ("terminate called without an active exception")


if __name__ == "__main__":
    sys.exit(main())
