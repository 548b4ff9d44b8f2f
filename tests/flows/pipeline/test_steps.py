"""Each pipeline step (flows/pipeline/steps.py, flows/data/text_splits.py) called as a plain function,
without Prefect: what it writes, what it returns, and how it fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ebm_core import ComposedDetector, EnergyDetector, KernelDensityDetector, load_detector
from evaluation.files import file_fingerprint
from flows.data.datasets import DIGITS_OOD_SPLITS, pixel_columns
from flows.data.sources import Clinc150Source, DigitsSource, TextTablesSource, VectorDirSource
from flows.data.text_splits import (
    TextCheckFailed,
    TextSplitFiles,
    check_text_splits,
    ood_split_name,
    write_text_splits,
)
from flows.pipeline import selection, steps
from flows.pipeline.config import PipelineConfig, SelectionConfig

FEATURES = [f"f{i}" for i in range(6)]


# ---- data ---------------------------------------------------------------------------------------------
def direction_blobs(n_classes: int, n_per_class: int, seed: int = 0, first_axis: int = 0):
    """Class k is a tight blob around 10 * e_(first_axis + k) in 6-d (its own direction)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = 10.0 * np.eye(len(FEATURES))[first_axis : first_axis + n_classes]
    return centres[y] + 0.3 * rng.standard_normal((len(y), len(FEATURES))), y


def frame(x, y=None) -> pd.DataFrame:
    out = pd.DataFrame(x, columns=FEATURES)
    if y is not None:
        out["label"] = y
    return out


def write_vector_dir(directory: Path, labelled: bool = True, ood_val: bool = True, n_classes: int = 4) -> Path:
    """train (4 classes x 30), calibration and in_test (4 x 8 each, other draws), ood_far (the 6th
    direction), optionally ood_val_near (the 5th direction)."""
    directory.mkdir(parents=True, exist_ok=True)
    x, y = direction_blobs(n_classes, 30, seed=0)
    frame(x, y if labelled else None).to_parquet(directory / "train.parquet", index=False)
    for seed, split in ((1, "calibration"), (2, "in_test")):
        x, y = direction_blobs(n_classes, 8, seed=seed)
        frame(x, y if labelled else None).to_parquet(directory / f"{split}.parquet", index=False)
    frame(direction_blobs(1, 12, seed=3, first_axis=5)[0]).to_parquet(directory / "ood_far.parquet", index=False)
    if ood_val:
        frame(direction_blobs(1, 12, seed=4, first_axis=4)[0]).to_parquet(directory / "ood_val_near.parquet", index=False)
    return directory


KD = lambda name, t: {"name": name, "kind": "kernel_density", "family": "label_free", "params": {"temperature": t}, "score_cost": 2.0}  # noqa: E731
TINY_CE = {
    "name": "ce",
    "kind": "energy",
    "family": "labelled",
    "params": {"hidden_dims": [8], "objective": {"name": "ce"}, "train": {"n_steps": 20, "batch_size": 32, "learning_rate": 0.01}},
}


@pytest.fixture
def space_yaml(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "rule": "highest mean validation AUROC",
                "tie_tolerance": 0.002,
                "validation": {"n_splits": 2, "n_clusters": 4},
                "composition_weights": [0.5],
                "budgets": {"default": 1.0, "fast": 0.5},
                "candidates": [KD("kd_t0.05", 0.05), KD("kd_t0.5", 0.5), TINY_CE],
            }
        )
    )
    return path


def config_for(space_yaml: Path, budget: str = "default", seed: int = 0) -> PipelineConfig:
    return PipelineConfig(seed=seed, selection=SelectionConfig(enabled=True, budget=budget, search_space=str(space_yaml)))


def prepared(directory: Path) -> steps.PreparedData:
    return steps.load_data(PipelineConfig(), directory.parent / "run", VectorDirSource(str(directory)))


