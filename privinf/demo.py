"""``privinf demo``: a real model's MLP block under each card, compared with the exact block.

One function per backend: by default every MPC card runs as a real two-party computation (CrypTen,
two OS processes on loopback, one session for all cards, :func:`run_mpc_demo`); ``--backend tenseal``
runs CKKS client and server as two processes (:func:`run_tenseal_demo`); ``--backend plaintext``
shows the plaintext emulation only (:func:`run_plaintext_demo`).
"""

from __future__ import annotations

from privinf.approx.ops import CardOps
from privinf.backends.base import get_backend
from privinf.cards import all_protocol_cards, protocol_card
from privinf.emulator.measure import block_and_input
from privinf.report import table


def site_errors(ref, got) -> list[float]:
    return [float((got.up - ref.up).abs().max()), float((got.down - ref.down).abs().max()),
            float((got.out - ref.out).abs().max()), float((got.out - ref.out).abs().mean())]


def run_plaintext_demo(model_name: str, layer: int, card_names: list[str], prompt: str, tokens: int) -> str:
    from privinf.models import load_model

    block, x = block_and_input(*load_model(model_name), prompt, layer, tokens)  # x: (T, C)
    cards = [protocol_card(n) for n in card_names] if card_names else all_protocol_cards()
    backend = get_backend("plaintext")
    exact = block(x)
    rows = []
    for card in cards:
        ops = CardOps(card, block.activation)
        if ops.needs_calibration():  # TEAL: thresholds from this very input (demo only)
            ops.calibrate({"up": block.norm(x), "down": exact.down})
        res = backend.run(block, x, card, ops=ops)
        rows.append([card.name, card.kind, *site_errors(exact, res.output), res.cost.wall_s * 1e3])
    head = (f"model {model_name}, layer {layer} MLP block (hidden {block.hidden_size}, MLP {block.intermediate_size}, "
            f"{block.activation}), {x.shape[0]} tokens; plaintext emulation vs exact block\n")
    return head + table(["card", "kind", "max err up", "max err down", "max err out", "mean err out", "ms"], rows)


MPC_DEMO_CARDS = ("crypten", "iron", "bolt", "bumblebee", "puma", "exact")


def run_mpc_demo(model_name: str, layer: int, card_names: list[str], prompt: str, tokens: int,
                 provider: str = "tfp", timeout_s: float = 60.0, repeat: int = 3) -> str:
    """Each card's block as a two-party computation vs the exact block and vs its plaintext emulation."""
    from privinf.backends.crypten_mpc import CrypTenBackend
    from privinf.models import load_model

    block, x = block_and_input(*load_model(model_name), prompt, layer, tokens)  # x: (T, C)
    cards = [protocol_card(n) for n in (card_names or MPC_DEMO_CARDS)]
    mpc = CrypTenBackend(provider=provider, timeout_s=timeout_s, repeat=repeat)
    for card in cards:
        mpc.check(card)  # UnsupportedCard names the reason before anything starts
    exact = block(x)
    emulated = [get_backend("plaintext").run(block, x, card).output for card in cards]
    results = mpc.run_cards(block, x, cards)
    rows = []
    for card, emu, res in zip(cards, emulated, results):
        out, cost = res.output, res.cost
        act, off, on = cost.extra["activation"], cost.extra.get("offline") or {}, cost.extra.get("online") or {}
        err = (out.out - exact.out).abs()
        rows.append([card.name, card.activation(block.activation).method, cost.extra["fraction_bits"],
                     float(err.max()), float(err.mean()),
                     float((out.out - emu.out).abs().max()), float((out.down - emu.down).abs().max()),
                     off.get("wall_s"), off.get("bytes_sent", 0) / 1e6, on.get("wall_s"), on.get("bytes_sent", 0) / 1e6,
                     on.get("rounds"), act["wall_s"], act["bytes_sent"] / 1e6, act["rounds"]])
    head = (f"model {model_name}, layer {layer} MLP block (hidden {block.hidden_size}, MLP {block.intermediate_size}, "
            f"{block.activation}), {x.shape[0]} tokens; CrypTen 2PC ({provider.upper()} triples, each card at its "
            f"fraction bits on the int64 ring, two processes on loopback, median wall of {repeat} runs) vs the exact block and vs the card's "
            "plaintext emulation; offline = weights shared and their Beaver masks opened once per connection, "
            "online = one query\n")
    headers = ["card", "method", "frac bits", "max err", "mean err", "max err vs emu", "down err vs emu",
               "offline s", "offline MB", "online s", "online MB", "online rounds", "act s", "act MB", "act rounds"]
    return head + table(headers, rows)


TENSEAL_DEMO_CARDS = ("exact", "nexus-core")  # full "nexus" needs N=32768: ~7 min and 4.5 GB for 64 tokens


def run_tenseal_demo(model_name: str, layer: int, card_names: list[str], prompt: str, tokens: int,
                     timeout_s: float = 60.0) -> str:
    """The block under each card with CKKS between two processes; a table of error and cost.

    The client process (this one) holds the hidden states and the CKKS secret key; the server
    process loads the block's weights from a safetensors file and receives only the client's public
    bundle (no secret key) and ciphertexts, over a loopback socket whose bytes the MB columns count.
    """
    import json
    import multiprocessing as mp
    import socket
    import tempfile
    import time
    from pathlib import Path

    from privinf.fhe.protocol import run_client, serve
    from privinf.fhe.wire import SocketLink, pack_frames, send
    from privinf.models import load_model

    block, x = block_and_input(*load_model(model_name), prompt, layer, tokens)  # x: (T, C)
    cards = [protocol_card(n) for n in (card_names or TENSEAL_DEMO_CARDS)]
    backend = get_backend("tenseal")
    for card in cards:
        backend.check(card)
    exact = block(x)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "block.safetensors")
        block.save(path)  # the server's weights
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(path, child), daemon=True)
        proc.start()
        try:
            if not parent.poll(timeout_s):
                raise TimeoutError(f"the tenseal server process did not open a port within {timeout_s:.0f} s")
            port = parent.recv()
            with socket.create_connection(("127.0.0.1", port), timeout=None) as sock:
                link = SocketLink(sock)
                for card in cards:
                    ops = CardOps(card, block.activation)
                    emul = block.forward(x, None if ops.exact else ops)
                    start = time.perf_counter()
                    out, tr, params, _ = run_client(block, x, card, link, ops)
                    wall = time.perf_counter() - start
                    rows.append([card.name, float((out.down - exact.down).abs().max()),
                                 float((out.out - exact.out).abs().max()), float((out.out - exact.out).abs().mean()),
                                 float((out.out - emul.out).abs().max()), float((out.out - emul.out).abs().mean()),
                                 wall, tr.to_server / 1e6, tr.to_client / 1e6, params.depth,
                                 params.poly_modulus_degree])
                send(sock, pack_frames([json.dumps({"op": "bye"}).encode()]))
        finally:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    head = (f"model {model_name}, layer {layer} MLP block (hidden {block.hidden_size}, MLP {block.intermediate_size}, "
            f"{block.activation}), {x.shape[0]} tokens; TenSEAL CKKS, client and server in two processes "
            f"(loopback socket); errors vs the exact block and vs the card's plaintext emulation\n")
    return head + table(["card", "max err down", "max err out", "mean err out", "max err vs emul",
                         "mean err vs emul", "wall s", "MB client->server", "MB server->client", "depth", "N"], rows)
