"""``RunConfig``: one model configuration under evaluation, and the perturbation it applies.

Every generation in the results store is keyed by the config's ``key()`` (model, weights, card,
mode, scale, relative, sites, layers, seed, max_new_tokens) plus the prompt, so an interrupted
run resumes and repeated runs reuse what is already generated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, replace

from privinf.cards import DEFAULT_MODEL
from privinf.emulator.hookpoints import MODES as EMULATOR_MODES
from privinf.emulator.hookpoints import SITES
from privinf.errors import LayerRangeError, UsageError

MODES = ("clean", *EMULATOR_MODES)


@dataclass(frozen=True)
class RunConfig:
    """What the model runs as. ``mode``: ``clean`` (no perturbation), ``exact`` (a protocol card's
    arithmetic), ``noise`` (a measured error profile), ``gaussian``/``laplace`` (explicit ``scale``:
    std / Laplace b). With ``relative`` the scale multiplies each site's measured clean std."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    mode: str = "clean"
    card: str | None = None
    profile: str | None = None
    scale: float | None = None
    relative: bool = False
    sites: tuple[str, ...] = SITES
    layers: tuple[int, ...] | None = None
    seed: int = 0
    max_new_tokens: int = 64

    def __post_init__(self):
        if self.mode not in MODES:
            raise UsageError(f"mode {self.mode!r} is unknown; allowed: {', '.join(MODES)}")
        if self.mode == "exact" and not self.card:
            raise UsageError("mode 'exact' needs a protocol card (--card)")
        if self.mode == "noise" and not self.profile:
            raise UsageError("mode 'noise' needs a saved error profile (--profile)")
        if self.mode in ("gaussian", "laplace") and self.scale is None:
            raise UsageError(f"--mode {self.mode} needs a noise scale (--scale, >= 0)")
        if self.scale is not None and not 0 <= self.scale < float("inf"):
            raise UsageError(f"--scale {self.scale:g}: a noise scale must be a finite number >= 0")
        bad = [s for s in self.sites if s not in SITES]
        if bad:
            raise UsageError(f"--site {', '.join(map(str, bad))} is unknown; allowed: {', '.join(SITES)}")

    @property
    def perturbed(self) -> bool:
        return self.mode != "clean" and not (self.mode in ("gaussian", "laplace") and self.scale == 0)

    def clean(self) -> "RunConfig":
        """The same model and weights with no perturbation."""
        return RunConfig(model=self.model, weights=self.weights, max_new_tokens=self.max_new_tokens)

    def with_(self, **kw) -> "RunConfig":
        return replace(self, **kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sites"] = list(self.sites)
        d["layers"] = None if self.layers is None else list(self.layers)
        return d

    def key(self) -> str:
        """Stable text key; clean configs ignore the noise fields (so all seeds share one clean run)."""
        d = self.to_dict()
        if not self.perturbed:
            d = self.clean().to_dict() | {"mode": "clean"}
        return json.dumps(d, sort_keys=True)

    def label(self) -> str:
        """Short human label: ``clean``, ``bolt``, ``gaussian 0.02 up L0-3 s1``."""
        if not self.perturbed:
            return "clean"
        if self.mode == "exact":
            head = f"card {self.card}"
        elif self.mode == "noise":
            head = f"profile {self.profile}"
        else:
            head = f"{self.mode} {self.scale:g}{'x std' if self.relative else ''}"
        where = "+".join(self.sites)
        layers = "all" if self.layers is None else layer_spec(self.layers)
        return f"{head} @{where} L{layers}" + ("" if self.mode == "exact" else f" s{self.seed}")


def prompt_key(config: RunConfig, prompt: str) -> str:
    return hashlib.sha256((config.key() + "\x00" + prompt).encode("utf-8")).hexdigest()[:24]


def parse_layers(spec: str | None, option: str = "--layers") -> tuple[int, ...] | None:
    """``"0-3,7"`` -> (0, 1, 2, 3, 7); ``None``/``"all"`` -> None (every layer).

    A reversed range (``5-2``), a spec naming no layer (``""``, ``","``) or anything that is not
    layer indices raises :class:`LayerRangeError` naming ``option``. Whether the model has the
    layers is checked against its depth by ``privinf.validate.layers``."""
    if spec is None or spec.strip().lower() == "all":
        return None
    allowed = "allowed: 'all' or layer indices and ascending ranges like 0-3,7"
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, b = (int(x) for x in part.split("-")) if "-" in part else (int(part), int(part))
        except ValueError:
            raise LayerRangeError(f"{option} {spec!r}: {part!r} is not a layer index or range; {allowed}") from None
        if b < a:
            raise LayerRangeError(f"{option} {spec!r}: range {part} is reversed (did you mean {b}-{a}?); {allowed}")
        out += range(a, b + 1)
    if not out:
        raise LayerRangeError(f"{option} {spec!r} names no layer; {allowed}")
    return tuple(sorted(set(out)))


def layer_spec(layers) -> str:
    """(0, 1, 2, 3, 7) -> ``"0-3,7"``."""
    layers = sorted(layers)
    if not layers:
        return "none"
    parts, start, prev = [], layers[0], layers[0]
    for x in layers[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if x is not None:
            start = prev = x
    return ",".join(parts)


def perturbation(model, config: RunConfig, relative_to: dict | None = None, calibration: dict | None = None):
    """The context manager under which ``model`` runs as ``config`` says (nothing for clean).

    ``relative_to``: {(layer, site): clean std} for relative scales; ``calibration``: TEAL
    thresholds for sparsity cards (both from ``privinf.emulator``'s measuring functions)."""
    if not config.perturbed:
        return contextlib.nullcontext()
    from privinf.emulator import emulate

    kwargs = dict(sites=tuple(config.sites), layers=None if config.layers is None else list(config.layers),
                  seed=config.seed)
    if config.mode == "exact":
        return emulate(model, "exact", card=config.card, calibration=calibration, **kwargs)
    if config.mode == "noise":
        return emulate(model, "noise", profile=config.profile, **kwargs)
    if config.relative:
        if relative_to is None:
            raise ValueError("relative scales need the measured per-site std (relative_to)")
        kwargs["relative_to"] = relative_to
    return emulate(model, config.mode, scale=config.scale, **kwargs)