# ---- load_data ------------------------------------------------------------------------------------------
def test_load_data_writes_the_digits_splits(tmp_path):
    from sklearn.datasets import load_digits

    config = PipelineConfig()
    data = steps.load_data(config, tmp_path / "run", DigitsSource())
    assert set(data.split_paths) == {"train", "calibration", "in_test", *DIGITS_OOD_SPLITS}
    assert data.ood_splits == DIGITS_OOD_SPLITS
    assert data.feature_columns == tuple(pixel_columns())
    assert data.value_range == (0.0, 16.0)
    assert data.allowed_labels == tuple(config.data.in_distribution_digits)
    for split, path in data.split_paths.items():
        assert Path(path).parent == tmp_path / "run" / "data"
        assert data.fingerprints[split] == file_fingerprint(path)
    _, digits = load_digits(return_X_y=True)
    n_in = int(np.isin(digits, config.data.in_distribution_digits).sum())
    train = pd.read_parquet(data.path("train"))
    assert len(train) == round(config.data.train_fraction * n_in)
    assert set(train["label"]) == set(config.data.in_distribution_digits)
    assert set(pd.read_parquet(data.path("ood_digits"))["label"]) == set(config.data.ood_digits)
    # Same seed, same bytes.
    again = steps.load_data(config, tmp_path / "run2", DigitsSource())
    assert again.fingerprints == data.fingerprints


def test_load_data_reads_a_folder_of_vector_splits(tmp_path):
    directory = write_vector_dir(tmp_path / "vectors")
    frame(direction_blobs(1, 5, first_axis=5)[0]).to_parquet(directory / "outliers.parquet", index=False)
    train = pd.read_parquet(directory / "train.parquet")
    train.insert(2, "note", "some text")  # not numeric: not a feature
    train.to_parquet(directory / "train.parquet", index=False)
    data = steps.load_data(PipelineConfig(), tmp_path / "run", VectorDirSource(str(directory)))
    assert data.feature_columns == tuple(FEATURES)
    assert set(data.split_paths) == {"train", "calibration", "in_test", "ood_far", "ood_val_near", "outliers"}
    assert data.ood_splits == ("ood_far", "ood_val_near")  # outliers are not an OOD evaluation set
    assert data.allowed_labels == (0, 1, 2, 3)
    assert data.value_range is None
    assert data.fingerprints["train"] == file_fingerprint(directory / "train.parquet")


def test_load_data_names_the_missing_split(tmp_path):
    directory = write_vector_dir(tmp_path / "vectors")
    (directory / "train.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing train\.parquet") as info:
        steps.load_data(PipelineConfig(), tmp_path / "run", VectorDirSource(str(directory)))
    assert str(directory) in str(info.value)
    with pytest.raises(TypeError, match="TextTablesSource"):
        steps.load_data(PipelineConfig(), tmp_path / "run", TextTablesSource(train="x.csv"))


# ---- validate_data --------------------------------------------------------------------------------------
def test_validate_data_passes_clean_splits_and_writes_the_result(tmp_path):
    data = prepared(write_vector_dir(tmp_path / "vectors"))
    path = steps.validate_data(data, tmp_path)
    written = json.loads(path.read_text())
    assert path == tmp_path / steps.DATA_CHECK_FILE
    assert written["success"] is True and set(written["splits"]) == set(data.split_paths)


def test_validate_data_stops_on_a_nan_naming_the_split_and_column(tmp_path):
    directory = write_vector_dir(tmp_path / "vectors")
    calibration = pd.read_parquet(directory / "calibration.parquet")
    calibration.loc[3, "f2"] = np.nan
    calibration.to_parquet(directory / "calibration.parquet", index=False)
    data = prepared(directory)
    with pytest.raises(steps.DataCheckFailed) as info:
        steps.validate_data(data, tmp_path)
    message = str(info.value)
    assert "calibration (calibration.parquet)" in message and "'f2'" in message
    assert "train (" not in message  # only the failing split is listed
    written = json.loads((tmp_path / steps.DATA_CHECK_FILE).read_text())
    assert written["success"] is False
    assert written["splits"]["calibration"]["success"] is False and written["splits"]["train"]["success"] is True
    assert info.value.result_path == tmp_path / steps.DATA_CHECK_FILE


