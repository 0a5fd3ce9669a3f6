"""The MVA as a value: which noise, at which sites, absolute or relative, on which layers.

Written by hand (``up:gaussian:0.05,down:laplace:0.03``; ``up:0.05`` takes the paper's family at
that site) or read from the JSON ``privinf safety mva`` writes (each site's coherent-ASR peak within
the perplexity limit, its family, absolute/relative, and the sensitive layers it found). QuadA
trains at it (``privinf align --method quada --mva ...``) and ``privinf safety compare`` evaluates
under it. No torch here: commands parse and check it before any model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from privinf.errors import UsageError

SITES = ("up", "down")
FAMILIES = ("gaussian", "laplace")
HEADLINE = {"up": "gaussian", "down": "laplace"}  # the paper's error model at each site (errormodel.HEADLINE)


@dataclass(frozen=True)
class MVA:
    """``noise``: ((site, family, scale), ...) in site order; ``relative``: scales multiply each
    (layer, site)'s measured clean std; ``layers``: the sensitive layers an MVA search found (None
    when the spec was written by hand); ``source``: the text or file it came from."""

    noise: tuple[tuple[str, str, float], ...]
    relative: bool = False
    layers: tuple[int, ...] | None = None
    source: str = ""
    peak_asr: tuple[tuple[str, float], ...] = ()  # (site, coherent ASR at its peak): from an MVA JSON

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(s for s, _, _ in self.noise)

    def scaled(self, factor: float) -> "MVA":
        """Every scale times ``factor`` (Table 5's "10% larger than MVA" is ``scaled(1.1)``)."""
        return replace(self, noise=tuple((s, f, v * factor) for s, f, v in self.noise))

    def spec(self) -> str:
        """Canonical text, e.g. ``up:gaussian:0.05,down:laplace:0.03``."""
        return ",".join(f"{s}:{f}:{v:g}" for s, f, v in self.noise)

    def label(self) -> str:
        return self.spec() + (" x std" if self.relative else "")

    def to_dict(self) -> dict:
        return {"noise": [{"site": s, "family": f, "scale": v} for s, f, v in self.noise],
                "relative": self.relative, "layers": None if self.layers is None else list(self.layers),
                "source": self.source, "spec": self.spec()}

    def site(self, name: str | None = None, option: str = "--mva-site") -> tuple[str, str, float]:
        """One site's (site, family, scale): ``name``, else the only one, else the one whose peak
        coherent ASR the MVA search measured highest (an MVA JSON)."""
        if name is None and len(self.noise) > 1:
            if not self.peak_asr:
                raise UsageError(f"the MVA {self.spec()} names two sites; choose one with {option} up|down")
            name = max(self.peak_asr, key=lambda t: t[1])[0]
        for entry in self.noise:
            if name is None or entry[0] == name:
                return entry
        raise UsageError(f"{option} {name}: the MVA {self.spec()} has no noise at that site")

    def site_configs(self, base, layers: tuple[int, ...] | None) -> list:
        """One ``RunConfig`` per site (the safety harness applies one noise family per config)."""
        return [base.with_(mode=f, scale=v, relative=self.relative, sites=(s,), layers=layers)
                for s, f, v in self.noise]


def _number(text: str, what: str, option: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{option} {what!r}: {text!r} is not a number; e.g. up:gaussian:0.05,down:laplace:0.03") from None
    if not (v == v and 0 < v < float("inf")):
        raise UsageError(f"{option} {what!r}: the scale must be a finite number > 0, got {text}")
    return v


def parse(text: str, relative: bool = False, option: str = "--mva") -> MVA:
    """A spec ``site[:family]:scale,...`` or the path of an MVA JSON (``privinf safety mva``)."""
    text = (text or "").strip()
    if text.endswith(".json") or Path(text).expanduser().is_file():
        return from_json(text, option)
    noise, seen = [], set()
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        bits = part.split(":")
        if len(bits) not in (2, 3) or bits[0] not in SITES:
            raise UsageError(f"{option} {text!r}: {part!r} is not site[:family]:scale with site up or down "
                             "and family gaussian or laplace; e.g. up:gaussian:0.05,down:laplace:0.03")
        site, family = bits[0], bits[1] if len(bits) == 3 else HEADLINE[bits[0]]
        if family not in FAMILIES:
            raise UsageError(f"{option} {text!r}: family {family!r} is unknown; allowed: {', '.join(FAMILIES)}")
        if site in seen:
            raise UsageError(f"{option} {text!r}: site {site!r} is given twice")
        seen.add(site)
        noise.append((site, family, _number(bits[-1], part, option)))
    if not noise:
        raise UsageError(f"{option} {text!r} names no site; e.g. up:gaussian:0.05,down:laplace:0.03 "
                         "or an MVA JSON written by `privinf safety mva`")
    noise.sort(key=lambda t: SITES.index(t[0]))
    return MVA(tuple(noise), relative, None, text)


def from_json(path: str | Path, option: str = "--mva") -> MVA:
    """The MVA ``privinf safety mva`` found: each site's coherent-ASR peak within its PPL limit."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{option}: MVA file {path} does not exist (write one with `privinf safety mva`)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if data.get("kind") != "mva":
            raise KeyError("kind")
        noise, peaks = [], []
        for site in SITES:
            entry = data["sites"].get(site)
            scale = None if entry is None else entry["mva"]["coherent_peak_scale"]
            if scale:
                noise.append((site, entry["sweep"]["base"]["mode"], float(scale)))
                peaks.append((site, float(entry["mva"].get("coherent_peak_asr") or 0.0)))
        relative, layers = bool(data["base"]["relative"]), tuple(int(x) for x in data["sensitive_layers"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{option}: {path} is not an MVA result of `privinf safety mva` (missing {exc})") from None
    if not noise:
        raise UsageError(f"{option}: {path} has no MVA at any site (no scale kept perplexity within its limit)")
    return MVA(tuple(noise), relative, layers or None, str(p), tuple(peaks))
