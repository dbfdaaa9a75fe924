"""Tests for transfusion_tf.experiments.stats: DeLong against its definition, interval coverage, convergence measures,
the censored rank test, and every reading rule reaching each of its three verdicts."""
import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sp_stats

from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pairwise(scores, labels):
  """Definition: psi = 1 if pos > neg, 1/2 if tied; AUC = mean psi; DeLong var from the structural components."""
  s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
  x, z = s[y], s[~y]
  psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
  return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def _binormal(rng, n, d=1.5, prevalence=0.4):
  y = (rng.random(n) < prevalence).astype(int)
  y[:2] = [0, 1]
  return d * y + rng.standard_normal(n), y


# --- DeLong ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_delong_matches_pairwise_definition_with_ties(seed):
  rng = np.random.default_rng(seed)
  n = 9 + seed * 3
  y = rng.integers(0, 2, n)
  y[:2] = [0, 1]
  a = rng.integers(0, 4, n).astype(float)  # Few distinct values: many ties within and across classes.
  b = a + rng.integers(-1, 2, n)
  auc_a, v10_a, v01_a = _pairwise(a, y)
  auc_b, v10_b, v01_b = _pairwise(b, y)
  m, k = int(y.sum()), int((1 - y).sum())
  auc, var = stats.delong_auc(a, y)
  assert auc == pytest.approx(auc_a, abs=1e-12)
  assert var == pytest.approx(np.var(v10_a, ddof=1) / m + np.var(v01_a, ddof=1) / k, abs=1e-12)
  u = sp_stats.mannwhitneyu(a[y == 1], a[y == 0]).statistic  # Library cross-check of the AUC: U / (m n).
  assert auc == pytest.approx(u / (m * k), abs=1e-12)
  diff, dvar = stats.delong_diff(a, b, y)
  assert diff == pytest.approx(auc_a - auc_b, abs=1e-12)
  expected = np.var(v10_a - v10_b, ddof=1) / m + np.var(v01_a - v01_b, ddof=1) / k
  assert dvar == pytest.approx(expected, abs=1e-12)


def test_pairwise_diff_vars_match_delong_diff():
  rng = np.random.default_rng(4)
  s, y = _binormal(rng, 200)
  a = np.stack([s + 0.5 * rng.standard_normal(s.size) for _ in range(2)])
  b = np.stack([s + 0.8 * rng.standard_normal(s.size) for _ in range(3)])
  expected = [stats.delong_diff(a[i], b[j], y)[1] for i in range(2) for j in range(3)]
  np.testing.assert_allclose(stats.pairwise_diff_vars(a, b, y), expected, rtol=1e-10)


def test_delong_diff_of_identical_scores_is_exactly_zero():
  s, y = _binormal(np.random.default_rng(0), 300)
  assert stats.delong_diff(s, s, y) == (0.0, 0.0)


def test_delong_variance_agrees_with_bootstrap():
  rng = np.random.default_rng(1)
  s, y = _binormal(rng, 600)
  b = 0.6 * s + 0.8 * rng.standard_normal(s.size)  # A weaker, correlated second model.
  flat = np.zeros_like(s)  # Constant scores: AUC 0.5 in every resample, so the difference is AUC_a - 0.5.
  for other, (diff, var) in ((flat, (stats.delong_auc(s, y)[0] - 0.5, stats.delong_auc(s, y)[1])),
                             (b, stats.delong_diff(s, b, y))):
    d, lo, hi = stats.bootstrap_diff(s, other, y, n_boot=2000, seed=3)
    assert d == pytest.approx(diff, abs=1e-12)
    boot_se = (hi - lo) / (2 * sp_stats.norm.ppf(0.975))
    assert boot_se == pytest.approx(math.sqrt(var), rel=0.15)
    assert lo < diff < hi


def test_bootstrap_is_deterministic_and_keeps_both_classes():
  rng = np.random.default_rng(2)
  y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # One positive: any unstratified resample could lose it.
  s, t = rng.standard_normal(10), rng.standard_normal(10)
  first = stats.bootstrap_diff(s, t, y, n_boot=300, seed=7)
  assert first == stats.bootstrap_diff(s, t, y, n_boot=300, seed=7)
  assert all(np.isfinite(first))