def test_validate_data_rejects_test_labels_unseen_in_training(tmp_path):
    directory = write_vector_dir(tmp_path / "vectors")
    in_test = pd.read_parquet(directory / "in_test.parquet")
    in_test.loc[0, "label"] = 9
    in_test.to_parquet(directory / "in_test.parquet", index=False)
    with pytest.raises(steps.DataCheckFailed, match=r"in_test[\s\S]*'label'"):
        steps.validate_data(prepared(directory), tmp_path)


# ---- read_training_rows ---------------------------------------------------------------------------------
def test_read_training_rows_keeps_labels_only_when_usable(tmp_path):
    directory = write_vector_dir(tmp_path / "vectors")
    data = prepared(directory)
    x, labels = steps.read_training_rows(data)
    train = pd.read_parquet(directory / "train.parquet")
    np.testing.assert_array_equal(x, train[FEATURES].to_numpy())
    assert x.dtype == np.float64 and x.shape == (120, 6)
    np.testing.assert_array_equal(labels, train["label"].astype(str).to_numpy())  # one label type for every fit

    for labels_in_file in (np.zeros(len(train), dtype=int), np.where(np.arange(len(train)) == 5, np.nan, 1.0)):
        train.assign(label=labels_in_file).to_parquet(directory / "train.parquet", index=False)
        assert steps.read_training_rows(data)[1] is None  # a single class, or a missing label
    train.drop(columns="label").to_parquet(directory / "train.parquet", index=False)
    assert steps.read_training_rows(data)[1] is None


# ---- the selection stage --------------------------------------------------------------------------------
def test_plan_selection_uses_ood_validation_sets_when_given(tmp_path, space_yaml):
    data = prepared(write_vector_dir(tmp_path / "vectors", ood_val=True))
    plan = steps.plan_selection(data, config_for(space_yaml, budget="fast"), tmp_path)
    # labelled data: held-out classes are averaged in beside the OOD validation set
    assert plan.scheme == "ood_val+held_out_classes" and plan.n_folds == 3
    assert plan.step_scale == 0.5 and plan.budget == "fast" and plan.search_space_path == str(space_yaml)
    assert [c.name for c in plan.candidates] == ["kd_t0.05", "kd_t0.5", "ce"]
    folds = selection.load_folds(plan.folds_path)
    # The OOD validation rows are the ood_val_* split only (ood_far is kept for the report).
    np.testing.assert_array_equal(folds["ood_val"], pd.read_parquet(data.path("ood_val_near"))[FEATURES].to_numpy())
    assert folds["folds"][0].use_external_ood and folds["folds"][0].scheme == "ood_val"
    assert [f.scheme for f in folds["folds"][1:]] == ["held_out_classes"] * 2
    assert len(folds["folds"][0].id_rows) == round(0.2 * 120)
    unlabelled = prepared(write_vector_dir(tmp_path / "unlabelled", labelled=False, ood_val=True))
    plan = steps.plan_selection(unlabelled, config_for(space_yaml, budget="fast"), tmp_path)
    assert plan.scheme == "ood_val" and plan.n_folds == 1


def test_plan_selection_holds_out_classes_when_labelled(tmp_path, space_yaml):
    data = prepared(write_vector_dir(tmp_path / "vectors", ood_val=False))
    plan = steps.plan_selection(data, config_for(space_yaml), tmp_path)
    assert plan.scheme == "held_out_classes" and plan.n_folds == 2 and plan.step_scale == 1.0
    folds = selection.load_folds(plan.folds_path)
    assert folds["ood_val"] is None
    y = pd.read_parquet(data.path("train"))["label"].astype(str).to_numpy()  # labels reach the folds as strings
    for held_out, fold in zip(plan.held_out, folds["folds"]):
        assert len(held_out) == 1  # 20% of 4 classes, at least one
        np.testing.assert_array_equal(fold.ood_rows, np.flatnonzero(np.isin(y, held_out)))
    assert plan.held_out[0] != plan.held_out[1]


