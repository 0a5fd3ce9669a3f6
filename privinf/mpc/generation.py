"""``privinf generate`` as a library function: private generation, its cost, and the comparison
of the clean model, the emulator and 2PC.

- ``plaintext`` backend: greedy decoding with :func:`privinf.mpc.plain.plain_forward`, the card's
  whole-model arithmetic (the emulator's exact mode at whole-model scale).
- ``crypten`` backend: :func:`privinf.mpc.session.generate_2pc`, two processes on loopback.
- ``--compare``: the clean model (Hugging Face greedy), the emulator (the model with
  ``privinf.emulator.emulate(model, "exact", card=...)`` hooks at the two MLP sites), the
  whole-model plaintext twin, and 2PC side by side; teacher-forced on 2PC's own tokens, the top-1
  agreement of the emulator and of the twin with 2PC's choices and the largest logit difference.
"""

from __future__ import annotations

import statistics

import torch

from privinf.report import table


def encode_prompt(tok, prompt: str, chat: bool, prompt_tokens: int | None) -> list[int]:
    if chat and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    else:
        ids = tok(prompt).input_ids
    ids = [int(i) for i in ids]
    return ids[:prompt_tokens] if prompt_tokens else ids


@torch.no_grad()
def greedy_twin(weights, ids: list[int], n: int, card) -> tuple[list[int], torch.Tensor]:
    from privinf.mpc.plain import plain_forward

    seq, rows = list(ids), []
    for _ in range(n):
        row = plain_forward(weights, seq, card)[-1]
        rows.append(row)
        seq.append(int(row.argmax()))
    return seq[len(ids):], torch.stack(rows)


@torch.no_grad()
def teacher_forced(model, seq: list[int], start: int, card=None) -> torch.Tensor:
    """Logits predicting seq[start + 1 ...] from a Hugging Face model (with the emulator when ``card``)."""
    from contextlib import nullcontext

    from privinf.emulator import emulate

    ctx = emulate(model, "exact", card=card) if card is not None else nullcontext()
    with ctx:
        return model(torch.tensor([seq])).logits[0, start:].float()


@torch.no_grad()
def hf_greedy(model, ids: list[int], n: int, card=None) -> list[int]:
    from contextlib import nullcontext

    from privinf.emulator import emulate

    ctx = emulate(model, "exact", card=card) if card is not None else nullcontext()
    with ctx:
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return [int(t) for t in out[0, len(ids):]]


def agreement(ref_logits: torch.Tensor, logits: torch.Tensor, tokens: list[int]) -> tuple[float, float]:
    """(top-1 agreement of ``ref_logits`` with ``tokens``, largest |ref - logits|)."""
    top = ref_logits.argmax(-1)
    agree = float((top == torch.tensor(tokens)).float().mean())
    return agree, float((ref_logits - logits).abs().max())


def cost_table(res) -> str:
    mb = lambda b: b / 1e6  # noqa: E731
    rows = [["offline (share weights, open masks)", res.offline["wall_s"], mb(res.offline["bytes"]), res.offline["rounds"]],
            [f"prefill ({res.prompt_tokens} tokens)", res.steps[0]["wall_s"], mb(res.steps[0]["bytes"]), res.steps[0]["rounds"]]]
    dec = res.steps[1:]
    if dec:
        med = lambda k: statistics.median(s[k] for s in dec)  # noqa: E731
        rows.append([f"per new token (median of {len(dec)})", med("wall_s"), mb(med("bytes")), med("rounds")])
        rows.append(["per new token (max)", max(s["wall_s"] for s in dec), mb(max(s["bytes"] for s in dec)),
                     max(s["rounds"] for s in dec)])
    return table(["phase", "wall s", "MB", "rounds"], rows)


def run_generate(*, prompt, max_new_tokens, card, model_name, weights, backend, compare, chat, prompt_tokens,
                 timeout_s, protocol_timeout_s, port, threads, echo=print, progressbar=None) -> str:
    from privinf.cards import protocol_card
    from privinf.mpc.genparty import load_server_model
    from privinf.mpc.model import ModelWeights, check_model_card
    from privinf.models import load_model

    torch.set_num_threads(threads)
    pc = protocol_card(card)
    if backend == "crypten":
        check_model_card(pc)
    _, tok = load_model(model_name)
    ids = encode_prompt(tok, prompt, chat, prompt_tokens)
    model = load_server_model(model_name, weights) if (compare or backend == "plaintext") else None
    w = ModelWeights.from_model(model) if model is not None else None
    text = lambda ts: tok.decode(_cut(ts, tok.eos_token_id), skip_special_tokens=True)  # noqa: E731
    lines = [f"model {model_name}{' + ' + weights if weights else ''}, card {pc.name}, {len(ids)} prompt tokens, "
             f"{max_new_tokens} new tokens, backend {backend}"]
    if backend == "plaintext":
        tokens, _ = greedy_twin(w, ids, max_new_tokens, pc)
        lines += ["", text(tokens)]
        if not compare:
            return "\n".join(lines)
    res = None
    if backend == "crypten":
        res = _run_2pc(model_name, ids, card, max_new_tokens, port, timeout_s, protocol_timeout_s, threads, weights,
                       progressbar)
        tokens = res.tokens
        lines += ["", text(tokens), "", f"2PC cost (CrypTen, TFP dealer, {res.fraction_bits} fraction bits, "
                  "two processes on loopback; MB sent by both parties):", cost_table(res)]
    if compare:
        lines += ["", _compare(model, w, ids, tokens, res, pc, max_new_tokens, text)]
    return "\n".join(lines)


def _cut(tokens: list[int], eos: int | None) -> list[int]:
    return tokens[:tokens.index(eos)] if eos is not None and eos in tokens else tokens


def _run_2pc(model_name, ids, card, n, port, timeout_s, protocol_timeout_s, threads, weights, progressbar):
    from privinf.mpc.session import generate_2pc

    kw = dict(port=port, timeout_s=timeout_s, protocol_timeout_s=protocol_timeout_s, threads=threads, weights=weights)
    if progressbar is None:
        return generate_2pc(model_name, ids, card, n, **kw)
    with progressbar(length=n, label="2PC tokens", file=None) as bar:
        return generate_2pc(model_name, ids, card, n, progress=lambda step, of, rec: bar.update(1), **kw)


def _compare(model, w, ids, tokens, res, pc, n, text) -> str:
    clean = hf_greedy(model, ids, n)
    emulated = hf_greedy(model, ids, n, pc)
    twin, _ = greedy_twin(w, ids, n, pc)
    rows = [["clean model", text(clean)], [f"emulator ({pc.name}, MLP sites)", text(emulated)],
            [f"whole-model twin ({pc.name})", text(twin)]]
    if res is not None:
        rows.append([f"2PC ({pc.name})", text(tokens)])
    out = table(["run", "text"], rows)
    if res is None:
        return out
    from privinf.mpc.plain import plain_forward

    seq = ids + tokens[:-1]
    emu = teacher_forced(model, seq, len(ids) - 1, pc)
    tw = plain_forward(w, seq, pc)[len(ids) - 1:]
    a_emu, d_emu = agreement(emu, res.logits, tokens)
    a_tw, d_tw = agreement(tw, res.logits, tokens)
    return out + "\n\nteacher-forced on 2PC's tokens:\n" + table(
        ["reference", "top-1 agreement with 2PC", "max |logit diff|"],
        [[f"emulator ({pc.name}, MLP sites)", a_emu, d_emu], [f"whole-model twin ({pc.name})", a_tw, d_tw]])