@pytest.mark.parametrize("scores, labels", [([0.1, 0.2], [1, 1]), ([0.1, 0.2], [0, 2]), ([0.1, np.nan], [0, 1]),
                                            ([0.1, 0.2, 0.3], [0, 1])])
def test_delong_rejects_bad_input(scores, labels):
  with pytest.raises(UsageError):
    stats.delong_auc(scores, labels)


# --- Intervals ------------------------------------------------------------------------------------------------------

def _coverage(draw, truth, draws=2000):
  hits = 0
  for _ in range(draws):
    iv = draw()
    hits += iv.lo <= truth <= iv.hi
  return hits / draws


def test_t_interval_fields_and_coverage():
  iv = stats.t_interval([1.0, 2.0, 3.0])
  assert (iv.mean, iv.std, iv.n, iv.df) == (2.0, 1.0, 3, pytest.approx(2.0))
  assert iv.hi - iv.mean == pytest.approx(sp_stats.t.ppf(0.975, 2) / math.sqrt(3))
  one = stats.t_interval([0.9])
  assert (one.std, one.lo, one.hi, one.df) == (None, None, None, None) and "fewer than 2 seeds" in one.note
  with pytest.raises(dataclasses.FrozenInstanceError):
    iv.mean = 0.0
  rng = np.random.default_rng(10)
  assert 0.92 <= _coverage(lambda: stats.t_interval(0.9 + 0.01 * rng.standard_normal(3)), 0.9) <= 0.98
  # Each run's AUC also carries independent test noise of known variance: the combined interval still covers.
  cov = _coverage(lambda: stats.t_interval(0.9 + 0.01 * rng.standard_normal(3) + 0.02 * rng.standard_normal(),
                                           test_vars=[0.02 ** 2] * 3), 0.9)
  assert 0.92 <= cov <= 0.98


def test_format_interval():
  assert stats.format_interval(stats.t_interval([0.88, 0.89, 0.90])) == "89.0 ± 1.0 [86.5, 91.5]"
  assert stats.format_interval(stats.t_interval([0.881])) == "88.1 [no CI]"
  diff = stats.diff_interval([0.9, 0.91], [0.89, 0.9])
  assert stats.format_interval(diff, signed=True).startswith("+1.0 [")


def test_diff_interval_seed_only_coverage_and_few_seeds():
  rng = np.random.default_rng(11)
  draw = lambda: stats.diff_interval(0.02 + 0.01 * rng.standard_normal(3), 0.03 * rng.standard_normal(2))
  assert 0.92 <= _coverage(draw, 0.02) <= 0.98  # Welch with unequal variances and sizes.
  iv = stats.diff_interval([0.9], [0.8, 0.85])
  assert iv.mean == pytest.approx(0.075) and iv.lo is None and iv.hi is None and iv.std is None


def test_diff_interval_adds_the_shared_test_noise():
  rng = np.random.default_rng(12)
  seed_std, test_sd = 0.002, 0.015  # Test noise shared by each arm's runs (same images), larger than the seed spread.

  def draw(with_test):
    e_a, e_b = test_sd * rng.standard_normal(2)
    a = 0.9 + seed_std * rng.standard_normal(2) + e_a
    b = 0.9 + seed_std * rng.standard_normal(2) + e_b
    return stats.diff_interval(a, b, cross_test_vars=[2 * test_sd ** 2] * 4 if with_test else None)

  assert _coverage(lambda: draw(False), 0.0, 1000) < 0.8  # Seed spread alone misses the shared test noise.
  assert 0.92 <= _coverage(lambda: draw(True), 0.0) <= 0.98
  iv = stats.diff_interval([0.9, 0.91], [0.89, 0.9], a_test_vars=[1e-4, 1e-4], b_test_vars=[2e-4, 2e-4])
  assert iv.se == pytest.approx(math.sqrt(2 * np.var([0.9, 0.91], ddof=1) / 2 + 3e-4))
  with pytest.raises(UsageError):
    stats.diff_interval([0.9, 0.91], [0.89, 0.9], a_test_vars=[1e-4, 1e-4])


