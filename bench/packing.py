"""Naive per-token CKKS matmul vs privinf's packed layout, measured side by side.

    .venv/bin/python bench/packing.py            # 576 x 1536 (SmolLM2-135M MLP), 64 tokens
    .venv/bin/python bench/packing.py --tokens 16 --naive-tokens 1

Three measurements on one machine, in one run:
  naive   TenSEAL's ``ckks_vector.matmul``: one token per ciphertext, the up projection
          (576 -> 1536) on ``--naive-tokens`` tokens, N=8192 (depth 1 + TenSEAL's rotations).
  packed  the same projection on ``--tokens`` tokens packed 64 per ciphertext slot grid
          (diagonal BSGS, privinf.fhe.circuit), N=8192, depth 1.
  block   the whole MLP block (gate, up, NEXUS-core SiLU x up, down) on ``--tokens`` tokens
          with privinf's TenSEAL backend (N=16384, depth 6), client + server, bytes included.
The naive block cost per token is estimated as 3 x its matmul (gate, up and down are all
576 x 1536); the activation is not even counted for it. Weights are random with the model's
shapes (timing does not depend on their values). Prints a table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def naive_matmul(w: torch.Tensor, xs: torch.Tensor) -> float:
    """Seconds for TenSEAL's vector-matrix product, one encrypted token at a time."""
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2 ** 40
    ctx.generate_galois_keys()
    mat = w.T.tolist()  # (in, out): TenSEAL computes vec @ mat
    start = time.perf_counter()
    for row in xs:
        out = ts.ckks_vector(ctx, row.tolist()).matmul(mat)
    elapsed = time.perf_counter() - start
    err = max(abs(a - b) for a, b in zip(out.decrypt(), (xs[-1] @ w.T).tolist()))
    assert err < 1e-3, f"naive matmul is wrong (max error {err})"
    return elapsed


def packed_matmul(w: torch.Tensor, xs: torch.Tensor) -> float:
    """Seconds for the same projection with tokens packed into the slot grid (server side only)."""
    from privinf.fhe.circuit import Layout
    from privinf.fhe.params import choose_params
    from privinf.fhe.protocol import Client, Server, dump

    params = choose_params(1)
    layout = Layout.choose(params.slots, xs.shape[0], tuple(w.shape))
    client = Client(params, layout)
    server = Server(client.public_bundle())
    cts = server.load(client.encrypt(xs))
    start = time.perf_counter()
    ys = server.ev.matmul(cts, w, layout)
    elapsed = time.perf_counter() - start
    got = client.decrypt(dump(ys), xs.shape[0], w.shape[0])
    err = float((got - xs @ w.T).abs().max())
    assert err < 1e-3, f"packed matmul is wrong (max error {err})"
    return elapsed


def packed_block(hidden: int, inter: int, xs: torch.Tensor) -> dict:
    from privinf.backends.base import get_backend
    from privinf.blocks import MLPBlock
    from privinf.cards import protocol_card

    g = torch.Generator().manual_seed(1)
    block = MLPBlock(w_up=torch.randn(inter, hidden, generator=g) / hidden ** 0.5,
                     w_down=torch.randn(hidden, inter, generator=g) / inter ** 0.5,
                     w_gate=torch.randn(inter, hidden, generator=g) / hidden ** 0.5,
                     norm_weight=torch.ones(hidden), activation="silu")
    res = get_backend("tenseal").run(block, xs, protocol_card("nexus-core"))
    return {"wall_s": res.cost.wall_s, "server_s": res.cost.per_party[1]["wall_s"],
            "mb_to_server": res.cost.per_party[0]["bytes_sent"] / 1e6,
            "mb_to_client": res.cost.per_party[1]["bytes_sent"] / 1e6,
            "ring_dim": res.cost.ring_dim, "depth": res.cost.depth, **{
                k: res.cost.extra[k] for k in ("rotations", "plain_mults", "cipher_mults")}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--inter", type=int, default=1536)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--naive-tokens", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/bench_packing.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(args.inter, args.hidden, generator=g) / args.hidden ** 0.5
    xs = torch.randn(args.tokens, args.hidden, generator=g)

    naive = naive_matmul(w, xs[:args.naive_tokens]) / args.naive_tokens
    packed = packed_matmul(w, xs) / args.tokens
    block = packed_block(args.hidden, args.inter, xs)
    block_tok = block["wall_s"] / args.tokens
    rows = [
        ("naive ckks_vector.matmul", args.naive_tokens, naive, 3 * naive),
        ("packed diagonal BSGS", args.tokens, packed, None),
        ("packed, whole block (tenseal backend)", args.tokens, None, block_tok),
    ]
    print(f"{args.hidden} x {args.inter} projections, {platform.processor() or platform.machine()}, "
          f"torch threads {args.threads}")
    print(f"{'path':40s} {'tokens':>6s} {'matmul s/token':>15s} {'block s/token':>14s}")
    for name, t, m, b in rows:
        print(f"{name:40s} {t:6d} {'' if m is None else f'{m:.3f}':>15s} {'' if b is None else f'{b:.3f}':>14s}")
    print(f"speed-up per token: matmul {naive / packed:.0f}x; block {3 * naive / block_tok:.0f}x "
          f"(naive block = 3 naive matmuls, activation not counted)")
    result = {"hidden": args.hidden, "inter": args.inter, "tokens": args.tokens,
              "naive_tokens": args.naive_tokens, "naive_matmul_s_per_token": naive,
              "packed_matmul_s_per_token": packed, "block_s_per_token": block_tok, "block": block,
              "matmul_speedup": naive / packed, "block_speedup": 3 * naive / block_tok}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
