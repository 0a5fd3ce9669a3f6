"""QuadA (perturbation-aware safety alignment): DPO whose policy forward runs under MVA noise.

The loss (the paper's, from the authors' project page; privinf's choices marked *):

    L = DPO(p_eps, p_0) + sft_weight * NLL_eps(chosen) + lambda * (1 - mean_{i<j} cos(f1_eps(x_i), f1_eps(x_j)))

- ``p_eps``: the policy (the LoRA being trained, started from ``--init``) with noise at the MVA
  added through the emulator's hooks (:func:`privinf.emulator.emulate`): only at the sites the
  MVA names, only in the chosen layers (default the first tau sensitive layers), drawn fresh at
  every forward (the emulator's generator is seeded once per context; each policy forward opens
  its own context with a seed derived from (run seed, global step, micro-batch)).
- ``p_0``: the reference, the ``--init`` adapter as it was (TRL's frozen ``ref`` adapter), run
  with no hook attached: its log-probabilities are computed in :meth:`QuadATrainer.compute_loss`
  *before* the noise hooks are registered and handed to TRL as precomputed reference log-probs.
- ``f1_eps(x)``*: the output of decoder layer 0 (the residual stream after the first block,
  perturbed when layer 0 is) averaged over the prompt's tokens (chat template included); it
  depends on the prompt only (causal attention), so the chosen half of each DPO batch gives one
  vector per prompt. Not the last prompt token: after one layer that position still holds little
  but its own token, the template's assistant header, the same for every prompt (default model,
  8 harmful and 8 benign training prompts, clean: mean cosine 0.9994 harmful-harmful and 0.9993
  harmful-benign at the last token; 0.984 and 0.971 for the mean over the prompt). ``i, j``
  range over the batch's harmful prompts (rows whose chosen answer is a refusal: ``kind ==
  "harmful"`` in the training rows); a batch with fewer than two has no clustering term.
  ``--cluster-tokens content`` averages over the prompt minus the prefix and suffix all of the
  batch's harmful prompts share (the template's system block and assistant header). Why: on the
  default model 24 of a typical 38 prompt tokens are template, so over the whole prompt the term
  starts near its floor (1 - cos = 0.008 for 16 Do-Not-Answer prompts, clean; 0.074 over their
  content) and stayed at 0.0195-0.0198 through the shipped +QuadA run, the same values +DPO logged
  without the term: with lambda 0.1 it barely pulled.
- The NLL term is the lead's RPO-style ``sft_weight`` of ``--method dpo``, under the same noise.

``--perturb card --card NAME`` (privinf's, beyond the paper) replaces the noise with a protocol
card's exact arithmetic (``emulate(..., "exact", straight_through=True)``) in the chosen layers at
both sites: the forward computes what private inference under the card computes, and the card's
error reaches autograd as a constant, as the noise does. Sparsifying cards (TEAL) are refused
(their thresholds are calibrated on the model being trained).

``--perturb none`` removes the noise (with ``--cluster-weight 0`` the loss is plain DPO, the
"+DPO" row and Table 5's NA); ``--mva-scale 1.1`` scales every MVA scale (Table 5's LA);
``--layers all`` perturbs every layer; ``--cluster-weight 0`` drops the clustering term. Each
component (dpo, sft, cluster) is logged with TRL's metrics, so it lands in ``log.jsonl``.
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from trl import DPOTrainer

from privinf.safety.mvaspec import MVA

CLUSTER_LAYER = 0  # f1: the output of this decoder layer, averaged over the prompt tokens
_TERM_NAMES = {"sigmoid": "dpo", "sft": "sft"}


@dataclass(frozen=True)
class QuadASetup:
    """What QuadA perturbs: ``mva`` (already multiplied by ``mva_scale``; None = no noise),
    ``layers`` (None = every layer), the clustering weight, and the run seed for the noise."""

    mva: MVA | None
    layers: tuple[int, ...] | None
    cluster_weight: float
    seed: int = 0
    mva_scale: float = 1.0
    cluster_tokens: str = "prompt"  # or "content": the prompt minus what every prompt of the batch shares
    card: str | None = None  # perturb "card": this card's exact arithmetic instead of noise

    @classmethod
    def from_config(cls, cfg) -> "QuadASetup":
        from privinf.safety import mvaspec

        mva, card = None, None
        if cfg.perturb == "card":
            from privinf.cards import protocol_card

            if not cfg.card:
                raise ValueError("QuadA with perturb='card' needs card= (a protocol card, e.g. 'nexus')")
            c = protocol_card(cfg.card)
            if any(c.sites[s].method == "sparsify" for s in c.sites):
                raise ValueError(f"card {cfg.card!r} sparsifies: its thresholds are calibrated on the model, "
                                 "which training changes; train under an MPC/FHE or quantization card")
            card = cfg.card
        elif cfg.perturb == "mva":
            if not cfg.mva:
                raise ValueError("QuadA with perturb='mva' needs mva= (e.g. 'up:gaussian:0.05,down:laplace:0.03')")
            mva = mvaspec.parse(cfg.mva, relative=cfg.relative).scaled(cfg.mva_scale)
        elif cfg.perturb != "none":
            raise ValueError(f"perturb must be 'mva', 'card' or 'none', got {cfg.perturb!r}")
        if cfg.cluster_tokens not in ("prompt", "content"):
            raise ValueError(f"cluster_tokens must be 'prompt' or 'content', got {cfg.cluster_tokens!r}")
        return cls(mva, cfg.perturb_layers, float(cfg.cluster_weight), cfg.seed, float(cfg.mva_scale),
                   cfg.cluster_tokens, card)


def cluster_loss(acts: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity over all pairs i < j of the rows of ``acts`` (N, C); 0 for N < 2."""
    n = acts.shape[0]
    if n < 2:
        return acts.sum() * 0.0
    u = F.normalize(acts, dim=-1, eps=1e-12)  # (N, C)
    i, j = torch.triu_indices(n, n, 1, device=acts.device)
    return 1.0 - (u[i] * u[j]).sum(-1).mean()


