"""`Guard.load(uri)`, the one way the code reaches a registered guard: an alias resolves to a fixed
version, scores match the detector's and the served pyfunc's, bad rows raise a readable error."""

import numpy as np
import pandas as pd
import pytest

from flows.guard import registry
from flows.guard.guard import Guard
from flows.guard.names import DEFAULT_MODEL_NAME, alias_uri, parse_model_uri, version_uri
from tests.flows.guard_factory import prepare_data, register_version


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Two vector guards of the default model: v1 champion, v2 challenger (no Prefect involved)."""
    home = tmp_path_factory.mktemp("guard-home")
    work = tmp_path_factory.mktemp("guard-work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        data, data_check = prepare_data(work, check=False)
        first = register_version(data, data_check, work, n_steps=20)
        second = register_version(data, data_check, work, n_steps=20, seed=1)
        test_in = pd.read_parquet(data.path("in_test"))[list(data.feature_columns)].head(30)
        yield {"data": data, "first": first, "second": second, "test_in": test_in}


@pytest.mark.slow
def test_an_alias_resolves_to_a_fixed_version(two_versions):
    champion = Guard.load(alias_uri("champion"))
    challenger = Guard.load(alias_uri("challenger"))
    assert (champion.name, champion.version) == (DEFAULT_MODEL_NAME, two_versions["first"].version)
    assert (challenger.name, challenger.version) == (DEFAULT_MODEL_NAME, two_versions["second"].version)
    assert champion.uri == version_uri(DEFAULT_MODEL_NAME, champion.version)
    by_version = Guard.load(version_uri(DEFAULT_MODEL_NAME, champion.version))
    assert by_version.version == champion.version
    assert champion.feature_names == list(two_versions["data"].feature_columns)
    assert champion.embedder is None and champion.featurizer is None and not champion.accepts_text


@pytest.mark.slow
def test_score_matches_the_detector_and_the_pyfunc(two_versions):
    import mlflow

    guard = Guard.load(alias_uri("champion"))
    frame = two_versions["test_in"]
    scored = guard.score(frame)
    assert list(scored.columns) == ["energy", "p_value", "is_ood"]
    energies = guard.detector.score(frame.to_numpy(dtype=np.float64))
    np.testing.assert_allclose(scored["energy"].to_numpy(), energies)
    np.testing.assert_array_equal(scored["is_ood"].to_numpy(), energies > guard.detector.threshold_)
    served = mlflow.pyfunc.load_model(guard.uri).predict(frame)
    pd.testing.assert_frame_equal(scored, served)


@pytest.mark.slow
def test_bad_rows_raise_the_pyfunc_error_naming_the_problem(two_versions):
    guard = Guard.load(alias_uri("champion"))
    frame = two_versions["test_in"].copy()
    frame.iloc[2, 0] = np.nan
    with pytest.raises(registry.RegistryError, match="NaN or infinite"):
        guard.score(frame)
    with pytest.raises(registry.RegistryError, match="pixel_63"):
        guard.score(frame.drop(columns="pixel_63"))


@pytest.mark.slow
def test_a_missing_alias_is_a_lookup_error(two_versions):
    with pytest.raises(LookupError, match="no alias 'staging'"):
        Guard.load(alias_uri("staging"))


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("models:/ebm-guard@champion", ("ebm-guard", "champion", None)),
        ("models:/my-guard/12", ("my-guard", None, "12")),
    ],
)
def test_model_uris_are_parsed(uri, expected):
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize("uri", ["runs:/abc/guard", "/tmp/model", "models:/ebm-guard/latest", "models:/@champion"])
def test_other_uris_are_refused_before_mlflow_is_asked(uri):
    with pytest.raises(ValueError, match="model"):
        Guard.load(uri)


@pytest.mark.slow
def test_score_takes_the_feature_columns_by_name_in_any_order(two_versions):
    guard = Guard.load(alias_uri("champion"))
    assert guard.takes_tensor and guard.param_names == ["explain"]
    frame = two_versions["test_in"]
    expected = guard.detector.score(frame.to_numpy(dtype=np.float64))
    shuffled = frame[list(reversed(frame.columns))].assign(timestamp="2026-01-01", feedback=0)
    np.testing.assert_allclose(guard.score(shuffled)["energy"].to_numpy(), expected)
    with pytest.raises(registry.RegistryError, match="no stored training examples"):
        guard.score(frame, explain=2)  # this version was registered without a neighbour bank


# --- the pyfunc on its own: tensor input, params `explain` and the neighbour bank -----------------

import json  # noqa: E402

from mlflow.exceptions import MlflowException  # noqa: E402

NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def saved_guards(tmp_path_factory):
    """A small vector guard (kernel density on 4 features) saved as the MLflow pyfunc with the tensor
    signature, with and without a neighbour bank of its training rows."""
    import mlflow

    from ebm_core import KernelDensityDetector
    from flows.guard.explanations import save_neighbour_bank

    rng = np.random.default_rng(0)
    centre = np.array([3.0, 1.0, 0.0, 0.0])  # kernel density compares directions: one narrow cone of them
    x_train, x_cal = centre + rng.normal(0, 0.2, (200, 4)), centre + rng.normal(0, 0.2, (100, 4))
    labels = [f"intent_{i % 3}" for i in range(200)]
    models = {}
    for with_bank in (True, False):
        folder = tmp_path_factory.mktemp(f"saved-guard-{with_bank}")
        detector = KernelDensityDetector(temperature=0.5).fit(x_train, feature_names=NAMES).calibrate(x_cal, alpha=0.05)
        detector_dir = detector.save(folder / "detector")
        if with_bank:
            save_neighbour_bank(detector_dir, x_train, labels=labels)
        mlflow.pyfunc.save_model(
            str(folder / "model"), python_model=str(registry.ENTRY_FILE), artifacts={"detector": str(detector_dir)},
            signature=registry.guard_signature(NAMES), input_example=registry.guard_input_example(NAMES),
        )
        models[with_bank] = folder / "model"
    return {
        "with_bank": mlflow.pyfunc.load_model(str(models[True])), "with_bank_path": models[True],
        "without_bank": mlflow.pyfunc.load_model(str(models[False])), "x_train": x_train, "labels": labels,
    }


def nearest_by_hand(x_train, labels, query, k):
    """Standardised Euclidean distance to the stored rows (float32, as the bank stores them)."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    stored = x_train.astype(np.float32).astype(np.float64)
    distances = np.sqrt((((stored - mean) / std - (query - mean) / std) ** 2).sum(axis=1))
    order = np.lexsort((np.arange(len(stored)), distances))[:k]
    return [(rank, float(distances[j]), labels[j]) for rank, j in enumerate(order, start=1)]


