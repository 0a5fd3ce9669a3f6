"""``emulate``: attach a protocol card, a measured error profile or explicit noise to a live
Hugging Face causal LM with forward hooks, for as long as a ``with`` block lasts.

Modes:

- ``exact``: the card's own arithmetic in plaintext (``CardOps``, the same code the plaintext
  backend runs, evaluated through ``fast.FastOps``: bit for bit the same float32 values in far
  fewer calls, NumPy on CPU tensors). Site ``up`` covers the RMSNorm inverse square root,
  fixed-point rounding and the card's transform before W_up; site ``down`` covers the activation
  approximation, fixed-point rounding of the gate/up products and the card's transform before W_down.
- ``noise``: add noise drawn from a saved error profile (Gaussian before W_up, Laplace before W_down,
  with the fitted scales).
- ``gaussian`` / ``laplace``: add N(0, scale^2) or Lap(0, scale) noise at the chosen sites.

``exact`` with ``straight_through=True`` is for training under a card (``privinf align --method
quada --perturb card``): every hooked value is the card's, but the backward pass sees the card's
error as a constant added to the unperturbed value (``out + (card - out).detach()``), the way
QuadA treats noise; the card's NumPy arithmetic has no gradient of its own.

Hooks are registered on enter and removed in ``finally``; no ``forward`` is replaced. Every tensor
the hooks create lives on the hooked activation's device, so models split with
``device_map="auto"`` work unchanged.
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Mapping

import torch

from privinf.approx.ops import CalibrationError, CardOps
from privinf.blocks import MLPBlock
from privinf.cards import ProtocolCard, protocol_card
from privinf.emulator.fast import FastOps, fast_fixed_point  # noqa: F401 (fast_fixed_point: public)
from privinf.emulator.hookpoints import MODES, SITES, LayerModules, activation_family, hidden_act, hook_site, resolve



@dataclass
class EmulatorHandle:
    """What is attached: mode, layers, sites, per-(layer, site) noise, and how often hooks fired."""

    mode: str
    layers: list[int]
    sites: tuple[str, ...]
    card: ProtocolCard | None = None
    noise: dict[tuple[int, str], tuple[str, float]] = field(default_factory=dict)  # (layer, site) -> (family, scale)
    calls: int = 0
    calls_by_site: Counter = field(default_factory=Counter)  # (layer, site) -> hook invocations
    straight_through: bool = False  # exact mode: the card's values forward, the clean value's gradient back

    def _fired(self, layer: int, site: str) -> None:
        self.calls += 1
        self.calls_by_site[(layer, site)] += 1


class _Noise:
    """Seeded noise on any device: one ``torch.Generator`` per device, created on first use.

    Standard samples are drawn in pools of ``POOL`` and handed out in order, so a decode step
    costs a slice and one fused add instead of several kernel launches per hook.
    """

    POOL = 1 << 20

    def __init__(self, seed: int):
        self.seed, self._gens, self._pools = seed, {}, {}

    def _draw(self, family: str, n: int, device: torch.device) -> torch.Tensor:
        if device not in self._gens:
            self._gens[device] = torch.Generator(device=device).manual_seed(self.seed)
        g = self._gens[device]
        if family == "gaussian":
            return torch.randn(n, generator=g, device=device, dtype=torch.float32)
        # standard Laplace by inverse CDF: -sign(u) log(1 - 2|u|), u ~ U(-1/2, 1/2)
        u = torch.rand(n, generator=g, device=device, dtype=torch.float32).sub_(0.5)
        return torch.log1p(-2 * u.abs()).clamp_min_(-60.0).mul_(-torch.sign(u))

    def standard(self, family: str, n: int, device: torch.device) -> torch.Tensor:
        """``n`` standard samples (N(0, 1) or Lap(0, 1)) on ``device``."""
        if n > self.POOL:
            return self._draw(family, n, device)
        buf, pos = self._pools.get((family, device), (None, 0))
        if buf is None or pos + n > buf.numel():
            buf, pos = self._draw(family, self.POOL, device), 0
        self._pools[(family, device)] = (buf, pos + n)
        return buf[pos:pos + n]

    def add(self, x: torch.Tensor, family: str, scale: float) -> torch.Tensor:
        if scale == 0.0:
            return x
        z = self.standard(family, x.numel(), x.device).view(x.shape).to(x.dtype)
        return torch.add(x, z, alpha=scale)


@dataclass
class _NormView:
    """A model's norm module seen as the block's norm, so ``MLPBlock.norm`` computes the card's norm.

    Built on every call from the module's current weights: with ``device_map="auto"`` and
    offloading, weights are only on the execution device while the module runs.
    """

    norm_weight: torch.Tensor
    norm_bias: torch.Tensor | None
    norm_kind: str
    norm_eps: float

    norm = MLPBlock.norm

    @classmethod
    def of(cls, module: torch.nn.Module, kind: str, offset: float) -> "_NormView":
        eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-6)
        bias = getattr(module, "bias", None)
        weight = module.weight.detach().float()
        return cls(weight + offset if offset else weight, None if bias is None else bias.detach().float(),
                   kind, float(eps))


@contextmanager
def emulate(model, mode: str, *, card: str | ProtocolCard | None = None, profile=None,
            scale: float | Mapping[str, float] | None = None, sites=SITES, layers=None, seed: int = 0,
            relative_to: Mapping[tuple[int, str], float] | None = None,
            calibration: Mapping[tuple[int, str], float] | None = None, straight_through: bool = False):
    """Attach a card / profile / noise to ``model`` for the duration of the ``with`` block.

    ``layers``: decoder layer indices (default all). ``scale``: a number, or {"up": s, "down": s}.
    ``relative_to``: {(layer, site): std} (see :func:`measure_site_std`); the noise scale at each
    (layer, site) becomes ``scale * std``. ``calibration``: {(layer, site): threshold} for
    sparsity cards (see :func:`calibrate_card`). ``straight_through`` (exact mode): the card's values
    forward, its error a constant backward (for training under the card; see the module docstring).
    Yields an :class:`EmulatorHandle`.

    Example::

        with emulate(model, "gaussian", scale=0.05, layers=[0, 1, 2, 3], sites=("up",)) as h:
            model.generate(ids, max_new_tokens=32, do_sample=False)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    sites = tuple(sites)
    for s in sites:
        if s not in SITES:
            raise ValueError(f"unknown site {s!r}; sites are {', '.join(SITES)}")
    spec, mods = resolve(model, layers)
    if straight_through and mode != "exact":
        raise ValueError("straight_through applies to mode 'exact' (noise is already a constant to autograd)")
    handle = EmulatorHandle(mode=mode, layers=[m.layer for m in mods], sites=sites, straight_through=straight_through)
    handles = []
    try:
        if mode == "exact":
            if card is None:
                raise ValueError("mode 'exact' needs card= (a protocol card name or ProtocolCard)")
            if relative_to is not None or scale is not None:
                raise ValueError("mode 'exact' applies the card's own arithmetic; scale/relative_to do not apply")
            handle.card = protocol_card(card) if isinstance(card, str) else card
            act = activation_family(hidden_act(model.config))
            for m in mods:
                handles += _exact_hooks(spec, m, handle, CardOps(handle.card, act), sites, calibration or {})
        else:
            handle.noise = _noise_table(mode, handle.layers, sites, profile, scale, relative_to)
            noise = _Noise(seed)
            for m in mods:
                for s in sites:
                    handles.append(hook_site(spec, m, s, _noise_fn(handle, noise, m.layer, s)))
        yield handle
    finally:
        for h in handles:
            h.remove()


