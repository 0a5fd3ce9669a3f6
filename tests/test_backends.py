"""One test body for every backend: the MLP block under each card matches the card's plaintext
arithmetic (CardOps) within the backend's tolerance, and the card is really applied."""

from conftest import BACKEND_CASES, assert_close, card_ops
from privinf.cards import protocol_card


def test_block_matches_plaintext(backend, card, block_x):
    block, x = block_x
    c = protocol_card(card)
    ref = block.forward(x, card_ops(c, block, x))  # the card's plaintext arithmetic
    got = backend.results[card].output
    tol = backend.case.tolerance(c)
    for site in ("up", "down", "out"):
        assert_close(getattr(got, site), getattr(ref, site), tol[site], f"{backend.name} {card} {site}")
    err = float((got.out - block(x).out).abs().max())  # against the exact block
    if card == "exact":
        assert err <= backend.case.exact_tolerance, f"{backend.name}: exact card {err:.3g} from the exact block"
    else:
        assert err > 0, f"{backend.name}: card {card} left the block unchanged"


def test_every_backend_declares_cards_it_supports(backend):
    from privinf.backends.base import get_backend

    be = get_backend(backend.name)
    assert all(be.supports(protocol_card(c)) for c in BACKEND_CASES[backend.name].cards)
