"""Read-only passes over a model: capture site activations, their stds, TEAL thresholds."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from privinf.approx.sparsity import calibrate_threshold
from privinf.cards import ProtocolCard, protocol_card
from privinf.emulator.hookpoints import SITES, hook_site, input_device, resolve


def iter_batches(inputs) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
    """(input_ids (B, T), attention_mask or None) from ids, a tokenizer batch, or a list of either."""
    if isinstance(inputs, torch.Tensor) or isinstance(inputs, Mapping):
        inputs = [inputs]
    for item in inputs:
        if isinstance(item, Mapping):
            ids, mask = item["input_ids"], item.get("attention_mask")
        else:
            ids, mask = item, None
        ids = torch.as_tensor(ids)
        if ids.dim() == 1:
            ids = ids[None]
            mask = None if mask is None else torch.as_tensor(mask)[None]
        yield ids, mask


class _Recorder:
    """Site hooks that hand every valid token's activation (float32) to ``sink(layer, site, rows)``."""

    def __init__(self, model, layers, sites, sink):
        self.spec, self.mods = resolve(model, layers)
        self.model, self.sites, self.sink, self.mask = model, tuple(sites), sink, None

    def _fn(self, layer, site):
        def fn(x):
            rows = x.detach()
            if self.mask is not None and rows.dim() == 3 and rows.shape[:2] == self.mask.shape:
                rows = rows[self.mask.to(rows.device)]  # (N, D) valid tokens only
            self.sink(layer, site, rows.reshape(-1, rows.shape[-1]).float())
        return fn

    def run(self, inputs) -> None:
        handles = [hook_site(self.spec, m, s, self._fn(m.layer, s)) for m in self.mods for s in self.sites]
        dev = input_device(self.model)
        try:
            with torch.no_grad():
                for ids, mask in iter_batches(inputs):
                    self.mask = None if mask is None else mask.bool()
                    self.model(input_ids=ids.to(dev), attention_mask=None if mask is None else mask.to(dev))
        finally:
            self.mask = None
            for h in handles:
                h.remove()


def capture_sites(model, inputs, layers=None, sites=SITES) -> dict[tuple[int, str], torch.Tensor]:
    """{(layer, site): (N, D) float32 CPU activations of every valid token} at the chosen sites.

    Hooks already attached (e.g. an active :func:`emulate`) run first, so inside an ``emulate``
    block this captures the emulated values.
    """
    seen: dict[tuple[int, str], list[torch.Tensor]] = {}
    _Recorder(model, layers, sites, lambda l, s, r: seen.setdefault((l, s), []).append(r.cpu())).run(inputs)
    return {k: torch.cat(v) for k, v in seen.items()}


def capture_block_inputs(model, inputs, layers) -> dict[int, torch.Tensor]:
    """{layer: (N, C) float32 CPU} the residual stream entering each layer's MLP block, every valid
    token of ``inputs`` (the input of the MLP-input norm, seen by a forward pre-hook)."""
    _, mods = resolve(model, layers)
    seen: dict[int, list[torch.Tensor]] = {m.layer: [] for m in mods}
    mask: list[torch.Tensor | None] = [None]

    def hook(_mod, args, layer):
        rows = args[0].detach()
        if mask[0] is not None and rows.shape[:2] == mask[0].shape:
            rows = rows[mask[0].to(rows.device)]
        seen[layer].append(rows.reshape(-1, rows.shape[-1]).float().cpu())

    handles = [m.norm.register_forward_pre_hook(lambda mod, args, layer=m.layer: hook(mod, args, layer)) for m in mods]
    dev = input_device(model)
    try:
        with torch.no_grad():
            for ids, attn in iter_batches(inputs):
                mask[0] = None if attn is None else attn.bool()
                model(input_ids=ids.to(dev), attention_mask=None if attn is None else attn.to(dev))
    finally:
        for h in handles:
            h.remove()
    return {layer: torch.cat(xs) for layer, xs in seen.items()}


def block_and_input(model, tokenizer, prompt: str, layer: int, tokens: int):
    """(MLPBlock of ``layer``, x (T, C)): the block's weights and the real hidden states entering it
    for the first ``tokens`` tokens of ``prompt`` -- what the demos, bench and ``party`` run."""
    from privinf.blocks import MLPBlock

    ids = tokenizer(prompt, return_tensors="pt").input_ids[:, :tokens]
    return MLPBlock.from_model(model, layer), capture_block_inputs(model, [ids], [layer])[layer]


def measure_site_std(model, inputs, layers=None, sites=SITES) -> dict[tuple[int, str], float]:
    """{(layer, site): std of the activations there} over every valid token of ``inputs``.

    ``inputs``: input ids (T,) or (B, T), a tokenizer batch with ``attention_mask`` (padding is
    skipped), or a list of those. Use the result as ``emulate(..., relative_to=...)``.
    """
    acc: dict[tuple[int, str], torch.Tensor] = {}

    def sink(layer, site, rows):
        r = rows.double()
        stats = torch.stack([torch.tensor(float(r.numel()), dtype=torch.float64), r.sum().cpu(), r.pow(2).sum().cpu()])
        acc[(layer, site)] = acc.get((layer, site), 0) + stats

    _Recorder(model, layers, sites, sink).run(inputs)
    out = {}
    for key, (n, s1, s2) in acc.items():
        mean = s1 / n
        out[key] = float(((s2 / n - mean * mean).clamp_min(0) * n / max(n - 1, 1)).sqrt())
    return out


def calibrate_card(model, card: str | ProtocolCard, input_ids, layers=None) -> dict[tuple[int, str], float]:
    """TEAL thresholds {(layer, site): t} for every site ``card`` sparsifies, from clean activations.

    ``t`` is the ``sparsity``-quantile of |x| at that layer and site; pass the result to
    ``emulate(..., calibration=...)``. Cards without sparsity give ``{}``.
    """
    card = protocol_card(card) if isinstance(card, str) else card
    sparse = {s: spec.sparsity for s, spec in card.sites.items() if spec.method == "sparsify"}
    if not sparse:
        return {}
    acts = capture_sites(model, input_ids, layers, tuple(sparse))
    return {(l, s): calibrate_threshold(x, sparse[s]) for (l, s), x in acts.items()}
