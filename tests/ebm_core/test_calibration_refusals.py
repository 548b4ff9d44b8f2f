"""A guard that would flag nothing is refused: too few calibration rows for a finite threshold, a
constant energy, or a stored threshold its calibration energies do not give back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ebm_core import CalibrationError, ComposedDetector, KernelDensityDetector, conformal_threshold, load_detector

rng = np.random.default_rng(0)
X_TRAIN = rng.normal(size=(200, 4)) + 3.0
X_CAL = rng.normal(size=(100, 4)) + 3.0


def test_too_few_calibration_rows_for_alpha_are_refused_and_nothing_changes():
    detector = KernelDensityDetector(temperature=0.1).fit(X_TRAIN).calibrate(X_CAL, alpha=0.05)
    before = detector.threshold_
    # (n + 1)(1 - alpha) > n  <=>  n < (1 - alpha) / alpha = 19: 18 rows cannot give a finite threshold
    with pytest.raises(CalibrationError, match="18 calibration rows .* at least 19"):
        detector.calibrate(X_CAL[:18], alpha=0.05)
    assert detector.threshold_ == before
    assert np.isfinite(KernelDensityDetector(temperature=0.1).fit(X_TRAIN).calibrate(X_CAL[:19], alpha=0.05).threshold_)


def test_a_constant_energy_is_refused():
    constant = ComposedDetector([(0.0, KernelDensityDetector(temperature=0.1).fit(X_TRAIN))])
    with pytest.raises(CalibrationError, match="cannot tell inputs apart"):
        constant.calibrate(X_CAL, alpha=0.05)


@pytest.mark.parametrize("stored", [float("nan"), "inf", 1e9, "tampered"])
def test_a_stored_threshold_its_calibration_does_not_reproduce_does_not_load(tmp_path, stored):
    detector = KernelDensityDetector(temperature=0.1).fit(X_TRAIN).calibrate(X_CAL, alpha=0.05)
    folder = detector.save(tmp_path / "detector")
    assert load_detector(folder).threshold_ == conformal_threshold(detector.calibration_energies_, 0.05)
    metadata = json.loads((folder / "detector.json").read_text())
    metadata["threshold"] = detector.threshold_ + 1e-3 if stored == "tampered" else stored
    (folder / "detector.json").write_text(json.dumps(metadata))
    with pytest.raises(CalibrationError, match="stored threshold"):
        load_detector(folder)