def test_plan_selection_with_two_classes_holds_out_clusters_instead(tmp_path, space_yaml):
    data = prepared(write_vector_dir(tmp_path / "vectors", ood_val=False, n_classes=2))
    plan = steps.plan_selection(data, config_for(space_yaml), tmp_path)
    assert plan.scheme == "held_out_clusters"
    assert selection.load_folds(plan.folds_path)["y"] is not None  # the labelled candidates still get labels


def test_plan_selection_clusters_unlabelled_rows_and_drops_labelled_candidates(tmp_path, space_yaml):
    data = prepared(write_vector_dir(tmp_path / "vectors", labelled=False, ood_val=False))
    plan = steps.plan_selection(data, config_for(space_yaml), tmp_path)
    assert plan.scheme == "held_out_clusters"
    assert [c.name for c in plan.candidates] == ["kd_t0.05", "kd_t0.5"]
    assert selection.load_folds(plan.folds_path)["y"] is None


def test_plan_selection_rejects_an_unknown_budget(tmp_path, space_yaml):
    data = prepared(write_vector_dir(tmp_path / "vectors"))
    with pytest.raises(ValueError, match="unknown selection budget 'huge'"):
        steps.plan_selection(data, config_for(space_yaml, budget="huge"), tmp_path)


def test_selection_chooses_by_the_rule_and_the_winner_is_refit_and_calibrated(tmp_path, space_yaml):
    data = prepared(write_vector_dir(tmp_path / "vectors", ood_val=False))
    plan = steps.plan_selection(data, config_for(space_yaml), tmp_path)
    results = [selection.evaluate_candidate(c, plan.folds_path, plan.step_scale, seed=0) for c in plan.candidates]
    assert all(r.ok for r in results), [r.error for r in results]
    baselines = {"weak": {"val_auroc": 0.5, "val_fpr95": 0.9}}
    path = steps.finish_selection(plan, results, baselines, tmp_path, seconds=1.25)
    assert path == tmp_path / steps.SELECTION_FILE
    outcome = selection.SelectionOutcome.read_json(path)
    everything = results + selection.compositions(results, (0.5,))
    expected = selection.choose(everything, 0.002)
    assert outcome.winner == expected.name
    assert [c["name"] for c in outcome.candidates] == [r.name for r in sorted(everything, key=lambda r: -r.auroc)]
    assert (outcome.scheme, outcome.n_folds, outcome.budget, outcome.seconds) == ("held_out_classes", 2, "default", 1.25)
    assert outcome.held_out == plan.held_out
    assert outcome.validation_rank == 1 and outcome.warning is None
    assert outcome.rule == "highest mean validation AUROC"

    detector_dir = steps.fit_selected(data, plan, path, seed=0, out_dir=tmp_path / "detector", progress=False)
    detector = load_detector(detector_dir)
    if expected.members:
        assert isinstance(detector, ComposedDetector)
        np.testing.assert_allclose([w for w, _ in detector.members], expected.weights, rtol=1e-12)
    else:
        spec = next(c for c in plan.candidates if c.name == expected.name)
        assert detector.kind == spec.kind
    assert detector.n_features_in_ == 6 and detector.feature_names_in_ == FEATURES

    steps.calibrate_detector(detector_dir, data, alpha=0.1)
    calibrated = load_detector(detector_dir)
    energies = np.sort(calibrated.score(pd.read_parquet(data.path("calibration"))[FEATURES].to_numpy()))
    k = math.ceil((len(energies) + 1) * (1 - 0.1))  # the conformal rank
    assert calibrated.alpha_ == 0.1 and calibrated.threshold_ == energies[k - 1]
    np.testing.assert_array_equal(calibrated.calibration_energies_, energies)


