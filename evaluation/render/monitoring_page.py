"""The monitoring report: the problem rate over time, per model version, as one self-contained HTML page.

`MonitoringReport` (frozen, `to_dict`/`from_dict`) holds what the page shows; `render_monitoring_html`
is a pure function of it (no monitor, registry or Prefect needed), `write_monitoring_html` writes it
atomically. flows/monitoring/report.py builds the dataclass from the stored monitor states and the
promotion audit log.

Per model version the page draws, on one time axis (the time the monitor processed each batch, the
clock the audit log uses too; the batch index when a batch has no time):

- the flag rate per batch with its Clopper-Pearson interval, and the calibrated alpha as a line;
- the problem rate among accepted inputs (problems the guard missed) and among flagged inputs (flag
  precision), from feedback (1 = a person marked the input as a problem), each with its
  Clopper-Pearson interval; only rows with feedback count, and a batch whose feedback counts were not
  recorded has no point;
- alarm markers (the sequential detector fired on that batch);
- promotion, rollback and retraining markers (time, from -> to version);

then a table per batch. Figures are inline base64 PNGs (matplotlib, no script, nothing fetched).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation.calibration_stats import binomial_ci
from evaluation.files import write_text_atomic
from evaluation.render.page import figure_img, html_table, page

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONVENTIONS = (
    "energy: higher = more OOD; flagged = energy > the calibrated threshold, so a fresh in-distribution "
    "input is flagged with probability at most alpha; flag rate = flagged / scored inputs; problem rates "
    "use only rows with feedback (1 = a person marked the input as a problem): among accepted inputs = "
    "problems the guard missed, among flagged inputs = flag precision; intervals are exact "
    "(Clopper-Pearson); time = when the monitor processed the batch (UTC)"
)
FEEDBACK_KEYS = ("n_rows", "n_with_feedback", "accepted_n", "accepted_problems", "flagged_n", "flagged_problems")
EVENT_KINDS = ("promote", "bootstrap", "rollback", "retrain", "retrain failed")
_EVENT_STYLE = {  # colour, line style
    "promote": ("#2e7d32", "-"),
    "bootstrap": ("#2e7d32", "-"),
    "rollback": ("#c62828", "-."),
    "retrain": ("#6a1b9a", ":"),
    "retrain failed": ("#6a1b9a", ":"),
}


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _counts(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    missing = [k for k in FEEDBACK_KEYS if k not in value]
    if missing:
        raise ValueError(f"feedback counts miss {missing}")
    return {k: int(value[k]) for k in FEEDBACK_KEYS}


def parse_time(text: str | None) -> datetime | None:
    """An ISO time as an aware UTC datetime (naive = UTC); None for None."""
    if text is None:
        return None
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class Interval:
    """k of n: the rate and its Clopper-Pearson interval (all None when n == 0)."""

    k: int
    n: int
    rate: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, k: int, n: int, confidence: float) -> Interval:
        if n == 0:
            return cls(0, 0, None, None, None)
        low, high = binomial_ci(k, n, confidence)
        return cls(int(k), int(n), k / n, low, high)

    def text(self) -> str:
        if self.rate is None:
            return "no data"
        return f"{self.rate:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.k}/{self.n})"


@dataclass(frozen=True)
class BatchPoint:
    """One processed batch as the monitor's state records it. `feedback` holds the batch's feedback
    counts (`evaluation.monitoring.feedback_counts` keys) when the monitor recorded them, else None."""

    index: int
    source: str
    time: str | None  # ISO UTC: when the monitor processed the batch
    n: int
    n_flagged: int
    alarm: bool
    feedback: dict[str, int] | None = None
    first_timestamp: str | None = None  # of the batch's rows, when recorded
    last_timestamp: str | None = None

    def __post_init__(self):
        if not 0 <= self.n_flagged <= self.n or self.n < 1:
            raise ValueError(f"batch {self.index}: need 0 <= n_flagged <= n, n >= 1; got {self.n_flagged} of {self.n}")

    def flag_rate(self, confidence: float = 0.95) -> Interval:
        return Interval.of(self.n_flagged, self.n, confidence)

    def accepted_problems(self, confidence: float = 0.95) -> Interval | None:
        if self.feedback is None:
            return None
        return Interval.of(self.feedback["accepted_problems"], self.feedback["accepted_n"], confidence)

    def flagged_problems(self, confidence: float = 0.95) -> Interval | None:
        if self.feedback is None:
            return None
        return Interval.of(self.feedback["flagged_problems"], self.feedback["flagged_n"], confidence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "source": self.source, "time": self.time, "n": self.n,
            "n_flagged": self.n_flagged, "alarm": self.alarm,
            "feedback": None if self.feedback is None else dict(self.feedback),
            "first_timestamp": self.first_timestamp, "last_timestamp": self.last_timestamp,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchPoint:
        return cls(
            index=int(d["index"]),
            source=str(d["source"]),
            time=_opt_str(d.get("time")),
            n=int(d["n"]),
            n_flagged=int(d["n_flagged"]),
            alarm=bool(d["alarm"]),
            feedback=_counts(d.get("feedback")),
            first_timestamp=_opt_str(d.get("first_timestamp")),
            last_timestamp=_opt_str(d.get("last_timestamp")),
        )


@dataclass(frozen=True)
class OpsEvent:
    """A promotion, bootstrap or rollback from the audit log, or a training run (retrain) from the
    pipeline's run folders: when, what, from -> to version."""

    time: str
    kind: str
    from_version: str | None
    to_version: str | None
    note: str = ""
    model_name: str | None = None

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; known: {EVENT_KINDS}")

    def label(self) -> str:
        if self.kind in ("retrain", "retrain failed"):
            return f"{self.kind}" + (f" -> v{self.to_version}" if self.to_version else "")
        return f"{self.kind} v{self.from_version} -> v{self.to_version}"

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "kind": self.kind, "from_version": self.from_version,
                "to_version": self.to_version, "note": self.note, "model_name": self.model_name}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpsEvent:
        return cls(str(d["time"]), str(d["kind"]), _opt_str(d.get("from_version")), _opt_str(d.get("to_version")),
                   str(d.get("note", "")), _opt_str(d.get("model_name")))  # fmt: skip


