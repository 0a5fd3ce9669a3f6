"""Teacher-forced top-1 agreement between whole-model 2PC and the emulator (issue 15).

For each prompt (first --prompt-tokens tokens, no chat template) the teacher sequence is the
prompt plus --new-tokens greedy tokens of the whole-model plaintext twin under the card. One
two-party session (one offline phase) scores every sequence in one cache-free forward, revealing
the logits of every position to party 0; the positions that predict the new tokens are compared
with the twin (``privinf.mpc.plain``), the emulator (Hugging Face model with
``emulate(model, "exact", card=...)``, MLP sites) and the clean model.

    nice -n 10 .venv/bin/python bench/mpc_agreement.py --card bolt --prompts 8 --new-tokens 32

With --sites the session also reveals both MLP sites of every layer (evaluation only), and the
script reports, per layer and site, the KS statistic between 2PC's error (2PC site value minus
the clean model's, every position of every sequence) and the emulator's (``emulate(model,
"exact")`` on every layer at once, same tokens): the per-layer check of issue 15.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

PROMPTS = [
    "Explain how private inference keeps a user's prompt secret from the server that runs the language model.",
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg in Mainz",
    "Write a short story about a lighthouse keeper who finds a message in a bottle on a stormy night.",
    "To bake a simple loaf of bread at home you need flour, water, yeast and salt. First, mix the",
    "Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide and",
    "Here are three tips for staying focused while working from home during a busy week of deadlines:",
    "The city council met on Tuesday evening to discuss the new budget for public transport and road repairs",
    "Python is a popular programming language because it is easy to read. For example, a list comprehension",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--card", default="bolt")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--out", default="results/mpc_agreement.json")
    p.add_argument("--sites", action="store_true", help="also KS per layer and site, 2PC vs emulator errors")
    a = p.parse_args()
    torch.set_num_threads(1)
    from privinf.cards import protocol_card
    from privinf.models import load_model
    from privinf.mpc.generation import greedy_twin, teacher_forced
    from privinf.mpc.model import ModelWeights
    from privinf.mpc.plain import plain_forward
    from privinf.mpc.session import score_2pc

    card = protocol_card(a.card)
    model, tok = load_model(a.model)
    w = ModelWeights.from_model(model)
    seqs, starts = [], []
    for text in PROMPTS[:a.prompts]:
        ids = [int(i) for i in tok(text).input_ids[:a.prompt_tokens]]
        cont, _ = greedy_twin(w, ids, a.new_tokens, card)
        seqs.append(ids + cont[:-1])
        starts.append(len(ids) - 1)
    t0 = time.time()
    logits, res = score_2pc(a.model, seqs, a.card, timeout_s=300, protocol_timeout_s=7200, sites=a.sites,
                            progress=lambda s, of, rec: print(f"sequence {s}/{of}: {rec['wall_s']:.1f} s, "
                                                              f"{rec['rounds']} rounds", flush=True))
    wall = time.time() - t0
    agree = {"twin": [], "emulator": [], "clean": []}
    diffs = {"twin": 0.0, "emulator": 0.0, "clean": 0.0}
    for seq, st, got in zip(seqs, starts, logits):
        got = got[st:]  # (new_tokens, V)
        refs = {"twin": plain_forward(w, seq, card)[st:], "emulator": teacher_forced(model, seq, st, card),
                "clean": teacher_forced(model, seq, st)}
        for k, ref in refs.items():
            agree[k] += (ref.argmax(-1) == got.argmax(-1)).tolist()
            diffs[k] = max(diffs[k], float((ref - got).abs().max()))
    report = {"card": a.card, "prompts": len(seqs), "new_tokens": a.new_tokens, "positions": len(agree["twin"]),
              "top1_agreement_with_2pc": {k: sum(v) / len(v) for k, v in agree.items()},
              "max_abs_logit_diff_vs_2pc": diffs, "offline": res.offline, "forwards": res.steps, "session_s": wall}
    if a.sites:
        report["ks_per_layer"] = site_ks(model, seqs, card, res.check, w.meta["L"])
        print(ks_table(report["ks_per_layer"]))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("positions", "top1_agreement_with_2pc", "max_abs_logit_diff_vs_2pc")},
                     indent=1))


def site_ks(model, seqs, card, check: dict, layers: int) -> list[dict]:
    """Per layer and site: KS between 2PC's and the emulator's errors against the clean model."""
    from privinf.emulator import capture_sites
    from privinf.errormodel import ks_two_sample
    from privinf.profile import emulator_errors

    batches = [torch.tensor([s]) for s in seqs]
    clean = capture_sites(model, batches, list(range(layers)))
    emu = emulator_errors(model, batches, card, list(range(layers)), {}, every_layer=True)
    rows = []
    for layer in range(layers):
        row = {"layer": layer}
        for site in ("up", "down"):
            mpc = torch.cat([check[f"seq{i}.L{layer}.{site}"] for i in range(len(seqs))]) - clean[(layer, site)]
            ks = ks_two_sample(mpc.numpy(), emu[(layer, site)].numpy())
            row[site] = {"ks": ks["ks"], "p": ks["p"], "std_2pc": float(mpc.std()),
                         "std_emulator": float(emu[(layer, site)].std())}
        rows.append(row)
    return rows


def ks_table(rows: list[dict]) -> str:
    from privinf.report import table

    return table(["layer", "KS up", "err std up 2PC / emu", "KS down", "err std down 2PC / emu"],
                 [[r["layer"], r["up"]["ks"], f"{r['up']['std_2pc']:.4g} / {r['up']['std_emulator']:.4g}",
                   r["down"]["ks"], f"{r['down']['std_2pc']:.4g} / {r['down']['std_emulator']:.4g}"] for r in rows])


if __name__ == "__main__":
    main()
