"""Error profiles as files: a card's measured error at the two sites, fitted as in the paper
(Gaussian before W_up, Laplace before W_down), with KS goodness of fit, saved as JSON and sampled by
the emulator's ``noise`` mode.

This module is the file format and its statistics only; it imports nothing from the emulator.
Measuring a profile (running a backend and the emulator on real hidden states) is
:mod:`privinf.profile`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from privinf.cards import SITES  # defined with the hookpoints; cards re-export it
from privinf.errors import UsageError

FORMAT = "privinf-profile/1"
HEADLINE = {"up": "gaussian", "down": "laplace"}  # the paper's families per site
KS_SAMPLES = 100_000  # subsample for KS tests (the statistic's noise is about 1/sqrt(n))
QUANTILES = 1001  # stored quantiles of each site's error: an empirical inverse CDF


@dataclass
class Profile:
    """One card's measured error at both sites. ``sites[site]`` holds summary statistics, the
    stored quantiles and the Gaussian and Laplace fits (each with its KS goodness of fit)."""

    card: str
    backend: str
    model: str
    layers: list[int]
    tokens: int
    seed: int
    sites: dict[str, dict]
    per_layer: dict[str, dict] = field(default_factory=dict)  # "layer" -> site -> {std, mean_abs, act_std}
    reference: dict = field(default_factory=dict)  # the paper's Table 2 values for the card
    calibration: dict = field(default_factory=dict)  # TEAL thresholds "layer/site" -> t
    check: dict = field(default_factory=dict)  # site -> {ks, p}: backend error vs emulator exact error
    propagated: dict = field(default_factory=dict)  # site -> fits of the error with the card on every layer
    versions: dict = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT
    scope: str = "block"  # "block": one block at a time, clean inputs; "propagated": the card on every layer

    def fit(self, site: str, family: str | None = None) -> dict:
        return self.sites[site]["fits"][family or HEADLINE[site]]

    def propagated_profile(self) -> "Profile":
        """This card's error with the card on every layer at once (``privinf profile --propagated``)
        as a profile of its own: noise mode then samples what a whole model under the card carries
        at each site (the magnitudes the paper's Table 2 reports), rather than one block's error."""
        if self.scope == "propagated":
            return self
        if not self.propagated or "quantiles" not in self.propagated.get("up", {}):
            raise UsageError(f"profile of card {self.card!r} has no all-layer fit with quantiles: "
                             "measure it again with `privinf profile --card "
                             f"{self.card} --propagated`")
        act_only = {layer: {s: {"act_std": v["act_std"]} for s, v in sites.items()}
                    for layer, sites in self.per_layer.items()}  # the per-block error stats do not apply
        return replace(self, sites=self.propagated, per_layer=act_only, propagated={}, check={},
                       scope="propagated")

    def noise(self, site: str) -> tuple[str, float]:
        """(family, scale) the emulator's ``noise`` mode samples at ``site``."""
        family = HEADLINE[site]
        return family, float(self.fit(site, family)["scale"])

    def sample(self, site: str, shape, generator: torch.Generator | None = None,
               method: str = "fit") -> torch.Tensor:
        """Draw errors at ``site``: from the headline fit, or ``method="empirical"`` from the stored
        quantiles (inverse CDF with linear interpolation)."""
        if method == "fit":
            family, scale = self.noise(site)
            if family == "gaussian":
                return torch.randn(shape, generator=generator) * scale
            u = torch.rand(shape, generator=generator) - 0.5
            return -scale * torch.sign(u) * torch.log1p(-2 * u.abs()).clamp_min(-60.0)
        if method == "empirical":
            q = torch.tensor(self.sites[site]["quantiles"], dtype=torch.float32)
            pos = torch.rand(shape, generator=generator) * (len(q) - 1)
            lo = pos.floor().long().clamp_max(len(q) - 2)
            return q[lo] + (pos - lo) * (q[lo + 1] - q[lo])
        raise ValueError(f"method must be 'fit' or 'empirical', got {method!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path) -> "Profile":
        data = json.loads(Path(path).read_text())
        if data.get("format") != FORMAT:
            raise UsageError(f"{path}: not a privinf error profile (format {data.get('format')!r}, want {FORMAT!r})")
        return cls(**data)


# ------------------------------------------------------------------------------------------
# statistics


def fit_site(err: np.ndarray, seed: int = 0) -> dict:
    """Summary, quantiles, and zero-mean Gaussian and Laplace fits (scipy) of one site's errors."""
    from scipy import stats

    err = np.asarray(err, dtype=np.float64).ravel()
    sub = _subsample(err, KS_SAMPLES, seed)
    fits = {}
    for family, dist in (("gaussian", stats.norm), ("laplace", stats.laplace)):
        if not np.any(err):  # no error at all (e.g. a site the backend computes in the clear)
            fits[family] = {"loc": 0.0, "scale": 0.0, "ks": None, "p": None}
            continue
        loc, scale = dist.fit(err, floc=0.0)  # the paper's N(0, s^2) / Lap(0, b)
        ks = stats.kstest(sub, dist.cdf, args=(loc, scale))
        fits[family] = {"loc": float(loc), "scale": scale, "ks": float(ks.statistic), "p": float(ks.pvalue)}
    return {
        "n": int(err.size), "mean": float(err.mean()), "std": float(err.std()),
        "mean_abs": float(np.abs(err).mean()), "max_abs": float(np.abs(err).max()),
        "zero_fraction": float((err == 0).mean()),
        "quantiles": [float(v) for v in np.quantile(err, np.linspace(0, 1, QUANTILES))],
        "fits": fits,
    }


def ks_two_sample(a, b, seed: int = 0) -> dict:
    """Two-sample KS statistic and p-value (each side subsampled to KS_SAMPLES)."""
    from scipy import stats

    res = stats.ks_2samp(_subsample(np.asarray(a).ravel(), KS_SAMPLES, seed),
                         _subsample(np.asarray(b).ravel(), KS_SAMPLES, seed + 1))
    return {"ks": float(res.statistic), "p": float(res.pvalue)}


def _subsample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if x.size <= n:
        return x
    return x[np.random.default_rng(seed).choice(x.size, n, replace=False)]


def versions(*extra: str) -> dict:
    """Installed versions of privinf's numeric stack and ``extra`` packages (crypten is looked up
    in the asset folder too, where ``make venv`` puts it); None for a package not found."""
    from privinf.models import assets_dir

    out = {}
    for pkg in ("privinf", "torch", "transformers", "scipy", "numpy", *extra):
        found = [*metadata.distributions(name=pkg), *metadata.distributions(name=pkg, path=[str(assets_dir() / "lib")])]
        out[pkg] = found[0].version if found else None
    return out


def default_path(prof: Profile, root="results/profiles") -> Path:
    """``<card>-<backend>-<model>.json``; an all-layer profile ends in ``-propagated.json``."""
    tail = "-propagated" if prof.scope == "propagated" else ""
    return Path(root) / f"{prof.card}-{prof.backend}-{prof.model.replace('/', '_')}{tail}.json"


def format_profile(prof: Profile) -> str:
    """The fits beside the paper's Table 2 (the paper's model is Llama-3.1-8B-Instruct)."""
    from privinf.report import table

    ref = prof.reference
    paper = {"up": ref.get("error_up_std"), "down": ref.get("error_down_b")}
    clip = {"up": ref.get("clip_up"), "down": ref.get("clip_down")}
    rows = []
    for s in SITES:
        st, fam = prof.sites[s], HEADLINE[s]
        fit = st["fits"][fam]
        act = float(np.mean([prof.per_layer[str(l)][s]["act_std"] for l in prof.layers]))
        thresholds = [t for k, t in prof.calibration.items() if k.endswith("/" + s)]
        rows.append([
            "before W_up" if s == "up" else "before W_down",
            f"{'N(0,s^2) s' if fam == 'gaussian' else 'Lap(0,b) b'}", fit["scale"], fit["ks"],
            st["fits"]["laplace" if fam == "gaussian" else "gaussian"]["ks"], st["zero_fraction"],
            fit["scale"] / act if act else None, paper[s],
            float(np.mean(thresholds)) if thresholds else None, clip[s],
            prof.check.get(s, {}).get("ks"),
            prof.propagated[s]["fits"][fam]["scale"] if prof.propagated else None,
        ])
    scope = ", error with the card on every layer" if prof.scope == "propagated" else ""
    head = (f"card {prof.card} on backend {prof.backend}{scope}, model {prof.model}, layers {prof.layers}, "
            f"{prof.tokens} tokens, seed {prof.seed}\n")
    return head + table(["site", "fit", "ours", "KS fit", "KS other family", "zero frac", "ours/act std",
                         "paper", "TEAL t ours", "TEAL t paper", "KS vs emulator",
                         "ours, all layers"], rows)


def profiles_table(profiles: list[Profile], markdown: bool = False) -> str:
    """One row per card: our fits beside the paper's Table 2, fit quality and emulator fidelity."""
    from privinf.report import table

    rows = []
    for p in profiles:
        up, down = p.fit("up"), p.fit("down")
        prop = {s: p.propagated[s]["fits"][HEADLINE[s]]["scale"] for s in SITES} if p.propagated else {}
        rows.append([p.card, p.backend, up["scale"], p.reference.get("error_up_std"), down["scale"],
                     p.reference.get("error_down_b"), up["ks"], down["ks"],
                     p.check.get("up", {}).get("ks"), p.check.get("down", {}).get("ks"),
                     prop.get("up"), prop.get("down")])
    return table(["card", "backend", "ours N s up", "paper s up", "ours Lap b down", "paper b down",
                  "KS fit up", "KS fit down", "KS emu up", "KS emu down", "all-layer s up",
                  "all-layer b down"], rows, markdown)
