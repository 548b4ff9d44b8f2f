"""`ebmops monitor --once DIR`: one monitoring pass over a folder of traffic batches, printed as a table.

Registered on the main app in flows/cli/app.py with `app.command("monitor")(monitor_command)`.
Exit status: 0 without alarm, 1 when a batch of this pass raised an alarm, 2 for unusable input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flows.cli.summary import print_monitor_summary
from flows.guard.names import DEFAULT_CHAMPION_URI

EXIT_ALARM = 1
EXIT_BAD_INPUT = 2


def monitor_command(
    directory: Annotated[Path, typer.Argument(help="Folder of traffic batch files (Parquet or CSV), one batch per file.")],
    model_uri: Annotated[str, typer.Option("--model-uri", help="Model to monitor (alias or version URI).")] = DEFAULT_CHAMPION_URI,
    once: Annotated[bool, typer.Option("--once/--no-once", help="Run one pass and exit (the only mode so far).")] = True,
    expected_run_length: Annotated[
        float, typer.Option("--expected-run-length", help="Mean number of batches between false alarms (at least).")
    ] = 150.0,
    text_column: Annotated[str, typer.Option("--text-column", help="Text column of the batches (text guards).")] = "text",
    window: Annotated[int, typer.Option("--window", help="Batches pooled in the sliding window.")] = 10,
    trigger_retraining: Annotated[
        bool, typer.Option("--trigger-retraining/--no-trigger-retraining", help="On alarm, start the retraining deployment.")
    ] = False,
) -> None:
    """Score the new batch files in DIRECTORY with the model, print per-batch statistics, and alarm
    when the sequential detector fires. Already-processed files are skipped."""
    from flows.monitoring.monitor import MonitorConfig, monitor

    console = Console()
    if not once:
        console.print("[red]only --once is supported: schedule `ebmops monitor --once DIR` (or the flow) instead[/red]")
        raise typer.Exit(EXIT_BAD_INPUT)
    if not Path(directory).is_dir():
        console.print(f"[red]not a folder: {escape(str(directory))}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT)
    config = MonitorConfig(
        model_uri=model_uri,
        expected_run_length=expected_run_length,
        text_column=text_column,
        window=window,
        trigger_retraining=trigger_retraining,
    )
    try:
        summary = monitor(Path(directory), config)
    except (LookupError, ValueError, FileNotFoundError) as error:
        console.print(f"[red]monitoring failed: {escape(str(error))}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    print_monitor_summary(summary, console)
    if any(b["alarm"] for b in summary["new_batches"]):
        raise typer.Exit(EXIT_ALARM)

