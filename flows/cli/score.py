"""`ebmops score --model URI --input traffic.parquet --output scores.parquet`: score a Parquet file of
traffic in batches (flows/ops/batch_scoring.py), in-process or, with EBMOPS_DASK_ADDRESS set, split by
row group across Dask workers.

Registered on the main app in flows/cli/app.py with `app.command("score")(score_command)`.
Exit status: 0 scored; 2 bad input (one line on stderr naming the file and column: a missing feature
column, a non-numeric column, NaN / infinite values, an unreadable file, a missing model or alias);
1 any other failure (one line; EBMOPS_DEBUG=1 shows the traceback). No output file is written unless
every row was scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from flows.cli.summary import fail_unexpectedly, prefect_quiet_about, refuse
from flows.guard.names import DEFAULT_CHAMPION_URI


def score_command(
    input_path: Annotated[Path, typer.Option("--input", help="Parquet file of rows with the guard's feature columns.")],
    output_path: Annotated[Path, typer.Option("--output", help="Parquet file to write (energy, p_value, is_ood per row).")],
    model: Annotated[str, typer.Option("--model", help="Guard to score with (models:/<name>@<alias> or models:/<name>/<version>).")] = DEFAULT_CHAMPION_URI,
    batch_rows: Annotated[int, typer.Option("--batch-rows", min=1, help="Rows scored at a time (bounds memory).")] = 65_536,
    id_column: Annotated[
        Optional[str], typer.Option("--id-column", help="Input column copied to the output beside the scores.")
    ] = None,
) -> None:
    """Score every row of INPUT with the guard and write energy, p_value and is_ood per row to OUTPUT,
    streaming row group by row group. EBMOPS_DASK_ADDRESS=local (or a scheduler address) splits the
    work across Dask workers."""
    from flows.guard import registry
    from flows.ops.batch_scoring import BatchInputError, batch_score, check_input, check_paths, load_guard

    refusals = (BatchInputError, LookupError, ValueError, FileNotFoundError, registry.RegistryError)
    try:
        with prefect_quiet_about(refusals):
            # before the flow: a missing model or a file without the guard's columns is one line, not a
            # failed flow run (values are checked while scoring, inside the flow)
            check_paths(input_path, output_path)
            check_input(input_path, load_guard(model).feature_names, id_column)
            summary = batch_score(model, str(input_path), str(output_path), batch_rows, id_column)
    except (KeyboardInterrupt, typer.Exit):
        raise
    except refusals as error:
        refuse(error, "Not scored (no output written)")
    except Exception as error:  # noqa: BLE001 - the CLI reports any failure in one line
        fail_unexpectedly(error, "Scoring failed")
    share = summary.flagged / summary.rows if summary.rows else 0.0
    Console().print(
        f"scored {summary.rows} rows with {summary.model_uri} -> {summary.output_path}: "
        f"{summary.flagged} flagged ({share:.1%}), {summary.rows_per_second:,.0f} rows/s, "
        f"{summary.parts} part(s)"
    )


__all__ = ["score_command"]
