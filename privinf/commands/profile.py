"""``privinf profile``: measure a card's error at the two sites and fit it as in the paper."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("profile")
@click.option("--card", "card_names", multiple=True, required=True, help="protocol card (repeatable)")
@click.option("--backend", default="plaintext", show_default=True,
              help="plaintext, crypten or tenseal: where the block runs under the card")
@click.option("--model", "model_name", default="smollm2-135m-instruct", show_default=True,
              help="model card name or local Hugging Face folder")
@click.option("--layers", default="0,1,2,3,15,29", show_default=True, help="decoder layers, e.g. 0-3,15")
@click.option("--tokens", default=512, show_default=True, help="Wikipedia tokens fed to every layer")
@click.option("--chunk", default=128, show_default=True, help="tokens per text passage")
@click.option("--seed", default=0, show_default=True)
@click.option("--check", is_flag=True,
              help="also run the emulator's exact mode on the same inputs; print the two-sample KS")
@click.option("--propagated", is_flag=True,
              help="also fit the error with the card on every layer at once (emulator), as a whole model sees "
                   "it, and save it as <card>-<backend>-<model>-propagated.json for noise mode")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("results/profiles"),
              show_default=True, help="folder for <card>-<backend>-<model>.json")
@click.option("--markdown", is_flag=True, help="print the summary table (one row per card) as Markdown")
@click.option("--threads", default=1, show_default=True, help="torch threads in this process")
def profile(card_names, backend, model_name, layers, tokens, chunk, seed, check, propagated, out_dir, markdown,
            threads):
    """Error of a card at the two sites (before W_up, before W_down) on real hidden states.

    Every chosen layer's MLP block of the model runs on Wikipedia text under the card on BACKEND
    and exactly (so each block sees clean inputs); the errors are pooled, fitted with a zero-mean
    Gaussian (before W_up) and a Laplace (before W_down), and printed beside the paper's Table 2.
    The profile JSON feeds `emulate(model, "noise", profile=PATH)` and `privinf safety compare
    --profiles`; with --propagated a second JSON holds the error of the card on every layer at once.

    \b
    Examples:
      privinf profile --card bolt --card puma --check
      privinf profile --card iron --backend crypten --layers 0-3 --tokens 64
    """
    from privinf import validate

    info = validate.model(model_name)
    chosen = validate.layer_list(layers, info)
    for value, option in ((tokens, "--tokens"), (chunk, "--chunk"), (threads, "--threads")):
        validate.at_least(value, 1, option)
    validate.protocol_cards(card_names, backend=backend)
    import torch

    from privinf.models import load_model
    from privinf.errormodel import default_path, format_profile, profiles_table
    from privinf.profile import measure_profile

    torch.set_num_threads(threads)
    model, tok = load_model(model_name)
    done = []
    for name in card_names:
        prof = measure_profile(name, backend=backend, model=model, tok=tok, model_name=model_name,
                               layers=chosen, tokens=tokens, chunk=chunk, seed=seed, check=check,
                               propagated=propagated)
        path = prof.save(default_path(prof, out_dir))
        click.echo(format_profile(prof))
        click.echo(f"saved {path}")
        if propagated:
            whole = prof.propagated_profile()
            click.echo(f"saved {whole.save(default_path(whole, out_dir))} (the all-layer error, for noise mode)")
        click.echo("")
        done.append(prof)
    click.echo(profiles_table(done, markdown))
