"""SFT that keeps the model's language where it was: a KL anchor to the base model on raw text.

A refusal-heavy SFT shifts the whole output distribution (measured here: perplexity on unused
Wikipedia text 1.32x the base after 100 LoRA steps). ``AnchoredSFTTrainer`` adds, at every step,

    anchor_weight * KL(p_base(. | text) || p_tuned(. | text))

averaged over the tokens of a few raw Wikipedia windows, where ``p_base`` is the same PEFT model
with its adapter disabled. This is the "pretraining mix" of InstructGPT (Ouyang et al. 2022) in
its distillation form: unlike a plain language-modelling term on the same text it cannot push
perplexity *below* the base model's, so the perplexity check stays a check of harm done, not of
domain adaptation. The anchor text comes from the part of ``wiki.utf8`` past the evaluation
windows and the validation text (``ANCHOR_OFFSET``).

Why a mixin on TRL's trainers (``SFTTrainer``, ``DPOTrainer``, and privinf's ``QuadATrainer``)
rather than a loss of our own: SFT and DPO themselves (chat templates, completion-only loss,
preference pairs, the reference copy, batching, checkpoints) stay TRL's; only ``compute_loss``
gains the anchor term and ``log`` its value. The anchor forward runs after the trainer's own
loss, so QuadA's noise hooks are gone by then: the anchor keeps the *clean* model near the base.
"""

from __future__ import annotations

import torch
from trl import DPOTrainer, SFTTrainer

ANCHOR_OFFSET = 1_300_000  # characters into wiki.utf8: far from the evaluation windows and validation text


def anchor_windows(tok, windows: int = 256, width: int = 128, offset: int = ANCHOR_OFFSET) -> torch.Tensor:
    """(windows, width) token ids of raw Wikipedia text starting at ``offset`` characters."""
    from privinf.models import package_file
    from privinf.safety.data import WIKI
    from privinf.safety.runner import Harness

    text = package_file(*WIKI).read_text(encoding="utf-8")[offset:]
    return Harness.ppl_windows(tok, text[: windows * width * 6], width, windows * width)


def kl_to_base(model, peft, ids: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(p_base || p_model) on ``ids``; ``peft`` is the PEFT model (``model``
    itself or what wraps it), whose disabled adapter gives the base distribution."""
    with torch.no_grad(), peft.disable_adapter():
        ref = torch.log_softmax(peft(input_ids=ids).logits.float(), -1)  # (B, L, V)
    cur = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
    return (ref.exp() * (ref - cur)).sum(-1).mean()


class AnchorMixin:
    """``compute_loss`` plus ``anchor_weight`` x KL(base || tuned) on raw text windows, whose
    mean per logging interval is logged as ``anchor_kl``. Put it first among the bases."""

    def __init__(self, *args, anchor_ids: torch.Tensor, anchor_weight: float = 1.0, anchor_batch: int = 4,
                 anchor_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor_ids, self.anchor_weight, self.anchor_batch = anchor_ids, anchor_weight, anchor_batch
        self._anchor_gen = torch.Generator().manual_seed(anchor_seed)
        self._anchor_kl: list[float] = []

    def anchor_kl(self, model) -> torch.Tensor:
        idx = torch.randint(len(self.anchor_ids), (self.anchor_batch,), generator=self._anchor_gen)
        ids = self.anchor_ids[idx].to(self.args.device)  # (B, L)
        return kl_to_base(model, self.accelerator.unwrap_model(model), ids)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.anchor_weight <= 0 or not model.training:
            return out
        kl = self.anchor_kl(model)
        self._anchor_kl.append(float(kl.detach()))
        if return_outputs:
            return out[0] + self.anchor_weight * kl, out[1]
        return out + self.anchor_weight * kl

    def log(self, logs: dict, start_time=None) -> None:
        if self._anchor_kl and any(k in logs for k in ("loss", "train_loss")):
            logs["anchor_kl"] = sum(self._anchor_kl) / len(self._anchor_kl)
            self._anchor_kl.clear()
        super().log(logs, start_time)


class AnchoredSFTTrainer(AnchorMixin, SFTTrainer):
    """TRL's ``SFTTrainer`` with the KL anchor."""


class AnchoredDPOTrainer(AnchorMixin, DPOTrainer):
    """TRL's ``DPOTrainer`` with the KL anchor (the reference stays the init adapter; the anchor
    pulls towards the base model, whose perplexity is the one the targets are stated against)."""


def anchored(trainer_cls: type) -> type:
    """``trainer_cls`` with the KL anchor mixed in (for trainers defined elsewhere, e.g. QuadA's)."""
    return type(f"Anchored{trainer_cls.__name__}", (AnchorMixin, trainer_cls), {"__doc__": trainer_cls.__doc__})
