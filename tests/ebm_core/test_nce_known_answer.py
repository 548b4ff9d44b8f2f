"""NCE known answer: on data from a 2-D Gaussian, the trained energy must rank points like the true
negative log-density, and the detector must score the energy E, never the NCE logit
G = -E - c - log q (a density *ratio*, which is higher far from the data than near it: scoring it
ranks far-away inputs as in-distribution, the failure seen on digits 6-9)."""

from __future__ import annotations

import numpy as np
import torch

from ebm_core import DetectorConfig, EnergyDetector, TrainConfig, objective_config


def test_nce_energy_matches_the_true_negative_log_density_of_a_gaussian():
    rng = np.random.default_rng(0)
    covariance = np.array([[1.0, 0.6], [0.6, 0.8]])
    x = rng.multivariate_normal([0.0, 0.0], covariance, size=2000)
    config = DetectorConfig(
        hidden_dims=(32, 32),
        objective=objective_config("nce", noise_ratio=4, noise_scale=1.5),
        train=TrainConfig(n_steps=600, batch_size=256, learning_rate=3e-3),
    )
    detector = EnergyDetector(config).fit(x, seed=0)

    query = rng.multivariate_normal([0.0, 0.0], 2.0 * covariance, size=500)
    precision = np.linalg.inv(covariance)
    true_energy = 0.5 * np.einsum("nd,de,ne->n", query, precision, query)  # -log p up to a constant
    energy = detector.score(query)
    assert np.corrcoef(energy, true_energy)[0, 1] > 0.95
    # far from the data is high energy: the score is E, not the NCE logit (which would invert this)
    far, centre = detector.score(np.array([[4.0, -4.0]])), detector.score(np.array([[0.0, 0.0]]))
    assert far[0] > centre[0] + 3.0
