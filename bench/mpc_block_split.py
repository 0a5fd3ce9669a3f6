"""The MLP block's cost today (a fresh CrypTen triple per product) vs the offline/online split.

A one-layer random llama with the default model's shapes (hidden 576, MLP 1536, 9 heads, 3 kv
heads) is enough: bytes and rounds depend on shapes only. One two-party session runs layer 0's
block on --tokens rows both ways (``privinf.mpc.genparty --block``).

    nice -n 10 .venv/bin/python bench/mpc_block_split.py --card bolt --tokens 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--card", default="bolt")
    p.add_argument("--tokens", type=int, default=16)
    a = p.parse_args()
    torch.set_num_threads(1)
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    from privinf.mpc.session import generate_2pc

    with tempfile.TemporaryDirectory(prefix="privinf-shape-") as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        cfg = tf.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=1, num_attention_heads=9,
                             num_key_value_heads=3, head_dim=64, vocab_size=99, max_position_embeddings=128,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0, rms_norm_eps=1e-5)
        tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
        tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(98)} | {"[UNK]": 98}, unk_token="[UNK]"))
        tk.pre_tokenizer = pre_tokenizers.Whitespace()
        tf.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="w0").save_pretrained(folder)
        res = generate_2pc(str(folder), list(range(3, 19)), a.card, 1, block=a.tokens, timeout_s=600,
                           protocol_timeout_s=1800)
    b = res.block
    print(json.dumps(b, indent=1))
    print(f"online bytes: today {b['today']['bytes'] / 1e6:.2f} MB, split {b['online']['bytes'] / 1e6:.2f} MB "
          f"({b['today']['bytes'] / b['online']['bytes']:.2f}x less), offline {b['offline']['bytes'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
