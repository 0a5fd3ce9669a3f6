import pytest
import torch


@pytest.mark.slow
def test_default_model_loads_from_the_package_and_its_block_matches():
    from privinf.emulator.measure import block_and_input
    from privinf.models import load_model, resolve_model_path

    model, tok = load_model()
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert (resolve_model_path("smollm2-135m-instruct") / "model.safetensors").exists()  # cached copy
    block, x = block_and_input(model, tok, "The capital of France is Paris, and the capital of Italy is Rome.", 2, 16)
    layer = model.model.layers[2]
    with torch.no_grad():
        ref = x + layer.mlp(layer.post_attention_layernorm(x))
    assert (block(x).out - ref).abs().max() < 1e-4