def test_contrast_interval_coverage_and_weights():
  rng = np.random.default_rng(13)
  mus, sds, w = [0.8, 0.7, 0.9, 0.88], [0.01, 0.02, 0.005, 0.01], [1, -1, -1, 1]
  truth = float(np.dot(w, mus))
  draw = lambda: stats.contrast_interval([m + s * rng.standard_normal(3) for m, s in zip(mus, sds)], w)
  assert 0.92 <= _coverage(draw, truth) <= 0.98
  iv = stats.contrast_interval([[1.0, 3.0], [2.0], [0.0, 2.0]], [1.0, 0.0, -0.5])  # A zero weight needs no spread.
  assert iv.mean == pytest.approx(1.5) and iv.lo is not None
  assert iv.se == pytest.approx(math.sqrt(2.0 / 2 + 0.25 * 2.0 / 2))
  with pytest.raises(UsageError):
    stats.contrast_interval([[1.0, 2.0]], [1.0, 2.0])


# --- Convergence ----------------------------------------------------------------------------------------------------

def test_steps_to_threshold_k_and_dips():
  steps = [0, 25, 50, 75, 100, 125]
  values = [0.5, 0.86, 0.80, 0.87, 0.88, 0.84]
  assert stats.steps_to_threshold(steps, values, 0.85, k=1) == 25
  assert stats.steps_to_threshold(steps, values, 0.85, k=2) == 75  # The dip at 50 resets the count.
  assert stats.steps_to_threshold(steps, values, 0.85, k=3) is None  # 125 dips again.
  assert stats.steps_to_threshold(steps, values, 0.9, k=1) is None
  # End of run: fewer than k evaluations left count when all are above.
  assert stats.steps_to_threshold([0, 25, 50], [0.5, 0.6, 0.9], 0.85, k=2) == 50
  assert stats.steps_to_threshold([0, 25, 50], [0.5, np.nan, 0.9], 0.5, k=2) == 50  # NaN counts as below.
  with pytest.raises(UsageError):
    stats.steps_to_threshold(steps, values, 0.85, k=0)
  with pytest.raises(UsageError):
    stats.steps_to_threshold([0, 50, 25], [0.5, 0.6, 0.7], 0.85)


def test_curve_area_known_answers():
  assert stats.curve_area([0, 50, 100], [0.7, 0.7, 0.7], 100) == pytest.approx(0.7)
  assert stats.curve_area([0, 100], [0.5, 1.0], 100) == pytest.approx(0.75)
  assert stats.curve_area([0, 100], [0.5, 1.0], 50) == pytest.approx(0.625)  # Interpolated at up_to.
  assert stats.curve_area([50, 100], [0.6, 1.0], 100) == pytest.approx((0.6 * 50 + 0.8 * 50) / 100)  # Held before 50.
  assert stats.curve_area([0, 25, 50], [0.5, 1.0, 0.5], 50) == pytest.approx(0.75)
  with pytest.raises(UsageError):
    stats.curve_area([0, 100], [0.5, 1.0], 150)


def test_censored_rank_test():
  assert stats.censored_rank_test([25, 50], [1, 1], [100, 125], [1, 1]) == pytest.approx(1 / 6)
  assert stats.censored_rank_test([100, 125], [1, 1], [25, 50], [1, 1]) == pytest.approx(1.0)
  assert stats.censored_rank_test([25, 50, 75], [1, 1, 1], [150, 150, 150], [0, 0, 0]) == pytest.approx(0.05)
  assert stats.min_rank_p(3, 3) == pytest.approx(0.05) and stats.min_rank_p(2, 2) == pytest.approx(1 / 6)
  # Censored at the same step as a reached run: the censored one is surely later.
  assert stats.censored_rank_test([150], [1], [150], [0]) == pytest.approx(0.5)
  assert stats.censored_rank_test([150], [0], [150], [1]) == pytest.approx(1.0)
  # Two censored runs cannot be ordered: no evidence either way.
  assert stats.censored_rank_test([150, 150], [0, 0], [150, 150], [0, 0]) == pytest.approx(1.0)
  # Many runs: seeded Monte Carlo, deterministic, and small for a clear separation.
  rng = np.random.default_rng(0)
  a, b = rng.normal(50, 5, 12), rng.normal(100, 5, 12)
  p = stats.censored_rank_test(a, np.ones(12), b, np.ones(12), max_permutations=2000)
  assert p < 0.01 and p == stats.censored_rank_test(a, np.ones(12), b, np.ones(12), max_permutations=2000)


# --- Readings -------------------------------------------------------------------------------------------------------

