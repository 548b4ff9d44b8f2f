"""`ebmops monitor --once DIR`: one monitoring pass over a folder of traffic batches, printed as a table.

Registered on the main app in flows/cli/app.py with `app.command("monitor")(monitor_command)`.
Exit status:

- 0: the pass ran and no batch raised an alarm (nothing new is fine);
- 1: alarm: a batch of this pass (or one an interrupted pass left pending) raised an alarm;
- 2: error: unusable input (not a folder, an unreadable folder, a missing model, alias or version, a
  bad URI, an unreadable monitoring state), any unexpected failure of the pass (one line on stderr),
  or a batch file quarantined in this pass when no alarm was raised (the other files are processed;
  an alarm takes precedence, the quarantine lines are printed either way).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flows.cli.summary import print_monitor_summary
from flows.guard.names import DEFAULT_CHAMPION_URI

EXIT_OK = 0
EXIT_ALARM = 1
EXIT_BAD_INPUT = 2
EXIT_ERROR = 2


def _fail(message: str) -> typer.Exit:
    """Print one line on stderr; the caller raises the returned Exit (status 2)."""
    Console(stderr=True, soft_wrap=True).print(f"[red]monitoring failed: {escape(message)}[/red]")
    return typer.Exit(EXIT_ERROR)


def _print_triage(entries: list[dict]) -> None:
    """Per batch with flagged rows: the first few, each with its nearest training examples."""
    from flows.monitoring.triage import format_triage

    lines = format_triage(entries)
    if lines:
        console = Console(soft_wrap=True)
        console.print("[bold]Flagged rows and their nearest training examples[/bold]")
        for line in lines:
            console.print(escape(line), highlight=False)


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
    when the sequential detector fires. Already-processed files are skipped; bad files are moved to
    DIRECTORY/quarantine/. Exit 0: no alarm, 1: alarm, 2: error or a file quarantined."""
    from flows.monitoring.monitor import MonitorConfig, load_state, monitor, one_line, resolve_model, state_path

    if not once:
        raise _fail("only --once is supported: schedule `ebmops monitor --once DIR` (or the flow) instead")
    directory = Path(directory)
    if not directory.is_dir():
        raise _fail(f"not a folder: {directory}")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise _fail(f"cannot read the folder {directory} (permission denied)")
    config = MonitorConfig(
        model_uri=model_uri,
        expected_run_length=expected_run_length,
        text_column=text_column,
        window=window,
        trigger_retraining=trigger_retraining,
    )
    try:
        # before the flow: a missing model or an unreadable state is one line, not a failed flow run
        name, version = resolve_model(model_uri)
        load_state(state_path(name, version), name, version, config)
        summary = monitor(directory, config)
        print_monitor_summary(summary, Console())
        _print_triage(summary.get("triage") or [])
    except (KeyboardInterrupt, typer.Exit):
        raise
    except (LookupError, ValueError, FileNotFoundError) as error:
        raise _fail(one_line(error)) from None
    except Exception as error:  # noqa: BLE001 - any crash is exit 2 (1 means "alarm")
        raise _fail(f"{type(error).__name__}: {one_line(error)}") from None
    alarm = summary.get("alarm", any(b["alarm"] for b in summary["new_batches"]))
    if alarm:
        raise typer.Exit(EXIT_ALARM)
    if summary.get("quarantined"):
        raise typer.Exit(EXIT_BAD_INPUT)