def test_finish_selection_warns_when_a_baseline_beats_the_winner(tmp_path, space_yaml):
    data = prepared(write_vector_dir(tmp_path / "vectors", ood_val=False))
    plan = steps.plan_selection(data, config_for(space_yaml), tmp_path)
    made = [
        selection.CandidateResult("kd_t0.05", "label_free", "kernel_density", (0.8,), (0.4,), 0.0, 1.0, 2.0, ((0.0, 1.0),), ((2.0,),)),
        selection.CandidateResult("ce", "labelled", "energy", (), (), 0.0, 0.0, 1.0, error="DivergenceError: nan loss"),
    ]
    path = steps.finish_selection(plan, made, {"knn": {"val_auroc": 0.9, "val_fpr95": 0.2}}, tmp_path, seconds=0.0)
    outcome = selection.SelectionOutcome.read_json(path)
    assert outcome.winner == "kd_t0.05" and outcome.validation_rank == 2 and "knn (0.9000)" in outcome.warning
    assert [c["name"] for c in outcome.candidates] == ["kd_t0.05", "ce"]  # the failed one is kept, last
    assert outcome.candidates[1]["error"] == "DivergenceError: nan loss"


def test_fit_selected_refits_a_composition_with_the_recorded_weights_on_all_rows(tmp_path, space_yaml):
    data = prepared(write_vector_dir(tmp_path / "vectors", ood_val=False))
    plan = steps.plan_selection(data, config_for(space_yaml), tmp_path)
    chosen = selection.CandidateResult(
        "composition(kd_t0.5*0.4 + ce*0.6)", "labelled", "composed", (0.99,), (0.01,), 0.0, 0.0, 3.0,
        members=("kd_t0.5", "ce"), weights=(0.2, 0.3),
    )
    outcome = selection.SelectionOutcome("held_out_classes", "", chosen.name, (chosen.summary(),), 2, plan.held_out, "default", 0.0)
    path = outcome.write_json(tmp_path / "selection.json")
    detector = load_detector(steps.fit_selected(data, plan, path, seed=0, out_dir=tmp_path / "detector", progress=False))
    assert isinstance(detector, ComposedDetector)
    (w_kd, kd), (w_ce, ce) = detector.members
    assert (w_kd, w_ce) == (0.2, 0.3)
    assert isinstance(kd, KernelDensityDetector) and kd.temperature == 0.5
    assert isinstance(ce, EnergyDetector) and ce.classes_ == ['0', '1', '2', '3']  # the labelled member saw the labels
    x_train, _ = steps.read_training_rows(data)
    assert kd.energy_.reference.shape[0] == len(x_train)  # refit on all the training rows
    np.testing.assert_allclose(detector.score(x_train), 0.2 * kd.score(x_train) + 0.3 * ce.score(x_train), rtol=1e-10)


# ---- text splits ------------------------------------------------------------------------------------------
def write_csv(path: Path, rows, columns) -> str:
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return str(path)


def test_holding_out_from_train_keeps_copies_together_rare_labels_in_train_and_enough_calibration_rows():
    from flows.data.text_splits import hold_out_from_train

    rows = [(f"query {i}", f"intent_{i % 4}") for i in range(100)] + [("hi", "intent_0")] * 6 + [("rare one", "rare")]
    rows += [("Hi", "intent_1")]  # the same query as "hi" after case folding, another label
    frame = pd.DataFrame(rows, columns=["text", "label"])
    parts = hold_out_from_train(frame, 0.15, np.random.default_rng(0), min_rows=19)
    assert len(parts["calibration"]) >= 19 and len(parts["in_test"]) >= 19  # 15% of 102 queries is 15: raised to 19
    homes = {split: set(part["text"].str.casefold()) for split, part in parts.items()}
    assert sum("hi" in texts for texts in homes.values()) == 1  # every copy of a query in one split
    assert "rare one" in homes["train"]  # a label with fewer than 3 rows stays in train
    assert sum(len(p) for p in parts.values()) == len(frame)


