"""Checks of what a user typed, run by every command before any model loads.

Each check raises :class:`~privinf.errors.UsageError` (CLI exit code 2) with one line naming the
option, the value and what is allowed, or returns the parsed value. A model's depth is read from
its model card or its folder's ``config.json``, never by loading weights. Heavy libraries are
imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from privinf.errors import LayerRangeError, UsageError


@dataclass(frozen=True)
class ModelInfo:
    """What validation learned about ``--model``: its card (None for a local folder), the folder
    holding it when local, and its number of decoder layers (None when the config does not say)."""

    name: str
    card: object | None
    folder: Path | None
    depth: int | None


def looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith((".", "~"))


def _folder(path: str | Path, option: str, what: str = "folder") -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{option}: {what} {path} does not exist")
    if not p.is_dir():
        raise UsageError(f"{option}: {path} is a file, not a {what}")
    return p


def config_depth(folder: Path, option: str = "--model") -> int | None:
    """Decoder layers of the Hugging Face model in ``folder``, from its ``config.json``."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"{option}: {folder} has no config.json; give a Hugging Face model folder "
                         "(config.json, tokenizer, *.safetensors) or a model card name (privinf cards --kind models)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{cfg_path}: not valid JSON ({exc})") from None
    for c in (cfg, cfg.get("text_config") or {}):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(c.get(key), int):
                return c[key]
    return None


def model(name: str, model_path: str | Path | None = None, option: str = "--model") -> ModelInfo:
    """A model card name or a local Hugging Face folder (``model_path``: the card's weights folder)."""
    from privinf.cards import model_card, model_names

    if model_path is not None:
        folder = _folder(model_path, "--model-path", "model folder")
        return ModelInfo(name, None, folder, config_depth(folder, "--model-path"))
    p = Path(name).expanduser()
    if looks_like_path(name) or p.is_dir():
        folder = _folder(name, option, "model folder")
        return ModelInfo(name, None, folder, config_depth(folder, option))
    if name not in model_names():
        raise UsageError(f"{option} {name!r}: no model card by that name and no such folder; "
                         f"known cards: {', '.join(model_names())}; or give a local Hugging Face folder")
    card = model_card(name)
    if card.source != "package-gguf":
        from privinf.models import hub_snapshot

        hub_snapshot(card)  # ModelNotAvailable says how to supply the weights
    return ModelInfo(name, card, None, card.num_layers)


def layers(spec: str | None, info: ModelInfo | None = None, option: str = "--layers") -> tuple[int, ...] | None:
    """Parse a layer list (see ``safety.config.parse_layers``) and check it against the model's depth."""
    from privinf.safety.config import parse_layers

    out = parse_layers(spec, option)
    if out is not None and info is not None and info.depth is not None and out[-1] >= info.depth:
        raise LayerRangeError(f"{option} {spec!r}: layer {out[-1]} is beyond the model; {info.name} has "
                              f"{info.depth} decoder layers (0-{info.depth - 1})")
    return out


def layer_list(spec: str | None, info: ModelInfo, option: str = "--layers") -> list[int]:
    """Like ``layers``, but ``all`` becomes every layer of the model."""
    out = layers(spec, info, option)
    if out is None and info.depth is None:
        raise UsageError(f"{option} {spec!r}: {info.name}'s config.json does not give its depth; list the layers")
    return list(range(info.depth) if out is None else out)


def layer(index: int, info: ModelInfo, option: str = "--layer") -> int:
    if index < 0 or (info.depth is not None and index >= info.depth):
        top = "" if info.depth is None else f"; {info.name} has {info.depth} decoder layers (0-{info.depth - 1})"
        raise LayerRangeError(f"{option} {index}: no such decoder layer{top}")
    return index


def protocol_cards(names, option: str = "--card", backend: str | None = None) -> list:
    """Protocol cards by name (or .toml path); with ``backend``, each must run on it."""
    from privinf.cards import protocol_card, protocol_names

    cards = []
    for n in names:
        p = Path(n).expanduser()
        if p.suffix != ".toml" and not p.exists() and n not in protocol_names():
            raise UsageError(f"{option} {n!r}: no protocol card by that name; known: {', '.join(protocol_names())}")
        cards.append(protocol_card(p if p.suffix == ".toml" or p.exists() else n))
    if backend is not None:
        be = backend_(backend)
        for card in cards:
            be.check(card)  # UnsupportedCard names the card and the reason
    return cards


def backend_(name: str, option: str = "--backend"):
    """The backend ``name`` (instantiated with its defaults), or a UsageError naming the known ones."""
    from privinf.backends.base import get_backend

    try:
        return get_backend(name)
    except UsageError as exc:
        raise UsageError(f"{option} {name!r}: {exc}; --backend plaintext is always available") from None


