"""The monitoring report page: known-answer rates, the dataclass's JSON round trip, the page's
contents, and the page in headless Chromium (figures and table in the DOM, a screenshot)."""

import json
import re
import shutil

import numpy as np
import pytest

from evaluation.render.monitoring_page import (
    BatchPoint,
    Interval,
    MonitoringReport,
    OpsEvent,
    VersionSeries,
    batch_rows,
    render_monitoring_html,
    write_monitoring_html,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def counts(accepted_n, accepted_problems, flagged_n, flagged_problems, n_rows=None):
    return {
        "n_rows": n_rows if n_rows is not None else accepted_n + flagged_n,
        "n_with_feedback": accepted_n + flagged_n,
        "accepted_n": accepted_n, "accepted_problems": accepted_problems,
        "flagged_n": flagged_n, "flagged_problems": flagged_problems,
    }  # fmt: skip


def sample_report() -> MonitoringReport:
    v1 = VersionSeries(
        model_name="ebm-guard", version="1", alpha=0.05,
        batches=(
            BatchPoint(0, "b000.parquet", "2026-01-01T00:00:00+00:00", 40, 2, False, counts(10, 0, 2, 1, n_rows=40)),
            BatchPoint(1, "b001.parquet", "2026-01-02T00:00:00+00:00", 40, 4, False, counts(20, 2, 4, 3, n_rows=40)),
            BatchPoint(2, "b002.parquet", "2026-01-03T00:00:00+00:00", 50, 30, True, counts(10, 1, 4, 4, n_rows=50),
                       "2026-01-02T23:00:00+00:00", "2026-01-03T00:00:00+00:00"),
        ),
        overall_feedback=counts(40, 3, 10, 8, n_rows=130), n_quarantined=1, state_file="/x/ebm-guard-v1.json",
    )  # fmt: skip
    v2 = VersionSeries(
        model_name="ebm-guard", version="2", alpha=0.05,
        batches=(
            BatchPoint(0, "b003.parquet", "2026-01-05T00:00:00+00:00", 40, 1, False, None),
            BatchPoint(1, "b004.parquet", "2026-01-06T00:00:00+00:00", 40, 3, False, counts(30, 3, 3, 1, n_rows=40)),
        ),
    )  # fmt: skip
    events = (
        OpsEvent("2025-12-31T12:00:00+00:00", "retrain", None, "1", "run r1", "ebm-guard"),
        OpsEvent("2025-12-31T13:00:00+00:00", "bootstrap", None, "1", "ci", "ebm-guard"),
        OpsEvent("2026-01-04T00:00:00+00:00", "promote", "1", "2", "alice nightly", "ebm-guard"),
        OpsEvent("2026-01-06T12:00:00+00:00", "rollback", "2", "1", "bob worse", "ebm-guard"),
    )
    return MonitoringReport("2026-01-07T00:00:00+00:00", (v1, v2), events, 0.95, "ebm-guard", ("a note",))


def test_rates_known_answers():
    series = sample_report().versions[0]
    rows = batch_rows(series)
    # batch 0: 2/40 flagged; 0 of 10 accepted were problems; 1 of 2 flagged
    assert rows[0]["flag_rate"].rate == pytest.approx(0.05)
    assert rows[0]["accepted_problem_rate"].rate == 0.0
    # Clopper-Pearson, 0 of 10: upper = 1 - 0.025 ** (1/10)
    assert rows[0]["accepted_problem_rate"].low == 0.0
    assert rows[0]["accepted_problem_rate"].high == pytest.approx(1 - 0.025 ** 0.1, abs=1e-9)
    assert rows[0]["flagged_problem_rate"].rate == pytest.approx(0.5)
    # batch 1: 4/40 = 0.1 flagged; 2/20 = 0.1 among accepted; 3/4 = 0.75 among flagged
    assert (rows[1]["flag_rate"].rate, rows[1]["accepted_problem_rate"].rate, rows[1]["flagged_problem_rate"].rate) == (
        pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.75))
    # batch 2: 30/50 flagged; 4 of 4 flagged were problems: lower = 0.025 ** (1/4), upper = 1
    assert rows[2]["flag_rate"].rate == pytest.approx(0.6)
    assert rows[2]["flagged_problem_rate"].low == pytest.approx(0.025 ** 0.25, abs=1e-9)
    assert rows[2]["flagged_problem_rate"].high == 1.0
    assert [r["alarm"] for r in rows] == [False, False, True]
    assert series.n_inputs == 130 and series.n_flagged == 36 and series.alarms == [2]
    # a batch without recorded counts has no problem rates; an empty denominator has no rate
    other = batch_rows(sample_report().versions[1])
    assert other[0]["accepted_problem_rate"] is None and other[0]["n_with_feedback"] is None
    assert Interval.of(0, 0, 0.95) == Interval(0, 0, None, None, None)


def test_report_round_trips_through_json():
    report = sample_report()
    again = MonitoringReport.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))
    assert again == report
    assert again.to_dict() == report.to_dict()


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="n_flagged"):
        BatchPoint(0, "b", None, 10, 11, False)
    with pytest.raises(ValueError, match="unknown event kind"):
        OpsEvent("2026-01-01T00:00:00", "deploy", None, "1")
    with pytest.raises(ValueError, match="feedback counts miss"):
        BatchPoint.from_dict({"index": 0, "source": "b", "n": 1, "n_flagged": 0, "alarm": False, "feedback": {"n_rows": 1}})


def test_page_holds_figures_tables_and_markers():
    html = render_monitoring_html(sample_report())
    assert html.count("<img ") == 2  # one figure per version
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    assert "<script" not in html
    for text in ("ebm-guard version 1", "ebm-guard version 2", "b002.parquet", "ALARM", "0.750 [",
                 "not recorded", "promote", "rollback", "retrain", "a note", "calibrated alpha"):
        assert text in html, text
    # per-batch table rows: 3 + 2 batches
    assert len(re.findall(r"<td>b00\d\.parquet</td>", html)) == 5


def test_page_without_batch_times_uses_the_batch_index(tmp_path):
    series = VersionSeries("m", "3", None, (BatchPoint(0, "a.csv", None, 10, 1, False), BatchPoint(1, "b.csv", None, 10, 9, True)))
    report = MonitoringReport("2026-01-07T00:00:00+00:00", (series,))
    path = write_monitoring_html(report, tmp_path / "m.html")
    html = path.read_text()
    assert html.count("<img ") == 1 and "calibrated alpha</td><td>unknown" in html
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.server
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (run infra/install_test_deps.sh as root to install it)")
def test_monitoring_page_renders_in_chromium(tmp_path):
    from PIL import Image

    from tests.evaluation.render.test_html_in_browser import chromium, render_checks

    path = write_monitoring_html(sample_report(), tmp_path / "monitoring.html")
    render_checks(path, tmp_path, min_images=2)  # no console errors, not blank, every image decodes
    png = tmp_path / "monitoring.png"
    print(f"\nmonitoring report screenshot: {png}")
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[:2] == (3000, 1200)

    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", path.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert len(re.findall(r'<img alt="flag rate and problem rates over time, ebm-guard v\d"', text)) == 2
    assert len(re.findall(r"<td>b00\d\.parquet</td>", text)) == 5
    for expected in ("Monitoring report: ebm-guard", "problems among accepted [CI]", "Promotions, rollbacks and training runs",
                     "ALARM", "rollback"):  # fmt: skip
        assert expected in text, expected
