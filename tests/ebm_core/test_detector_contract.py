"""The contract every detector kind passes, the way scikit-learn's check_estimator runs one list of
checks on every estimator: one case per detector kind, per objective of the objective registry and per
sampler of the sampler registry (with the cd objective). A new objective, sampler or kind is checked
without editing this file; a kind with no case here fails `test_every_registered_kind_has_a_case`.

Known case for the sign: three Gaussian blobs in the positive axes are in-distribution; rows around
(-3, ..., -3) are far away. Objectives that train on outliers (margin) are given some from that far
region (their known case: they learn that the outliers they were shown are OOD); without them margin
trains against permuted features, which on axis-aligned blobs are in-distribution rows.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from typing import Callable

import numpy as np
import pytest

from ebm_core import (
    DETECTOR_KINDS,
    OBJECTIVES,
    SAMPLERS,
    ComposedDetector,
    ContrastiveHeadConfig,
    ContrastiveHeadDetector,
    DetectorConfig,
    EnergyDetector,
    KernelDensityDetector,
    NotCalibratedError,
    NotFittedError,
    ShapeError,
    TrainConfig,
    load_detector,
    objective_config,
    sampler_config,
)
from ebm_core.detectors.base import Detector

TRAIN = TrainConfig(n_steps=80, batch_size=32, learning_rate=1e-2)
SMALL_OBJECTIVE = {"cd": {"buffer_capacity": 200}, "jem": {"buffer_capacity": 200}}
SMALL_SAMPLER = {"langevin": {"n_steps": 5}, "mala": {"n_steps": 5}, "hmc": {"n_steps": 3, "n_leapfrog": 2}}
ALPHA = 0.1


def blobs(n: int, seed: int, dim: int = 3):
    """Rows around the first min(dim, 3) axes at distance 4, labelled by blob."""
    rng = np.random.default_rng(seed)
    n_classes = min(dim, 3)
    y = rng.integers(0, n_classes, n)
    centres = 4.0 * np.eye(dim)[:n_classes]
    labels = np.array(["a", "b", "c"] if dim >= 3 else ["u", "v"])
    return centres[y] + rng.normal(scale=0.5, size=(n, dim)), labels[y]


def far(n: int, seed: int, dim: int = 3) -> np.ndarray:
    return -3.0 + np.random.default_rng(seed).normal(scale=0.5, size=(n, dim))


@dataclass(frozen=True)
class Case:
    make: Callable[[], Detector]
    fit_params: Callable[[int], dict] = lambda dim: {}  # noqa: E731 - per-case extras, given the data's width


def energy_case(objective: str, sampler: str = "langevin") -> Case:
    config = DetectorConfig(
        hidden_dims=(16,),
        objective=objective_config(objective, **SMALL_OBJECTIVE.get(objective, {})),
        sampler=sampler_config(sampler, **SMALL_SAMPLER.get(sampler, {})),
        train=TRAIN,
    )
    uses_outliers = OBJECTIVES[objective].uses_outliers
    fit_params = (lambda dim: {"outliers": far(100, 3, dim)}) if uses_outliers else (lambda dim: {})
    return Case(lambda: EnergyDetector(config), fit_params)


CASES: dict[str, Case] = {f"energy-{name}": energy_case(name) for name in OBJECTIVES}
CASES.update({f"energy-cd-{name}": energy_case("cd", name) for name in SAMPLERS if name != "langevin"})
CASES["kernel_density"] = Case(lambda: KernelDensityDetector(temperature=0.1))
CASES["composed"] = Case(
    lambda: ComposedDetector([(0.5, KernelDensityDetector(temperature=0.1)), (1.0, energy_case("dsm").make())])
)
CASES["contrastive_head"] = Case(
    lambda: ContrastiveHeadDetector(
        ContrastiveHeadConfig(hidden_dims=(16,), feature_dim=8, train=TrainConfig(n_steps=60, batch_size=64, learning_rate=1e-2))
    )
)
KIND_OF_CASE = {"kernel_density": "kernel_density", "composed": "composed", "contrastive_head": "contrastive_head"}

X_TRAIN, Y_TRAIN = blobs(300, 0)
X_CAL = blobs(200, 1)[0]
X_IN = blobs(100, 2)[0]
X_FAR = far(100, 4)
FEATURES = ["f0", "f1", "f2"]


@cache
def fitted(case_id: str) -> Detector:
    """Fitted once per case; tests that change a detector work on a deepcopy."""
    case = CASES[case_id]
    return case.make().fit(X_TRAIN, Y_TRAIN, feature_names=FEATURES, **case.fit_params(3))


@cache
def calibrated(case_id: str) -> Detector:
    return copy.deepcopy(fitted(case_id)).calibrate(X_CAL, alpha=ALPHA)


def test_every_registered_kind_has_a_case():
    covered = {KIND_OF_CASE.get(case_id, "energy") for case_id in CASES}
    assert covered == set(DETECTOR_KINDS)
    assert {type(case.make()).kind for case in CASES.values()} == set(DETECTOR_KINDS)


case_ids = pytest.mark.parametrize("case_id", list(CASES))


@case_ids
def test_fit_returns_self_and_score_is_float64_of_shape_n(case_id):
    case = CASES[case_id]
    detector = case.make()
    assert detector.fit(X_TRAIN[:100], Y_TRAIN[:100], **case.fit_params(3)) is detector
    detector = fitted(case_id)
    scores = detector.score(X_IN)
    assert scores.shape == (len(X_IN),) and scores.dtype == np.float64
    assert detector.score(X_IN[:0]).shape == (0,)
    assert detector.n_features_in_ == 3 and detector.feature_names_in_ == FEATURES


@case_ids
def test_in_distribution_scores_lower_than_far_away_rows_on_average(case_id):
    detector = fitted(case_id)
    assert detector.score(X_IN).mean() < detector.score(X_FAR).mean()


@case_ids
def test_refit_on_other_data_leaves_no_stale_state(case_id):
    case = CASES[case_id]
    detector = case.make().fit(X_TRAIN, Y_TRAIN, feature_names=FEATURES, **case.fit_params(3))
    detector.calibrate(X_CAL, alpha=ALPHA)
    x2, y2 = blobs(200, 5, dim=2)
    detector.fit(x2, y2, **case.fit_params(2))
    assert detector.n_features_in_ == 2 and detector.feature_names_in_ is None
    assert not detector.is_calibrated
    with pytest.raises(NotCalibratedError):
        detector.predict(x2)
    if isinstance(detector, EnergyDetector):
        assert detector.classes_ == (["u", "v"] if detector.energy_kind_ == "classifier" else None)
    assert detector.score(x2).shape == (200,)
    with pytest.raises(ShapeError, match=r"\(N, 2\)"):
        detector.score(X_IN)


@case_ids
def test_unfitted_and_uncalibrated_use_raise_named_errors(case_id, tmp_path):
    unfitted = CASES[case_id].make()
    for use in (unfitted.score, unfitted.calibrate, unfitted.predict, unfitted.p_value):
        with pytest.raises(NotFittedError, match="fit"):
            use(X_IN)
    with pytest.raises(NotFittedError):
        unfitted.save(tmp_path / "det")
    detector = fitted(case_id)
    with pytest.raises(NotCalibratedError, match="calibrate"):
        detector.predict(X_IN)
    with pytest.raises(NotCalibratedError):
        detector.p_value(X_IN)


@case_ids
def test_non_finite_or_misshapen_input_raises(case_id):
    detector = fitted(case_id)
    bad = X_IN[:4].copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"rows \[1\], columns \[0\]"):
        detector.score(bad)
    bad[1, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        detector.score(bad)
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        detector.score(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        CASES[case_id].make().fit(bad, Y_TRAIN[:4])


@case_ids
def test_save_then_load_detector_scores_identically(case_id, tmp_path):
    detector = calibrated(case_id)
    path = detector.save(tmp_path / "det")
    loaded = load_detector(path)
    assert type(loaded) is type(detector)
    assert json.loads((path / "detector.json").read_text())["kind"] == detector.kind
    probe = np.concatenate([X_IN, X_FAR])
    np.testing.assert_array_equal(loaded.score(probe), detector.score(probe))
    np.testing.assert_array_equal(loaded.p_value(probe), detector.p_value(probe))
    np.testing.assert_array_equal(loaded.calibration_energies_, detector.calibration_energies_)
    assert (loaded.threshold_, loaded.alpha_) == (detector.threshold_, detector.alpha_)
    assert (loaded.n_features_in_, loaded.feature_names_in_) == (3, FEATURES)
    assert type(detector).load(path).kind == detector.kind
    if isinstance(detector, EnergyDetector):
        assert loaded.config == detector.config
        # Labels were given: objectives that use them read a classifier as the energy.
        expected_kind = "mlp" if detector.config.objective.labels == "ignored" else "classifier"
        assert loaded.energy_kind_ == detector.energy_kind_ == expected_kind
        assert loaded.classes_ == detector.classes_ == (["a", "b", "c"] if expected_kind == "classifier" else None)
        assert loaded.history_.steps == detector.history_.steps


@case_ids
def test_predict_agrees_with_p_value_at_most_alpha_up_to_ties(case_id):
    detector = calibrated(case_id)
    probe = np.concatenate([X_IN, X_FAR, X_CAL[:50]])  # calibration rows give exact ties
    flagged = detector.predict(probe)
    disagree = flagged != (detector.p_value(probe) <= ALPHA)
    ties = np.isin(detector.score(probe), detector.calibration_energies_)
    assert not np.any(disagree & ~ties)
    assert flagged[len(X_IN) : len(X_IN) + len(X_FAR)].mean() > flagged[: len(X_IN)].mean()


@case_ids
def test_failed_recalibration_leaves_the_previous_calibration_intact(case_id):
    detector = copy.deepcopy(calibrated(case_id))
    before = (detector.threshold_, detector.alpha_, detector.calibration_energies_.copy())
    with pytest.raises(ValueError, match="alpha"):
        detector.calibrate(X_CAL[:50], alpha=1.5)
    assert (detector.threshold_, detector.alpha_) == before[:2]
    np.testing.assert_array_equal(detector.calibration_energies_, before[2])


@case_ids
def test_saving_over_a_detector_replaces_it_whole_and_keeps_companion_files(case_id, tmp_path):
    target = tmp_path / "det"
    fitted(case_id).save(target)
    (target / "featurizer.json").write_text("{}")
    own_files = sorted(p.name for p in target.iterdir())
    calibrated(case_id).save(target)
    assert sorted(p.name for p in target.iterdir()) == own_files
    assert [p.name for p in tmp_path.iterdir()] == ["det"]  # no staging or backup folders left behind
    assert load_detector(target).threshold_ == calibrated(case_id).threshold_


def test_loading_as_the_wrong_class_or_from_an_empty_folder_says_what_is_wrong(tmp_path):
    path = fitted("kernel_density").save(tmp_path / "kde")
    with pytest.raises(TypeError, match="KernelDensityDetector.*load_detector"):
        EnergyDetector.load(path)
    with pytest.raises(FileNotFoundError, match="detector.json"):
        load_detector(tmp_path / "nothing-here")
