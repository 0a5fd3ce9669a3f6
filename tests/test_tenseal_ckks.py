"""TenSEAL CKKS backend: equivalence with the plaintext emulation, parameters, key separation."""

import pytest
import torch

from conftest import assert_close, backend_results
from privinf.approx.ops import CardOps
from privinf.backends.base import UnsupportedCard, get_backend
from privinf.cards import protocol_card
from privinf.fhe.circuit import Layout
from privinf.fhe.params import DepthError, block_depth, choose_params
from privinf.fhe.protocol import Client, Server, plan


@pytest.fixture(scope="session")
def block(block_x):
    return block_x[0]  # the tiny llama's layer 1: hidden 32, MLP 37 (odd on purpose)


@pytest.fixture(scope="session")
def x(block_x):
    return block_x[1]


@pytest.fixture(scope="session")
def runs(block_x):
    """One CKKS run per card, shared with test_backends (CKKS contexts are expensive)."""
    return backend_results("tenseal", *block_x)


def test_cost_report_counts_depth_ring_and_bytes(runs, block):
    cost = runs["nexus-core"].cost
    assert cost.depth == block_depth(protocol_card("nexus-core").activation("silu")) == 6
    assert cost.extra["levels_used"] == cost.depth  # the circuit used exactly the planned levels
    assert cost.ring_dim == 16384 and cost.extra["coeff_mod_bit_sizes"] == [60] + [40] * 6 + [60]
    client, server = cost.per_party
    assert client["bytes_sent"] > server["bytes_sent"] > 0  # keys + inputs up, outputs down
    assert cost.bytes_sent == client["bytes_sent"] + server["bytes_sent"] and cost.rounds == 1
    assert runs["exact"].cost.rounds == 2 and runs["exact"].cost.ring_dim == 8192


def test_parameter_chooser_picks_smallest_ring_and_refuses_impossible_depths():
    assert choose_params(2).poly_modulus_degree == 8192
    assert choose_params(7).poly_modulus_degree == 16384
    p = choose_params(19)
    assert p.poly_modulus_degree == 32768 and p.total_bits <= 881
    with pytest.raises(DepthError, match=r"depth 20 .*N=32768 .*depth 19"):
        choose_params(20)


def test_full_nexus_depth_needs_the_largest_ring(block):
    spec = protocol_card("nexus").activation("silu")
    assert block_depth(spec) == 19  # 1 + (4 sign compositions x 4 + 1) + 1 ... + down
    params, layout = plan(block, protocol_card("nexus"), tokens=64)
    assert params.poly_modulus_degree == 32768 and layout.t_pad * layout.block == params.slots


def test_unsupported_cards_say_why():
    backend = get_backend("tenseal")
    with pytest.raises(UnsupportedCard, match="does not list the tenseal backend"):
        backend.check(protocol_card("bolt"))
    assert backend.supports(protocol_card("nexus")) and backend.supports(protocol_card("exact"))


def test_layout_round_trip_and_multi_block_matmul():
    """Several input and output feature blocks (as in the real 576 x 1536 model) at depth 1."""
    gen = torch.Generator().manual_seed(1)
    x, w, bias = torch.randn(9, 150, generator=gen), torch.randn(70, 150, generator=gen), torch.randn(70, generator=gen)
    params = choose_params(1, min_degree=8192)
    layout = Layout.choose(params.slots, 64, (150, 70))
    assert (layout.block, layout.t_pad) == (64, 64) and layout.n_blocks(150) == 3
    assert torch.equal(layout.unpack(layout.pack(x.double()), 9, 150), x)
    client = Client(params, layout)
    server = Server(client.public_bundle())
    xs = server.load(client.encrypt(x))
    ys = server.ev.matmul(xs, w, layout, bias)
    from privinf.fhe.protocol import dump
    got = client.decrypt(dump(ys), 9, 70)
    assert_close(got, x @ w.T + bias, 1e-4, "packed matmul")  # float32 outputs of size ~20


def test_server_context_has_no_secret_key_and_cannot_decrypt():
    import tenseal as ts
    import tenseal.sealapi as seal

    params = choose_params(1)
    layout = Layout.choose(params.slots, 4, (32,))
    client = Client(params, layout)
    bundle = client.public_bundle()
    server = Server(bundle)
    assert client.context.is_private()
    assert not server.context.is_private() and not server.context.has_secret_key()
    with pytest.raises(ValueError):
        server.context.secret_key()
    # a TenSEAL vector the client encrypted does not decrypt under the server's context
    vec = ts.ckks_vector(client.context, [1.0, 2.0, 3.0]).serialize()
    with pytest.raises(ValueError):
        ts.ckks_vector_from(server.context, vec).decrypt()
    # the server's best guess, a fresh secret key for the same parameters, decrypts to noise
    x = torch.full((4, 32), 3.0)
    ct = server.load(client.encrypt(x))[0]
    guess = seal.KeyGenerator(server.seal_context).secret_key()
    pt = seal.Plaintext()
    seal.Decryptor(server.seal_context, guess).decrypt(ct, pt)
    values = torch.tensor(seal.CKKSEncoder(server.seal_context).decode_double(pt)[:4])
    assert (values - 3.0).abs().min() > 1.0


@pytest.mark.slow
def test_full_nexus_on_the_largest_ring_matches_emulation(block, x):
    """Depth 19 at N=32768 (~40 s, ~4 GB): the NEXUS circuit with all four sign compositions."""
    card = protocol_card("nexus")
    res = get_backend("tenseal").run(block, x, card)
    ref = block.forward(x, CardOps(card, block.activation))
    assert res.cost.ring_dim == 32768 and res.cost.extra["levels_used"] == 19
    assert_close(res.output.down, ref.down, 1e-3, "nexus down")
    assert_close(res.output.out, ref.out, 1e-3, "nexus out")


@pytest.mark.slow
def test_two_process_demo_on_a_tiny_local_model(tmp_path):
    """Client and server as two OS processes on a loopback socket (~15 s: process start-up)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from privinf.demo import run_tenseal_demo
    from privinf.models import tiny_model

    tiny_model("llama").save_pretrained(tmp_path)
    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(99)}, unk_token="w98"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w98").save_pretrained(tmp_path)
    text = run_tenseal_demo(str(tmp_path), 1, ["exact", "nexus-core"], "w1 w2 w3 w4 w5", 5)
    from click.testing import CliRunner

    from privinf.cli import main
    res = CliRunner().invoke(main, ["demo", "--backend", "tenseal", "--model", str(tmp_path), "--layer", "1",
                                    "--card", "exact", "--prompt", "w1 w2 w3"])
    assert res.exit_code == 0 and "3 tokens" in res.output, res.output
    assert "5 tokens" in text and "nexus-core" in text and "16384" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[3:]}
    assert float(rows["nexus-core"][4]) < 1e-3  # max err vs emulation
