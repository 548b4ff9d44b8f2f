"""Everything the command line prints as a summary: one module, so every command reads alike.

- `ood_table`, `print_evaluation`: an evaluation report (`ebmops evaluate`);
- `print_pipeline_summary`: a train_and_register result (`ebmops demo`, `ebmops train`);
- `print_comparison`: two reports compared with the gates (`ebmops compare`, `ebmops promote`);
- `print_decision`, `print_history`: promotion / rollback outcomes and the champion's history;
- `print_monitor_summary`: one monitoring pass (`ebmops monitor`).

Each takes the rich Console to print on (a new one when omitted).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# --- refusals: one line on stderr, exit status 2 -----------------------------------------------------

EXIT_BAD_INPUT = 2


def refusal_line(message: object) -> str:
    """`message` (an exception or text) as one line: its lines joined, runs of spaces collapsed."""
    return " ".join(str(message).split()) or type(message).__name__


def print_refusal(message: object, prefix: str = "error") -> None:
    """One line on stderr, never wrapped: `<prefix>: <message>`."""
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    console.print(f"[bold red]{escape(prefix)}:[/bold red] {escape(refusal_line(message))}")


def refuse(message: object, prefix: str = "error", code: int = EXIT_BAD_INPUT):
    """Print the one-line refusal and exit with `code` (2: bad input)."""
    import typer

    print_refusal(message, prefix)
    raise typer.Exit(code=code)


def fail_unexpectedly(error: BaseException, prefix: str) -> None:
    """An unexpected failure as one line and exit 1; with EBMOPS_DEBUG set, the traceback instead."""
    import os

    if os.environ.get("EBMOPS_DEBUG"):
        raise error
    refuse(f"{type(error).__name__}: {error} (EBMOPS_DEBUG=1 shows the traceback)", prefix, code=1)


class QuietRefusals(logging.Filter):
    """Drops Prefect's error records (and their tracebacks) for an expected refusal: bad input is
    reported once, in one line, by the command."""

    def __init__(self, refusals: tuple[type[BaseException], ...]):
        super().__init__()
        self.refusals = refusals
        self.names = tuple(sorted(cls.__name__ for cls in refusals))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.refusals):
            return False
        if record.levelno >= logging.WARNING:
            return not any(name in record.getMessage() for name in self.names)
        return True


@contextmanager
def prefect_quiet_about(refusals: tuple[type[BaseException], ...]) -> Iterator[None]:
    """While a flow runs for the command: Prefect logs nothing about the expected `refusals`."""
    quiet = QuietRefusals(refusals)
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


# --- evaluation reports ---------------------------------------------------------------------------


def ood_table(title: str, report) -> Table:
    """AUROC / FPR95 / AUPR-out per OOD split of an EvalReport."""
    table = Table(title=title)
    for column in ("OOD set", "AUROC", "FPR@95TPR", "AUPR-out", "n"):
        table.add_column(column, justify="left" if column == "OOD set" else "right")
    for split, m in report.ood_metrics.items():
        table.add_row(split, f"{m.auroc:.3f}", f"{m.fpr95:.3f}", f"{m.aupr_out:.3f}", str(m.n_ood))
    return table


def print_evaluation(report, model_uri: str, data_path: Path, report_path: Path, console: Console | None = None) -> None:
    """The `ebmops evaluate` summary of a report written to report_path (HTML beside it)."""
    console = console or Console()
    console.print(ood_table(f"{model_uri}: score = energy, higher = more OOD", report))
    console.print(f"Realised FPR on {data_path.name}: {report.realised_fpr:.3f} (target alpha {report.alpha:.3f})")
    console.print(f"Report: {report_path} and {report_path.with_suffix('.html')}")


def print_pipeline_summary(result, tracking_uri: str, console: Console | None = None) -> None:
    """A train_and_register result: OOD table, realised FPR, the registered version, where to look."""
    from evaluation.report import EvalReport

    console = console or Console()
    report = EvalReport.read_json(result.report_json)
    console.print(ood_table("OOD detection (score = energy, higher = more OOD; OOD is the positive class)", report))
    n_test = report.energy_stats[report.in_distribution_split].n
    console.print(
        f"Realised false-positive rate on held-out in-distribution data: {report.realised_fpr:.3f} "
        f"(target alpha {report.alpha:.3f}, n = {n_test}; threshold {report.threshold:.4g})"
    )
    if report.selection:
        print_selection(report, console)
    registered = result.registered
    console.print(
        f"Registered [bold]{registered.model_name}[/bold] version {registered.version} "
        f"(aliases: {', '.join(registered.aliases)}), run {registered.run_id}"
    )
    if registered.note:
        console.print(escape(registered.note))
    console.print(f"Report: {result.report_html}  (JSON: {result.report_json})")
    if tracking_uri.startswith(("http://", "https://")):
        console.print(f"Browse runs: open {tracking_uri}")
    else:
        console.print(f"Browse runs: mlflow ui --backend-store-uri {tracking_uri}")
    console.print(f"Finished in {result.seconds:.1f} s")


# --- comparison, promotion, rollback, history -----------------------------------------------------


def print_comparison(
    comparison, console: Console | None, baseline_path: Path, candidate_path: Path, gates_path: Path
) -> None:
    """Metric deltas (candidate - baseline) with their intervals, then one verdict per gate."""
    from evaluation.render.tables import comparison_table, gate_table

    console = console or Console()
    console.print(f"Baseline:  {escape(str(baseline_path))} ({escape(comparison.baseline.model_uri or 'unregistered')})")
    console.print(f"Candidate: {escape(str(candidate_path))} ({escape(comparison.candidate.model_uri or 'unregistered')})")
    console.print(f"Gates:     {escape(str(gates_path))}")

    level = f"{comparison.gates.confidence:.0%}"
    deltas = Table(title=f"Metric deltas, candidate - baseline ({level} bootstrap interval; score = energy, OOD positive)")
    for column in ("OOD split", "kind", "metric", "baseline", "candidate", "delta", "interval", "paired", "moved"):
        deltas.add_column(column, justify="right" if column in ("baseline", "candidate", "delta") else "left")
    for row in comparison_table(comparison):
        interval = "n/a" if row["ci_low"] is None else f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
        colour = {"better": "green", "worse": "red"}.get(row["better"])
        moved = f"[{colour}]{row['better']}[/{colour}]" if colour else row["better"]
        deltas.add_row(
            escape(row["split"]), row["kind"], row["label"], f"{row['baseline']:.4f}", f"{row['candidate']:.4f}",
            f"{row['delta']:+.4f}", interval, "yes" if row["paired"] else "no", moved,
        )
    console.print(deltas)

    verdicts = Table(title="Gates")
    for column in ("gate", "split", "result", "detail"):
        verdicts.add_column(column)
    for row in gate_table(comparison):
        result = "[green]PASS[/green]" if row["passed"] else "[bold red]FAIL[/bold red]"
        verdicts.add_row(row["gate"], escape(row["split"]), result, escape(row["message"]))
    console.print(verdicts)
    for note in comparison.notes:
        console.print(f"note: {escape(note)}")


def print_decision(result, console: Console | None = None) -> None:
    """A promotion or rollback outcome (flows.ops.promotion.PromotionResult)."""
    console = console or Console()
    colour = {"promoted": "green", "refused": "red", "noop": "yellow", "rolled_back": "magenta"}[result.decision]
    console.print(f"[bold {colour}]{result.decision.upper()}[/bold {colour}]: {escape(result.message)}")
    console.print(
        f"champion: v{result.champion_before} -> v{result.champion_after}  (challenger v{result.challenger}); "
        f"audit id {result.audit_id}, MLflow run {result.mlflow_run_id}"
    )


def print_history(rows: list[dict], console: Console | None, model_name: str) -> None:
    """The champion's history rows (flows.ops.promotion.champion_history), oldest first."""
    console = console or Console()
    table = Table(title=f"Champion history of {model_name} (oldest first)")
    for column in ("time (UTC)", "action", "decision", "champion", "challenger", "failed gates", "who", "why"):
        table.add_column(column)
    for row in rows:
        before, after = row["champion_before"], row["champion_after"]
        champion = f"v{before} -> v{after}" if before != after else f"v{after} (kept)"
        table.add_row(
            row["time"][:19].replace("T", " "),
            row["action"],
            row["decision"],
            champion,
            f"v{row['challenger']}" if row["challenger"] else "-",
            ", ".join(row["failed_gates"]) or "-",
            escape(str(row["actor"])),
            escape(row["reason"] or "-"),
        )
    console.print(table)


