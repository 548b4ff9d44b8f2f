"""Refusals on the command line are one line on stderr with exit status 2: usage errors, bad model URIs,
and Prefect's own error records for an expected refusal are dropped (the command reports it once)."""

from __future__ import annotations

import logging
import sys

import pytest
from typer.testing import CliRunner

from flows.cli.app import _refusal_types, app
from flows.cli.summary import QuietRefusals


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_usage_error_is_one_line_with_exit_2():
    result = CliRunner().invoke(app, ["train", "--bogus"])
    assert result.exit_code == 2
    assert _lines(result.output) == ["error: No such option: --bogus (see root train --help)"]


def test_an_option_out_of_range_names_the_option():
    result = CliRunner().invoke(app, ["demo", "--objective", "cd", "--steps", "0"])
    assert result.exit_code == 2 and len(_lines(result.output)) == 1
    assert "'--steps'" in result.output


def test_no_arguments_still_shows_the_help():
    result = CliRunner().invoke(app, [])
    assert "Usage" in result.output and "train" in result.output


@pytest.mark.slow  # imports MLflow and the evaluation stack
def test_evaluate_with_a_bad_model_uri_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMOPS_HOME", str(tmp_path / "home"))
    data = tmp_path / "in.csv"
    data.write_text("text\nhello\n")
    result = CliRunner().invoke(
        app, ["evaluate", "--model", "not-a-uri", "--data", str(data), "--ood-data", str(data), "--text-column", "text"]
    )
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and "not-a-uri" in lines[0] and lines[0].startswith("Evaluation refused")


def _record(level: int, message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord("prefect.task_runs", level, __file__, 1, message, None, exc_info)


def test_prefect_records_of_an_expected_refusal_are_dropped_and_others_kept():
    from flows.data.text_data import DataSourceError

    quiet = QuietRefusals(_refusal_types(loading=False))
    refusal = DataSourceError("t.csv: column 'text' not found")
    assert not quiet.filter(_record(logging.ERROR, "Task run failed with exception", refusal))
    assert not quiet.filter(_record(logging.ERROR, "Finished in state Failed('DataSourceError: t.csv ...')"))
    assert quiet.filter(_record(logging.ERROR, "Task run failed", RuntimeError("a real bug")))
    assert quiet.filter(_record(logging.INFO, "Finished in state Completed()"))
    # inside the flow a plain ValueError is not taken for bad input
    assert quiet.filter(_record(logging.ERROR, "failed", ValueError("diverged at step 12")))
    assert sys.exc_info() == (None, None, None)
