"""Bad data sets and configs through the real command line: every one is refused with exit status 2, in
one short line that names the problem (file, column, row or expectation), before anything trains, and
the registry is left exactly as it was.

Each case runs `ebmops train` (or `demo`) in-process with typer's CliRunner against one $EBMOPS_HOME
that already holds a registered guard, so "registry unchanged" compares a real registry. The flow is
replaced by a tripwire: a case that reaches it was not refused up front and fails. A few cases run the
installed `ebmops` as a subprocess too (slow), to show the same line from the real executable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.reliability.invariants import registry_snapshot

INTENTS = {
    "balance": ["what is my balance", "how much money do i have", "show my account balance", "balance please"],
    "transfer": ["send money to mom", "transfer 20 dollars", "move cash to savings", "wire funds to john"],
    "weather": ["will it rain today", "what is the forecast", "is it sunny tomorrow", "how cold is it outside"],
    "music": ["play some jazz", "put on my playlist", "skip this song", "turn the music up"],
    "alarm": ["wake me at 7", "set an alarm for noon", "cancel my alarm", "snooze the alarm"],
}
SUFFIXES = ("", "now", "please", "for me", "thanks")
OOD = ["recipe for chocolate cake", "who won the world cup in 1998", "translate hello into french",
       "how tall is mount everest", "what is the capital of peru", "tell me a joke about cats"]

# what a refusal looks like
MAX_LINES = 3
STATS = {"tried": 0, "refused_by_name": 0, "registry_unchanged": 0}


def good_rows() -> list[tuple[str, str]]:
    return [(f"{q} {s}".strip(), intent) for intent, qs in INTENTS.items() for q in qs for s in SUFFIXES]


def write_csv(path: Path, rows, columns=("text", "intent")) -> Path:
    pd.DataFrame(list(rows), columns=list(columns)).to_csv(path, index=False)
    return path


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def vector_dir(root: Path, mutate=None) -> Path:
    """A folder of ready splits (train, calibration, in_test, ood_x) of 8-d Gaussian vectors."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    columns = [f"f{i}" for i in range(8)]
    sizes = {"train": 200, "calibration": 60, "in_test": 60, "ood_x": 60}
    frames = {name: pd.DataFrame(rng.normal(size=(n, 8)) + (4 if name == "ood_x" else 0), columns=columns)
              for name, n in sizes.items()}
    if mutate is not None:
        mutate(frames)
    for name, frame in frames.items():
        if frame is not None:
            frame.to_parquet(root / f"{name}.parquet", index=False)
    return root


def _nan_row(frames):
    frames["train"].iloc[7, 2] = np.nan


def _inf_row(frames):
    frames["calibration"].iloc[3, 1] = np.inf


def _string_column(frames):
    for name in frames:
        frames[name]["f3"] = frames[name]["f3"].astype(str)


def _empty_train(frames):
    frames["train"] = frames["train"].iloc[:0]


def _no_calibration(frames):
    frames["calibration"] = None


def _constant_train(frames):
    frames["train"][:] = 1.0


# --- the cases: name -> builder(tmp) -> (command-line args, substrings the one line must contain) ---------

def _train(tmp: Path, *extra) -> list[str]:
    return ["train", "--data", str(write_csv(tmp / "train.csv", good_rows())), "--label-column", "intent",
            "--no-progress", *extra]


def case_missing_file(tmp):
    return ["train", "--data", str(tmp / "nope.csv")], ["nope.csv", "does not exist"]


def case_directory_instead_of_file(tmp):
    (tmp / "adir").mkdir()
    return ["train", "--data", str(tmp / "adir")], ["adir", "directory"]


def case_empty_csv(tmp):
    (tmp / "empty.csv").write_bytes(b"")
    return ["train", "--data", str(tmp / "empty.csv")], ["empty.csv"]


def case_header_only_csv(tmp):
    (tmp / "header.csv").write_text("text,intent\n")
    return ["train", "--data", str(tmp / "header.csv"), "--label-column", "intent"], ["expect_table_row_count"]


