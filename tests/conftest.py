import pytest
import torch


def assert_close(got: torch.Tensor, ref: torch.Tensor, atol: float, what: str = "") -> None:
    """The one comparison every backend test uses: max abs difference within ``atol``."""
    err = float((got.double() - ref.double()).abs().max())
    assert err <= atol, f"{what} max abs error {err:.3g} > tolerance {atol:.3g}"


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny_llama():
    from privinf.models import tiny_model
    return tiny_model("llama", seed=0)


@pytest.fixture
def tiny_block(tiny_llama):
    from privinf.blocks import MLPBlock
    return MLPBlock.from_model(tiny_llama, 1)


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A tiny random llama saved as a local Hugging Face folder with a word-level tokenizer (w0..w97)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from privinf.models import tiny_model

    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    vocab = {f"w{i}": i for i in range(98)} | {"[UNK]": 98}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="w0", eos_token="w2")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tok.save_pretrained(folder)
    return folder