def test_write_text_splits_holds_out_15_and_15_percent_without_val(tmp_path):
    rows = [(f"query number {i}", f"intent_{i % 3}") for i in range(200)]
    train_csv = write_csv(tmp_path / "train.csv", rows, ["query", "intent"])
    weird = write_csv(tmp_path / "weird.csv", [("what is a quasar",), ("sing a song",)], ["query"])
    far = write_csv(tmp_path / "far.csv", [("asdf qwer",)], ["query"])
    bad = write_csv(tmp_path / "bad.csv", [("drop table users",)], ["query"])
    source = TextTablesSource(
        train=train_csv, text_column="query", label_column="intent", ood_val=(weird,), ood_test=(far,), outliers=bad
    )
    files = write_text_splits(source, tmp_path / "out", seed=0)
    assert set(files.paths) == {"train", "calibration", "in_test", "ood_val_weird", "ood_far", "outliers"}
    assert files.has_labels and files.text_column == "query"
    frames = {split: pd.read_parquet(path) for split, path in files.paths.items()}
    assert {s: len(frames[s]) for s in ("train", "calibration", "in_test")} == {"train": 140, "calibration": 30, "in_test": 30}
    source_rows = [set(frames[s]["source_row"]) for s in ("train", "calibration", "in_test")]
    assert set.union(*source_rows) == set(range(200)) and sum(map(len, source_rows)) == 200
    for split in ("train", "calibration", "in_test"):
        f = frames[split]
        assert list(f.columns) == ["text", "label", "source_row"]
        assert f["text"].tolist() == [rows[i][0] for i in f["source_row"]]  # rows keep their source row number
        assert f["label"].tolist() == [rows[i][1] for i in f["source_row"]]
    assert frames["ood_val_weird"]["text"].tolist() == ["what is a quasar", "sing a song"]
    assert list(frames["ood_val_weird"].columns) == ["text", "source_row"]
    assert frames["outliers"]["text"].tolist() == ["drop table users"]
    # The split is a function of the seed.
    same = write_text_splits(source, tmp_path / "same", seed=0)
    other = write_text_splits(source, tmp_path / "other", seed=1)
    read = lambda f, s: pd.read_parquet(f.paths[s])["source_row"].tolist()  # noqa: E731
    assert read(same, "calibration") == read(files, "calibration")
    assert read(other, "calibration") != read(files, "calibration")


def test_write_text_splits_halves_val_between_calibration_and_test(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"train query {i}",) for i in range(30)], ["text"])
    val = write_csv(tmp_path / "val.csv", [(f"val query {i}",) for i in range(41)], ["text"])
    files = write_text_splits(TextTablesSource(train=train, val=val), tmp_path / "out", seed=0)
    frames = {split: pd.read_parquet(path) for split, path in files.paths.items()}
    assert not files.has_labels and set(frames) == {"train", "calibration", "in_test"}
    assert len(frames["train"]) == 30 and (len(frames["calibration"]), len(frames["in_test"])) == (20, 21)
    assert set(frames["calibration"]["text"]) | set(frames["in_test"]["text"]) == {f"val query {i}" for i in range(41)}
    assert all(list(f.columns) == ["text", "source_row"] for f in frames.values())