@pytest.mark.slow
def test_explain_gives_the_nearest_training_examples_of_flagged_rows(saved_guards):
    import mlflow

    model = mlflow.pyfunc.load_model(str(saved_guards["with_bank_path"]))  # a fresh load: its bank not read yet
    queries = np.array([[3.1, 0.9, 0.1, 0.0], [0.0, 0.0, 6.0, 0.0], [-3.0, -1.0, 0.0, 2.0]])
    plain = model.predict(queries)
    assert list(plain.columns) == ["energy", "p_value", "is_ood"]  # off by default: no neighbours
    from flows.guard.pyfunc import _NOT_READ

    assert model.unwrap_python_model()._bank is _NOT_READ  # noqa: SLF001 - the fast path read nothing
    assert list(model.predict(queries, params={"explain": 0}).columns) == ["energy", "p_value", "is_ood"]
    explained = model.predict(queries, params={"explain": 3})
    assert explained["is_ood"].tolist() == [False, True, True]
    pd.testing.assert_frame_equal(explained[["energy", "p_value", "is_ood"]], plain)
    assert explained["neighbours"][0] == "[]"
    for i in (1, 2):
        found = json.loads(explained["neighbours"][i])
        expected = nearest_by_hand(saved_guards["x_train"], saved_guards["labels"], queries[i], 3)
        assert [(n["rank"], n["label"]) for n in found] == [(r, label) for r, _, label in expected]
        np.testing.assert_allclose([n["distance"] for n in found], [d for _, d, _ in expected], rtol=1e-9)
        assert set(found[0]) == {"rank", "distance", "label", "text"} and found[0]["text"] is None


@pytest.mark.slow
def test_explain_is_refused_by_name_without_a_bank_or_past_the_cap(saved_guards):
    queries = np.array([[0.0, 0.0, 6.0, 0.0]])
    with pytest.raises(MlflowException, match="no stored training examples") as caught:
        saved_guards["without_bank"].predict(queries, params={"explain": 2})
    assert caught.value.get_http_status_code() == 400
    assert saved_guards["without_bank"].predict(queries)["is_ood"].tolist() == [True]
    with pytest.raises(MlflowException, match="outside 0..20") as caught:
        saved_guards["with_bank"].predict(queries, params={"explain": 21})
    assert caught.value.get_http_status_code() == 400


@pytest.mark.slow
def test_the_tensor_scorer_answers_every_form_as_the_pyfunc_scores(saved_guards):
    from flows.guard.serving import TensorScorer

    model = saved_guards["with_bank"]
    scorer = TensorScorer(model, ["explain"])
    assert scorer.feature_names == NAMES
    queries = np.array([[3.1, 0.9, 0.1, 0.0], [0.0, 0.0, 6.0, 0.0]])
    expected = model.predict(queries, params={"explain": 2})
    split = {"dataframe_split": {"columns": NAMES[::-1], "data": queries[:, ::-1].tolist()}, "params": {"explain": 2}}
    for doc in ({"inputs": queries.tolist(), "params": {"explain": 2}}, split):
        status, payload = scorer.answer(json.dumps(doc).encode(), "application/json")
        assert status == 200, payload
        pd.testing.assert_frame_equal(pd.DataFrame(json.loads(payload)["predictions"]), expected)
    status, payload = scorer.answer(json.dumps({"inputs": [[1.0, float("nan"), 0.0, 0.0]]}).encode(), "application/json")
    assert status == 400 and json.loads(payload)["message"].startswith("NaN or infinite values in columns ['b']")
    status, payload = saved_guards_scorer_without_bank(saved_guards).answer(
        json.dumps({"inputs": queries.tolist(), "params": {"explain": 1}}).encode(), "application/json"
    )
    assert status == 400 and "no stored training examples" in json.loads(payload)["message"]


def saved_guards_scorer_without_bank(saved_guards):
    from flows.guard.serving import TensorScorer

    return TensorScorer(saved_guards["without_bank"], ["explain"])
