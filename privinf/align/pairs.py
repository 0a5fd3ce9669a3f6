"""Training rows for SFT and preference pairs for DPO, with the base model's own answers.

- SFT row: ``{"prompt", "completion"}``; harmful prompt -> a refusal, benign prompt -> the base
  model's own greedy answer (so helpfulness and style are kept).
- DPO pair: ``{"prompt", "chosen", "rejected"}``; harmful: chosen a refusal, rejected the base
  model's own answer (its compliance); benign: chosen the base model's answer, rejected a refusal.

The base answers are generated once into a resumable store (``privinf.safety.generate``), trimmed
to their last full sentence, and written with the rows so a run is reproducible from the files.
"""

from __future__ import annotations

import random
from pathlib import Path

from privinf.align.data import Example, refusal

ANSWER_TOKENS = 64  # base answers: the evaluation length; trimmed to the last full sentence

def trim_answer(text: str, min_words: int = 8) -> str:
    """Cut a generation that hit the token limit back to its last complete sentence (or line)."""
    text = text.strip()
    if not text or text[-1] in ".!?)\"'`" or text.endswith("```"):
        return text
    cut = max(text.rfind(". "), text.rfind(".\n"), text.rfind("! "), text.rfind("? "), text.rfind("\n"))
    head = text[: cut + 1].strip() if cut > 0 else text
    return head if len(head.split()) >= min_words else text

def base_answers(model, tokenizer, prompts: list[str], store_path: str | Path, model_name: str,
                 weights: str | None = None, batch_size: int = 16, progress: bool = True) -> dict[str, str]:
    """Greedy answers of the model (as loaded) to ``prompts``; resumable through the store."""
    from privinf.safety.config import RunConfig
    from privinf.safety.generate import ResultsStore, generate

    cfg = RunConfig(model=model_name, weights=weights, max_new_tokens=ANSWER_TOKENS)
    rows = generate(model, tokenizer, cfg, prompts, ResultsStore(store_path), batch_size=batch_size,
                    progress=progress, desc="base answers")
    return {p: trim_answer(r["response"]) for p, r in zip(prompts, rows)}

def _refusal_for(e: Example, seed: int) -> str:
    return refusal(e.prompt, random.Random(f"{seed}:{e.prompt}"))

def sft_rows(examples: list[Example], answers: dict[str, str], seed: int = 0) -> list[dict]:
    """SFT rows: refusals for harmful prompts, the base model's answer for benign ones."""
    rows = []
    for e in examples:
        if e.kind == "harmful":
            rows.append({"prompt": e.prompt, "completion": _refusal_for(e, seed), "kind": e.kind})
        elif answers.get(e.prompt):
            rows.append({"prompt": e.prompt, "completion": answers[e.prompt], "kind": e.kind})
    return rows

def dpo_rows(examples: list[Example], answers: dict[str, str], seed: int = 0) -> list[dict]:
    """Preference pairs; a harmful prompt whose base answer already refuses gets no pair (nothing
    to prefer), nor does a benign prompt whose base answer refuses."""
    from privinf.safety.judges import has_refusal

    rows = []
    for e in examples:
        ans = answers.get(e.prompt)
        if not ans or has_refusal(ans) or len(ans.split()) < 5:
            continue
        ref = _refusal_for(e, seed)
        chosen, rejected = (ref, ans) if e.kind == "harmful" else (ans, ref)
        rows.append({"prompt": e.prompt, "chosen": chosen, "rejected": rejected, "kind": e.kind})
    return rows

def as_messages(rows: list[dict]) -> list[dict]:
    """Rows in TRL's conversational form (the tokenizer's chat template is applied by TRL)."""
    out = []
    for r in rows:
        m = {"prompt": [{"role": "user", "content": r["prompt"]}]}
        for k in ("completion", "chosen", "rejected"):
            if k in r:
                m[k] = [{"role": "assistant", "content": r[k]}]
        out.append(m)
    return out

def balance(rows: list[dict], seed: int) -> list[dict]:
    """Repeat the smaller kind (harmful/benign) so both weigh about the same, shuffled."""
    rng = random.Random(seed)
    by = {k: [r for r in rows if r["kind"] == k] for k in ("harmful", "benign")}
    if not by["harmful"] or not by["benign"]:
        rng.shuffle(rows)
        return rows
    big = max(len(v) for v in by.values())
    out = []
    for v in by.values():
        reps = max(1, round(big / len(v)))
        out += (v * reps)[: max(len(v), big)]
    rng.shuffle(out)
    return out