def prompt_mean(hidden: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """(B, C) mean of ``hidden`` (B, T, C) over each row's prompt tokens (attended, not completion)."""
    m = (attention_mask.bool() & ~completion_mask.bool()).to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def content_mask(input_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: each row's prompt tokens minus the longest prefix and the longest suffix that
    every row's prompt shares (with a chat template: its system block and its assistant header).
    The whole prompt where that would leave a row nothing (fewer than two rows, identical prompts)."""
    pm = prompt_mask.bool()
    idx = [m.nonzero().flatten() for m in pm]  # positions of each row's prompt tokens, in order
    rows = [ids[i].tolist() for ids, i in zip(input_ids, idx)]
    if len(rows) < 2:
        return pm
    n = min(len(r) for r in rows)
    pre = 0
    while pre < n and all(r[pre] == rows[0][pre] for r in rows):
        pre += 1
    suf = 0
    while suf < n - pre and all(r[-1 - suf] == rows[0][-1 - suf] for r in rows):
        suf += 1
    out = torch.zeros_like(pm)
    for b, i in enumerate(idx):
        keep = i[pre:len(i) - suf]
        if len(keep) == 0:
            return pm
        out[b, keep] = True
    return out


class _Term:
    """A loss weight that also keeps the (detached) term it multiplies. TRL sums
    ``term.mean() * weight`` over its loss types; a tensor times this object falls back to
    ``__rmul__``, so each component is recorded exactly as TRL computed it, without copying TRL's
    loss code."""

    def __init__(self, weight: float, name: str, sink: dict):
        self.weight, self.name, self.sink = float(weight), name, sink

    def __rmul__(self, term: torch.Tensor) -> torch.Tensor:
        self.sink[self.name] = term.detach()
        return term * self.weight


class QuadATrainer(DPOTrainer):
    """TRL's DPOTrainer with QuadA's two changes.

    A subclass, not a new trainer: DPO itself (pairs, tokenisation, the ``ref`` adapter copy,
    the sigmoid + NLL losses, checkpoints) stays TRL's. What differs is only (1) the policy
    forward runs inside the emulator's noise hooks while the reference stays clean, which needs
    the reference pass moved out of TRL's ``_compute_loss`` (we compute it first, with no hooks,
    and pass it in as precomputed reference log-probs), and (2) the loss gains the clustering
    term on the perturbed first-layer activations, which needs a hook on decoder layer 0 during
    that same forward and the batch's harmful flags (an extra ``harmful`` column)."""

    def __init__(self, *args, quada: QuadASetup, site_std: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.quada, self.site_std = quada, site_std
        if quada.mva is not None and quada.mva.relative and site_std is None:
            raise ValueError("relative MVA scales need site_std (measure_site_std on the init model)")
        # reference log-probs arrive in the batch (computed clean in compute_loss), as with TRL's precompute
        self.precompute_ref_logps = True
        self._terms: dict[str, torch.Tensor] = {}
        self.loss_weights = [_Term(w, _TERM_NAMES.get(t, t), self._terms)
                             for t, w in zip(self.loss_types, self.loss_weights, strict=True)]
        self.data_collator = _WithHarmful(self.data_collator)
        self.noise_calls: Counter = Counter()  # (layer, site) -> hook invocations, every policy forward
        self.ref_passes = 0
        self._step_seen, self._micro = -1, 0

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "harmful" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "harmful"]

    # ------------------------------------------------------------------ noise
    def forward_seed(self) -> int:
        """A fresh seed per policy forward, reproducible from (run seed, global step, micro-batch)."""
        step = self.state.global_step
        if step != self._step_seen:
            self._step_seen, self._micro = step, 0
        self._micro += 1
        return ((self.quada.seed * 1_000_003 + step) * 1_000_033 + self._micro) % (2**62)

    @contextmanager
    def perturbed(self, model, seed: int):
        """The policy's forward context: MVA noise hooks (one ``emulate`` per noise family) or the
        card's exact-mode hooks, and a hook keeping decoder layer 0's output; yields ``{"f1":
        output, "handles": [...]}``."""
        from privinf.emulator import emulate
        from privinf.emulator.hookpoints import decoder_layers

        base = _hf_model(self.accelerator.unwrap_model(model))
        seen: dict = {"handles": []}
        with ExitStack() as stack:
            mva = self.quada.mva
            if self.quada.card is not None:
                layers = None if self.quada.layers is None else list(self.quada.layers)
                seen["handles"].append(stack.enter_context(emulate(
                    base, "exact", card=self.quada.card, layers=layers, straight_through=True)))
            for k, family in enumerate(sorted({f for _, f, _ in mva.noise}) if mva else []):
                scale = {s: v for s, f, v in mva.noise if f == family}
                layers = None if self.quada.layers is None else list(self.quada.layers)
                seen["handles"].append(stack.enter_context(emulate(
                    base, family, scale=scale, sites=tuple(scale), layers=layers, seed=seed + k,
                    relative_to=self.site_std if mva.relative else None)))

            def keep(_mod, _args, out):
                seen["f1"] = out[0] if isinstance(out, tuple) else out

            h = decoder_layers(base)[CLUSTER_LAYER].register_forward_hook(keep)
            stack.callback(h.remove)
            yield seen
        for handle in seen["handles"]:
            self.noise_calls.update(handle.calls_by_site)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        harmful = inputs.pop("harmful", None)
        if "ref_chosen_logps" not in inputs:  # the reference: the init adapter, no hook attached
            self.ref_passes += 1
            inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = self.compute_ref_log_probs(model, inputs)
        self._terms.clear()
        with self.perturbed(model, self.forward_seed()) as seen:
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = out[0] if return_outputs else out
        n_pairs = inputs["input_ids"].shape[0] // 2
        mask = torch.zeros(n_pairs, dtype=torch.bool) if harmful is None else harmful.bool()
        mask = mask.to(inputs["input_ids"].device)
        attn, comp = inputs["attention_mask"][:n_pairs][mask], inputs["completion_mask"][:n_pairs][mask]
        if self.quada.cluster_tokens == "content":  # the prompt minus the template every prompt shares
            attn = content_mask(inputs["input_ids"][:n_pairs][mask], attn.bool() & ~comp.bool())
        f1 = prompt_mean(seen["f1"][:n_pairs][mask], attn, comp)  # (H, C), chosen half: one row per harmful prompt
        cluster = cluster_loss(f1)
        if self.quada.cluster_weight > 0:
            loss = loss + self.quada.cluster_weight * cluster
        mode = "train" if self.model.training else "eval"
        for name, value in self._terms.items():
            self._metrics[mode][f"loss_{name}"].append(float(value))
        self._metrics[mode]["loss_cluster"].append(float(cluster.detach()))
        self._metrics[mode]["harmful_per_batch"].append(int(mask.sum()))
        self.last_terms = {**{k: float(v) for k, v in self._terms.items()}, "cluster": float(cluster.detach()),
                           "total": float(loss.detach()), "harmful": int(mask.sum())}
        return (loss, out[1]) if return_outputs else loss

    # ------------------------------------------------------------------ provenance
    def provenance(self) -> dict:
        """The perturbation as trained (recorded in the adapter's provenance.json)."""
        q, n_layers = self.quada, _hf_model(self.accelerator.unwrap_model(self.model)).config.num_hidden_layers
        # the layers the noise reaches: none when nothing is perturbed (--perturb none)
        touched = q.mva is not None or q.card is not None
        layers = [] if not touched else list(range(n_layers)) if q.layers is None else list(q.layers)
        table = {}
        for s, f, v in (q.mva.noise if q.mva else ()):
            for l in layers:
                table[f"{l}:{s}"] = [f, v * (self.site_std[(l, s)] if q.mva.relative else 1.0)]
        if q.card is not None:
            kind, sites = "card", ["up", "down"]
        else:
            kind, sites = ("mva", list(q.mva.sites)) if q.mva else ("none", [])
        return {"perturb": kind, "mva": None if q.mva is None else q.mva.to_dict(), "card": q.card,
                "mva_scale": q.mva_scale, "scale": "relative" if q.mva and q.mva.relative else "absolute",
                "sites": sites, "layers": layers,
                "tau": None if not touched else len(layers) if q.layers is not None else "all", "cluster_weight": q.cluster_weight,
                "cluster_tokens": q.cluster_tokens,
                "cluster_activation": f"output of decoder layer {CLUSTER_LAYER} averaged over the "
                                      + ("prompt tokens" if q.cluster_tokens == "prompt" else
                                         "prompt tokens minus the prefix and suffix all prompts of the batch share")
                                      + ", "
                                      "harmful prompts of each batch, all pairs",
                "noise_per_layer_site": table,
                "site_std": None if self.site_std is None else {f"{l}:{s}": v for (l, s), v in self.site_std.items()},
                "noise": ("the card's exact arithmetic at every policy forward, its error a constant to autograd "
                          "(straight-through)" if q.card else "drawn fresh at every policy forward")
                         + "; reference (init adapter) unperturbed",
                "hook_calls": {f"{l}:{s}": n for (l, s), n in sorted(self.noise_calls.items())},
                "reference_passes": self.ref_passes}


class _WithHarmful:
    """TRL's preference collator plus a (B,) bool ``harmful`` tensor from the rows' column."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        out = self.inner(examples)
        if examples and "harmful" in examples[0]:
            out["harmful"] = torch.tensor([bool(e["harmful"]) for e in examples])
        return out


def _hf_model(model):
    """The Hugging Face model under a PEFT wrapper (its module names are the emulator's table's)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def measure_init_std(model, tok) -> dict:
    """Clean std at every (layer, site) of the init model on the perplexity windows, the same
    text and windows ``privinf safety mva --relative`` measured its scales on."""
    from privinf.emulator import measure_site_std
    from privinf.safety import data
    from privinf.safety.runner import Harness

    ids = Harness.ppl_windows(tok, data.wiki_text(max_chars=4096 * 8), 256, 4096)[:8]
    dev = next(model.parameters()).device
    with torch.no_grad():
        return measure_site_std(_hf_model(model), [ids[i:i + 4].to(dev) for i in range(0, len(ids), 4)])


def quada_trainer(cfg, model, tok, rows: list[dict], args, callbacks, **anchor) -> QuadATrainer:
    """The QuadA trainer for ``rows`` (``pairs.dpo_rows``) with TRL's DPO ``args``; with
    ``anchor`` (``privinf.align.anchor.AnchorMixin``'s arguments) the KL anchor is mixed in."""
    from datasets import Dataset

    from privinf.align import pairs

    setup = QuadASetup.from_config(cfg)
    site_std = measure_init_std(model, tok) if setup.mva is not None and setup.mva.relative else None
    ds = Dataset.from_list([m | {"harmful": r["kind"] == "harmful"} for m, r in zip(pairs.as_messages(rows), rows)])
    cls = QuadATrainer
    if anchor:
        from privinf.align.anchor import anchored

        cls = anchored(QuadATrainer)
    return cls(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=callbacks,
               quada=setup, site_std=site_std, **anchor)
