"""The report's pictures of what the model considers in-distribution: Langevin samples of a digits
guard's energy beside training images (flows.guard.explanations.langevin_pictures), in the report JSON
and its HTML page."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ebm_core import DetectorConfig, EnergyDetector, KernelDensityDetector
from evaluation.render.report_page import render_html
from evaluation.report import EvalReport
from flows.data.datasets import DIGITS_PIXEL_MAX, DigitsDataConfig, pixel_columns, prepare_digits
from flows.guard.explanations import langevin_pictures
from tests.evaluation.reports import simple_report

IMAGE = 'src="data:image/png;base64,'
HEADING = "What the model considers in-distribution"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    paths = prepare_digits(DigitsDataConfig(), tmp_path_factory.mktemp("digits"), seed=0)
    return pd.read_parquet(paths["train"])[pixel_columns()].to_numpy(dtype=np.float64)


def test_a_digits_guard_report_shows_langevin_samples_beside_training_images(digits, tmp_path):
    detector = EnergyDetector(
        DetectorConfig.from_dict({"hidden_dims": [32], "objective": {"name": "dsm", "sigmas": [1.0]},
                                  "train": {"n_steps": 50, "batch_size": 64}})
    ).fit(digits, feature_names=pixel_columns())
    pictures = langevin_pictures(detector, digits, pixel_columns(), n_samples=16, n_steps=20,
                                 value_range=(0.0, DIGITS_PIXEL_MAX))
    assert pictures["image_shape"] == [8, 8] and len(pictures["samples"]) == 16
    plain = simple_report()
    report = replace(plain, model_samples=pictures)
    # the report JSON keeps the samples exactly
    path = report.write_json(tmp_path / "report.json")
    assert EvalReport.read_json(path) == report
    html = render_html(report)
    assert HEADING in html and "16 samples drawn from the trained energy by Langevin dynamics" in html
    assert html.count(IMAGE) == render_html(plain).count(IMAGE) + 1  # the samples figure
    assert 'alt="Langevin samples of the model beside training images"' in html
    assert HEADING not in render_html(plain)


def test_a_detector_without_a_differentiable_energy_gets_a_note(digits):
    from ebm_core import ComposedDetector
    from tests.flows.guard.test_explanations import _RankDetector

    rank = _RankDetector().fit(digits, feature_names=pixel_columns())
    composed = ComposedDetector([(0.5, rank), (0.5, KernelDensityDetector().fit(digits, feature_names=pixel_columns()))])
    pictures = langevin_pictures(composed, digits, pixel_columns(), n_samples=8)
    html = render_html(replace(simple_report(), model_samples=pictures))
    assert HEADING in html and "no Langevin samples: the composed detector has no differentiable energy" in html
    assert html.count(IMAGE) == render_html(simple_report()).count(IMAGE) + 1  # the training images only
