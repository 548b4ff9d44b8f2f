"""Triage of flagged traffic (flows/monitoring/triage.py): a flagged row lists its nearest training
examples with their labels, from the neighbour bank registered with the guard; the monitor writes them
per batch and the command line prints them."""

import json

import numpy as np
import pandas as pd
import pytest

from ebm_core import KernelDensityDetector
from flows.data.datasets import DigitsDataConfig, pixel_columns, prepare_digits, read_vectors
from flows.guard import registry
from flows.guard.explanations import NeighbourBank, save_neighbour_bank
from flows.guard.guard import Guard
from flows.monitoring import triage

MODEL = "triage-guard"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A digits guard (kernel density: fits at once) registered with a neighbour bank of its training
    rows and their labels, and one without a bank; both in a module-wide $EBMOPS_HOME."""
    work = tmp_path_factory.mktemp("triage")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(work / "home"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        paths = prepare_digits(DigitsDataConfig(train_fraction=0.6, calibration_fraction=0.2), work / "data", seed=0)
        names = pixel_columns()
        train = pd.read_parquet(paths["train"])
        x_train = train[names].to_numpy(dtype=np.float64)
        versions = {}
        for with_bank in (True, False):
            detector = KernelDensityDetector(0.05).fit(x_train, feature_names=names)
            detector.calibrate(read_vectors(paths["calibration"], names), alpha=0.05)
            detector_dir = detector.save(work / f"detector-{with_bank}")
            if with_bank:
                save_neighbour_bank(detector_dir, x_train, labels=train["label"].tolist())
            versions[with_bank] = registry.log_and_register(
                experiment_name=MODEL, model_name=MODEL, params={}, metrics={}, artifacts={},
                detector_dir=detector_dir, feature_names=names,
            ).version
        yield work / "home", versions, train, pd.read_parquet(paths["in_test"])[names]


@pytest.fixture
def home(registered, monkeypatch):
    monkeypatch.setenv("EBMOPS_HOME", str(registered[0]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return registered


def odd_copies(train: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """Training images with a bright corner pixel (pixel_0 is 0 in every digit): flagged, and nearest to
    the training image they were made from, at standardised distance 40 (pixel_0's scale is 1)."""
    frame = train[pixel_columns()].iloc[rows].reset_index(drop=True).copy()
    frame["pixel_0"] = 40.0
    return frame


def test_a_flagged_row_lists_its_nearest_training_examples_with_labels(home):
    _, versions, train, test_in = home
    guard = Guard.load(f"models:/{MODEL}/{versions[True]}")
    batch = pd.concat([test_in.iloc[:5], odd_copies(train, [3, 17])], ignore_index=True)  # rows 5, 6 odd
    scored = guard.score(batch)
    assert scored["is_ood"].iloc[5:].all()
    found = triage.flagged_neighbours(guard, batch, scored["is_ood"].to_numpy(), k=3)
    flagged_rows = np.flatnonzero(scored["is_ood"].to_numpy()).tolist()
    assert [f["row"] for f in found] == flagged_rows and {5, 6} <= set(flagged_rows)
    by_row = {f["row"]: f for f in found}
    for row, source in ((5, 3), (6, 17)):
        nearest = by_row[row]["neighbours"][0]
        assert nearest["row"] == source  # the bank holds every training row, in order
        assert nearest["label"] == int(train["label"].iloc[source])
        assert nearest["distance"] == pytest.approx(40.0, rel=1e-6)
        assert [n["rank"] for n in by_row[row]["neighbours"]] == [1, 2, 3]
        assert by_row[row]["energy"] == pytest.approx(scored["energy"].iloc[row])
    # the same answer from the matrix of the rows and from the bank read directly
    x = batch.to_numpy(dtype=np.float64)
    assert triage.flagged_neighbours(guard, x, scored["is_ood"].to_numpy()) == found
    bank = triage.neighbour_bank(guard)
    assert isinstance(bank, NeighbourBank) and bank.n_rows == len(train)


def test_batch_triage_file_summary_and_printed_lines(home, tmp_path):
    _, versions, train, test_in = home
    guard = Guard.load(f"models:/{MODEL}/{versions[True]}")
    batch = pd.concat([odd_copies(train, [8]), test_in.iloc[:3]], ignore_index=True)
    scored = guard.score(batch)
    state_file = tmp_path / "guard-v1.json"
    payload = triage.write_batch_triage(
        state_file, 4, "b004.parquet", guard, batch, scored["is_ood"].to_numpy(), scored["energy"].to_numpy(),
        file_rows=[10, 11, 12, 13],  # a changed file whose new rows start at data row 10
    )
    written = json.loads((tmp_path / "guard-v1.triage" / "000004.json").read_text())
    assert written == payload
    assert written["n_flagged"] == int(scored["is_ood"].sum()) and written["metric"] == "euclidean_standardised"
    first = written["rows"][0]
    assert first["row"] == 0 and first["data_row"] == 10
    assert first["neighbours"][0]["row"] == 8 and first["neighbours"][0]["label"] == int(train["label"].iloc[8])
    lines = triage.format_triage([triage.summary_entry(payload, tmp_path / "x.json")])
    assert lines[0].startswith("batch 4 (b004.parquet):")
    assert lines[1].startswith("  row 10 energy")
    assert lines[2] == f"    1. label {int(train['label'].iloc[8])!r} distance 40 (bank row 8)"


def test_a_guard_without_a_bank_says_so(home, tmp_path):
    _, versions, train, _ = home
    guard = Guard.load(f"models:/{MODEL}/{versions[False]}")
    batch = odd_copies(train, [1])
    scored = guard.score(batch)
    assert triage.neighbour_bank(guard) is None
    with pytest.raises(LookupError, match="registered without a neighbour bank"):
        triage.flagged_neighbours(guard, batch, scored["is_ood"].to_numpy())
    payload = triage.write_batch_triage(
        tmp_path / "s.json", 0, "b.parquet", guard, batch, scored["is_ood"].to_numpy(), scored["energy"].to_numpy()
    )
    assert payload["rows"] == [] and payload["note"] == triage.NO_BANK_NOTE
    with pytest.raises(ValueError, match=r"is_ood must have shape \(1,\)"):
        triage.flagged_neighbours(guard, batch, np.array([True, False]))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_the_monitor_reports_flagged_rows_with_their_nearest_training_examples(home, tmp_path, capsys):
    from flows.cli.monitor import _print_triage
    from flows.monitoring.monitor import MonitorConfig, monitor, state_path

    _, versions, train, test_in = home
    traffic = tmp_path / "traffic"
    traffic.mkdir()
    batch = pd.concat([test_in.iloc[:20], odd_copies(train, [5])], ignore_index=True)  # row 20 is odd
    batch.to_parquet(traffic / "b000.parquet", index=False)
    config = MonitorConfig(model_uri=f"models:/{MODEL}/{versions[True]}", experiment_name="triage-monitor-test")
    summary = monitor(traffic, config)
    (entry,) = summary["triage"]
    assert entry["source"] == "b000.parquet" and entry["n_flagged"] >= 1
    written = json.loads(
        (triage.triage_dir(state_path(MODEL, versions[True])) / "000000.json").read_text()
    )
    odd = next(r for r in written["rows"] if r["row"] == 20)
    assert odd["neighbours"][0]["row"] == 5 and odd["neighbours"][0]["label"] == int(train["label"].iloc[5])
    assert entry["file"].endswith("000000.json")
    _print_triage(summary["triage"])
    printed = capsys.readouterr().out
    assert "nearest training examples" in printed and "b000.parquet" in printed
