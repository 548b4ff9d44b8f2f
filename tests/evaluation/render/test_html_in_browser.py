"""The report and comparison HTML open in a real browser: headless Chromium draws them without
console errors, every image decodes, and the screenshot is not blank.

Needs Debian's `chromium` (infra/install_test_deps.sh installs it); skipped only when it is absent.
"""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evaluation.baselines import run_baselines
from evaluation.compare import Gates, compare_reports
from evaluation.render.comparison_page import write_comparison_html
from evaluation.render.report_page import write_html
from evaluation.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.server,  # starts a headless chromium
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (run infra/install_test_deps.sh as root to install it)"
    ),
]

# Appended to a COPY of the page (the reports themselves carry no script): after load, record how
# many images there are and how many decoded to a non-empty bitmap.
IMAGE_PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
  document.body.setAttribute("data-images", images.length + "/" + decoded.length);
});
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def render_checks(html_path: Path, tmp_path: Path, min_images: int) -> None:
    from PIL import Image

    # 1. Screenshot, with the browser's console routed to stderr.
    png = tmp_path / f"{html_path.stem}.png"
    shot = chromium(
        tmp_path, "--enable-logging=stderr", "--v=0", f"--screenshot={png}", "--window-size=1200,3000",
        html_path.resolve().as_uri(),
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    console = [line for line in shot.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == [], "browser console messages:\n" + "\n".join(console)
    assert png.exists(), shot.stderr[-2000:]
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[:2] == (3000, 1200)
    not_white = np.any(image < 250, axis=2).mean()
    colours = np.unique(image.reshape(-1, 3), axis=0).shape[0]
    assert not_white > 0.05, f"the page looks blank: only {not_white:.1%} of pixels are not white"
    assert colours > 200, f"the page looks blank: only {colours} distinct colours"

    # 2. Every image decodes (a copy of the page with a probe script; --dump-dom prints the DOM).
    probe = tmp_path / f"{html_path.stem}-probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert match, "the probe did not run: " + dom.stdout[:500]
    total, decoded = int(match.group(1)), int(match.group(2))
    assert total >= min_images
    assert decoded == total, f"only {decoded} of {total} images decoded"


def demo_like_report(seed: int, near_penalty: float = 0.0):
    rng = np.random.default_rng(0)
    d = 6
    x_train = rng.normal(size=(300, d))
    y_train = (x_train[:, 0] > 0).astype(int) + (x_train[:, 1] > 0).astype(int)
    features = {
        "calibration": rng.normal(size=(250, d)),
        "in_test": rng.normal(size=(250, d)),
        "ood_digits": rng.normal(0.6, 1.0, size=(200, d)),
        "ood_uniform_noise": rng.uniform(-5, 5, size=(150, d)),
    }
    noise = np.random.default_rng(seed)
    scores = {split: np.sum(x**2, axis=1) + noise.normal(0, 0.5, size=len(x)) for split, x in features.items()}
    scores["ood_digits"] = scores["ood_digits"] - near_penalty  # a worse model: near OOD looks more normal
    baselines = run_baselines(x_train, y_train, features, "in_test", ["ood_digits", "ood_uniform_noise"])
    return build_report(
        scores, "in_test", ["ood_digits", "ood_uniform_noise"],
        threshold=float(np.quantile(scores["calibration"], 0.95)), alpha=0.05, calibration_split="calibration",
        baselines=baselines, n_bootstrap=200, data_checks_passed=True,
        dataset_fingerprints={split: f"sha256:{split}" for split in scores},
        training_curve={"step": list(range(0, 200, 10)), "loss": list(np.linspace(2, 0.5, 20))},
        model_uri=f"models:/guard/{seed}",
    )


def test_report_html_renders_in_chromium(tmp_path):
    path = write_html(demo_like_report(seed=1), tmp_path / "report.html")
    # calibration curve, 2 histograms, ROC, PR, training curves
    render_checks(path, tmp_path, min_images=6)


def test_comparison_html_renders_in_chromium(tmp_path):
    comparison = compare_reports(
        demo_like_report(seed=1), demo_like_report(seed=2, near_penalty=2.0),
        Gates.from_dict({"auroc": {"max_drop": 0.005, "confidence": 0.95}, "bootstrap": {"n_resamples": 200}}),
    )
    assert not comparison.passed
    path = write_comparison_html(comparison, tmp_path / "comparison.html")
    # 2 histograms per split, ROC, PR, calibration curves
    render_checks(path, tmp_path, min_images=7)


def test_the_checks_catch_a_broken_page(tmp_path):
    """The same checks on a page with a script error and a missing image must fail."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><body><p>x</p><img src="missing.png">'
        "<script>undefinedFunction();</script></body></html>"
    )
    with pytest.raises(AssertionError, match="console|blank|decoded"):
        render_checks(broken, tmp_path, min_images=1)
