"""The plaintext emulator: a protocol card, a measured error profile or explicit noise applied to
any Hugging Face causal LM at full scale, through forward hooks (see :func:`emulate`).

Names load on first use, so ``privinf.emulator.hookpoints`` (the architecture table, which card
validation and the MLP block read) imports without the emulator's machinery.
"""

import importlib

_EXPORTS = {
    "MODES": "hookpoints", "SITES": "hookpoints", "HookpointError": "hookpoints", "resolve": "hookpoints",
    "EmulatorHandle": "core", "emulate": "core",
    "calibrate_card": "measure", "capture_sites": "measure", "measure_site_std": "measure",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'privinf.emulator' has no attribute {name!r}")
    return getattr(importlib.import_module(f"privinf.emulator.{_EXPORTS[name]}"), name)