def _noise_table(mode, layers, sites, profile, scale, relative_to) -> dict[tuple[int, str], tuple[str, float]]:
    if mode == "noise":
        if profile is None:
            raise ValueError("mode 'noise' needs profile= (a saved profile path or Profile)")
        if scale is not None or relative_to is not None:
            raise ValueError("mode 'noise' takes its scales from the profile; scale/relative_to do not apply")
        from privinf.errormodel import Profile
        prof = profile if isinstance(profile, Profile) else Profile.load(profile)
        per_site = {s: prof.noise(s) for s in sites}
        return {(l, s): per_site[s] for l in layers for s in sites}
    if scale is None:
        raise ValueError(f"mode {mode!r} needs scale= (Gaussian std or Laplace b)")
    scales = dict(scale) if isinstance(scale, Mapping) else {s: scale for s in sites}
    table = {}
    for l in layers:
        for s in sites:
            if s not in scales:
                raise ValueError(f"scale gives no value for site {s!r}")
            value = float(scales[s])
            if relative_to is not None:
                if (l, s) not in relative_to:
                    raise KeyError(f"relative_to has no std for (layer {l}, site {s!r}); "
                                   "measure it with measure_site_std(model, inputs, layers, sites)")
                value *= float(relative_to[(l, s)])
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"noise scale must be finite and >= 0, got {value} at (layer {l}, {s})")
            table[(l, s)] = (mode, value)
    return table


