"""Evaluate a registered guard (models:/<name>@<alias> or models:/<name>/<version>) on files a user
gives: the `ebmops evaluate` command."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from evaluation.files import file_fingerprint
from evaluation.report import EvalReport, build_report
from flows.guard.guard import Guard


def evaluate_model(
    model_uri: str,
    in_path: Path,
    ood_paths: list[Path],
    text_column: str | None,
    vector_columns: str | None,
    report_path: Path,
) -> EvalReport:
    from evaluation.render.report_page import write_html
    from flows.data.text_data import load_table

    started = time.perf_counter()
    guard = Guard.load(model_uri)
    detector = guard.detector
    paths = {"in_test": Path(in_path)}
    for path in ood_paths:
        stem = Path(path).stem
        paths[stem if stem.startswith("ood_") else f"ood_{stem}"] = Path(path)
    split_scores = {}
    for split, path in paths.items():
        frame = load_table(path, text_column=text_column, vector_columns=vector_columns)
        if text_column is not None:
            model_input = frame[["text"]]
        else:
            model_input = frame[frame.attrs["vector_columns"]]
        split_scores[split] = np.asarray(guard.score(model_input)["energy"], dtype=np.float64)
    report = build_report(
        split_scores,
        in_distribution_split="in_test",
        ood_splits=[s for s in paths if s != "in_test"],
        threshold=detector.threshold_,
        alpha=detector.alpha_,
        model_uri=model_uri,
        dataset_fingerprints={split: file_fingerprint(path) for split, path in paths.items()},
        timings={"evaluate_seconds": time.perf_counter() - started},
    )
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report.write_json(report_path)
    write_html(report, report_path.with_suffix(".html"))
    return report


__all__ = ["evaluate_model"]
