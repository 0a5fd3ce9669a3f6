"""Import CrypTen 0.4.1 on torch 2.13.

CrypTen's ONNX converter imports ``torch.onnx._internal.registration``, which torch 2.13 no longer
has; ``import crypten`` fails on it although privinf never converts ONNX models. A stub module
under that name (with an empty ``registry``) lets the import succeed; only ``crypten.nn.from_onnx``
would touch it.

crypten lives outside the venv (its declared dependencies, ``sklearn`` and ``torchvision``, cannot
be installed next to torch 2.13, so ``pip check`` would fail): ``make venv`` installs it into
``<assets>/lib``, which is appended to ``sys.path`` here (last, so that the wheel's extra top-level
folders ``test``, ``examples``, ``benchmarks`` shadow nothing; a crypten installed in the
environment takes precedence).

CrypTen reads its configuration (``crypten.cfg``, an OmegaConf tree) on every operation: each
shared tensor's construction and each dispatched method look up several keys, and an OmegaConf
lookup costs tens of microseconds. On a norm of one token that was about half the CPU time
(cProfile: 25,000 lookups, 7 of 16.6 s). :func:`fast_config` makes the reads plain attribute
lookups on a mirror of the tree (a dict per node), rebuilt whenever CrypTen replaces its tree
(``temp_override``, ``load_config``); writes go to both. Values and semantics are unchanged.
"""

from __future__ import annotations

import importlib
import sys
import types

_STUB = "torch.onnx._internal.registration"


def import_crypten():
    """Return the ``crypten`` module, installing the stub first if torch lacks the module."""
    if "crypten" in sys.modules:
        return sys.modules["crypten"]
    from privinf.models import assets_dir

    lib = assets_dir() / "lib"
    if (lib / "crypten").is_dir() and str(lib) not in sys.path:
        sys.path.append(str(lib))
    import torch.onnx  # noqa: F401  (the parent packages must exist)

    try:
        importlib.import_module(_STUB)
    except ImportError:
        stub = types.ModuleType(_STUB)
        stub.registry = None
        sys.modules[_STUB] = stub
    crypten = importlib.import_module("crypten")
    fast_config(type(crypten.cfg))
    return crypten


class _Node:
    """A read-mostly mirror of one OmegaConf node: attribute reads hit a dict; writes go to both."""

    __slots__ = ("_values", "_source")

    def __init__(self, values: dict, source):
        object.__setattr__(self, "_values", {k: _Node(v, source[k]) if isinstance(v, dict) else v
                                             for k, v in values.items()})
        object.__setattr__(self, "_source", source)

    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        return self.__getattr__(name)

    def __setattr__(self, name, value):
        setattr(self._source, name, value)
        self._values[name] = value


def fast_config(config_class) -> None:
    """Make ``CrypTenConfig`` attribute reads plain dict lookups (see the module docstring)."""
    if getattr(config_class, "_privinf_fast", False):
        return
    from omegaconf import OmegaConf

    def __getattribute__(self, name):
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            pass
        state = object.__getattribute__(self, "__dict__")
        source = state["config"]
        mirror = state.get("_privinf_mirror")
        if mirror is None or mirror[0] is not source:  # CrypTen replaced its tree: rebuild the mirror
            mirror = (source, _Node(OmegaConf.to_container(source, resolve=True), source))
            state["_privinf_mirror"] = mirror
        result = mirror[1]
        for key in name.split("."):
            result = getattr(result, key)
        return result

    config_class.__getattribute__ = __getattribute__
    config_class._privinf_fast = True
