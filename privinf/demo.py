"""``privinf demo``: a real model's MLP block under each card, compared with the exact block.

By default every MPC card runs as a real two-party computation (CrypTen, two OS processes on
loopback, one session for all cards); ``backend="plaintext"`` shows the plaintext emulation only.
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
        act = cost.extra["activation"]
        err = (out.out - exact.out).abs()
        rows.append([card.name, card.activation(block.activation).method, cost.extra["fraction_bits"],
                     float(err.max()), float(err.mean()),
                     float((out.out - emu.out).abs().max()), float((out.down - emu.down).abs().max()),
                     cost.wall_s, cost.mb_sent, cost.rounds, act["wall_s"], act["bytes_sent"] / 1e6, act["rounds"]])
    head = (f"model {model_name}, layer {layer} MLP block (hidden {block.hidden_size}, MLP {block.intermediate_size}, "
            f"{block.activation}), {x.shape[0]} tokens; CrypTen 2PC ({provider.upper()} triples, each card at its "
            f"fraction bits on the int64 ring, two processes on loopback, median wall of {repeat} runs) vs the exact block and vs the card's "
            "plaintext emulation\n")
    headers = ["card", "method", "frac bits", "max err", "mean err", "max err vs emu", "down err vs emu", "wall s", "MB",
               "rounds", "act s", "act MB", "act rounds"]
    return head + table(headers, rows)
