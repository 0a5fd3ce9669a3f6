"""Measured error profiles: a card's error at the two sites on real hidden states, fitted as in the
paper (Gaussian before W_up, Laplace before W_down), saved as JSON, and sampled by the emulator.

Measurement (:func:`measure_profile`): hidden states entering chosen decoder layers of a real model
on real Wikipedia text; each layer's MLP block runs on a backend under the card and exactly; the
error at a site is ``backend value - exact value``, pooled over layers and tokens. With ``check``
the emulator's ``exact`` mode runs the same card inside the model on the same inputs (one layer at
a time, so every layer sees clean inputs) and the two-sample Kolmogorov-Smirnov statistic between
the backend's and the emulator's errors measures the emulator's fidelity.
"""

from __future__ import annotations

import inspect
import json
import random
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

FORMAT = "privinf-profile/1"
HEADLINE = {"up": "gaussian", "down": "laplace"}  # the paper's families per site
DEFAULT_LAYERS = (0, 1, 2, 3, 15, 29)
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

    def fit(self, site: str, family: str | None = None) -> dict:
        return self.sites[site]["fits"][family or HEADLINE[site]]

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
            raise ValueError(f"{path}: not a privinf error profile (format {data.get('format')!r}, want {FORMAT!r})")
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
    out = {}
    for pkg in ("privinf", "torch", "transformers", "scipy", "numpy", *extra):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# ------------------------------------------------------------------------------------------
# inputs: real text, real hidden states


