"""``privinf party``: run one party of the two-party MLP-block protocol (light imports here)."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--rank", type=click.IntRange(0, 2), required=True,
              help="0: holds the input hidden states; 1: holds the weights; 2: triple dealer (--provider ttp)")
@click.option("--peer", required=True, help="HOST:PORT where party 0 listens (all parties give the same)")
@click.option("--card", "cards", multiple=True, required=True, help="protocol card(s), run in this order")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False),
              help="rank 0: safetensors file with tensor 'x' (T, C)")
@click.option("--weights", "weights_path", type=click.Path(exists=True, dir_okay=False),
              help="rank 1: MLP block weights saved by MLPBlock.save (safetensors)")
@click.option("--model", "model_name", default=None,
              help="instead of --input/--weights: take them from this model card or local folder")
@click.option("--layer", default=0, show_default=True, help="with --model: the decoder layer's MLP block")
@click.option("--prompt", default="Explain how private inference keeps a user's prompt secret from the server "
              "that runs the language model, step by step.", help="with --model, rank 0: the prompt")
@click.option("--tokens", default=16, show_default=True, help="with --model, rank 0: prompt tokens")
@click.option("--out", "out_dir", default="results/party", show_default=True,
              help="folder for cost-rank<r>.json and (rank 0) <card>.safetensors outputs")
@click.option("--provider", type=click.Choice(["tfp", "ttp"]), default="tfp", show_default=True,
              help="Beaver triples: tfp = party 0 generates them; ttp = a third process (rank 2)")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="seconds to wait for the peer")
@click.option("--protocol-timeout", "protocol_timeout_s", default=600.0, show_default=True,
              help="seconds the protocol may run once connected")
@click.option("--threads", default=1, show_default=True, help="torch threads for this party")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 100),
              help="run each card N times and report the median wall time (both parties must agree)")
def party(rank, peer, cards, input_path, weights_path, model_name, layer, prompt, tokens, out_dir, provider, timeout_s,
          protocol_timeout_s, threads, repeat):
    """Run one party of the CrypTen two-party MLP block; the other party runs the same command.

    \b
    Example (two terminals or two machines; party 0 listens on the address):
      privinf party --rank 0 --peer 10.0.0.5:29500 --card bolt --input x.safetensors
      privinf party --rank 1 --peer 10.0.0.5:29500 --card bolt --weights block.safetensors

    \b
    With --model each party extracts its own data (rank 0: the prompt's hidden states
    entering layer LAYER's MLP block; rank 1: that block's weights):
      privinf party --rank 0 --peer 127.0.0.1:29500 --card puma --model smollm2-135m-instruct
      privinf party --rank 1 --peer 127.0.0.1:29500 --card puma --model smollm2-135m-instruct
    """
    from privinf import validate

    validate.peer(peer)
    validate.protocol_cards(cards, backend="crypten")
    for value, option in ((timeout_s, "--timeout"), (protocol_timeout_s, "--protocol-timeout")):
        validate.positive(value, option)
    validate.at_least(threads, 1, "--threads")
    if model_name and rank in (0, 1) and not (input_path if rank == 0 else weights_path):
        validate.layer(layer, validate.model(model_name))
        input_path, weights_path = _from_model(rank, model_name, layer, prompt, tokens, out_dir)
    if rank == 0 and not input_path:
        raise click.UsageError("rank 0 needs --input (the hidden states) or --model")
    if rank == 1 and not weights_path:
        raise click.UsageError("rank 1 needs --weights (the MLP block) or --model")
    if rank == 2 and provider != "ttp":
        raise click.UsageError("rank 2 is the triple dealer of --provider ttp")
    from privinf.mpc.party import PartyConfig, main

    cfg = PartyConfig(rank=rank, peer=peer, cards=tuple(cards), out_dir=out_dir, input_path=input_path,
                      weights_path=weights_path, provider=provider, timeout_s=timeout_s,
                      protocol_timeout_s=protocol_timeout_s, threads=threads, repeat=repeat)
    code = main(cfg)
    if code == 0 and rank == 0:
        click.echo(f"party 0: outputs and costs in {out_dir}")
    sys.exit(code)


def _from_model(rank: int, model_name: str, layer: int, prompt: str, tokens: int, out_dir: str):
    """Write this party's input (rank 0) or weights (rank 1) from a model; returns (input, weights) paths."""
    from pathlib import Path

    from safetensors.torch import save_file

    from privinf.emulator.measure import block_and_input
    from privinf.models import load_model

    block, x = block_and_input(*load_model(model_name), prompt, layer, tokens)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        path = folder / "input.safetensors"
        save_file({"x": x.contiguous()}, str(path))
        return str(path), None
    path = folder / "block.safetensors"
    block.save(path)
    return None, str(path)