def _iv(lo, hi, mean=None):
  mean = (lo + hi) / 2 if mean is None else mean
  return stats.Interval(mean, None, lo, hi, 4, 2.0, (hi - lo) / 8)


NO_INTERVAL = stats.Interval(0.005, None, None, None, 3, None, None, note=stats.FEW_SEEDS)


def _check_all_three(cases, fn):
  seen = set()
  for args, expected in cases:
    v = fn(*args)
    assert v.verdict == expected, (args, v)
    assert v.rule in stats.RULES and v.text
    seen.add(v.verdict)
  assert seen == set(stats.VERDICTS)


def test_read_equivalence_reaches_each_verdict():
  cases = [((_iv(-0.004, 0.006), 0.01), stats.HOLDS),
           ((_iv(0.012, 0.03), 0.01), stats.DOES_NOT_HOLD),
           ((_iv(-0.05, -0.02), 0.01), stats.DOES_NOT_HOLD),
           ((_iv(-0.004, 0.016), 0.01), stats.INCONCLUSIVE),
           ((_iv(-0.03, 0.03), 0.01), stats.INCONCLUSIVE),  # Wider than the margin on both sides.
           ((NO_INTERVAL, 0.01), stats.INCONCLUSIVE)]
  _check_all_three(cases, lambda iv, m: stats.read_equivalence(iv, m, what="T1 ResNet50"))
  v = stats.read_equivalence(NO_INTERVAL, 0.01)
  assert "fewer than 2 seeds" in v.text
  assert stats.read_equivalence(_iv(-0.004, 0.006), 0.01, what="T1").text.startswith("T1: ")
  with pytest.raises(UsageError):
    stats.read_equivalence(_iv(-0.004, 0.006), 0.0)


def test_read_direction_reaches_each_verdict():
  cases = [((_iv(0.001, 0.02), "greater"), stats.HOLDS),
           ((_iv(-0.02, -0.001), "greater"), stats.DOES_NOT_HOLD),
           ((_iv(-0.01, 0.02), "greater"), stats.INCONCLUSIVE),
           ((_iv(-40.0, -5.0), "less"), stats.HOLDS),  # Steps to threshold: fewer is faster.
           ((_iv(5.0, 40.0), "less"), stats.DOES_NOT_HOLD),
           ((NO_INTERVAL, "greater"), stats.INCONCLUSIVE)]
  _check_all_three(cases, lambda iv, c: stats.read_direction(iv, claimed=c))
  with pytest.raises(UsageError):
    stats.read_direction(_iv(0.0, 1.0), claimed="faster")


def test_read_threshold_reaches_each_verdict():
  cases = [((0.55, 0.8, 0.5, "above"), stats.HOLDS),
           ((0.2, 0.45, 0.5, "above"), stats.DOES_NOT_HOLD),
           ((0.4, 0.6, 0.5, "above"), stats.INCONCLUSIVE),
           ((0.2, 0.45, 0.5, "below"), stats.HOLDS),
           ((0.55, 0.8, 0.5, "below"), stats.DOES_NOT_HOLD),
           ((None, None, 0.5, "above"), stats.INCONCLUSIVE)]
  _check_all_three(cases, lambda lo, hi, t, c: stats.read_threshold(lo, hi, t, claimed=c, what="F4 R^2"))


def test_readings_follow_real_intervals():
  """End to end: a clear gain reads 'larger' and 'not equal'; tight equal arms read 'equal'; 1 seed: inconclusive."""
  gain = stats.diff_interval([0.92, 0.925, 0.93], [0.85, 0.855, 0.86])
  assert stats.read_direction(gain).verdict == stats.HOLDS
  assert stats.read_equivalence(gain, 0.01).verdict == stats.DOES_NOT_HOLD
  same = stats.diff_interval([0.9, 0.9005, 0.9010], [0.9002, 0.9007, 0.9003], cross_test_vars=[1e-6] * 9)
  assert stats.read_equivalence(same, 0.01).verdict == stats.HOLDS
  assert stats.read_direction(same).verdict == stats.INCONCLUSIVE
  one = stats.diff_interval([0.95], [0.85])
  assert stats.read_direction(one).verdict == stats.INCONCLUSIVE


def test_module_imports_neither_tensorflow_nor_keras():
  code = ("import sys, transfusion_tf.experiments.stats; "
          "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
