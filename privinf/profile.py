"""Measuring error profiles: a card's error at the two sites on real hidden states.

Measurement (:func:`measure_profile`): hidden states entering chosen decoder layers of a real model
on real Wikipedia text; each layer's MLP block runs on a backend under the card and exactly; the
error at a site is ``backend value - exact value``, pooled over layers and tokens. With ``check``
the emulator's ``exact`` mode runs the same card inside the model on the same inputs (one layer at
a time, so every layer sees clean inputs) and the two-sample Kolmogorov-Smirnov statistic between
the backend's and the emulator's errors measures the emulator's fidelity.

The result is a :class:`privinf.errormodel.Profile` (the file format, fits and KS statistics live
there, below the emulator; this module sits above it).
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

import torch

from privinf.cards import SITES
from privinf.errormodel import Profile, fit_site, ks_two_sample, versions
from privinf.errors import UsageError

DEFAULT_LAYERS = (0, 1, 2, 3, 15, 29)


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
    raise UsageError(f"--tokens {tokens}: not enough Wikipedia text for {tokens} tokens in chunks of {chunk} (--chunk)")


# ------------------------------------------------------------------------------------------
# measurement


def backend_errors(model, batches, card, backend, layers, calibration, backend_options=None):
    """{(layer, site): error tensor} of ``backend`` running each layer's block under ``card``,
    and {(layer, site): std of the exact site values} for scale."""
    from privinf.approx.ops import CardOps
    from privinf.blocks import MLPBlock
    from privinf.emulator.measure import capture_block_inputs

    inputs = capture_block_inputs(model, batches, layers)
    errors, act_std = {}, {}
    for layer in layers:
        block = MLPBlock.from_model(model, layer)
        x = inputs[layer]
        with torch.no_grad():
            exact = block(x)
        ops = CardOps(card, block.activation)  # carries TEAL thresholds
        ops.thresholds.update({s: t for (l, s), t in calibration.items() if l == layer})
        out = backend.run(block, x, card, ops=ops, **(backend_options or {})).output
        for site in SITES:
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
    pooled = {s: torch.cat([errors[(l, s)].flatten() for l in layers]).numpy() for s in SITES}
    prof = Profile(
        card=card.name, backend=be.name, model=model_name, layers=layers,
        tokens=sum(b.shape[1] for b in batches), seed=seed,
        sites={s: fit_site(pooled[s], seed) for s in SITES},
        per_layer={str(l): {s: {"std": float(errors[(l, s)].std()), "mean_abs": float(errors[(l, s)].abs().mean()),
                                "act_std": act_std[(l, s)]} for s in SITES} for l in layers},
        reference={k: getattr(card.reference, k) for k in ("error_up_std", "error_down_b", "clip_up", "clip_down")},
        calibration={f"{l}/{s}": t for (l, s), t in calibration.items()},
        versions=versions(*{"crypten": ("crypten",), "tenseal": ("tenseal",)}.get(be.name, ())),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if check:
        emul = emulator_errors(model, batches, card, layers, calibration)
        for s in SITES:
            e = torch.cat([emul[(l, s)].flatten() for l in layers]).numpy()
            prof.check[s] = {**ks_two_sample(pooled[s], e, seed),
                             "std_backend": float(pooled[s].std()), "std_emulator": float(e.std())}
    if propagated:
        emul = emulator_errors(model, batches, card, layers, calibration, every_layer=True)
        for s in SITES:
            prof.propagated[s] = fit_site(torch.cat([emul[(l, s)].flatten() for l in layers]).numpy(), seed)
    prof.calibration = {k: t for k, t in prof.calibration.items() if int(k.split("/")[0]) in layers}
    return prof