def wiki_batches(tok, tokens: int, chunk: int = 128, seed: int = 0) -> list[torch.Tensor]:
    """``tokens`` tokens of Wikipedia text as (1, chunk) id tensors from paragraphs picked with
    ``seed`` in the second half of the file (the first half is the perplexity text)."""
    from privinf.models import package_file
    from privinf.safety.data import WIKI

    text = package_file(*WIKI).read_text(encoding="utf-8")
    paras = [p for p in text[len(text) // 2:].split("\n") if len(p) > chunk * 6]
    random.Random(seed).shuffle(paras)
    out, have = [], 0
    for p in paras:
        ids = tok(p, return_tensors="pt").input_ids[:, :min(chunk, tokens - have)]
        if ids.shape[1] < min(chunk, tokens - have):
            continue
        out.append(ids)
        have += ids.shape[1]
        if have >= tokens:
            return out
    raise ValueError(f"not enough text for {tokens} tokens in chunks of {chunk}")


def layer_inputs(model, batches, layers) -> dict[int, torch.Tensor]:
    """{layer: (T, C) float32 CPU} residual stream entering each layer's MLP block (all batches)."""
    from privinf.emulator.hookpoints import input_device, resolve

    _, mods = resolve(model, layers)
    seen: dict[int, list[torch.Tensor]] = {m.layer: [] for m in mods}
    hooks = [m.norm.register_forward_pre_hook(
        lambda _mod, args, layer=m.layer: seen[layer].append(args[0].detach()[0].float().cpu())) for m in mods]
    try:
        with torch.no_grad():
            for ids in batches:
                model(ids.to(input_device(model)))
    finally:
        for h in hooks:
            h.remove()
    return {layer: torch.cat(xs) for layer, xs in seen.items()}


# ------------------------------------------------------------------------------------------
# measurement


def backend_errors(model, batches, card, backend, layers, calibration, backend_options=None):
    """{(layer, site): error tensor} of ``backend`` running each layer's block under ``card``,
    and {(layer, site): std of the exact site values} for scale."""
    from privinf.approx.ops import CardOps
    from privinf.blocks import MLPBlock

    inputs = layer_inputs(model, batches, layers)
    errors, act_std = {}, {}
    for layer in layers:
        block = MLPBlock.from_model(model, layer)
        x = inputs[layer]
        with torch.no_grad():
            exact = block(x)
        opts = dict(backend_options or {})
        if "ops" in inspect.signature(backend.run).parameters:  # carries TEAL thresholds
            ops = CardOps(card, block.activation)
            ops.thresholds.update({s: t for (l, s), t in calibration.items() if l == layer})
            opts["ops"] = ops
        out = backend.run(block, x, card, **opts).output
        for site in ("up", "down"):
            errors[(layer, site)] = (getattr(out, site).float() - getattr(exact, site)).detach()
            act_std[(layer, site)] = float(getattr(exact, site).std())
    return errors, act_std


def emulator_errors(model, batches, card, layers, calibration,
                    every_layer: bool = False) -> dict[tuple[int, str], torch.Tensor]:
    """{(layer, site): error} of the emulator's ``exact`` mode, applied at one layer at a time
    (clean inputs, comparable with a backend's block), or with ``every_layer`` on all layers at
    once (the error a whole model under the card carries, earlier layers' error included)."""
    from privinf.emulator import capture_sites, emulate

    clean = capture_sites(model, batches, layers)
    out = {}
    for group in ([None] if every_layer else [[layer] for layer in layers]):
        with emulate(model, "exact", card=card, layers=group, calibration=calibration):
            emul = capture_sites(model, batches, layers if group is None else group)
        for key, value in emul.items():
            out[key] = value - clean[key]
    return out


def measure_profile(card, *, backend: str = "plaintext", model=None, tok=None,
                    model_name: str | None = None, layers=DEFAULT_LAYERS, tokens: int = 512,
                    chunk: int = 128, seed: int = 0, check: bool = False, propagated: bool = False,
                    backend_options: dict | None = None) -> Profile:
    """Measure ``card``'s error profile on ``backend`` (see the module docstring)."""
    from privinf.backends.base import get_backend
    from privinf.cards import protocol_card
    from privinf.emulator import calibrate_card
    from privinf.models import DEFAULT_MODEL, load_model

    card = protocol_card(card) if isinstance(card, str) else card
    model_name = model_name or DEFAULT_MODEL
    if model is None:
        model, tok = load_model(model_name)
    layers = list(layers)
    be = get_backend(backend)
    be.check(card)
    torch.manual_seed(seed)
    batches = wiki_batches(tok, tokens, chunk, seed)
    calibration = calibrate_card(model, card, batches, None if propagated else layers)
    errors, act_std = backend_errors(model, batches, card, be, layers, calibration, backend_options)
    pooled = {s: torch.cat([errors[(l, s)].flatten() for l in layers]).numpy() for s in ("up", "down")}
    prof = Profile(
        card=card.name, backend=be.name, model=model_name, layers=layers,
        tokens=sum(b.shape[1] for b in batches), seed=seed,
        sites={s: fit_site(pooled[s], seed) for s in ("up", "down")},
        per_layer={str(l): {s: {"std": float(errors[(l, s)].std()), "mean_abs": float(errors[(l, s)].abs().mean()),
                                "act_std": act_std[(l, s)]} for s in ("up", "down")} for l in layers},
        reference={k: getattr(card.reference, k) for k in ("error_up_std", "error_down_b", "clip_up", "clip_down")},
        calibration={f"{l}/{s}": t for (l, s), t in calibration.items()},
        versions=versions(*{"crypten": ("crypten",), "tenseal": ("tenseal",)}.get(be.name, ())),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if check:
        emul = emulator_errors(model, batches, card, layers, calibration)
        for s in ("up", "down"):
            e = torch.cat([emul[(l, s)].flatten() for l in layers]).numpy()
            prof.check[s] = {**ks_two_sample(pooled[s], e, seed),
                             "std_backend": float(pooled[s].std()), "std_emulator": float(e.std())}
    if propagated:
        emul = emulator_errors(model, batches, card, layers, calibration, every_layer=True)
        for s in ("up", "down"):
            fit = fit_site(torch.cat([emul[(l, s)].flatten() for l in layers]).numpy(), seed)
            prof.propagated[s] = {k: fit[k] for k in ("n", "mean", "std", "mean_abs", "fits")}
    prof.calibration = {k: t for k, t in prof.calibration.items() if int(k.split("/")[0]) in layers}
    return prof


def default_path(prof: Profile, root="results/profiles") -> Path:
    return Path(root) / f"{prof.card}-{prof.backend}-{prof.model.replace('/', '_')}.json"


def format_profile(prof: Profile) -> str:
    """The fits beside the paper's Table 2 (the paper's model is Llama-3.1-8B-Instruct)."""
    from privinf.report import table

    ref = prof.reference
    paper = {"up": ref.get("error_up_std"), "down": ref.get("error_down_b")}
    clip = {"up": ref.get("clip_up"), "down": ref.get("clip_down")}
    rows = []
    for s in ("up", "down"):
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
    head = (f"card {prof.card} on backend {prof.backend}, model {prof.model}, layers {prof.layers}, "
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
        prop = {s: p.propagated[s]["fits"][HEADLINE[s]]["scale"] for s in ("up", "down")} if p.propagated else {}
        rows.append([p.card, p.backend, up["scale"], p.reference.get("error_up_std"), down["scale"],
                     p.reference.get("error_down_b"), up["ks"], down["ks"],
                     p.check.get("up", {}).get("ks"), p.check.get("down", {}).get("ks"),
                     prop.get("up"), prop.get("down")])
    return table(["card", "backend", "ours N s up", "paper s up", "ours Lap b down", "paper b down",
                  "KS fit up", "KS fit down", "KS emu up", "KS emu down", "all-layer s up",
                  "all-layer b down"], rows, markdown)
