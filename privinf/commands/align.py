"""``privinf align``: LoRA safety alignment (SFT, DPO) of a causal LM; light imports at module level."""

from __future__ import annotations

import shlex
import sys

import click

from privinf import validate
from privinf.commands.quada_options import quada_config, quada_options
from privinf.errors import UsageError


def _budget(text: str) -> float:
    """``900``, ``900s``, ``15m`` or ``1.5h`` -> seconds."""
    t = text.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
    try:
        value = float(t[:-1]) * mult if mult else float(t)
    except ValueError:
        raise UsageError(f"--time-budget {text!r}: expected seconds or a number with s/m/h, e.g. 900, 15m, 1h") from None
    if value <= 0:
        raise UsageError(f"--time-budget {text!r}: must be positive")
    return value


@click.command()
@click.option("--method", type=click.Choice(["sft", "dpo", "quada"]), default="sft", show_default=True,
              help="sft: refusals for harmful prompts, the model's own answers for benign ones; "
                   "dpo: TRL DPOTrainer on (refusal, own answer) pairs, plus an NLL term on the chosen answer; "
                   "quada: dpo with the policy forward under MVA noise and a clustering term (needs --init)")
@click.option("--model", "model_name", default="smollm2-135m-instruct", show_default=True,
              help="model card name or local Hugging Face folder")
@click.option("--init", default=None, help="continue from this adapter (folder or shipped name); DPO's reference is it")
@click.option("--output", default="results/align/run", show_default=True, type=click.Path(),
              help="run folder: checkpoints/, log.jsonl, data/, adapter/ (+ provenance.json)")
@click.option("--time-budget", default="15m", show_default=True, help="training wall-clock budget: 900, 15m, 1h")
@click.option("--max-steps", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--epochs", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--lr", default=5e-4, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--lora-r", default=16, show_default=True, type=click.IntRange(1))
@click.option("--beta", default=0.1, show_default=True, type=click.FloatRange(0, min_open=True), help="DPO beta")
@click.option("--sft-weight", default=0.2, show_default=True, type=click.FloatRange(0),
              help="DPO: weight of the chosen answer's NLL next to the DPO loss (0 = plain DPO)")
@click.option("--harmful-pairs", default=360, show_default=True, type=click.IntRange(1),
              help="DPO: harmful prompts paired with the base model's own answer")
@click.option("--rewrites", default=2, show_default=True, type=click.IntRange(0),
              help="imperative rewrites per Do-Not-Answer question")
@click.option("--advbench", default=1, show_default=True, type=click.IntRange(-1),
              help="wrapped forms per AdvBench behaviour (near duplicates of HarmBench removed); -1: leave AdvBench out")
@click.option("--benign-questions", default=0, show_default=True, type=click.IntRange(0),
              help="harmless how-to questions in the openings of the harmful ones ('How can I ...?')")
@click.option("--everyday", default=0, show_default=True, type=click.IntRange(0),
              help="everyday requests: explanations, comparisons, poems and stories, trip plans, advice, "
                   "role-play, estimates, e-mails, rewriting a given text")
@click.option("--limit", default=None, type=click.IntRange(1), help="at most N training prompts per kind (quick probes)")
@click.option("--answers", default="results/align/base_answers.jsonl", show_default=True, type=click.Path(),
              help="resumable store of the base model's answers (shared by runs)")
@click.option("--anchor-weight", default=0.0, show_default=True, type=click.FloatRange(0),
              help="weight of KL(base || tuned) on raw Wikipedia windows (sft, dpo, quada), which keeps perplexity near the base")
@click.option("--anchor-batch", default=4, show_default=True, type=click.IntRange(1),
              help="raw-text windows (128 tokens) per step for the anchor")
@click.option("--adapter-scale", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="scale the trained LoRA delta before validating and saving (weight-space interpolation "
                   "towards the base model: trades refusal for perplexity; choose it on the validation split)")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="torch threads")
@click.option("--seed", default=0, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@quada_options
def align(method, model_name, init, output, time_budget, max_steps, epochs, lr, batch_size, lora_r, beta,
          sft_weight, harmful_pairs, rewrites, advbench, benign_questions, everyday, limit, answers, anchor_weight,
          anchor_batch, adapter_scale, threads, seed, progress, **quada):
    """Safety-align a causal LM with LoRA: refuse harm, keep helping.

    Training prompts: Do-Not-Answer (refusal categories) with imperative rewrites and AdvBench,
    minus every near duplicate of a HarmBench prompt, and benign prompts built from Wikipedia
    articles past the perplexity text plus generated coding, arithmetic, writing and role-play tasks;
    an overlap guard refuses to run if any touches HarmBench, the benign evaluation prompts or the
    perplexity windows. A tenth of the prompts is held out: the run ends with refusal and
    over-refusal on them, on past/future-tense JailbreakBench prompts and on user-written requests
    (PyRIT's), both never trained on (never on HarmBench). Rerunning the same command resumes from
    the last checkpoint.

    \b
    Examples:
      privinf align --method sft --time-budget 15m --output results/align/sft
      privinf align --method dpo --init results/align/sft/adapter --output results/align/dpo
      privinf align --method quada --init smollm2-135m-safe --mva up:gaussian:0.05,down:laplace:0.03 --layers 0-3
      privinf align --method quada --init smollm2-135m-safe --perturb card --card nexus --layers all
      privinf safety eval --weights results/align/dpo/adapter --limit 0 --benign-limit -1
    """
    import json

    info = validate.model(model_name)
    if init is not None:
        from privinf.align.adapters import resolve_adapter

        validate.weights(str(resolve_adapter(init)), option="--init")
    extra = quada_config(method, init, info, **quada)
    from privinf.align.train import AlignConfig, align as run

    cfg = AlignConfig(method=method, model=info.name if info.folder is None else str(info.folder), init=init,
                      output=output, seed=seed, threads=threads, time_budget=_budget(time_budget),
                      max_steps=max_steps, epochs=epochs, lr=lr, batch_size=batch_size, lora_r=lora_r,
                      lora_alpha=2 * lora_r, beta=beta, sft_weight=sft_weight, harmful_pairs=harmful_pairs,
                      rewrites=rewrites, advbench=advbench, benign_questions=benign_questions, everyday=everyday,
                      limit=limit, answers=answers, anchor_weight=anchor_weight, anchor_batch=anchor_batch,
                      adapter_scale=adapter_scale, **extra)
    prov = run(cfg, command="privinf " + shlex.join(sys.argv[1:]), progress=progress)
    v = prov["validation"]
    click.echo(f"\n{method}: {prov['steps']} steps in {prov['wall_s']['train']:.0f} s "
               f"(total {prov['wall_s']['total']:.0f} s), {prov['rows']} rows")
    click.echo(f"held-out refusal on harmful prompts {100 * v['harmful']['refusal']['value']:.1f}% "
               f"(n={v['harmful']['refusal']['n']}), on unseen ones {100 * v['unseen_harmful']['refusal']['value']:.1f}%; "
               f"over-refusal on benign {100 * v['benign']['refusal']['value']:.1f}%, "
               f"on user requests {100 * v['user_requests']['refusal']['value']:.1f}%")
    click.echo(f"wrote {output}/adapter (adapter_config.json, adapter_model.safetensors, provenance.json)")
    if not progress:
        click.echo(json.dumps({k: prov[k] for k in ("steps", "rows", "wall_s")}))
