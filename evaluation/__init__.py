"""Evaluation of energy-based OOD guards: statistics and schemas. Metrics, calibration and monitoring
statistics, baselines, the report schema (`EvalReport`, `build_report`), report comparison and gates
(`evaluation.compare`: `compare_reports`, `Gates`), and file helpers (`evaluation.files`: atomic
writes, file hashes). Rendering (HTML pages, figures, Markdown, terminal tables) is `evaluation.render`,
which imports these modules and is imported by none of them.

Convention everywhere: the score is the energy, higher = more OOD, OOD is the positive class.

`evaluation.render` (matplotlib), `evaluation.baselines` (scikit-learn) and
`evaluation.calibration_stats` / `evaluation.monitoring` (ebm_core, hence torch) are not imported
here, so importing the metrics and reports stays cheap.
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
    precision_recall_curve,
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
    "precision_recall_curve",
    "realised_fpr",
    "roc_curve",
]