def case_missing_text_column(tmp):
    path = write_csv(tmp / "t.csv", good_rows(), ("query", "intent"))
    return ["train", "--data", str(path)], ["t.csv", "'text'", "not found"]


def case_missing_label_column(tmp):
    path = write_csv(tmp / "t.csv", good_rows())
    return ["train", "--data", str(path), "--label-column", "category"], ["t.csv", "'category'"]


def case_unsupported_suffix(tmp):
    path = tmp / "t.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    return ["train", "--data", str(path)], ["t.xlsx", "unsupported"]


def case_json_as_table(tmp):
    path = tmp / "t.json"
    path.write_text(json.dumps([{"text": "hello"}]))
    return ["train", "--data", str(path)], ["t.json", "unsupported"]


def case_non_utf8_bytes(tmp):
    path = write_csv(tmp / "t.csv", good_rows())
    path.write_bytes(path.read_bytes() + "café au lait,balance\n".encode("latin-1"))
    return ["train", "--data", str(path), "--label-column", "intent"], ["t.csv", "UTF-8"]


def case_nul_bytes(tmp):
    rows = good_rows() + [("wire\x00 funds", "transfer")]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_text_to_have_no_control_characters", "rows [100]"])


def case_control_characters(tmp):
    rows = good_rows() + [("set an \x07alarm \x1b[31m now", "alarm")]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_text_to_have_no_control_characters"])


def case_blank_texts(tmp):
    rows = good_rows() + [("   ", "alarm"), ("\t", "music")]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_text_to_not_be_blank"])


def case_nan_texts(tmp):
    rows = good_rows() + [(None, "alarm")]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_text_to_not_be_blank", "rows [100]"])  # an empty CSV cell is read as ''


def case_nan_labels(tmp):
    rows = good_rows() + [("order a pizza with olives", None), ("book a table for two", float("nan"))]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_labels_to_not_be_null", "'intent'"])


def case_one_class(tmp):
    rows = [(text, "balance") for text, _ in good_rows()]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_at_least_two_training_labels"])


def case_all_duplicate_texts(tmp):
    rows = [("what is my balance", "balance")] * 120
    return ["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"], ["calibration"]


def case_all_duplicate_texts_with_val(tmp):
    train = write_csv(tmp / "t.csv", [("what is my balance", "balance")] * 120)
    val = write_csv(tmp / "v.csv", good_rows()[:40])
    return (["train", "--data", str(train), "--val-data", str(val), "--no-progress"],
            ["expect_distinct_training_queries_to_be_at_least"])


def case_duplicate_rows(tmp):
    rows = good_rows()[:: 10] * 12  # 10 distinct queries, 120 rows
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["train"])


def case_same_query_two_labels(tmp):
    rows = good_rows() + [("what is my balance", "transfer")]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_each_query_to_have_one_label"])


def case_runaway_row(tmp):
    rows = good_rows() + [("a" * 100_000, "alarm")]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_text_length_to_be_between"])


def case_too_few_rows(tmp):
    return (["train", "--data", str(write_csv(tmp / "t.csv", good_rows()[:12])), "--label-column", "intent"],
            ["expect_table_row_count_to_be_between"])


def case_ood_copied_from_train(tmp):
    ood = write_csv(tmp / "ood.csv", [(t,) for t, _ in good_rows()[:6]], ("text",))
    return _train(tmp, "--ood-val-data", str(ood)), ["expect_ood_references_to_not_be_in_distribution"]


def case_ood_test_copied_from_train(tmp):
    ood = write_csv(tmp / "oodtest.csv", [(t,) for t, _ in good_rows()[:6]], ("text",))
    return _train(tmp, "--ood-test-data", str(ood)), ["expect_ood_references_to_not_be_in_distribution"]


def case_val_equal_to_train(tmp):
    train = write_csv(tmp / "t.csv", good_rows())
    return (["train", "--data", str(train), "--val-data", str(train), "--label-column", "intent"],
            ["expect_test_queries_to_not_be_in_train"])


def case_val_labels_unseen(tmp):
    val = write_csv(tmp / "v.csv", [(f"order pizza number {i}", "food") for i in range(40)])
    return _train(tmp, "--val-data", str(val)), ["expect_labels_to_be_in_set"]


