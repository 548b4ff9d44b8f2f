"""Plain-text formatting of report values, shared by the Markdown and the HTML renderers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluation.bootstrap import ConfidenceInterval
    from evaluation.calibration_stats import RealisedFPR


def format_ci(ci: ConfidenceInterval | None, value: float | None = None, digits: int = 4) -> str:
    """"0.9731 [0.9650, 0.9804]" (or just the value when there is no interval)."""
    if ci is None:
        return "n/a" if value is None else f"{value:.{digits}f}"
    estimate = ci.estimate if value is None else value
    return f"{estimate:.{digits}f} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def format_realised(realised: RealisedFPR) -> str:
    return (
        f"{realised.fpr:.4f} [{realised.ci_low:.4f}, {realised.ci_high:.4f}] "
        f"({realised.n_flagged}/{realised.n} flagged)"
    )