@dataclass(frozen=True)
class VersionSeries:
    """The batches one model version's monitor processed, with its calibrated alpha (None: unknown),
    the feedback counts over all its batches, and the batches alarmed on."""

    model_name: str
    version: str
    alpha: float | None
    batches: tuple[BatchPoint, ...]
    overall_feedback: dict[str, int] | None = None
    n_quarantined: int = 0
    state_file: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "batches", tuple(self.batches))

    @property
    def n_inputs(self) -> int:
        return sum(b.n for b in self.batches)

    @property
    def n_flagged(self) -> int:
        return sum(b.n_flagged for b in self.batches)

    @property
    def alarms(self) -> list[int]:
        return [b.index for b in self.batches if b.alarm]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name, "version": self.version, "alpha": self.alpha,
            "batches": [b.to_dict() for b in self.batches],
            "overall_feedback": None if self.overall_feedback is None else dict(self.overall_feedback),
            "n_quarantined": self.n_quarantined, "state_file": self.state_file,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VersionSeries:
        return cls(
            model_name=str(d["model_name"]),
            version=str(d["version"]),
            alpha=None if d.get("alpha") is None else float(d["alpha"]),
            batches=tuple(BatchPoint.from_dict(b) for b in d["batches"]),
            overall_feedback=_counts(d.get("overall_feedback")),
            n_quarantined=int(d.get("n_quarantined", 0)),
            state_file=_opt_str(d.get("state_file")),
        )


@dataclass(frozen=True)
class MonitoringReport:
    generated_at: str
    versions: tuple[VersionSeries, ...]
    events: tuple[OpsEvent, ...] = ()
    confidence: float = 0.95
    model_name: str | None = None  # None: every model found
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "versions", tuple(self.versions))
        object.__setattr__(self, "events", tuple(self.events))
        object.__setattr__(self, "notes", tuple(self.notes))
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "versions": [v.to_dict() for v in self.versions],
            "events": [e.to_dict() for e in self.events],
            "confidence": self.confidence,
            "model_name": self.model_name,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MonitoringReport:
        return cls(
            generated_at=str(d["generated_at"]),
            versions=tuple(VersionSeries.from_dict(v) for v in d["versions"]),
            events=tuple(OpsEvent.from_dict(e) for e in d.get("events", [])),
            confidence=float(d.get("confidence", 0.95)),
            model_name=_opt_str(d.get("model_name")),
            notes=tuple(str(n) for n in d.get("notes", [])),
        )

    def events_of(self, model_name: str | None = None) -> list[OpsEvent]:
        """Events of a model (every event for None, and events without a model name), by time."""
        chosen = [e for e in self.events if model_name is None or e.model_name in (None, model_name)]
        return sorted(chosen, key=lambda e: parse_time(e.time))


