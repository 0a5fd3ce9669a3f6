import pytest
import torch

from conftest import assert_close
from privinf.backends.base import UnsupportedCard, get_backend
from privinf.blocks import MLPBlock
from privinf.emulator.hookpoints import arch_spec, decoder_layers
from privinf.cards import protocol_card
from privinf.models import tiny_model


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "phi3", "gemma", "gemma2", "gpt2"])
def test_block_equals_the_hf_layer_mlp_path(arch):
    model = tiny_model(arch)
    block = MLPBlock.from_model(model, 1)
    layer = decoder_layers(model)[1]
    x = torch.randn(7, 32)
    with torch.no_grad():
        n = layer.get_submodule(arch_spec(arch).norm)(x)
        ref = x + layer.mlp(n)
    got = block(x)
    assert got.out.shape == (7, 32) and got.down.shape == (7, 37)
    assert_close(got.up, n, 1e-6, f"{arch} normalised input")
    # gemma/gpt2 use tanh-GELU, the block's exact reference is erf-GELU: ~1e-3 apart at most
    assert_close(got.out, ref, 1e-5 if block.activation == "silu" else 2e-3, f"{arch} block output")


def test_moe_block_extraction_is_refused():
    with pytest.raises(ValueError, match="mixture-of-experts"):
        MLPBlock.from_model(tiny_model("mixtral"), 0)


def test_block_save_load_roundtrip(tmp_path, tiny_block):
    tiny_block.save(tmp_path / "b.safetensors")
    back = MLPBlock.load(tmp_path / "b.safetensors")
    x = torch.randn(3, 32)
    assert torch.equal(back(x).out, tiny_block(x).out)


def test_plaintext_card_changes_the_down_site_as_the_polynomial_does(tiny_block):
    x = torch.randn(9, 32)
    card = protocol_card("bolt")
    got = get_backend("plaintext").run(tiny_block, x, card).output
    exact = tiny_block(x)
    assert_close(got.up, exact.up, 5e-3, "bolt before W_up")  # 2^-12 grid + Newton rsqrt (1.3e-3 rel)
    err = (got.down - exact.down).abs().max().item()
    assert 1e-4 < err < 0.05


def test_unknown_backend_and_unsupported_card():
    with pytest.raises(ValueError, match="available: plaintext"):
        get_backend("sgx")
    with pytest.raises(UnsupportedCard):
        get_backend("plaintext").check(protocol_card("nexus").__class__(**{**protocol_card("nexus").__dict__,
                                                                         "backends": ("tenseal",)}))