# --- monitoring ---------------------------------------------------------------------------------


def _rate(rate: dict[str, Any] | None) -> str:
    if rate is None or rate.get("rate") is None:
        return "-"
    return f"{rate['rate']:.1%} [{rate['ci_low']:.1%}, {rate['ci_high']:.1%}]"


def _quarantine_line(entry: dict[str, Any]) -> str:
    where = (
        f"moved to {entry['moved_to']}" if entry.get("moved_to") else f"left in place, not moved: {entry.get('move_error')}"
    )
    return f"quarantined {entry['name']} ({where}): {entry['reason']}"


def _problems(rate: dict[str, Any]) -> str:
    if rate["rate"] is None:
        return "-"
    return f"{rate['problems']}/{rate['n']} = {rate['rate']:.1%} [{rate['ci_low']:.1%}, {rate['ci_high']:.1%}]"


def print_monitor_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """One monitoring pass (the dict the monitor flow returns): a row per new batch, then totals."""
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
        console.print(escape(action), soft_wrap=True)
    for item in summary.get("reconciled", []):
        done = [
            "MLflow step logged now" if item["mlflow_logged_now"] else "MLflow step already there",
            "alarm emitted now" if item["alarm_emitted_now"] else None,
        ]
        console.print(
            escape(f"finished batch {item['batch']} ({item['source']}) left pending by an interrupted pass: "
                   + ", ".join(d for d in done if d)),
            soft_wrap=True,
        )  # fmt: skip
    for note in summary.get("notes", []):
        console.print(f"[yellow]{escape(note)}[/yellow]", soft_wrap=True)
    quarantined = summary.get("quarantined", [])
    for entry in quarantined:
        console.print(f"[bold red]{escape(_quarantine_line(entry))}[/bold red]", soft_wrap=True)
    if quarantined:
        console.print(
            f"{len(quarantined)} file(s) quarantined in this pass: "
            + escape(", ".join(e["name"] for e in quarantined)),
            soft_wrap=True,
        )
    if summary.get("mlflow_run_id"):
        console.print(f"MLflow monitoring run: {summary['mlflow_run_id']}; state: {escape(summary.get('state_file', ''))}")