# --- rows -------------------------------------------------------------------------------------------


def batch_rows(series: VersionSeries, confidence: float = 0.95) -> list[dict[str, Any]]:
    """One dict per batch: the figures the page's table shows (rates with their intervals)."""
    rows = []
    for b in series.batches:
        flag = b.flag_rate(confidence)
        accepted, flagged = b.accepted_problems(confidence), b.flagged_problems(confidence)
        rows.append({
            "batch": b.index, "source": b.source, "time": b.time, "n": b.n, "flagged": b.n_flagged,
            "flag_rate": flag, "alpha": series.alpha,
            "accepted_problem_rate": accepted, "flagged_problem_rate": flagged,
            "n_with_feedback": None if b.feedback is None else b.feedback["n_with_feedback"],
            "alarm": b.alarm,
        })  # fmt: skip
    return rows


# --- the figure -------------------------------------------------------------------------------------


def _x_positions(series: VersionSeries) -> tuple[list[Any], bool]:
    """Batch times (datetimes) when every batch has one, else batch indices."""
    times = [parse_time(b.time) for b in series.batches]
    if times and all(t is not None for t in times):
        return times, True
    return [b.index for b in series.batches], False


def _errorbars(axes, xs, intervals, **style) -> bool:
    pts = [(x, i) for x, i in zip(xs, intervals) if i is not None and i.rate is not None]
    if not pts:
        return False
    x = [p[0] for p in pts]
    rate = [p[1].rate for p in pts]
    below = [p[1].rate - p[1].low for p in pts]
    above = [p[1].high - p[1].rate for p in pts]
    axes.errorbar(x, rate, yerr=[below, above], capsize=3, **style)
    return True


def version_figure(series: VersionSeries, events: list[OpsEvent], confidence: float = 0.95) -> Figure:
    """Two panels on one time axis: flag rate (with alpha and alarms) and the two problem rates;
    promotion, rollback and retraining markers on both."""
    from matplotlib.figure import Figure

    xs, timed = _x_positions(series)
    figure = Figure(figsize=(10, 6.5))
    top, bottom = figure.subplots(2, 1, sharex=True)
    _errorbars(top, xs, [b.flag_rate(confidence) for b in series.batches], fmt="o-", color="#1f77b4",
               label=f"flag rate ({confidence:.0%} CI)")  # fmt: skip
    if series.alpha is not None:
        top.axhline(series.alpha, color="black", linestyle="--", label=f"calibrated alpha {series.alpha:g}")
    alarm_x = [x for x, b in zip(xs, series.batches) if b.alarm]
    alarm_y = [b.n_flagged / b.n for b in series.batches if b.alarm]
    if alarm_x:
        top.scatter(alarm_x, alarm_y, marker="X", s=140, color="#d62728", zorder=5, label="alarm")
        for x in alarm_x:
            bottom.axvline(x, color="#d62728", alpha=0.25, linewidth=6)
    shown_accepted = _errorbars(bottom, xs, [b.accepted_problems(confidence) for b in series.batches],
                                fmt="s-", color="#ff7f0e", label="problem rate among accepted")  # fmt: skip
    shown_flagged = _errorbars(bottom, xs, [b.flagged_problems(confidence) for b in series.batches],
                               fmt="^--", color="#9467bd", label="problem rate among flagged")  # fmt: skip
    if not (shown_accepted or shown_flagged):
        bottom.text(0.5, 0.5, "no per-batch feedback recorded", ha="center", va="center", transform=bottom.transAxes)
    if timed:
        labelled = set()
        for event in events:
            x = parse_time(event.time)
            colour, style = _EVENT_STYLE[event.kind]
            for axes in (top, bottom):
                axes.axvline(x, color=colour, linestyle=style, linewidth=1.5,
                             label=event.kind if axes is top and event.kind not in labelled else None)  # fmt: skip
            labelled.add(event.kind)
            top.annotate(event.label(), (x, 1.0), xycoords=("data", "axes fraction"), xytext=(-2, -3),
                         textcoords="offset points", rotation=90, fontsize=8, va="top", ha="right",
                         color=colour)  # fmt: skip
        top.set_xlabel("")
        bottom.set_xlabel("time the batch was processed (UTC)")
        figure.autofmt_xdate()
    else:
        bottom.set_xlabel("batch index (no batch times recorded)")
    top.set_ylabel("flag rate")
    bottom.set_ylabel("problem rate")
    top.set_ylim(bottom=0)
    bottom.set_ylim(0, 1.02)
    top.set_title(f"{series.model_name} v{series.version}: flag rate and problem rates per batch")
    top.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if shown_accepted or shown_flagged:
        bottom.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


