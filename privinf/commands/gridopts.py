"""``--workers`` and ``--ray-address`` for the multi-configuration safety commands (sweep, layers,
mva, compare, attack), and the harness every safety command builds from its options.

Without these options nothing changes and Ray is not imported. With them, one pool of Ray actors
(``privinf.safety.grid.Pool``) serves the whole command: the driver keeps a harness without model
weights, and every configuration runs on a worker that loaded the model once.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from privinf import validate

POOL = "privinf.grid.pool"  # click context meta key: one pool per command


def _workers(ctx, param, value):
    return None if value is None else validate.at_least(value, 1, "--workers")


def _address(ctx, param, value):
    if value is not None:
        from privinf.safety.grid import parse_address  # light: Ray is imported when a pool starts

        parse_address(value)
    return value


def grid_options(f):
    """Add ``--workers`` and ``--ray-address`` (see ``privinf.safety.grid``)."""
    f = click.option("--ray-address", default=None, metavar="ADDR", callback=_address,
                     help="run the configurations on a Ray cluster (HOST:PORT of `ray start --head`, "
                          "ray://HOST:10001 or auto); --workers defaults to its CPUs (GPUs where it has them)")(f)
    return click.option("--workers", type=int, default=None, callback=_workers,
                        help="run the configurations on N Ray workers (a local Ray unless --ray-address), each "
                             "loading the model once with --threads torch threads")(f)


def harness_kwargs(o: dict) -> dict:
    """``load_harness`` keyword arguments (all but the model and weights) from a command's options."""
    bl = o["benign_limit"]
    return dict(model_path=o["model_path"], harmful=o["prompts"], limit=o["limit"] or None,
                benign_limit=None if bl < 0 else bl, ppl_tokens=o["ppl_tokens"], ppl_window=o["ppl_window"],
                store_path=Path(o["results_dir"]).absolute() / "safety" / "generations.jsonl",
                batch_size=o["batch_size"], judge_path=o["judge_path"], nll_threshold=o["nll_threshold"],
                train_prompts=o["train_prompts"] or None, progress=o["progress"])


def worker_harness(model: str, kwargs: dict, weights):
    """What a grid worker loads for ``weights`` (no progress bars: the driver shows one)."""
    from privinf.safety.runner import load_harness

    return load_harness(model, weights=weights, **(kwargs | {"progress": False}))


def pool(o: dict):
    """The command's worker pool (started on first use, closed with the command), or None."""
    if o.get("workers") is None and not o.get("ray_address"):
        return None
    ctx = click.get_current_context()
    if POOL not in ctx.meta:
        from privinf.safety.grid import Pool

        factory = functools.partial(worker_harness, o["model_name"], harness_kwargs(o))
        ctx.meta[POOL] = p = Pool(factory, o["workers"], o["threads"], o.get("ray_address"))
        ctx.call_on_close(p.close)
    return ctx.meta[POOL]


def harness(o: dict):
    """The harness for a safety command's options ``o``; with a pool, a driver harness without the
    model (its evaluations run on the pool's workers)."""
    import torch

    from privinf.safety.runner import load_harness

    torch.set_num_threads(o["threads"])
    p = pool(o)
    h = load_harness(o["model_name"], weights=o["weights"], load_weights=p is None, **harness_kwargs(o))
    h.pool = p
    return h
