"""Where a generated token's rounds, bytes and time go in the whole-model 2PC protocol, per phase.

Rounds and bytes depend on shapes only, so a random llama with the default model's shapes
(hidden 576, MLP 1536, 9 heads, 3 kv heads, head 64) and --layers layers measures them without
loading the real model; per-token figures for the default model's 30 layers are the per-layer
figures times 30 plus the head (printed as "x30"). --model NAME runs the real model instead.

    nice -n 10 .venv/bin/python bench/mpc_rounds.py --card bolt --layers 2 --prompt-tokens 16 --new-tokens 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch


def shape_model(folder: Path, layers: int, vocab: int = 99) -> None:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=layers, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, vocab_size=vocab, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, rms_norm_eps=1e-5, tie_word_embeddings=True)
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab - 1)} | {"[UNK]": vocab - 1}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tf.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="w0").save_pretrained(folder)


def phase_table(steps: list[dict], layers: int, scale_to: int) -> str:
    from privinf.report import table

    med = lambda n, k: statistics.median(s["phases"].get(n, {}).get(k, 0) for s in steps)  # noqa: E731
    names = sorted({n for s in steps for n in s["phases"]}, key=lambda n: -med(n, "rounds"))
    per_layer = {"embed", "head"}  # once per forward, not per layer
    rows = []
    for n in names:
        f = 1 if n in per_layer else scale_to / layers
        rows.append([n, med(n, "rounds"), med(n, "rounds") * f, med(n, "bytes") / 1e6, med(n, "bytes") * f / 1e6,
                     med(n, "wall_s"), med(n, "wall_s") * f])
    tot = lambda k: statistics.median(s[k] for s in steps)  # noqa: E731
    rows.append(["(all, party 0)", sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows),
                 sum(r[4] for r in rows), sum(r[5] for r in rows), sum(r[6] for r in rows)])
    rows.append(["(step, both parties)", tot("rounds"), "", tot("bytes") / 1e6, "", tot("wall_s"), ""])
    return table(["phase", "rounds", f"x{scale_to}", "MB (p0)", f"x{scale_to}", "wall s", f"x{scale_to}"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--card", default="bolt")
    p.add_argument("--layers", type=int, default=2, help="layers of the shape model (ignored with --model)")
    p.add_argument("--model", default=None, help="a real model instead of the shape model")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=4)
    p.add_argument("--scale-to", type=int, default=30, help="layers to extrapolate to (the default model's 30)")
    p.add_argument("--json", default=None, help="also write the raw steps here")
    a = p.parse_args()
    torch.set_num_threads(1)
    from privinf.mpc.session import generate_2pc

    with tempfile.TemporaryDirectory(prefix="privinf-rounds-") as tmp:
        folder, layers = a.model, None
        if folder is None:
            folder, layers = str(Path(tmp) / "shape"), a.layers
            shape_model(Path(folder), a.layers)
        ids = [3 + (7 * i) % 90 for i in range(a.prompt_tokens)]
        res = generate_2pc(folder, ids, a.card, a.new_tokens, timeout_s=600, protocol_timeout_s=3600)
    layers = layers or res.steps[0].get("layers") or a.scale_to
    print(f"card {a.card}, {a.prompt_tokens}-token prompt, {a.new_tokens} new tokens, "
          f"{'shape model ' + str(a.layers) + ' layers' if a.model is None else a.model}; "
          f"offline {res.offline['wall_s']:.1f} s {res.offline['bytes'] / 1e6:.1f} MB {res.offline['rounds']} rounds")
    print("\nprefill:")
    print(phase_table(res.steps[:1], layers, a.scale_to if a.model is None else layers))
    if len(res.steps) > 1:
        print(f"\nper new token (median of {len(res.steps) - 1}):")
        print(phase_table(res.steps[1:], layers, a.scale_to if a.model is None else layers))
    if a.json:
        Path(a.json).write_text(json.dumps({"offline": res.offline, "steps": res.steps}, indent=1))


if __name__ == "__main__":
    main()
