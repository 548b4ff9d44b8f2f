"""Report builders shared by the tests of the report schema (tests/evaluation/test_report.py,
test_compare.py) and of its renderers (tests/evaluation/render/)."""

import numpy as np

from evaluation.baselines import run_baselines
from evaluation.compare import DEFAULT_GATES, Gates
from evaluation.report import EvalReport, build_report

# --- small hand-checkable reports ----------------------------------------------------------------

IN_TEST = np.array([0.0, 1.0, 2.0, 3.0])
NEAR = np.array([1.5, 2.5])
FAR = np.array([10.0, 11.0])

V2_FIELDS = {
    "ood_kinds", "metric_cis", "bootstrap", "calibration", "separation", "baselines", "data_checks_passed",
}


def simple_report(threshold=2.5, **kwargs):
    kwargs.setdefault("n_bootstrap", 200)
    return build_report(
        {"in_test": IN_TEST, "in_cal": np.array([0.5, 1.5, 2.5]), "near": NEAR, "far": FAR},
        in_distribution_split="in_test",
        ood_splits=["near", "far"],
        threshold=threshold,
        alpha=0.05,
        calibration_split="in_cal",
        **kwargs,
    )


def schema_v1_report():
    """simple_report() as a schema version 1 report (no intervals, calibration, separation, baselines)."""
    data = simple_report().to_dict()
    for name in V2_FIELDS:
        del data[name]
    data["schema_version"] = 1
    return EvalReport.from_dict(data)


# --- a report with every section ------------------------------------------------------------------


def gaussian_setting(seed=0, n_train=300, n=200, d=4):
    """Features for baselines, and the EBM stand-in score |x|^2 on the same inputs."""
    rng = np.random.default_rng(seed)
    x_train = rng.normal(size=(n_train, d))
    y_train = (x_train[:, 0] > 0).astype(int)
    features = {
        "in_test": rng.normal(size=(n, d)),
        "calibration": rng.normal(size=(n, d)),
        "ood_digits": rng.normal(0.8, 1.0, size=(n, d)),
        "ood_uniform_noise": rng.uniform(-6, 6, size=(n // 2, d)),
    }
    scores = {split: np.sum(x**2, axis=1) for split, x in features.items()}
    return x_train, y_train, features, scores


def full_report():
    """(report, baselines, scores): every section filled, two OOD splits (one near, one far)."""
    x_train, y_train, features, scores = gaussian_setting()
    ood = ["ood_digits", "ood_uniform_noise"]
    baselines = run_baselines(x_train, y_train, features, "in_test", ood)
    report = build_report(
        scores,
        "in_test",
        ood,
        threshold=float(np.quantile(scores["calibration"], 0.95)),
        alpha=0.05,
        calibration_split="calibration",
        baselines=baselines,
        n_bootstrap=300,
        seed=3,
        training_curve={"step": [0, 10, 20], "loss": [1.0, 0.5, 0.2], "e_pos": [0.1, 0.0, -0.1]},
        dataset_fingerprints={split: f"sha256:{split}" for split in scores},
        data_checks_passed=True,
        device="cpu",
        model_uri="models:/guard/3",
    )
    return report, baselines, scores


# --- pairs of reports for comparisons ---------------------------------------------------------------

COMPARED_OOD = ["ood_near", "ood_far_noise"]

# The default gates with fewer resamples, for speed.
FAST_GATES = Gates.from_dict({**DEFAULT_GATES, "bootstrap": {"n_resamples": 300, "seed": 0, "confidence": 0.95}})


def synthetic_scores(seed=0, n_in=300, n_ood=200, near_shift=1.5):
    rng = np.random.default_rng(seed)
    return {
        "calibration": rng.normal(size=n_in),
        "in_test": rng.normal(size=n_in),
        "ood_near": rng.normal(near_shift, 1.0, size=n_ood),
        "ood_far_noise": rng.normal(6.0, 1.0, size=n_ood),
    }


def make_report(scores, *, fingerprints="same", threshold=None, data_checks_passed=True, n_bootstrap=200, **kwargs):
    if fingerprints == "same":
        fingerprints = {split: f"sha256:{split}" for split in scores}
    if threshold is None:
        threshold = float(np.quantile(scores["calibration"], 0.95))
    return build_report(
        scores, "in_test", [s for s in COMPARED_OOD if s in scores], threshold=threshold, alpha=0.05,
        calibration_split="calibration", dataset_fingerprints=fingerprints,
        data_checks_passed=data_checks_passed, n_bootstrap=n_bootstrap, **kwargs,
    )


def worse(scores, factor=0.5):
    """The same inputs, scored by a model that separates the near OOD split worse."""
    return dict(scores, ood_near=scores["in_test"].mean() + factor * (scores["ood_near"] - scores["in_test"].mean()))
