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
    return importlib.import_module("crypten")
