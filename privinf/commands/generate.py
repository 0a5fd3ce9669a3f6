"""``privinf generate``: private generation with the whole model (light imports here)."""

from __future__ import annotations

import click

DEFAULT_PROMPT = "Explain how private inference keeps a user's prompt secret from the server."


@click.command()
@click.option("--prompt", default=DEFAULT_PROMPT, show_default=True, help="the client's prompt")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(1, 512),
              help="tokens to generate (the count is public: 2PC runs every step, the text is cut at EOS)")
@click.option("--card", default="bolt", show_default=True, help="protocol card (an MPC card for --backend crypten)")
@click.option("--model", "model_name", default="smollm2-135m-instruct", show_default=True,
              help="model card name or local Hugging Face folder (Llama family)")
@click.option("--weights", default=None, help="PEFT LoRA adapter folder, merged into the model (the server's)")
@click.option("--backend", type=click.Choice(["plaintext", "crypten"]), default="crypten", show_default=True,
              help="plaintext: the card's whole-model arithmetic in plaintext (emulator exact mode); "
                   "crypten: real two-party computation, two processes on loopback")
@click.option("--compare", is_flag=True, help="also show the clean model and the emulator, with teacher-forced "
              "top-1 agreement and the largest logit difference against 2PC")
@click.option("--chat/--no-chat", default=True, show_default=True, help="wrap the prompt in the chat template")
@click.option("--prompt-tokens", default=None, type=click.IntRange(1), help="keep only the first N prompt tokens")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="seconds to wait for the peer")
@click.option("--protocol-timeout", "protocol_timeout_s", default=3600.0, show_default=True,
              help="seconds the whole two-party run may take once connected (watchdog)")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="loopback port (default: a free one)")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64), help="torch threads per party")
def generate(prompt, max_new_tokens, card, model_name, weights, backend, compare, chat, prompt_tokens, timeout_s,
             protocol_timeout_s, port, threads):
    """Generate text with the whole model, privately (2PC) or under the card's arithmetic in plaintext.

    With --backend crypten, party 0 (client) holds the prompt, party 1 (server) the weights; the
    weights are secret-shared and masked once (offline), then each token opens only masked
    activations (online). The client learns the last position's logits of every step and picks
    the greedy token itself. Prints the text and the offline, prefill and per-token cost.

    \b
    Example:
      privinf generate --prompt "How do vaccines work?" --max-new-tokens 16 --card bolt
      privinf generate --backend plaintext --card bolt --compare
      privinf generate --compare --prompt-tokens 16 --no-chat --max-new-tokens 8
    """
    from privinf.mpc.generation import run_generate

    click.echo(run_generate(prompt=prompt, max_new_tokens=max_new_tokens, card=card, model_name=model_name,
                            weights=weights, backend=backend, compare=compare, chat=chat, prompt_tokens=prompt_tokens,
                            timeout_s=timeout_s, protocol_timeout_s=protocol_timeout_s, port=port, threads=threads,
                            echo=click.echo, progressbar=click.progressbar))
