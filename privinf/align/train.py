"""``privinf align``: LoRA safety alignment (SFT, DPO) of any causal LM privinf loads.

One run = build data (``privinf.align.data``), base answers (``pairs.base_answers``), rows
(``pairs.sft_rows`` / ``pairs.dpo_rows``), train with TRL (``SFTTrainer`` / ``DPOTrainer``) under a
wall-clock budget with checkpoints, validate on the held-out split, save a 16-bit adapter and a
provenance JSON. ``--init ADAPTER`` continues from an adapter: the same LoRA keeps training, so the
result stays one adapter loadable on the base model; for DPO the reference is the init adapter as
it was (TRL copies it into a frozen ``ref`` adapter), i.e. the model the stage starts from.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from privinf.align import data, pairs
from privinf.align.adapters import resolve_adapter

METHODS = ("sft", "dpo", "quada")  # quada: privinf.align.quada

# validation perplexity text: between the evaluation windows (the first 4096 tokens, ~20k characters;
# the overlap guard checks 300k) and the articles the benign prompts are built from (400k on)
VAL_TEXT_OFFSET = 320_000


@dataclass(frozen=True)
class AlignConfig:
    """Everything that decides a run (recorded in the provenance)."""

    method: str = "sft"
    model: str = "smollm2-135m-instruct"
    init: str | None = None
    output: str = "results/align/run"
    seed: int = 0
    threads: int = 1
    time_budget: float = 900.0  # seconds of training (data building and validation excluded)
    max_steps: int = 10_000
    epochs: float = 1.0
    lr: float = 5e-4
    batch_size: int = 8
    grad_accum: int = 1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    beta: float = 0.1
    sft_weight: float = 0.2  # DPO: weight of the NLL of the chosen answer (RPO-style) next to the DPO loss
    rewrites: int = 2
    advbench: int = 1  # wrapped forms per AdvBench behaviour; -1 leaves AdvBench out
    benign_questions: int = 0  # harmless how-to questions in the harmful questions' openings (data.benign_examples)
    everyday: int = 0  # everyday requests (data.everyday_prompts)
    harmful_pairs: int = 360  # DPO: harmful prompts with a base answer (generation is the slow part)
    val_fraction: float = 0.1
    val_prompts: int = 48  # per kind, for the held-out check
    max_length: int = 256
    save_steps: int = 20
    answers: str = "results/align/base_answers.jsonl"
    limit: int | None = None  # at most this many training prompts per kind (tests, quick probes)
    anchor_batch: int = 4  # raw-text windows (128 tokens) per step for the anchor
    anchor_weight: float = 0.0  # weight of the KL anchor to the base model on raw text (privinf.align.anchor)
    adapter_scale: float = 1.0  # the LoRA delta times this before validation and saving (see scale_lora)
    # QuadA (privinf.align.quada): the policy forward under MVA noise, reference clean, clustering term
    perturb: str = "mva"  # "none": no noise (with cluster_weight 0: plain DPO); "card": a card's exact arithmetic
    card: str | None = None  # perturb "card": the protocol card the policy forward runs under (straight-through)
    mva: str | None = None  # e.g. "up:gaussian:0.05,down:laplace:0.03", or an MVA JSON of `privinf safety mva`
    relative: bool = False  # MVA scales multiply each (layer, site)'s clean std, measured on the init model
    mva_scale: float = 1.0  # every MVA scale times this (Table 5's LA: 1.1)
    perturb_layers: tuple[int, ...] | None = (0, 1, 2, 3)  # the first tau sensitive layers; None: every layer
    cluster_weight: float = 0.1  # lambda of the clustering term
    cluster_tokens: str = "prompt"  # "content": minus the template prefix/suffix every prompt shares

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")


def build_examples(cfg: AlignConfig) -> tuple[list, list]:
    """Harmful + benign examples, guarded against every evaluation set, split train / validation."""
    ex = data.harmful_examples(cfg.rewrites, cfg.seed) + data.benign_examples(n_questions=cfg.benign_questions,
                                                                               n_everyday=cfg.everyday, seed=cfg.seed)
    if cfg.advbench >= 0:
        ex += data.advbench_examples(cfg.advbench, cfg.seed)
    data.check_disjoint(ex)
    train, val = data.split(ex, cfg.val_fraction, cfg.seed)
    if cfg.limit is not None:
        train = [e for k in ("harmful", "benign") for e in [x for x in train if x.kind == k][: cfg.limit]]
        val = [e for k in ("harmful", "benign") for e in [x for x in val if x.kind == k][: cfg.limit]]
    return train, val


def _answer_prompts(cfg: AlignConfig, train: list, val: list) -> list[str]:
    """Prompts whose base answers a run needs: every benign one, and for DPO a seeded sample of
    harmful ones (the base model's compliance is the rejected answer)."""
    import random

    need = [e.prompt for e in train + val if e.kind == "benign"]
    if cfg.method in ("dpo", "quada"):
        harm = [e for e in train if e.kind == "harmful"]
        need += [e.prompt for e in random.Random(cfg.seed).sample(harm, min(cfg.harmful_pairs, len(harm)))]
    return need


def _lora(model, cfg: AlignConfig):
    from peft import LoraConfig, PeftModel, get_peft_model

    if cfg.init:
        return PeftModel.from_pretrained(model, str(resolve_adapter(cfg.init)), is_trainable=True)
    lc = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                    target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lc)


