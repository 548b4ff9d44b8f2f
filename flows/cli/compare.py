"""`ebmops compare BASELINE.json CANDIDATE.json [--gates gates.yaml] [--html out.html]`.

Registered on the main app in flows/cli/app.py with `app.command("compare")(compare_command)`.
Exit status: 0 when every gate passes, 1 when a gate fails, 2 for unusable input (a missing or
invalid report or gates file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from flows.cli.summary import print_comparison

DEFAULT_GATES_PATH = Path(__file__).resolve().parents[1] / "pipeline" / "configs" / "gates.yaml"

EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2


def compare_command(
    baseline: Path = typer.Argument(..., help="Evaluation report JSON of the current model (e.g. the champion's)."),
    candidate: Path = typer.Argument(..., help="Evaluation report JSON of the model that would replace it."),
    gates: Optional[Path] = typer.Option(
        DEFAULT_GATES_PATH, "--gates", help="Gates YAML (default: flows/pipeline/configs/gates.yaml)."
    ),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the side-by-side comparison as one HTML file."),
    output_json: Optional[Path] = typer.Option(
        None, "--json", help="Also write the comparison (verdicts, deltas, both reports) as JSON."
    ),
) -> None:
    """Compare two evaluation reports: metric deltas (candidate - baseline) with paired bootstrap
    intervals where both scored the same inputs, and a verdict per gate. Exits 1 when a gate fails."""
    from evaluation.compare import Gates, compare_reports
    from evaluation.render.comparison_page import write_comparison_html

    console = Console()
    base_report = _read_report(baseline, "baseline", console)
    cand_report = _read_report(candidate, "candidate", console)
    gates_path = gates if gates is not None else DEFAULT_GATES_PATH
    if not gates_path.is_file():
        _fail(console, f"gates file {gates_path} does not exist")
    try:
        gate_config = Gates.from_yaml(gates_path)
    except ValueError as error:
        _fail(console, f"invalid gates file: {error}")

    comparison = compare_reports(base_report, cand_report, gate_config)
    print_comparison(comparison, console, baseline, candidate, gates_path)
    if html is not None:
        written = write_comparison_html(comparison, html)
        console.print(f"HTML: {escape(str(written))}")
    if output_json is not None:
        written = comparison.write_json(output_json)
        console.print(f"JSON: {escape(str(written))}")
    if not comparison.passed:
        failed = sorted({v.gate for v in comparison.failed})
        console.print(f"[bold red]FAILED[/bold red]: gate(s) {', '.join(failed)} failed")
        raise typer.Exit(code=EXIT_GATE_FAILED)
    console.print("[bold green]PASSED[/bold green]: every gate passed")


def _read_report(path: Path, role: str, console: Console):
    from evaluation.report import EvalReport

    if not path.exists():
        _fail(console, f"{role} report {path} does not exist")
    if not path.is_file():
        _fail(console, f"{role} report {path} is not a file")
    try:
        return EvalReport.read_json(path)
    except json.JSONDecodeError as error:
        _fail(console, f"{role} report {path} is not valid JSON: {error}")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        _fail(console, f"{role} report {path} is not a valid evaluation report: {error}")


def _fail(console: Console, message: str) -> None:
    from flows.cli.summary import refuse

    refuse(message, code=EXIT_BAD_INPUT)