def _noise_fn(handle: EmulatorHandle, noise: _Noise, layer: int, site: str):
    family, value = handle.noise[(layer, site)]

    def fn(x: torch.Tensor) -> torch.Tensor:
        handle._fired(layer, site)
        return noise.add(x, family, value)

    return fn


def _exact_hooks(spec, m: LayerModules, handle: EmulatorHandle, ops: CardOps, sites, calibration) -> list:
    """Hooks making layer ``m`` compute ``ops``'s arithmetic at the chosen sites.

    The hooks call :class:`FastOps`: the same float32 values as ``ops`` in fewer torch calls.
    """
    card, layer = ops.card, m.layer
    for s in sites:
        if card.sites[s].method == "sparsify":
            if (layer, s) not in calibration:
                raise CalibrationError(
                    f"card {card.name!r} sparsifies site {s!r} and needs a threshold for layer {layer}: "
                    "pass calibration=calibrate_card(model, card, input_ids, layers)")
            ops.thresholds[s] = float(calibration[(layer, s)])

    def observe(s):
        def fn(x):
            handle._fired(layer, s)
        return fn

    if ops.exact:  # nothing to change: observe only, so logits stay bit for bit
        return [hook_site(spec, m, s, observe(s)) for s in sites]

    handles = []
    fixed = card.fraction_bits is not None
    fast = FastOps(ops)
    fp = fast.fp
    keep, plain = _gradient_rule(handle)
    up_changes = card.rsqrt.method != "exact" or fixed or card.sites["up"].method != "none"
    if "up" in sites and up_changes:
        handles.append(_norm_hook(spec, m, handle, fast))
    else:
        handles.append(hook_site(spec, m, "up", observe("up")))
    if "down" not in sites:
        return handles + [hook_site(spec, m, "down", observe("down"))]
    approx_act = card.activation(ops.activation).method != "exact"
    moe_site = spec.down_hook == "act"
    # the gate projection feeds only the activation: when that hook recomputes the activation
    # anyway, it rounds the gate there too, one hook fewer per layer
    fold_gate = fixed and approx_act and not moe_site and m.gate is not None
    if fixed:  # round the projections feeding the activation (dense MLPs only; MoE kernels hide them)
        for proj in (m.up,) if fold_gate else (m.gate, m.up):
            if proj is not None:
                handles.append(proj.register_forward_hook(lambda _m, _a, out: keep(fp(plain(out)), out)))
    if approx_act and not moe_site:
        pre = fp if fold_gate else (lambda t: t)
        handles.append(m.act.register_forward_hook(
            lambda _m, args, out: keep(fast.act(pre(plain(args[0]).float())).to(out.dtype), out)))

    def down_fn(h: torch.Tensor) -> torch.Tensor:
        handle._fired(layer, "down")
        return keep(ops.site("down", fp(plain(h).float())).to(h.dtype), h)

    if moe_site:
        def moe_act(_m, args, out):
            if approx_act:
                out = keep(fast.act(plain(args[0]).float()).to(out.dtype), out)
            return down_fn(out)
        handles.append(m.act.register_forward_hook(moe_act))
    else:
        handles.append(hook_site(spec, m, "down", down_fn))
    return handles


def _straight_through(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new``'s values, ``old``'s gradient: the card's error enters autograd as a constant."""
    return old + (new - old).detach()


def _gradient_rule(handle: EmulatorHandle):
    """``(keep, plain)`` for the exact-mode hooks: ``keep(new, old)`` is the value a hook returns and
    ``plain(t)`` the input the card computes on (both identities unless ``straight_through``)."""
    if handle.straight_through:
        return _straight_through, torch.Tensor.detach  # the card's input carries no graph
    return (lambda new, _old: new), (lambda t: t)


def _norm_hook(spec, m: LayerModules, handle: EmulatorHandle, ops: FastOps):
    """Site ``up``: recompute the norm with the card's rsqrt and fixed point, then its site transform."""
    card, layer = ops.card, m.layer
    recompute = card.rsqrt.method != "exact" or card.fraction_bits is not None

    keep, plain = _gradient_rule(handle)

    def hook(mod, args, out):
        handle._fired(layer, "up")
        if recompute:
            view = _NormView.of(mod, spec.norm_kind, spec.norm_offset)
            n = ops.norm(view, plain(args[0]).float())  # fp(view.norm(fp(x), ops)), (B, T, C)
        else:
            n = plain(out).float()
        return keep(ops.site("up", n).to(out.dtype), out)

    return m.norm.register_forward_hook(hook)
