"""Which cards the CrypTen two-party protocol can run: exact, piecewise (exact comparisons),
fixed-point tanh and CrypTen-native activations; no site transforms (TEAL thresholds and per-token
quantization need plaintext statistics)."""

from __future__ import annotations

from privinf.cards import ProtocolCard, UnsupportedCard

MPC_METHODS = ("exact", "piecewise", "fixed-point-tanh", "crypten-native")


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