def test_write_text_splits_of_a_clinc150_file(tmp_path):
    data = {
        "train": [[f"train {i}", f"intent_{i % 2}"] for i in range(6)],
        "val": [[f"val {i}", f"intent_{i % 2}"] for i in range(4)],
        "test": [[f"test {i}", f"intent_{i % 2}"] for i in range(3)],
        "oos_train": [["oos train", "oos"]],
        "oos_val": [["oos val 1", "oos"], ["oos val 2", "oos"]],
        "oos_test": [["oos test", "oos"]],
    }
    path = tmp_path / "data_full.json"
    path.write_text(json.dumps(data))
    files = write_text_splits(Clinc150Source(str(path)), tmp_path / "out", seed=0)
    frames = {split: pd.read_parquet(p) for split, p in files.paths.items()}
    assert set(frames) == {"train", "calibration", "in_test", "ood_val_oos_val", "ood_oos_test", "outliers"}
    assert files.has_labels and files.text_column == "text"
    assert len(frames["calibration"]) == 2 and set(frames["calibration"]["text"]) < {f"val {i}" for i in range(4)}
    assert frames["in_test"]["text"].tolist() == ["test 0", "test 1", "test 2"]
    assert frames["ood_val_oos_val"]["text"].tolist() == ["oos val 1", "oos val 2"]
    assert "label" not in frames["ood_oos_test"].columns and "label" in frames["train"].columns


