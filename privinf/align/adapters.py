"""Adapters by name: the LoRA adapters shipped in ``adapters/`` (``privinf/_data/adapters`` in a
wheel) load by name wherever a folder is accepted (``--weights smollm2-135m-safe``)."""

from __future__ import annotations

from pathlib import Path


def shipped_adapters() -> list[str]:
    """Names of the adapters shipped with privinf."""
    from privinf.cards import data_dir

    try:
        folder = data_dir("adapters")
    except FileNotFoundError:
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "adapter_config.json").is_file())


def resolve_adapter(name_or_path: str | Path) -> Path:
    """The folder of an adapter: an existing path as is, else a shipped adapter of that name, else
    the path unchanged (validation then reports it missing, with the shipped names)."""
    p = Path(name_or_path).expanduser()
    if p.is_dir() or "/" in str(name_or_path):
        return p
    if str(name_or_path) in shipped_adapters():
        from privinf.cards import data_dir

        return data_dir("adapters") / str(name_or_path)
    return p
