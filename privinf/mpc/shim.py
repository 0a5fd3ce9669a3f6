"""Import CrypTen 0.4.1 on torch 2.13.

CrypTen's ONNX converter imports ``torch.onnx._internal.registration``, which torch 2.13 no longer
has; ``import crypten`` fails on it although privinf never converts ONNX models. A stub module
under that name (with an empty ``registry``) lets the import succeed; only ``crypten.nn.from_onnx``
would touch it.
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
    import torch.onnx  # noqa: F401  (the parent packages must exist)

    try:
        importlib.import_module(_STUB)
    except ImportError:
        stub = types.ModuleType(_STUB)
        stub.registry = None
        sys.modules[_STUB] = stub
    return importlib.import_module("crypten")