def case_numbers_as_text(tmp):
    path = tmp / "t.parquet"
    pd.DataFrame({"text": np.arange(100, dtype=float), "intent": ["a", "b"] * 50}).to_parquet(path)
    return ["train", "--data", str(path), "--label-column", "intent"], ["t.parquet", "'text'", "non-text"]


def case_inf_and_nan_in_text_column(tmp):
    path = tmp / "t.parquet"
    values = [np.inf, -np.inf, np.nan] + [float(i) for i in range(97)]
    pd.DataFrame({"text": values, "intent": ["a", "b"] * 50}).to_parquet(path)
    return ["train", "--data", str(path), "--label-column", "intent"], ["'text'"]


def case_corrupt_parquet(tmp):
    path = tmp / "t.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file at all")
    return ["train", "--data", str(path)], ["t.parquet"]


def case_ragged_csv(tmp):
    path = tmp / "t.csv"
    path.write_text("text,intent\n" + "hello,a\n" * 60 + "one,two,three,four\n")
    return ["train", "--data", str(path), "--label-column", "intent"], ["t.csv"]


def case_mojibake(tmp):
    rows = good_rows() + [("cafÃ© near me", "weather")]
    return (["train", "--data", str(write_csv(tmp / "t.csv", rows)), "--label-column", "intent"],
            ["expect_text_to_be_decodable"])


def case_two_ood_files_one_split(tmp):
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    first = write_csv(tmp / "a" / "web.csv", [(t,) for t in OOD], ("text",))
    second = write_csv(tmp / "b" / "web.csv", [(t + " again",) for t in OOD], ("text",))
    return _train(tmp, "--ood-test-data", str(first), "--ood-test-data", str(second)), ["ood_web"]


def case_clinc_missing_file(tmp):
    return ["train", "--dataset", "clinc150", "--data-path", str(tmp / "none.json")], ["none.json", "not found"]


def case_clinc_bad_json(tmp):
    path = tmp / "data_full.json"
    path.write_text('{"train": [["hello", "greet"]')
    return ["train", "--dataset", "clinc150", "--data-path", str(path)], ["data_full.json", "not valid JSON"]


def case_clinc_missing_key(tmp):
    path = tmp / "data_full.json"
    path.write_text(json.dumps({"train": [["hello", "greet"]]}))
    return ["train", "--dataset", "clinc150", "--data-path", str(path)], ["data_full.json"]


def case_unknown_dataset(tmp):
    return ["train", "--dataset", "imagenet"], ["imagenet"]


def case_vectors_missing_split(tmp):
    return ["train", "--data-dir", str(vector_dir(tmp / "vec", _no_calibration))], ["calibration.parquet"]


def case_vectors_nan(tmp):
    return ["train", "--data-dir", str(vector_dir(tmp / "vec", _nan_row))], ["train", "f2"]


def case_vectors_inf(tmp):
    return ["train", "--data-dir", str(vector_dir(tmp / "vec", _inf_row))], ["calibration", "f1"]


def case_vectors_string_column(tmp):
    return ["train", "--data-dir", str(vector_dir(tmp / "vec", _string_column))], ["f3"]


def case_vectors_empty_train(tmp):
    return ["train", "--data-dir", str(vector_dir(tmp / "vec", _empty_train))], ["train", "rows"]


def case_vectors_constant_train(tmp):
    return ["train", "--data-dir", str(vector_dir(tmp / "vec", _constant_train))], ["train", "expect_distinct_rows"]