# --- the selection stage --------------------------------------------------------------------------


def print_selection(report, console: Console, shown: int = 8) -> None:
    """The candidates the selection stage compared (validation figures only), the winner, its rank
    among the baselines on validation and on test, and a warning when a baseline beats it on validation."""
    selection = report.selection
    table = Table(title=f"Selection ({selection['scheme']}, {selection['n_folds']} fold(s); validation data only)")
    for column in ("candidate", "family", "val AUROC", "val FPR95", "fit s"):
        table.add_column(column, justify="left" if column in ("candidate", "family") else "right")
    for c in selection["candidates"][:shown]:
        style = "bold" if c["name"] == selection["winner"] else None
        table.add_row(
            escape(c["name"]), c["family"], _figure(c["val_auroc"]), _figure(c["val_fpr95"]),
            f"{c['fit_seconds']:.1f}", style=style,
        )
    console.print(table)
    n_more = len(selection["candidates"]) - shown
    console.print(
        f"Chosen: [bold]{escape(selection['winner'])}[/bold] ({escape(selection['rule'])})"
        + (f"; {n_more} more candidates in the report" if n_more > 0 else "")
    )
    if selection.get("validation_rank") is not None:
        n = len(selection.get("validation_baselines") or {}) + 1
        ranks = f"rank {selection['validation_rank']} of {n} among the baselines on validation"
        if report.baselines is not None and report.baselines.ebm_rank:
            test_ranks = ", ".join(f"{split}: {rank}" for split, rank in report.baselines.ebm_rank.items())
            ranks += f"; on test ({test_ranks})"
        console.print(f"The registered guard's AUROC {ranks}.")
    if selection.get("warning"):
        console.print(f"[yellow]Warning:[/yellow] {escape(selection['warning'])}")


def _figure(value) -> str:
    return "-" if value is None else f"{value:.4f}"
