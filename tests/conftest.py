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