def case_bad_yaml(tmp):
    config = write_yaml(tmp / "c.yaml", "detector: {hidden_dims: [64, 64\nalpha: 0.05\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "not valid YAML"]


def case_yaml_not_a_mapping(tmp):
    config = write_yaml(tmp / "c.yaml", "- just\n- a list\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "mapping"]


def case_yaml_not_utf8(tmp):
    config = tmp / "c.yaml"
    config.write_bytes("model_name: caf\xe9\n".encode("latin-1"))
    return _train(tmp, "--config", str(config)), ["c.yaml", "UTF-8"]


def case_unknown_config_key(tmp):
    config = write_yaml(tmp / "c.yaml", "alpha: 0.05\nlearning_rate: 0.1\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "learning_rate"]


def case_unknown_nested_key(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  hiden_dims: [64]\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "hiden_dims"]


def case_negative_steps(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  train: {n_steps: -5}\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "n_steps"]


def case_zero_steps_option(tmp):
    return _train(tmp, "--objective", "cd", "--steps", "0"), ["--steps"]


def case_steps_as_text(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  train: {n_steps: many}\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "detector.train.n_steps"]


def case_hidden_dims_zero(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  hidden_dims: [0]\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "detector.hidden_dims"]


def case_hidden_dims_negative(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  hidden_dims: [64, -3]\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "detector.hidden_dims"]


def case_learning_rate_as_text(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  train: {learning_rate: 1e-4}\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "learning_rate", "1.0e-4"]


def case_negative_learning_rate(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  train: {learning_rate: -0.01}\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "learning_rate"]


def case_nan_step_size(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  sampler: {name: langevin, step_size: .nan}\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "step_size"]


def case_alpha_above_one(tmp):
    return _train(tmp, "--config", str(write_yaml(tmp / "c.yaml", "alpha: 1.5\n"))), ["c.yaml", "alpha"]


def case_alpha_zero(tmp):
    return _train(tmp, "--config", str(write_yaml(tmp / "c.yaml", "alpha: 0\n"))), ["c.yaml", "alpha"]


def case_alpha_too_small_for_data(tmp):
    return (_train(tmp, "--config", str(write_yaml(tmp / "c.yaml", "alpha: 0.001\n"))),
            ["calibration", "expect_table_row_count_to_be_between"])


def case_bad_model_name_slash(tmp):
    config = write_yaml(tmp / "c.yaml", "model_name: team/guard\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "model_name", "team/guard"]


def case_bad_model_name_at(tmp):
    config = write_yaml(tmp / "c.yaml", "model_name: guard@prod\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "model_name"]


def case_bad_model_name_blank(tmp):
    config = write_yaml(tmp / "c.yaml", "model_name: '  '\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "model_name"]


def case_bad_model_name_dotdot(tmp):
    config = write_yaml(tmp / "c.yaml", "model_name: ../guard\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "model_name"]


def case_bad_device(tmp):
    config = write_yaml(tmp / "c.yaml", "detector:\n  device: gpu0\n")
    return _train(tmp, "--config", str(config)), ["c.yaml", "detector.device"]


def case_unknown_budget(tmp):
    return _train(tmp, "--budget", "huge"), ["huge"]


def case_missing_search_space(tmp):
    config = write_yaml(tmp / "c.yaml", f"selection: {{search_space: {tmp / 'space.yaml'}}}\n")
    return _train(tmp, "--config", str(config)), ["space.yaml"]


def case_unknown_objective(tmp):
    return _train(tmp, "--objective", "magic"), ["magic"]


def case_unknown_sampler(tmp):
    return _train(tmp, "--objective", "cd", "--sampler", "gibbs"), ["gibbs"]


def case_labelled_objective_without_labels(tmp):
    path = write_csv(tmp / "t.csv", good_rows())
    return ["train", "--data", str(path), "--objective", "ce"], ["--label-column"]


def case_two_sources(tmp):
    path = write_csv(tmp / "t.csv", good_rows())
    return ["train", "--data", str(path), "--dataset", "clinc150"], ["exactly one"]


def case_no_source(tmp):
    return ["train"], ["exactly one"]


def case_demo_bad_config(tmp):
    config = write_yaml(tmp / "c.yaml", "data:\n  ood_digits: [3, 12]\n")
    return ["demo", "--config", str(config)], ["c.yaml", "ood_digits"]


def case_demo_config_is_directory(tmp):
    (tmp / "cfg").mkdir()
    return ["demo", "--config", str(tmp / "cfg")], ["cfg", "directory"]


CASES = {name.removeprefix("case_"): fn for name, fn in dict(globals()).items() if name.startswith("case_")}


# --- fixtures --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registered_home(tmp_path_factory):
    """One $EBMOPS_HOME with a registered guard, shared by the cases."""
    from tests.flows.guard_factory import prepare_data, register_version

    root = tmp_path_factory.mktemp("bad-inputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EBMOPS_HOME", str(root / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        data, check = prepare_data(root / "data")
        register_version(data, check, root / "work", n_steps=20)
        snapshot = registry_snapshot()
        assert [str(v) for v in snapshot.versions] == ["1"]
        yield root / "home"


@pytest.fixture
def flow_tripwire(monkeypatch):
    """The train_and_register flow must not start for a refused input."""
    import flows.pipeline.train_and_register as pipeline

    def reached(*args, **kwargs):
        raise AssertionError("the input reached the train_and_register flow instead of being refused up front")

    monkeypatch.setattr(pipeline, "train_and_register", reached)


def output_lines(text: str) -> list[str]:
    """Lines a user reads: progress bars (carriage-return redraws, tqdm/GX bars) and blank lines left out."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.rsplit("\r", 1)[-1].strip()
        if line and not re.search(r"\d+%\|", line):
            lines.append(line)
    return lines


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_in_one_line_before_training(case, registered_home, flow_tripwire, tmp_path):
    args, expected = CASES[case](tmp_path)
    before = registry_snapshot()
    STATS["tried"] += 1
    result = CliRunner().invoke(__import__("flows.cli.app", fromlist=["app"]).app, args)
    lines = output_lines(result.output)
    shown = "\n".join(lines)
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{shown}\n{result.exception!r}"
    assert "Traceback" not in result.output, f"{case}: traceback shown\n{result.output}"
    assert 1 <= len(lines) <= MAX_LINES, f"{case}: {len(lines)} lines\n{shown}"
    missing = [s for s in expected if s.lower() not in shown.lower()]
    assert not missing, f"{case}: the refusal does not name {missing}\n{shown}"
    STATS["refused_by_name"] += 1
    after = registry_snapshot()
    assert after == before, f"{case}: registry changed: {before.describe()} -> {after.describe()}"
    STATS["registry_unchanged"] += 1


def test_a_good_input_passes_the_checks_and_reaches_the_flow(registered_home, monkeypatch, tmp_path):
    """The control: the same files without the fault are not refused (the tripwire says 'reached')."""
    import flows.pipeline.train_and_register as pipeline

    reached = []
    monkeypatch.setattr(pipeline, "train_and_register", lambda *a, **k: reached.append(k) or (_ for _ in ()).throw(
        RuntimeError("stop here")))
    result = CliRunner().invoke(__import__("flows.cli.app", fromlist=["app"]).app, _train(tmp_path))
    assert reached, result.output
    assert result.exit_code == 1 and "stop here" in result.output


def test_zz_counts(registered_home):
    """tried / refused by name / registry unchanged, over the parametrized cases above."""
    print(f"\nbad inputs: tried {STATS['tried']}, refused by name {STATS['refused_by_name']}, "
          f"registry unchanged {STATS['registry_unchanged']} (of {len(CASES)} cases)")
    if STATS["tried"] == len(CASES):  # the whole module ran
        assert STATS["refused_by_name"] == STATS["registry_unchanged"] == len(CASES)
    assert len(CASES) >= 40


# --- the installed executable, as a user runs it --------------------------------------------------------

EBMOPS = Path(sys.executable).with_name("ebmops")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_text_column", "hidden_dims_zero", "nan_labels", "bad_model_name_slash"])
def test_the_installed_command_refuses_in_one_line(case, registered_home, tmp_path):
    args, expected = CASES[case](tmp_path)
    before = registry_snapshot()
    env = {**os.environ, "EBMOPS_HOME": str(registered_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    command = [str(EBMOPS)] if EBMOPS.exists() else [sys.executable, "-m", "flows.cli.app"]
    result = subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=300)
    lines = output_lines(result.stdout + result.stderr)
    assert result.returncode == 2, "\n".join(lines)
    assert 1 <= len(lines) <= MAX_LINES and "Traceback" not in result.stderr, "\n".join(lines)
    assert all(s.lower() in "\n".join(lines).lower() for s in expected), "\n".join(lines)
    assert registry_snapshot() == before
