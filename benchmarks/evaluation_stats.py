"""Do the evaluation statistics mean what they say? Prints three tables.

  .venv/bin/python benchmarks/evaluation_stats.py            # full: ~1 minute on one core
  .venv/bin/python benchmarks/evaluation_stats.py --coverage-repetitions 100 --calibration-repetitions 50

(a) Bootstrap coverage. Simulated data sets with a known AUROC: ID ~ N(0, 1), OOD ~ N(d, 1), so
    AUROC = P(OOD > ID) = Phi(d / sqrt(2)). Share of data sets whose 95% percentile-bootstrap
    interval contains the true AUROC; target 92%-98%.

(b) Conformal calibration. Each repetition draws a fresh calibration set and a fresh held-out
    in-distribution test set of N(0, 1) energies, sets the split-conformal threshold at alpha, and
    measures the realised FPR on the test set with its 95% Clopper-Pearson interval. Because the
    energies are N(0, 1), the threshold's true FPR, 1 - Phi(t), is known for every repetition.
    Reported, each with the rate theory predicts:
    - "alpha in interval": the realised FPR's interval contains the target alpha. Theory: the
      threshold is the k-th order statistic, k = ceil((n_cal + 1)(1 - alpha)), so its true FPR is
      Beta(n_cal - k + 1, k) and the flagged count is Beta-Binomial(n_test, n_cal - k + 1, k); the
      expected rate is the Beta-Binomial probability of the counts whose interval holds alpha.
    - "true FPR in interval": the interval contains the threshold's own true FPR (>= 95%, since
      Clopper-Pearson is conservative).
    - the mean realised FPR (theory: (n_cal + 1 - k) / (n_cal + 1) <= alpha, the marginal guarantee),
    - for the calibration-conditional threshold: the share of repetitions with true FPR <= alpha
      (theory: BinomCDF(k' - 1; n_cal, 1 - alpha) >= 1 - delta).

(c) Speed of `bootstrap_ci` / `bootstrap_cis`: 1000 resamples on 10k scores (target < 2 s).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import betabinom, binom, norm

# Runnable as a plain script from the repository root without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ebm_core.calibration import conformal_threshold  # noqa: E402
from evaluation.bootstrap import METRICS, bootstrap_ci, bootstrap_cis, paired_bootstrap_diff  # noqa: E402
from evaluation.calibration_stats import (  # noqa: E402
    binomial_ci,
    calibration_conditional_order,
    calibration_conditional_threshold,
    realised_fpr_with_ci,
)


def binomial_band(successes: int, trials: int) -> str:
    """Rate with its 95% Clopper-Pearson interval, so the reader sees the Monte-Carlo error."""
    low, high = binomial_ci(successes, trials)
    return f"{successes / trials:6.1%}  [{low:5.1%}, {high:5.1%}]"


def bootstrap_coverage(shifts: list[float], repetitions: int, n: int, resamples: int, seed: int) -> None:
    print(f"(a) Percentile-bootstrap 95% CI coverage of AUROC ({repetitions} data sets per row, "
          f"n_in = n_ood = {n}, {resamples} resamples; target 92%-98%)")
    print(f"{'shift d':>8} {'true AUROC':>11} {'coverage [95% MC interval]':>30} {'mean width':>11} "
          f"{'miss low':>9} {'miss high':>10}")
    rng = np.random.default_rng(seed)
    for shift in shifts:
        true_auroc = norm.cdf(shift / math.sqrt(2.0))
        covered = below = above = 0
        widths = []
        for _ in range(repetitions):
            interval = bootstrap_ci(
                rng.normal(0.0, 1.0, n), rng.normal(shift, 1.0, n), "auroc", n_resamples=resamples, seed=rng
            )
            widths.append(interval.width)
            covered += interval.contains(true_auroc)
            below += interval.high < true_auroc
            above += interval.low > true_auroc
        print(f"{shift:8.2f} {true_auroc:11.4f} {binomial_band(covered, repetitions):>30} "
              f"{np.mean(widths):11.4f} {below:9d} {above:10d}")
    print()


def expected_alpha_in_interval_rate(n_cal: int, n_test: int, alpha: float) -> float:
    """P(alpha inside the Clopper-Pearson interval of the flagged count), count ~ BetaBinom."""
    k = math.ceil((n_cal + 1) * (1.0 - alpha))
    counts = np.arange(n_test + 1)
    holds_alpha = np.array([low <= alpha <= high for low, high in (binomial_ci(c, n_test) for c in counts)])
    return float(betabinom.pmf(counts, n_test, n_cal - k + 1, k)[holds_alpha].sum())


def conformal_calibration(
    alphas: list[float], repetitions: int, n_cal: int, n_test: int, delta: float, seed: int
) -> None:
    print(f"(b) Split-conformal calibration on N(0,1) energies ({repetitions} random calibration/test "
          f"draws per row, n_cal = {n_cal}, n_test = {n_test}; intervals are 95% Clopper-Pearson)")
    print(f"{'alpha':>6} {'alpha in interval':>28} {'expected':>9} {'true FPR in interval':>28} "
          f"{'mean FPR':>9} {'theory':>7} {'cond. FPR<=alpha':>28} {'theory':>7}")
    rng = np.random.default_rng(seed)
    for alpha in alphas:
        alpha_inside = true_inside = conditional_ok = 0
        realised = []
        for _ in range(repetitions):
            calibration, test = rng.normal(size=n_cal), rng.normal(size=n_test)
            threshold = conformal_threshold(calibration, alpha)
            result = realised_fpr_with_ci(test, threshold)
            realised.append(result.fpr)
            alpha_inside += result.ci_low <= alpha <= result.ci_high
            true_inside += result.ci_low <= norm.sf(threshold) <= result.ci_high
            conditional_ok += norm.sf(calibration_conditional_threshold(calibration, alpha, delta)) <= alpha
        k = math.ceil((n_cal + 1) * (1.0 - alpha))
        k_conditional = calibration_conditional_order(n_cal, alpha, delta)
        conditional_theory = binom.cdf(k_conditional - 1, n_cal, 1.0 - alpha) if k_conditional else 1.0
        print(f"{alpha:6.3f} {binomial_band(alpha_inside, repetitions):>28} "
              f"{expected_alpha_in_interval_rate(n_cal, n_test, alpha):9.1%} "
              f"{binomial_band(true_inside, repetitions):>28} {np.mean(realised):9.4f} "
              f"{(n_cal + 1 - k) / (n_cal + 1):7.4f} {binomial_band(conditional_ok, repetitions):>28} "
              f"{conditional_theory:7.1%}")
    print(f"    (calibration-conditional threshold with delta = {delta}: P(FPR <= alpha) >= {1 - delta:.0%})")
    print()


def best_of(repeats: int, function) -> tuple[float, float]:
    """Fastest (wall, CPU) seconds of a few runs: the least disturbed by other work on a shared
    machine. CPU time (user + system of this process) shows the cost when wall time is inflated by
    other processes competing for the cores."""
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return min(wall), min(cpu)


def timing(resamples: int, repeats: int, seed: int) -> None:
    print(f"(c) Speed, {resamples} resamples (best of {repeats}; target < 2 s for 10k scores)")
    print(f"{'n_in':>6} {'n_ood':>6} {'what':>28} {'wall s':>7} {'CPU s':>6}")
    rng = np.random.default_rng(seed)
    for n_in, n_ood in [(5_000, 5_000), (10_000, 10_000)]:
        in_scores, ood_scores = rng.normal(0, 1, n_in), rng.normal(1, 1, n_ood)
        other_in, other_ood = in_scores + rng.normal(0, 0.5, n_in), ood_scores + rng.normal(0, 0.5, n_ood)
        jobs = {
            "bootstrap_ci auroc": lambda: bootstrap_ci(in_scores, ood_scores, "auroc", resamples),
            "bootstrap_ci fpr95": lambda: bootstrap_ci(in_scores, ood_scores, "fpr95", resamples),
            f"bootstrap_cis ({len(METRICS)} metrics)": lambda: bootstrap_cis(in_scores, ood_scores, METRICS, resamples),
            "paired_bootstrap_diff auroc": lambda: paired_bootstrap_diff(
                in_scores, ood_scores, other_in, other_ood, "auroc", resamples
            ),
        }
        for what, job in jobs.items():
            wall, cpu = best_of(repeats, job)
            print(f"{n_in:6d} {n_ood:6d} {what:>28} {wall:7.3f} {cpu:6.3f}")
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coverage-repetitions", type=int, default=500, help="simulated data sets per shift")
    parser.add_argument("--calibration-repetitions", type=int, default=200, help="calibration/test draws per alpha")
    parser.add_argument("--shifts", type=float, nargs="+", default=[1.0, 2.0], help="OOD mean shifts d")
    parser.add_argument("--n", type=int, default=200, help="ID and OOD sizes of each coverage data set")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    parser.add_argument("--n-cal", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    bootstrap_coverage(args.shifts, args.coverage_repetitions, args.n, args.resamples, args.seed)
    conformal_calibration(args.alphas, args.calibration_repetitions, args.n_cal, args.n_test, args.delta, args.seed)
    timing(args.resamples, args.timing_repeats, args.seed)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
