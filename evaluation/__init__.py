"""Evaluation of energy-based OOD guards: metrics, reports (JSON/Markdown/HTML), report comparison.

Convention everywhere: the score is the energy, higher = more OOD, OOD is the positive class.

`evaluation.html_report` (matplotlib), `evaluation.baselines` (scikit-learn),
`evaluation.calibration_stats` (ebm_core, hence torch) and `flows.data.data_checks`
(great_expectations) are not imported here, so importing the metrics and reports stays cheap.
`evaluation.compare` holds report comparison and gates (`compare_reports`, `Gates`).
"""

from evaluation.metrics import (
    EnergyStats,
    OODMetrics,
    aupr_in,
    aupr_out,
    auroc,
    energy_stats,
    fpr_at_tpr,
    ood_metrics,
    realised_fpr,
    roc_curve,
)
from evaluation.report import (
    SCHEMA_VERSION,
    BaselineSection,
    BootstrapSettings,
    CalibrationSection,
    EvalReport,
    build_report,
    summary_rows,
    to_markdown,
)

__all__ = [
    "SCHEMA_VERSION",
    "BaselineSection",
    "BootstrapSettings",
    "CalibrationSection",
    "EnergyStats",
    "EvalReport",
    "OODMetrics",
    "aupr_in",
    "aupr_out",
    "auroc",
    "build_report",
    "energy_stats",
    "fpr_at_tpr",
    "ood_metrics",
    "realised_fpr",
    "roc_curve",
    "summary_rows",
    "to_markdown",
]
