import math
from pathlib import Path

import pytest

from privinf.cards import (CardError, all_model_cards, all_protocol_cards, load_model_card,
                           load_protocol_card, model_card, protocol_card, protocol_names)

REQUIRED = {"iron", "bolt", "bumblebee", "puma", "nexus", "crypten", "teal-10", "teal-25", "teal-50",
            "teal-90", "smoothquant-a8", "smoothquant-a4", "omniquant-a8", "omniquant-a4", "exact"}


def test_every_required_card_ships_and_validates():
    assert REQUIRED <= set(protocol_names())
    cards = {c.name: c for c in all_protocol_cards()}
    assert cards["bolt"].fraction_bits == 12 and cards["bolt"].ring_bits == 37
    assert cards["bolt"].reference.table1_speedup == 24.6
    assert cards["nexus"].runs_on("tenseal") and not cards["nexus"].runs_on("crypten")
    assert cards["teal-50"].sites["up"].sparsity == 0.5
    assert cards["smoothquant-a4"].sites["down"].bits == 4
    assert cards["omniquant-a8"].sites["up"].scheme == "asymmetric"
    assert cards["exact"].reference.ppl == 8.05


def test_piecewise_cards_cover_the_real_line():
    for card in all_protocol_cards():
        for spec in card.activations.values():
            if spec.method == "piecewise":
                assert spec.segments[0].lo == -math.inf and spec.segments[-1].hi == math.inf


def test_model_cards_match_table3():
    cards = {c.name: c for c in all_model_cards()}
    assert len(cards) == 11
    assert cards["llama-3.1-8b-instruct"].mva_up_std == 0.075
    assert cards["mistral-7b-instruct-v0.3"].sensitive_layers == tuple(range(7))
    assert model_card("smollm2-135m-instruct").source == "package-gguf"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


BASE = 'name = "x"\ntitle = "X"\nkind = "mpc"\nbackends = ["crypten"]\ncitation = "c"\n'


@pytest.mark.parametrize("text, field, hint", [
    (BASE.replace('"mpc"', '"quantum"'), "kind", "allowed: exact, mpc"),
    (BASE.replace('["crypten"]', '["sgx"]'), "backends", "allowed: plaintext, crypten, tenseal"),
    (BASE + '[activations.silu]\nmethod = "magic"\n', "activations.silu.method", "allowed: exact, piecewise"),
    (BASE + '[sites.up]\nmethod = "fake-quant"\nbits = 4\n', "sites.up.scheme", "symmetric"),
    (BASE + '[sites.up]\nmethod = "sparsify"\nsparsity = 1.5\n', "sites.up.sparsity", "[0, 1)"),
    (BASE + 'colour = "red"\n', "colour", "not a known field"),
    (BASE + '[activations.silu]\nmethod = "piecewise"\n[[activations.silu.segments]]\nlo = -inf\nhi = 0.0\n'
     'coeffs = []\n[[activations.silu.segments]]\nlo = 1.0\nhi = inf\ncoeffs = [0.0, 1.0]\n',
     "activations.silu.segments[1].lo", "previous segment"),
    (BASE.replace('name = "x"', 'name = "y"'), "name", "must match"),
    (BASE + '[precision]\nfraction_bits = "twelve"\n', "precision.fraction_bits", "must be int"),
])
def test_bad_card_names_file_field_and_allowed(tmp_path, text, field, hint):
    path = _write(tmp_path, "x", text)
    with pytest.raises(CardError) as err:
        load_protocol_card(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{field}'" in msg and hint in msg, msg


def test_unknown_card_name_lists_known():
    with pytest.raises(CardError, match="known: .*bolt"):
        protocol_card("boltt")


def test_bad_model_card(tmp_path):
    path = _write(tmp_path, "m", 'name = "m"\ntitle = "M"\nhf_id = "a/b"\narchitecture = "llama"\n'
                  'activation = "silu"\nhidden_size = 8\nintermediate_size = 9\nnum_layers = 2\n'
                  'sensitive_layers = [0, 5]\nsource = "huggingface"\n')
    with pytest.raises(CardError, match="sensitive_layers.*layer indices in \\[0, 2\\)"):
        load_model_card(path)
