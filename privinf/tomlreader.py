"""TOML files read field by field: every failure a :class:`CardError` naming the file, the dotted
field and what is allowed. Protocol and model cards (:mod:`privinf.cards`) and bench scenarios
(:mod:`privinf.bench`) are read with it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from privinf.errors import UsageError


class CardError(UsageError):
    """A card file is missing, malformed or names something privinf does not support."""

    def __init__(self, path: Path | str, field_name: str, message: str):
        self.path, self.field = str(path), field_name
        super().__init__(f"{path}: field '{field_name}': {message}")


class TomlReader:
    """Typed access to a TOML table that reports errors with the file and dotted field name."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str = ""):
        self.path, self.table, self.prefix = path, table, prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def fail(self, key: str, message: str) -> CardError:
        return CardError(self.path, self._name(key), message)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., choices=None):
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be {want}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(key, f"is {value!r}; allowed: {', '.join(map(str, choices))}")
        return value

    def floats(self, key: str, default: Any = ...) -> tuple[float, ...]:
        values = self.get(key, list, default)
        if values is default and default is not ...:
            return tuple(default)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise self.fail(key, f"must be a list of numbers, got {values!r}")
        return tuple(float(v) for v in values)

    def sub(self, key: str, default: Any = ...) -> "TomlReader":
        table = self.get(key, dict, {} if default is ... else default)
        return TomlReader(self.path, table, f"{self._name(key)}.")

    def check_unknown(self, allowed: set[str]) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, f"is not a known field; allowed: {', '.join(sorted(allowed))}")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise CardError(path, "<file>", "does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise CardError(path, "<file>", f"is not valid TOML ({exc})") from None
