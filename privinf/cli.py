"""The ``privinf`` command line. Each command parses options and calls one library function;
heavy libraries (torch, transformers, crypten, tenseal) are imported inside the commands so
``privinf --help`` stays fast."""

from __future__ import annotations

import click

from privinf.errors import PrivinfError


class _Group(click.Group):
    """Prints a PrivinfError as one line ("Error: <what to fix>") and exits 1, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PrivinfError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="privinf")
def main():
    """privinf: do the activation approximations of private inference break LLM safety?

    \b
    Examples:
      privinf cards                 # protocol and model cards with the paper's figures
      privinf demo                  # run the default model's MLP block under each card
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
@click.option("--card", "card_names", multiple=True, help="protocol card(s); default: every card")
@click.option("--prompt", default="Explain how private inference keeps a user's prompt secret.", show_default=True)
@click.option("--tokens", default=16, show_default=True, help="number of prompt tokens fed to the block")
@click.option("--threads", default=1, show_default=True, help="torch threads")
def demo(model_name, layer, card_names, prompt, tokens, threads):
    """Run one MLP block of a real model under each protocol card and compare with the exact block.

    The block's input is the real hidden state of a short prompt at layer LAYER. The table shows
    the error of each card's plaintext emulation at the two sites and at the block output.

    \b
    Example:
      privinf demo --card bolt --card puma --layer 2
    """
    import torch

    from privinf.demo import run_plaintext_demo

    torch.set_num_threads(threads)
    click.echo(run_plaintext_demo(model_name, layer, list(card_names), prompt, tokens))


# Feature commands live in privinf/commands/<feature>.py (light imports at module level).
# Each helper adds exactly one line here for its command:
# --- commands ---
from privinf.commands.bench import bench  # noqa: E402

main.add_command(bench)
# --- end commands ---


if __name__ == "__main__":
    main()
