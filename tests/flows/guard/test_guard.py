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