# ---- text checks ------------------------------------------------------------------------------------------
def write_text_files(directory: Path, splits: dict[str, list[tuple]], text_column: str = "query") -> TextSplitFiles:
    """Split files as write_text_splits leaves them: text, label (when given), source_row."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in splits.items():
        columns = ["text", "label"] if len(rows[0]) == 2 else ["text"]
        f = pd.DataFrame(rows, columns=columns)
        f["source_row"] = np.arange(len(f))
        paths[split] = str(directory / f"{split}.parquet")
        f.to_parquet(paths[split], index=False)
    return TextSplitFiles(paths=paths, has_labels=True, text_column=text_column)


def clean_text_splits() -> dict[str, list[tuple]]:
    return {
        "train": [(f"how do I reset my password {i}", "password") for i in range(30)]
        + [(f"what is my balance on account {i}", "balance") for i in range(30)],
        # 19 rows: the fewest that give a finite threshold at alpha 0.05
        "calibration": [(f"reset the password please {i}", "password") for i in range(10)]
        + [(f"show my balance {i}", "balance") for i in range(9)],
        "in_test": [("I forgot my password", "password"), ("balance of checking", "balance")],
        "ood_val_weather": [("what is the weather on mars",), ("tell me a joke",)],
    }


def test_too_few_calibration_rows_for_alpha_fail_the_text_checks(tmp_path):
    splits = clean_text_splits()
    splits["calibration"] = splits["calibration"][:18]
    with pytest.raises(TextCheckFailed, match="calibration"):
        check_text_splits(write_text_files(tmp_path / "text", splits), tmp_path / "text_checks.json", alpha=0.05)
    path = check_text_splits(write_text_files(tmp_path / "text2", splits), tmp_path / "ok.json", alpha=0.1)
    assert json.loads(path.read_text())["success"] is True  # alpha 0.1 needs 9 rows


def test_ood_validation_rows_must_not_be_test_rows(tmp_path):
    splits = clean_text_splits()
    splits["ood_test_space"] = [("what is the weather on mars",), ("play a song",)]  # first row is an ood_val row
    with pytest.raises(TextCheckFailed, match="ood_test_space vs ood_val_weather"):
        check_text_splits(write_text_files(tmp_path / "text", splits), tmp_path / "text_checks.json")


def test_check_text_splits_passes_a_clean_set(tmp_path):
    files = write_text_files(tmp_path / "text", clean_text_splits())
    path = check_text_splits(files, tmp_path / "text_checks.json")
    written = json.loads(path.read_text())
    assert written["success"] is True
    names = [c["dataset_name"] for c in written["checks"]]
    assert {"train", "calibration", "in_test", "ood_val_weather"} <= set(names)
    assert "leakage train -> calibration" in names and "ood_val_weather vs in-distribution" in names


@pytest.mark.parametrize(
    "spoil, expectation, where, column",
    [
        (lambda s: s["train"].append(("   ", "password")), "expect_text_to_not_be_blank", "- train:", "query"),
        (
            lambda s: s["train"].extend([("transfer money to savings", "password"), ("Transfer  money to savings", "balance")]),
            "expect_each_query_to_have_one_label",
            "- train:",
            "query",
        ),
        (
            lambda s: s["ood_val_weather"].append(("how do I reset my password 3",)),
            "expect_ood_references_to_not_be_in_distribution",
            "- ood_val_weather vs in-distribution:",
            "query",
        ),
        (
            lambda s: s["calibration"].extend((f"what is my balance on account {i}", "balance") for i in range(4)),  # 4 of 23: over 5%
            "expect_test_queries_to_not_be_in_train",
            "- leakage train -> calibration:",
            "query",
        ),
        # Files made without the user's label column name fall back to `label`.
        (lambda s: s["in_test"].append(("cancel my card", "cards")), "expect_labels_to_be_in_set", "- in_test:", "label"),
    ],
)
def test_check_text_splits_fails_naming_the_expectation_split_and_column(tmp_path, spoil, expectation, where, column):
    splits = clean_text_splits()
    spoil(splits)
    files = write_text_files(tmp_path / "text", splits, text_column="query")
    with pytest.raises(TextCheckFailed) as info:
        check_text_splits(files, tmp_path / "text_checks.json")
    message = str(info.value)
    assert expectation in message and where in message
    assert f"on column '{column}'" in message  # for text, the user's column, not the split files' `text`
    written = json.loads((tmp_path / "text_checks.json").read_text())
    assert written["success"] is False
    failed = {o["expectation"] for c in written["checks"] if not c["success"] for o in c["outcomes"] if not o["success"]}
    assert failed == {expectation}


def test_label_check_failures_name_the_users_label_column(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"query number {i}", f"intent_{i % 2}") for i in range(30)], ["query", "intent"])
    val = write_csv(tmp_path / "val.csv", [(f"val query {i}", "unseen_intent") for i in range(4)], ["query", "intent"])
    files = write_text_splits(
        TextTablesSource(train=train, val=val, text_column="query", label_column="intent"), tmp_path / "out", seed=0
    )
    with pytest.raises(TextCheckFailed, match="expect_labels_to_be_in_set on column 'intent'"):
        check_text_splits(files, tmp_path / "text_checks.json")


def test_numeric_labels_pass_the_text_checks(tmp_path):
    rows = [(f"query number {i}", i % 3) for i in range(200)]
    train = write_csv(tmp_path / "train.csv", rows, ["query", "intent"])
    files = write_text_splits(TextTablesSource(train=train, text_column="query", label_column="intent"), tmp_path / "out", seed=0)
    path = check_text_splits(files, tmp_path / "text_checks.json")
    assert json.loads(path.read_text())["success"] is True


def test_repeated_queries_with_one_label_are_only_a_warning(tmp_path):
    splits = clean_text_splits()
    splits["train"].append(("How do I reset my password 0", "password"))  # same query after case folding
    path = check_text_splits(write_text_files(tmp_path / "text", splits), tmp_path / "text_checks.json")
    assert json.loads(path.read_text())["success"] is True


@pytest.mark.parametrize(
    "path, validation, expected",
    [
        ("data/weird.csv", True, "ood_val_weird"),
        ("data/weird.csv", False, "ood_weird"),
        ("ood_val_weird.parquet", True, "ood_val_weird"),  # not prefixed twice
        ("ood_weird.csv", False, "ood_weird"),
        ("ood_weird.csv", True, "ood_val_weird"),
        ("ood_val_weird.csv", False, "ood_weird"),
        ("val_set.csv", False, "ood_test_val_set"),  # an evaluation set never looks like a validation set
        ("ood_.csv", False, "ood_ood_"),
    ],
)
def test_ood_split_name(path, validation, expected):
    name = ood_split_name(path, validation)
    assert name == expected
    assert name.startswith("ood_val_") == validation
