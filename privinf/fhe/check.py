"""Which cards the CKKS engine can run: polynomial activations whose interval tests are sign
polynomials (no comparisons on ciphertexts), no |x| terms, no site transforms."""

from __future__ import annotations

from privinf.cards import ProtocolCard, UnsupportedCard


def check_card(card: ProtocolCard) -> None:
    """Raise :class:`UnsupportedCard` with the reason CKKS cannot run ``card``."""
    if not card.runs_on("tenseal"):
        raise UnsupportedCard(f"card {card.name!r} does not list the tenseal backend")
    if any(s.method != "none" for s in card.sites.values()):
        raise UnsupportedCard(f"card {card.name!r} transforms a site (sparsity/quantisation); "
                              "the CKKS backend runs polynomial cards only")
    for name, spec in card.activations.items():
        if spec.method not in ("exact", "piecewise"):
            raise UnsupportedCard(f"card {card.name!r}: {name} method {spec.method!r} has no CKKS circuit")
        if any(s.abs_coeffs for s in spec.segments):
            raise UnsupportedCard(f"card {card.name!r}: {name} has |x| terms; no CKKS circuit")
        if spec.method == "piecewise" and len(spec.segments) > 1 and spec.comparison != "sign-polynomial":
            raise UnsupportedCard(f"card {card.name!r}: {name} needs comparison = 'sign-polynomial' "
                                  "for CKKS (no comparisons on ciphertexts)")
