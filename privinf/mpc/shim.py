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
(``temp_override``, ``load_config``); writes go to both. ``temp_override`` (which deep-copies and
merges the whole tree, about 8 ms a call, several times per decoder layer) sets and restores the
overridden keys instead. Values and semantics are unchanged.
"""

from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager

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
    """Make ``CrypTenConfig`` reads plain dict lookups and ``temp_override`` a set-and-restore
    (see the module docstring)."""
    if getattr(config_class, "_privinf_fast", False):
        return
    from omegaconf import OmegaConf

    def mirror(self) -> _Node:
        state = object.__getattribute__(self, "__dict__")
        source = state["config"]
        pair = state.get("_privinf_mirror")
        if pair is None or pair[0] is not source:  # CrypTen replaced its tree: rebuild the mirror
            pair = (source, _Node(OmegaConf.to_container(source, resolve=True), source))
            state["_privinf_mirror"] = pair
        return pair[1]

    def __getattribute__(self, name):
        state = object.__getattribute__(self, "__dict__")
        pair = state.get("_privinf_mirror")
        if pair is not None and pair[0] is state.get("config"):  # the common case: a top-level section
            values = object.__getattribute__(pair[1], "_values")
            if name in values:
                return values[name]
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            pass
        result = mirror(self)
        for key in name.split("."):
            result = getattr(result, key)
        return result

    def leaf(self, key: str):
        """(node, name) holding the dotted ``key`` in the current mirror, or None if it is not a leaf there."""
        *path, name = key.split(".")
        node = mirror(self)
        for part in path:
            node = object.__getattribute__(node, "_values").get(part)
            if not isinstance(node, _Node):
                return None
        values = object.__getattribute__(node, "_values")
        return (node, name) if name in values and not isinstance(values[name], _Node) else None

    original = config_class.temp_override

    @contextmanager
    def temp_override(self, override_dict):
        """CrypTen's ``temp_override`` without its deep copy and merge of the whole tree (about 8 ms a
        call): each existing key is set on the mirror and the tree, and restored on exit (looked up
        again then, in case CrypTen replaced its tree meanwhile). Keys that are not leaves of the tree
        take CrypTen's own path."""
        if any(leaf(self, key) is None for key in override_dict):
            with original(self, override_dict):
                yield
            return
        saved = []
        try:
            for key, value in override_dict.items():
                node, name = leaf(self, key)
                saved.append((key, getattr(node, name)))
                setattr(node, name, value)
            yield
        finally:
            for key, value in reversed(saved):
                node, name = leaf(self, key)
                setattr(node, name, value)

    config_class.__getattribute__ = __getattribute__
    config_class.temp_override = temp_override
    config_class._privinf_fast = True
