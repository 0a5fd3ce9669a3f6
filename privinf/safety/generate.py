"""Batched greedy generation with left padding, stored in an append-only JSONL results file.

Each finished batch is appended (one JSON line per prompt, flushed and fsynced) under the key
(``RunConfig.key()``, prompt); ``generate`` skips prompts whose key is already stored, so a run
that is interrupted resumes where it stopped and loses at most the batch in flight. Several
processes may share one file (a lock around every append and read); a line cut short by a killed
process is skipped with a warning and its prompt generated again.

Noise is drawn per batch (the emulator's generator is seeded once per batch from the config seed
and the batch's first prompt), so a prompt's response under noise can depend on its batch mates;
the stored response is the one every later report uses.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable

import torch

from privinf.safety.config import RunConfig, perturbation, prompt_key
from privinf.safety.store import ResultsStore


def chat_texts(tokenizer, prompts: list[str]) -> list[str]:
    """Each prompt as a one-turn user message in the model's chat template (plain text if none)."""
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    return list(prompts)


def _encode(tokenizer, texts: list[str]):
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """Greedy responses for one batch (left-padded): text and number of new tokens."""
    enc = _encode(tokenizer, chat_texts(tokenizer, prompts)).to(model.device)
    out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new = out[:, enc["input_ids"].shape[1]:]  # (B, T_new)
    rows = []
    for seq in new:
        ids = seq.tolist()
        n = len(ids)
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in ids:
            n = ids.index(tokenizer.eos_token_id) + 1
        rows.append({"response": tokenizer.decode(ids[:n], skip_special_tokens=True).strip(), "new_tokens": n})
    return rows


@torch.no_grad()
def response_nll(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 8) -> list[float | None]:
    """Mean per-token NLL of each response given its prompt under ``model`` as it runs now (call it
    outside any perturbation to score under the clean model). None for empty responses."""
    out: list[float | None] = []
    for i in range(0, len(prompts), batch_size):
        ps, rs = prompts[i:i + batch_size], responses[i:i + batch_size]
        heads = chat_texts(tokenizer, ps)
        head_ids = [tokenizer(h, add_special_tokens=False)["input_ids"] for h in heads]
        tail_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rs]
        seqs = [h + t for h, t in zip(head_ids, tail_ids)]
        width = max(len(s) for s in seqs)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(seqs):  # left padding
            ids[j, width - len(s):] = torch.tensor(s)
            mask[j, width - len(s):] = 1
        # logits only over the responses (the last K positions): a long jailbreak prompt would
        # otherwise cost B x T x vocab floats (12 GB for 16 prompts of 4k tokens)
        keep = min(width, max(len(t) for t in tail_ids) + 1)
        kw = {"logits_to_keep": keep} if _keeps_logits(model) else {}
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **kw).logits
        logp = torch.log_softmax(logits[:, -keep:-1].float(), -1)  # (B, K-1, V): predicts ids[:, width-K+1:]
        tok_nll = -logp.gather(-1, ids[:, width - keep + 1:, None].to(logp.device))[..., 0]  # (B, K-1)
        for j, t in enumerate(tail_ids):
            out.append(float(tok_nll[j, -len(t):].mean()) if t else None)
    return out


def _keeps_logits(model) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def token_budget_batches(tokenizer, texts: list[str], batch_size: int,
                         max_attention: int = 16 * 1024 ** 2) -> list[list[str]]:
    """Consecutive batches of at most ``batch_size`` texts, cut shorter where prompts are long:
    a batch holds n texts only while n x (its longest prompt in tokens)^2 <= ``max_attention``
    (the attention scores of one layer's prefill), so a batch of 4k-token jailbreak prompts is
    cut to one at a time instead of needing ~10 GB. At batch size 16, prompts up to 1024 tokens
    batch as before (the stored results of the short prompt sets are unaffected)."""
    batches, i = [], 0
    while i < len(texts):
        longest, n = 0, 0
        while n < batch_size and i + n < len(texts):
            longest_next = max(longest, len(tokenizer(texts[i + n], add_special_tokens=False)["input_ids"]))
            if n and (n + 1) * longest_next ** 2 > max_attention:
                break
            longest, n = longest_next, n + 1
        batches.append(texts[i:i + n])
        i += n
    return batches


def _batch_seed(seed: int, prompt: str) -> int:
    return (seed * 1_000_003 + int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)) % (2**31 - 1)


def generate(model, tokenizer, config: RunConfig, prompts: list[str], store: ResultsStore,
             batch_size: int = 16, aux: dict | None = None, progress: bool = True,
             desc: str | None = None, score: bool = False,
             on_batch: Callable[[int], None] | None = None) -> list[dict]:
    """Responses for ``prompts`` under ``config``: stored ones are reused, the rest generated in
    batches (longest first, so a batch shares similar lengths) and appended to ``store``. With
    ``score`` each response also gets ``nll``: its mean per-token NLL under the clean model (the
    same model and weights, no perturbation), for the likelihood degeneracy check. ``aux``:
    keyword arguments of ``perturbation`` (``relative_to``, ``calibration``)."""
    from tqdm.auto import tqdm

    store.refresh()  # rows other processes stored meanwhile
    todo = [p for p in dict.fromkeys(prompts) if prompt_key(config, p) not in store]
    todo.sort(key=len, reverse=True)
    bar = tqdm(total=len(todo), desc=desc or config.label(), disable=not progress or not todo,
               unit="prompt", leave=False)
    for i, batch in enumerate(token_budget_batches(tokenizer, todo, batch_size)):
        t0 = time.perf_counter()
        cfg = config.with_(seed=_batch_seed(config.seed, batch[0])) if config.perturbed else config
        with perturbation(model, cfg, **(aux or {})):
            rows = generate_batch(model, tokenizer, batch, config.max_new_tokens)
        secs = time.perf_counter() - t0
        if score:
            for r, nll in zip(rows, response_nll(model, tokenizer, batch, [r["response"] for r in rows], batch_size)):
                r["nll"] = nll
        store.append([{"key": prompt_key(config, p), "config": config.to_dict(), "prompt": p, **r,
                       "batch_seconds": round(secs, 3), "batch_size": len(batch)} for p, r in zip(batch, rows)])
        bar.update(len(batch))
        if on_batch is not None:
            on_batch(i)
    bar.close()
    return [store.get(config, p) for p in prompts]


def throughput(model, tokenizer, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 16) -> dict:
    """Generated tokens per second, one prompt at a time vs batched, on the same prompts."""
    t0 = time.perf_counter()
    single = sum(generate_batch(model, tokenizer, [p], max_new_tokens)[0]["new_tokens"] for p in prompts)
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = 0
    for i in range(0, len(prompts), batch_size):
        batched += sum(r["new_tokens"] for r in generate_batch(model, tokenizer, prompts[i:i + batch_size], max_new_tokens))
    t_batched = time.perf_counter() - t0
    return {"prompts": len(prompts), "max_new_tokens": max_new_tokens, "batch_size": batch_size,
            "single_tokens": single, "single_seconds": t_single, "single_tok_s": single / t_single,
            "batched_tokens": batched, "batched_seconds": t_batched, "batched_tok_s": batched / t_batched,
            "speedup": (batched / t_batched) / (single / t_single),
            "speedup_prompts_per_s": t_single / t_batched}
