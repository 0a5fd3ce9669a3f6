"""``privinf bench``: latency and communication across cards and backends, side by side."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("bench")
@click.option("--quick", is_flag=True, help="run the small grid bench/quick.toml (a few minutes)")
@click.option("--scenario", default="full", show_default=True, help="scenario name in bench/ or a .toml path")
@click.option("--backend", "backends", multiple=True, help="only these backends (repeatable)")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="output folder [default: results/bench/<scenario>-<time>]")
@click.option("--reference", is_flag=True, help="also write bench/reference.{md,json} (the table the README quotes)")
@click.option("--threads", default=1, show_default=True, help="torch threads in this process")
def bench(quick, scenario, backends, out_dir, reference, threads):
    """Latency (median/min/max wall s), MB sent, rounds and depth of the MLP block per card and backend.

    Speedups are against the same backend's no-polynomial baseline measured in the same run, printed
    beside the paper's Table 1 figure. Writes bench.json, bench.md and bench.png.

    \b
    Examples:
      privinf bench --quick
      privinf bench --scenario full --backend crypten --reference
    """
    import dataclasses

    import torch

    from privinf.bench import (EXTRA_HEADERS, HEADERS, extra_rows, load_scenario, markdown, rows, run_bench,
                               scenario_path, write_outputs)
    from privinf.report import table

    from privinf import validate
    from privinf.errors import UsageError

    torch.set_num_threads(threads)
    sc = load_scenario(scenario_path("quick" if quick else scenario))
    validate.layer(sc.layer, validate.model(sc.model, option=f"{sc.path}: field 'model'"), f"{sc.path}: field 'layer'")
    if backends:
        have = sorted({r.backend for r in sc.rows})
        sc = dataclasses.replace(sc, rows=tuple(r for r in sc.rows if r.backend in backends))
        if not sc.rows:
            raise UsageError(f"--backend {', '.join(backends)}: scenario {sc.name} has no grid rows for it; "
                             f"its backends: {', '.join(have)}")
    result = run_bench(sc)
    out_dir = out_dir or Path("results") / "bench" / f"{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = write_outputs(result, out_dir)
    if reference:
        ref = Path(sc.path).resolve().parent
        (ref / "reference.md").write_text(markdown(result))
        (ref / "reference.json").write_text(paths["json"].read_text())
    click.echo(table(HEADERS, rows(result)))
    if extra_rows(result):
        click.echo("\n" + table(EXTRA_HEADERS, extra_rows(result)))
    click.echo(f"\nwrote {paths['json']}, {paths['md']}, {paths['png']}")