# ------------------------------------------------------------------------------------------ callbacks


def _callbacks(cfg: AlignConfig, log_path: Path, t_start: float):
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        """Stop (and checkpoint) once the wall-clock budget of this invocation is spent."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_save = True  # the last step is a checkpoint too: a rerun resumes, not restarts
            if time.perf_counter() - t_start > cfg.time_budget:
                control.should_training_stop = True
                control.should_save = True
            return control

    class JsonLog(TrainerCallback):
        """Every logged loss line, appended to ``log.jsonl`` with the wall time."""

        def on_log(self, args, state, control, logs=None, **kw):
            row = {"step": state.global_step, "wall_s": round(time.perf_counter() - t_start, 1), **(logs or {})}
            with log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    return [Budget(), JsonLog()]


def _args(cfg: AlignConfig, ckpt_dir: Path, n_rows: int) -> dict:
    steps = min(cfg.max_steps, max(1, math.ceil(cfg.epochs * n_rows / (cfg.batch_size * cfg.grad_accum))))
    return dict(output_dir=str(ckpt_dir), per_device_train_batch_size=cfg.batch_size,
                gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, max_steps=steps,
                lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20), logging_steps=5,
                save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed, data_seed=cfg.seed,
                use_cpu=not torch.cuda.is_available(), report_to=[], max_length=cfg.max_length,
                dataloader_num_workers=0, remove_unused_columns=True, disable_tqdm=False,
                gradient_checkpointing=False)  # TRL turns it on; memory is no issue for LoRA on small models, time is


def _trainer(cfg: AlignConfig, model, tok, rows: list[dict], ckpt_dir: Path, callbacks):
    from datasets import Dataset

    ds = Dataset.from_list(pairs.as_messages(rows))
    if cfg.method == "sft":
        from trl import SFTConfig, SFTTrainer

        # batches of similar length: the prompts range from 20 to 250 tokens and padding is CPU time
        args = SFTConfig(**_args(cfg, ckpt_dir, len(rows)), completion_only_loss=True,
                         train_sampling_strategy="group_by_length")
        from privinf.align.anchor import AnchoredSFTTrainer

        cls = AnchoredSFTTrainer if cfg.anchor_weight > 0 else SFTTrainer
        return cls(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=callbacks,
                   **_anchor(cfg, tok))
    from trl import DPOConfig, DPOTrainer

    loss = ["sigmoid"] + (["sft"] if cfg.sft_weight > 0 else [])
    weights = [1.0] + ([cfg.sft_weight] if cfg.sft_weight > 0 else [])
    args = DPOConfig(**_args(cfg, ckpt_dir, len(rows)), beta=cfg.beta, loss_type=loss, loss_weights=weights)
    if cfg.method == "quada":
        from privinf.align.quada import quada_trainer

        return quada_trainer(cfg, model, tok, rows, args, callbacks, **_anchor(cfg, tok))
    from privinf.align.anchor import AnchoredDPOTrainer

    cls = AnchoredDPOTrainer if cfg.anchor_weight > 0 else DPOTrainer
    return cls(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=callbacks, **_anchor(cfg, tok))


def _anchor(cfg: AlignConfig, tok) -> dict:
    """Keyword arguments of ``privinf.align.anchor.AnchorMixin`` (none when the weight is 0)."""
    if cfg.anchor_weight <= 0:
        return {}
    from privinf.align.anchor import anchor_windows

    return dict(anchor_ids=anchor_windows(tok), anchor_weight=cfg.anchor_weight, anchor_batch=cfg.anchor_batch,
                anchor_seed=cfg.seed)


# ------------------------------------------------------------------------------------------ validation


@torch.no_grad()
def validate(model, tok, val: list, n: int, seed: int, batch_size: int = 16) -> dict:
    """Refusal on held-out harmful prompts, on harmful prompts from a set never trained on
    (``data.heldout_harmful``: past/future-tense JailbreakBench) and over-refusal on held-out
    benign prompts and on user-written requests (``sdata.user_requests``, never trained on);
    greedy, 64 new tokens, keyword judge: the numbers checkpoints and settings are chosen by."""
    import random

    from privinf.safety import data as sdata
    from privinf.safety import judges, stats
    from privinf.safety.generate import generate_batch

    sets = {}
    for kind in ("harmful", "benign"):
        ps = [e.prompt for e in val if e.kind == kind]
        sets[kind] = random.Random(seed).sample(ps, min(n, len(ps)))
    sets["unseen_harmful"] = data.heldout_harmful(n, seed)
    sets["user_requests"] = list(sdata.user_requests().prompts)  # benign as users write it (never trained on)
    out = {}
    for name, ps in sets.items():
        resp = [r["response"] for i in range(0, len(ps), batch_size)
                for r in generate_batch(model, tok, ps[i:i + batch_size], 64)]
        refused = [judges.has_refusal(r) for r in resp]
        out[name] = {"refusal": stats.rate(refused).to_dict(),
                     "examples": [{"prompt": p[:200], "response": r[:200]} for p, r in list(zip(ps, resp))[:3]]}
    out["ppl"] = validation_ppl(model, tok)
    return out


@torch.no_grad()
def validation_ppl(model, tok, windows: int = 8, width: int = 256) -> dict:
    """Perplexity on Wikipedia text used neither by the evaluation windows nor by the training
    prompts (``VAL_TEXT_OFFSET``), with the adapter and, for a PEFT model, without it."""
    from privinf.models import package_file
    from privinf.safety.data import WIKI
    from privinf.safety.runner import Harness

    text = package_file(*WIKI).read_text(encoding="utf-8")[VAL_TEXT_OFFSET:VAL_TEXT_OFFSET + windows * width * 8]
    ids = Harness.ppl_windows(tok, text, width, windows * width).to(model.device)

    def ppl() -> float:
        logits = model(input_ids=ids).logits.float()  # (W, L, V)
        nll = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        return float(nll.mean().exp())

    out = {"tuned": ppl()}
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            out["base"] = ppl()
        out["ratio"] = out["tuned"] / out["base"]
    return out


# ------------------------------------------------------------------------------------------ saving


@torch.no_grad()
def scale_lora(model, scale: float) -> None:
    """Multiply every LoRA ``B`` matrix by ``scale``: the adapter's weight change becomes
    ``scale * B A``, a point on the line between the base model (0) and the trained one (1)
    (weight-space interpolation, as in WiSE-FT, Wortsman et al. 2022). Trades refusal for
    perplexity; privinf picks the scale on the validation split."""
    if scale == 1.0:
        return
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.mul_(scale)


def save_adapter(model, folder: Path) -> None:
    """``adapter_config.json`` + ``adapter_model.safetensors`` with the LoRA tensors in float16."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    f = folder / "adapter_model.safetensors"
    tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(f)).items()}
    save_file(tensors, str(f), metadata={"format": "pt"})


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "trl", "privinf")} | {"python": platform.python_version()}


