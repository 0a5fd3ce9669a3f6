"""The ``privinf`` command line. Each command parses options and calls one library function;
heavy libraries (torch, transformers, crypten, tenseal) are imported inside the commands so
``privinf --help`` stays fast."""

from __future__ import annotations

import os

import click

from privinf.errors import PrivinfError, UsageError


class _Group(click.Group):
    """Prints a PrivinfError as one line ("Error: <what to fix>") and exits with its ``exit_code``
    (2: usage error, 1: runtime fault), without a traceback unless ``PRIVINF_DEBUG=1``."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PrivinfError as exc:
            if os.environ.get("PRIVINF_DEBUG", "") not in ("", "0"):
                raise
            err = click.ClickException(" ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()))
            err.exit_code = exc.exit_code
            raise err from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="privinf")
def main():
    """privinf: do the activation approximations of private inference break LLM safety?

    \b
    Examples:
      privinf cards                 # protocol and model cards with the paper's figures
      privinf demo                  # the default model's MLP block as a real 2PC under each MPC card
      privinf demo --backend tenseal            # the same block under CKKS (client keeps the key)
      privinf profile --card bolt --check       # error at the two sites, fits, emulator fidelity
      privinf safety eval --card bolt           # ASR / PPL / over-refusal under a card, paired vs clean
      privinf bench --quick                     # latency and MB per card and backend
    """


@main.command()
@click.option("--kind", type=click.Choice(["protocols", "models", "all"]), default="all", show_default=True)
def cards(kind):
    """List protocol and model cards with their reference figures.

    \b
    Example:
      privinf cards --kind protocols
    """
    from privinf.report import model_cards_table, protocol_cards_table

    if kind in ("protocols", "all"):
        click.echo(protocol_cards_table())
    if kind in ("models", "all"):
        if kind == "all":
            click.echo()
        click.echo(model_cards_table())


@main.command()
@click.option("--model", "model_name", default="smollm2-135m-instruct", show_default=True,
              help="model card name or local Hugging Face folder")
@click.option("--layer", default=0, show_default=True, help="decoder layer whose MLP block runs")
@click.option("--card", "card_names", multiple=True,
              help="protocol card(s); default: every MPC card (crypten backend) or every card (plaintext)")
@click.option("--prompt", default="Explain how private inference keeps a user's prompt secret from the server "
              "that runs the language model, step by step.", show_default=True)
@click.option("--tokens", default=16, show_default=True, help="number of prompt tokens fed to the block")
@click.option("--backend", type=click.Choice(["crypten", "tenseal", "plaintext"]), default="crypten",
              show_default=True, help="crypten: real two-party computation (two processes on loopback); "
              "tenseal: CKKS, client and server processes (default cards exact, nexus-core; --card nexus runs the full circuit at N=32768, minutes and GBs); "
              "plaintext: emulation only")
@click.option("--provider", type=click.Choice(["tfp", "ttp"]), default="tfp", show_default=True,
              help="Beaver triples from party 0 (tfp) or from a third process (ttp)")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="seconds to wait for a party to connect")
@click.option("--threads", default=1, show_default=True, help="torch threads (per party)")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 100),
              help="crypten: run each card N times, report the median wall time")
def demo(model_name, layer, card_names, prompt, tokens, backend, provider, timeout_s, threads, repeat):
    """Run one MLP block of a real model under each protocol card and compare with the exact block.

    The block's input is the real hidden state of a short prompt at layer LAYER. With the crypten
    backend each card runs as a two-party computation (party 0 holds the hidden states, party 1 the
    weights) and the table shows its error against the exact block and against the card's plaintext
    emulation, with wall time, MB sent and communication rounds (total, and the activation alone).

    \b
    Example:
      privinf demo --card crypten --card bolt --card puma
      privinf demo --backend plaintext --layer 2
      privinf demo --backend tenseal --card nexus-core --tokens 64
    """
    from privinf import validate

    validate.layer(layer, validate.model(model_name))
    validate.protocol_cards(card_names, backend=backend)
    for value, option in ((tokens, "--tokens"), (threads, "--threads")):
        validate.at_least(value, 1, option)
    validate.positive(timeout_s, "--timeout")
    if not prompt.strip():
        raise UsageError("--prompt '': give a prompt (its first --tokens tokens feed the block)")
    import torch

    torch.set_num_threads(threads)
    if backend == "plaintext":
        from privinf.demo import run_plaintext_demo

        click.echo(run_plaintext_demo(model_name, layer, list(card_names), prompt, tokens))
        return
    from privinf.demo import run_mpc_demo

    if backend == "tenseal":
        from privinf.demo import run_tenseal_demo

        click.echo(run_tenseal_demo(model_name, layer, list(card_names), prompt, tokens, timeout_s))
        return
    click.echo(run_mpc_demo(model_name, layer, list(card_names), prompt, tokens, provider, timeout_s, repeat))


# Feature commands live in privinf/commands/<feature>.py (light imports at module level).
# Each helper adds exactly one line here for its command:
# --- commands ---
from privinf.commands.mpc import party  # noqa: E402

main.add_command(party)
from privinf.commands.bench import bench  # noqa: E402

main.add_command(bench)
from privinf.commands.profile import profile  # noqa: E402

main.add_command(profile)
from privinf.commands.safety import safety  # noqa: E402
import privinf.commands.attack  # noqa: E402,F401  (registers `privinf safety attack` on the group above)
import privinf.commands.compare  # noqa: E402,F401  (registers `privinf safety compare`)

main.add_command(safety)
from privinf.commands.align import align  # noqa: E402

main.add_command(align)
from privinf.commands.generate import generate  # noqa: E402

main.add_command(generate)
# --- end commands ---


if __name__ == "__main__":
    main()
