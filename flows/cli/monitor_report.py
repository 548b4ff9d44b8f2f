"""`ebmops monitor-report [--model NAME] [--output monitoring.html]`: the monitoring report as HTML.

Registered on the main app in flows/cli/app.py with `app.command("monitor-report")(monitor_report_command)`.
Prints one line saying where it wrote; exit 2 with one line on stderr when there is no monitoring
state yet (or a state cannot be read, or the page cannot be written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

EXIT_ERROR = 2


def _fail(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[red]monitoring report failed: {escape(message)}[/red]")
    return typer.Exit(EXIT_ERROR)


def monitor_report_command(
    model: Annotated[Optional[str], typer.Option("--model", help="Registered model name (default: every monitored model).")] = None,
    output: Annotated[Path, typer.Option("--output", help="Where to write the HTML page.")] = Path("monitoring.html"),
) -> None:
    """Write the monitoring report: flag rate, problem rates among accepted and flagged inputs, alarms,
    retrains, promotions and rollbacks on one time axis, per model version."""
    from flows.monitoring.monitor import one_line
    from flows.monitoring.report import write_report

    try:
        path, report = write_report(output, model)
    except (KeyboardInterrupt, typer.Exit):
        raise
    except (LookupError, ValueError, OSError) as error:
        raise _fail(one_line(error)) from None
    except Exception as error:  # noqa: BLE001 - one line for the user
        raise _fail(f"{type(error).__name__}: {one_line(error)}") from None
    n_batches = sum(len(v.batches) for v in report.versions)
    Console(soft_wrap=True).print(
        f"wrote the monitoring report to {escape(str(path))} "
        f"({len(report.versions)} model version(s), {n_batches} batch(es), {len(report.events)} event(s))"
    )