def code_commit() -> str | None:
    """The git commit of the code that trains (``PRIVINF_CODE_COMMIT`` when it runs from a copy
    without ``.git``, e.g. a ``git archive`` snapshot), ``+dirty`` when privinf has local changes."""
    import os
    import subprocess

    if os.environ.get("PRIVINF_CODE_COMMIT"):
        return os.environ["PRIVINF_CODE_COMMIT"]
    here = Path(__file__).resolve().parent

    def git(*a):
        return subprocess.run(["git", *a], cwd=here, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--", str(here.parent)).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def align(cfg: AlignConfig, command: str = "", progress: bool = True) -> dict:
    """Run one alignment stage end to end; returns (and writes) its provenance."""
    from privinf.models import load_model

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, val = build_examples(cfg)
    model, tok = load_model(cfg.model)
    answers = pairs.base_answers(model, tok, _answer_prompts(cfg, train, val), cfg.answers, cfg.model,
                                 progress=progress)
    rows = (pairs.sft_rows if cfg.method == "sft" else pairs.dpo_rows)(train, answers, cfg.seed)
    rows = pairs.balance(rows, cfg.seed)
    (out / "data").mkdir(exist_ok=True)
    with (out / "data" / "train.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    t_data = time.perf_counter() - t0

    model = _lora(model, cfg)
    model.train()
    ckpt_dir = out / "checkpoints"
    resume = any(ckpt_dir.glob("checkpoint-*")) if ckpt_dir.is_dir() else False
    t1 = time.perf_counter()
    trainer = _trainer(cfg, model, tok, rows, ckpt_dir, _callbacks(cfg, out / "log.jsonl", t1))
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    t_train = time.perf_counter() - t1

    model = trainer.model.eval()
    scale_lora(model, cfg.adapter_scale)
    save_adapter(model, out / "adapter")
    val_metrics = validate(model, tok, val, cfg.val_prompts, cfg.seed)
    prov = {
        "kind": "privinf-adapter", "command": command, "config": asdict(cfg), "resumed": resume,
        "steps": trainer.state.global_step, "max_steps": trainer.state.max_steps,
        "train_loss": result.training_loss, "rows": len(rows),
        "rows_by_kind": {k: sum(r["kind"] == k for r in rows) for k in ("harmful", "benign")},
        "data_sha256": data.digest(rows), "train_prompts": len(train), "val_prompts": len(val),
        "wall_s": {"data": round(t_data, 1), "train": round(t_train, 1), "total": round(time.perf_counter() - t0, 1)},
        "validation": val_metrics, "versions": _versions(), "code_commit": code_commit(),
        "log_history": trainer.state.log_history,
    }
    if cfg.method == "quada":
        prov["perturbation"] = trainer.provenance()
    (out / "adapter" / "provenance.json").write_text(json.dumps(prov, indent=2), encoding="utf-8")
    return prov
