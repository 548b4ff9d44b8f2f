"""`ebmops monitor --once DIR`: one monitoring pass over a folder of traffic batches, printed as a table.

Registered on the main app in flows/cli/app.py with `app.command("monitor")(monitor_command)`.
Exit status: 0 without alarm, 1 when a batch of this pass raised an alarm, 2 for unusable input.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.monitoring.monitor import DEFAULT_MODEL_URI

EXIT_ALARM = 1
EXIT_BAD_INPUT = 2


def monitor_command(
    directory: Annotated[Path, typer.Argument(help="Folder of traffic batch files (Parquet or CSV), one batch per file.")],
    model_uri: Annotated[str, typer.Option("--model-uri", help="Model to monitor (alias or version URI).")] = DEFAULT_MODEL_URI,
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
    print_summary(summary, console)
    if any(b["alarm"] for b in summary["new_batches"]):
        raise typer.Exit(EXIT_ALARM)


def _rate(rate: dict[str, Any] | None) -> str:
    if rate is None or rate.get("rate") is None:
        return "-"
    return f"{rate['rate']:.1%} [{rate['ci_low']:.1%}, {rate['ci_high']:.1%}]"


def _problems(rate: dict[str, Any]) -> str:
    if rate["rate"] is None:
        return "-"
    return f"{rate['problems']}/{rate['n']} = {rate['rate']:.1%} [{rate['ci_low']:.1%}, {rate['ci_high']:.1%}]"


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    title = (
        f"{summary['model_name']} v{summary['model_version']}: {len(summary['new_batches'])} new batch(es), "
        f"alpha {summary['alpha']:g}, alarm when statistic >= log({summary['expected_run_length']:g}) = "
        f"{math.log(summary['expected_run_length']):.2f}"
    )
    table = Table(title=escape(title))
    for column in (
        "batch", "file", "n", "flag rate [CI]", "p (rate > alpha)", "KS", "Wasserstein", "mean p",
        "window flag rate", "sequential", "alarm", "missed problems", "flag precision",
    ):  # fmt: skip
        table.add_column(column, justify="right" if column not in ("file",) else "left")
    for b in summary["new_batches"]:
        stats, window = b["stats"], b["window"]
        table.add_row(
            str(b["index"]),
            escape(b["source"]),
            str(stats["n"]),
            _rate(stats["flag_rate"]),
            f"{stats['flag_rate']['p_value']:.3g}",
            f"{stats['ks_statistic']:.3f}",
            f"{stats['wasserstein']:.3g}",
            f"{stats['mean_p_value']:.3f}",
            f"{window['flag_rate']['rate']:.1%} ({b['window_batches']} b)",
            f"{b['sequential_statistic']:.2f}",
            "[bold red]ALARM[/bold red]" if b["alarm"] else "-",
            _problems(b["feedback"]["accepted"]),
            _problems(b["feedback"]["flagged"]),
        )
    console.print(table)
    overall = summary["overall_flag_rate"]
    fb = summary["overall_feedback"]
    console.print(
        f"all {summary['n_batches']} batches ({summary['n_inputs']} inputs): flag rate {_rate(overall)}; "
        f"missed problems {_problems(fb['accepted'])}; flag precision {_problems(fb['flagged'])}; "
        f"alarms at batches {summary['alarms'] or 'none'}"
    )
    for action in summary.get("actions", []):
        console.print(escape(action))
    if summary.get("mlflow_run_id"):
        console.print(f"MLflow monitoring run: {summary['mlflow_run_id']}; state: {escape(summary.get('state_file', ''))}")