def weights(path: str | Path | None, option: str = "--weights") -> Path | None:
    """A PEFT LoRA adapter folder: ``adapter_config.json`` and a ``.safetensors`` file."""
    if path is None:
        return None
    from privinf.align.adapters import resolve_adapter, shipped_adapters

    if not resolve_adapter(path).is_dir() and "/" not in str(path):
        raise UsageError(f"{option} {str(path)!r}: no such adapter folder and no shipped adapter by that name; "
                         f"shipped: {', '.join(shipped_adapters()) or 'none'}")
    folder = _folder(resolve_adapter(path), option, "adapter folder")
    if not (folder / "adapter_config.json").is_file():
        raise UsageError(f"{option}: {path} has no adapter_config.json; give a PEFT LoRA adapter folder "
                         "(adapter_config.json + adapter_model.safetensors)")
    if not any(folder.glob("*.safetensors")):
        raise UsageError(f"{option}: {path} has no .safetensors file; privinf reads adapter weights only from "
                         "safetensors (adapter_model.safetensors)")
    return folder


def prompts(spec: str, option: str = "--prompts"):
    """A prompt set by name (harmbench, donotanswer, advbench, tense) or a .txt/.jsonl file, read and checked."""
    from privinf.safety import data

    try:
        return data.harmful(spec)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}; allowed: {', '.join(data.HARMFUL_SETS)} or a .txt/.jsonl file") from None


def profile_file(path: str | None, option: str = "--profile") -> Path | None:
    """A saved error profile (JSON written by ``privinf profile``)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{option}: profile file {path} does not exist (write one with `privinf profile`)")
    from privinf.errormodel import Profile

    try:
        Profile.load(p)
    except UsageError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option}: {path} is not a privinf error profile ({exc})") from None
    return p


def folder(path: str | None, option: str, what: str = "folder") -> Path | None:
    return None if path is None else _folder(path, option, what)


def scales(values, option: str) -> list[float]:
    """Noise scales: at least one, each finite and >= 0."""
    values = list(values)
    if not values:
        raise UsageError(f"{option}: give at least one scale, e.g. 0.01,0.02")
    bad = [v for v in values if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise UsageError(f"{option} {bad[0]:g}: noise scales must be finite numbers >= 0")
    return values


def at_least(value, minimum, option: str):
    if value < minimum:
        raise UsageError(f"{option} {value:g}: must be >= {minimum:g}")
    return value


def positive(value, option: str):
    if not value > 0:
        raise UsageError(f"{option} {value:g}: must be > 0")
    return value


def peer(text: str, option: str = "--peer") -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{option} {text!r}: must be HOST:PORT with a port in 1-65535, e.g. 127.0.0.1:29500")
    return text


def numbers(text: str, option: str) -> list[float]:
    """Comma-separated noise scales (each finite and >= 0)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected comma-separated numbers >= 0, e.g. 0.01,0.02") from None
    return scales(values, option)


def integers(text: str, option: str = "--seeds") -> list[int]:
    """Comma-separated integers (at least one)."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out:
        raise UsageError(f"{option} {text!r}: expected comma-separated integers, e.g. 0,1")
    return out


def safety_options(o: dict, relative: bool = False, cards=()) -> ModelInfo:
    """The options every ``privinf safety`` command shares (see ``commands.safety.common``), and the
    perplexity text that ``relative`` scales or sparsity ``cards`` need; returns the model's info."""
    info = model(o["model_name"], o["model_path"])
    weights(o["weights"])
    prompts(o["prompts"])
    from privinf.safety.data import set_list

    for spec in set_list(o["train_prompts"]):
        prompts(spec, "--train-prompts")  # their overlap with --prompts is refused in load_harness
    folder(o["judge_path"], "--judge", "model-judge folder")
    for key, low in (("limit", 0), ("benign_limit", -1), ("ppl_tokens", 0), ("ppl_window", 2),
                     ("max_new_tokens", 1), ("batch_size", 1), ("threads", 1)):
        at_least(o[key], low, "--" + key.replace("_", "-"))
    if o["ppl_tokens"] and o["ppl_tokens"] < o["ppl_window"]:
        raise UsageError(f"--ppl-tokens {o['ppl_tokens']}: fewer than one --ppl-window ({o['ppl_window']}); "
                         "raise it, or give 0 to skip perplexity")
    need = "relative scales (--relative)" if relative else None
    for c in protocol_cards(cards):
        if any(s.method == "sparsify" for s in c.sites.values()):
            need = f"card {c.name!r} (TEAL thresholds are calibrated on it)"
    if need and not o["ppl_tokens"]:
        raise UsageError(f"--ppl-tokens 0: {need} needs the perplexity text; give --ppl-tokens > 0")
    return info