# --- the page -------------------------------------------------------------------------------------


def _fmt(interval: Interval | None) -> str:
    return "not recorded" if interval is None else interval.text()


def _summary_table(series: VersionSeries, confidence: float) -> str:
    rows: list[tuple[str, Any]] = [
        ("batches", len(series.batches)),
        ("inputs scored", series.n_inputs),
        ("calibrated alpha", "unknown" if series.alpha is None else f"{series.alpha:g}"),
        ("flag rate, all batches", _fmt(Interval.of(series.n_flagged, series.n_inputs, confidence))),
        ("alarms (batch index)", ", ".join(map(str, series.alarms)) or "none"),
        ("quarantined files", series.n_quarantined),
    ]
    fb = series.overall_feedback
    if fb is not None:
        rows += [
            ("inputs with feedback", fb["n_with_feedback"]),
            ("problem rate among accepted, all batches", _fmt(Interval.of(fb["accepted_problems"], fb["accepted_n"], confidence))),
            ("problem rate among flagged, all batches", _fmt(Interval.of(fb["flagged_problems"], fb["flagged_n"], confidence))),
        ]  # fmt: skip
    return html_table(["", "value"], rows)


def _batch_table(series: VersionSeries, confidence: float) -> str:
    header = ["batch", "file", "processed (UTC)", "rows' timestamps", "n", "flagged", "flag rate [CI]",
              "with feedback", "problems among accepted [CI]", "problems among flagged [CI]", "alarm"]  # fmt: skip
    rows, classes = [], []
    for b, row in zip(series.batches, batch_rows(series, confidence)):
        stamps = f"{b.first_timestamp} .. {b.last_timestamp}" if b.first_timestamp else "-"
        rows.append((
            b.index, b.source, b.time or "-", stamps, b.n, b.n_flagged, row["flag_rate"].text(),
            "not recorded" if row["n_with_feedback"] is None else row["n_with_feedback"],
            _fmt(row["accepted_problem_rate"]), _fmt(row["flagged_problem_rate"]), "ALARM" if b.alarm else "",
        ))  # fmt: skip
        classes.append("failrow" if b.alarm else "")
    return html_table(header, rows, row_classes=classes)


def _events_table(events: list[OpsEvent]) -> str:
    if not events:
        return "<p>No promotion, rollback or training run recorded.</p>"
    rows = [(e.time, e.model_name or "-", e.kind, e.from_version or "-", e.to_version or "-", e.note) for e in events]
    return html_table(["time (UTC)", "model", "event", "from version", "to version", "note"], rows)


def render_monitoring_html(report: MonitoringReport) -> str:
    title = f"Monitoring report: {report.model_name}" if report.model_name else "Monitoring report"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">generated {escape(report.generated_at)}; {len(report.versions)} model version(s); '
        f"intervals at {report.confidence:.0%}</p>",
        f'<p class="conventions">{escape(CONVENTIONS)}</p>',
    ]
    for note in report.notes:
        parts.append(f'<p class="note">{escape(note)}</p>')
    for series in report.versions:
        events = report.events_of(series.model_name)
        parts.append(f'<h2 id="v-{escape(series.model_name)}-{escape(series.version)}">'
                     f"{escape(series.model_name)} version {escape(series.version)}</h2>")  # fmt: skip
        parts.append(_summary_table(series, report.confidence))
        if series.batches:
            parts.append(figure_img(version_figure(series, events, report.confidence),
                                    f"flag rate and problem rates over time, {series.model_name} v{series.version}"))  # fmt: skip
            parts.append("<h3>Batches</h3>")
            parts.append(_batch_table(series, report.confidence))
        else:
            parts.append("<p>No batch processed yet.</p>")
    parts.append("<h2>Promotions, rollbacks and training runs</h2>")
    parts.append(_events_table(report.events_of(report.model_name)))
    return page(title, "\n".join(parts))


def write_monitoring_html(report: MonitoringReport, path: str | Path) -> Path:
    """Render and write atomically (a reader never sees half a page)."""
    return write_text_atomic(Path(path), render_monitoring_html(report))
