"""Tests for transfusion_tf.experiments.stats: DeLong against its definition, interval coverage, convergence measures,
the censored rank test, and every reading rule reaching each of its three verdicts."""
import dataclasses
import itertools
import math
import os
import re
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
  # The runs also share test noise of known variance (one test set): the combined interval still covers.
  shared = np.full((3, 3), 0.02 ** 2)
  cov = _coverage(lambda: stats.t_interval(0.9 + 0.01 * rng.standard_normal(3) + 0.02 * rng.standard_normal(),
                                           cov=shared), 0.9)
  assert 0.92 <= cov <= 0.98


def test_format_interval():
  assert stats.format_interval(stats.t_interval([0.88, 0.89, 0.90])) == "89.0 ± 1.0 [86.5, 91.5]"
  assert stats.format_interval(stats.t_interval([0.881])) == "88.1 [no CI]"
  diff = stats.diff_interval([0.9, 0.91], [0.89, 0.9])
  assert stats.format_interval(diff, signed=True).startswith("+1.0 [")


def test_equivalence_refutes_a_true_zero_at_most_two_and_a_half_percent():
  # Either side of +-margin refutes "no difference", so each side is tested at half the level: with a margin far
  # below the noise, a two-sided 95% CI alone would refute a true 0 about 5% of the time.
  rng = np.random.default_rng(14)
  draws = 6000
  refuted = sum(stats.read_equivalence(stats.diff_interval(rng.standard_normal(3), rng.standard_normal(3)),
                                       1e-3).verdict == stats.DOES_NOT_HOLD for _ in range(draws))
  assert 0.015 <= refuted / draws <= 0.032  # 2.5% (Monte Carlo SE 0.2 pt); the 95% CI alone gives about 5%.


def test_diff_interval_seed_only_coverage_and_few_seeds():
  rng = np.random.default_rng(11)
  equal = lambda: stats.diff_interval(0.02 + 0.01 * rng.standard_normal(2), 0.01 * rng.standard_normal(2))
  # Two seeds per arm: Scheffé's pairing (1 df) is exact; Welch-Satterthwaite covered about 97.6% here.
  assert 0.935 <= _coverage(equal, 0.02, 4000) <= 0.965
  assert stats.diff_interval([0.1, 0.2], [0.3, 0.1]).rule == stats.SCHEFFE
  # At a true 0 a wrong "larger" (the CI's lower end above 0) stays at or below the nominal 2.5%: Satterthwaite at
  # equal counts of 3, Scheffé at unequal counts, also where the arm with fewer seeds varies more (Satterthwaite gave
  # 3.1% at 3 + 5 with 4x the variance in the 3-seed arm, 3.2% at 2 + 5).
  for n_a, n_b, sd_a, draws in ((2, 2, 1.0, 6000), (3, 3, 1.0, 6000), (5, 3, 1.0, 20000), (3, 5, 2.0, 20000),
                                (2, 5, 1.0, 20000)):  # 20,000: Monte Carlo SE 0.11 points.
    wrong = sum(stats.diff_interval(sd_a * rng.standard_normal(n_a), rng.standard_normal(n_b)).lo > 0
                for _ in range(draws))
    assert wrong / draws <= 0.025 + 2 * math.sqrt(0.025 * 0.975 / draws), (n_a, n_b, wrong / draws)
  # The smaller arm (2 seeds) holds most of the variance: Satterthwaite covered 92-93%; the pairing stays at 95%.
  small_dominant = lambda: stats.diff_interval(0.02 + 0.01 * rng.standard_normal(3), 0.03 * rng.standard_normal(2))
  assert 0.935 <= _coverage(small_dominant, 0.02, 4000) <= 0.965
  iv = stats.diff_interval([0.9], [0.8, 0.85])
  assert iv.mean == pytest.approx(0.075) and iv.lo is None and iv.hi is None and iv.std is None


def test_scheffe_pairing_by_hand():
  # 2 vs 3 seeds: d_j = a_j - z_j with z_j = mean(b) + sqrt(2/3) (b_j - mean(b_1, b_2)), Student's t at 1 df.
  a, b = np.array([0.30, 0.34]), np.array([0.20, 0.26, 0.29])
  z = b.mean() + math.sqrt(2 / 3) * (b[:2] - b[:2].mean())
  d = a - z
  iv = stats.diff_interval(a, b)
  assert iv.rule == stats.SCHEFFE and iv.df == pytest.approx(1.0) and iv.n_min == 2
  assert iv.mean == pytest.approx(a.mean() - b.mean()) == pytest.approx(d.mean())
  half = sp_stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
  assert (iv.lo, iv.hi) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
  assert "paired by seed (Scheffé, 2 pairs, seed spread at 1 df)" in stats.read_direction(iv, margin=0.01).text
  # Runs that all scored the same have no spread, paired or not (rounding must not make a tiny interval), and the
  # matrix refuses a contrast with no weight.
  for a_n, b_n in ((3, 5), (3, 4), (2, 2), (4, 4)):
    same = stats.diff_interval([0.1] * a_n, [1.0] * b_n)
    assert same.lo is None and same.note == stats.ZERO_SPREAD, (a_n, b_n)
    assert stats.read_equivalence(same, 0.01).verdict == stats.INCONCLUSIVE
  assert stats.contrast_interval([[0.1, 0.2], [0.3]], [0.0, 0.0]).note == stats.NO_WEIGHT
  with pytest.raises(UsageError, match="non-zero weight"):
    stats.scheffe_matrix([2, 3], [0.0, 0.0])
  # Equal counts of 3 or more keep Welch-Satterthwaite; one arm keeps Student's n - 1.
  assert stats.diff_interval([0.3, 0.34, 0.31], [0.2, 0.26, 0.29]).rule == stats.SATTERTHWAITE
  assert stats.t_interval([0.3, 0.34]).rule == stats.STUDENT and stats.t_interval([0.3, 0.34]).df == pytest.approx(1)
  # k arms (Bennett): the paired values average to the contrast, and a zero-weight arm gets zero columns.
  m = stats.scheffe_matrix([2, 3, 4], [1.0, -0.5, 0.0])
  x = np.arange(9.0) ** 1.5
  assert m.shape == (2, 9) and not m[:, 5:].any()
  assert (m @ x).mean() == pytest.approx(x[:2].mean() - 0.5 * x[2:5].mean())
  # With a test-set covariance the paired values carry M cov M^T: the shared part is u^T cov u less their own noise.
  c = np.full((5, 5), 1e-4) + 2e-4 * np.eye(5)
  with_cov = stats.diff_interval(a, b, cov=c)
  cd = stats.scheffe_matrix([2, 3], [1.0, -1.0]) @ c @ stats.scheffe_matrix([2, 3], [1.0, -1.0]).T
  own = (np.mean(np.diag(cd)) - (cd.sum() - np.trace(cd)) / 2) / 2
  u = np.array([0.5, 0.5, -1 / 3, -1 / 3, -1 / 3])
  assert with_cov.own_var == pytest.approx(own) and with_cov.shared_var == pytest.approx(max(u @ c @ u - own, 0.0))


def test_rule_rate_is_exact_where_paired_and_counts_power():
  # 200,000 studies: SE 0.035 points at 2.5%. Scheffé at unequal counts and at 2 + 2 is exact whatever the spreads;
  # Satterthwaite at equal counts of 3 stays below 2.5%.
  for n_a, n_b, ratio in ((2, 2, 1.0), (3, 5, 4.0), (5, 3, 4.0), (2, 5, 1.0)):
    assert abs(stats.rule_rate(n_a, n_b, ratio=ratio) - 0.025) < 0.0015, (n_a, n_b, ratio)
  assert stats.rule_rate(3, 3) < 0.021
  assert stats.rule_rate(3, 5) == stats.rule_rate(3, 5)  # Seeded: the report prints the same number every time.
  # The price of pairing: 2 more transfer seeds (5 vs 5, Satterthwaite) more than double the power at 3 vs 5.
  assert stats.rule_rate(5, 5, effect=2.0) > 2 * stats.rule_rate(3, 5, effect=2.0)
  with pytest.raises(UsageError, match="at least 2 seeds per arm"):
    stats.rule_rate(1, 5)


def test_pairing_note_names_each_paired_pair_of_counts():
  assert stats.pairing_note([3, 3, 3]) == ""
  assert stats.pairing_note([1, 3, 3]) == ""  # A 1-seed arm has no interval at all.
  note = stats.pairing_note([5, 3, 5, 3])
  assert "pairing by seed" in note and "3 vs 5 seeds 34% (5 vs 5: 77%)" in note
  assert stats.pairing_note([2, 2]).count(" vs ") == 2  # 2 vs 2 seeds, against 3 vs 3.
  assert re.findall(r"(\d) vs (\d) seeds \d+%", stats.pairing_note([2, 3, 5])) == [
      ("2", "2"), ("2", "3"), ("2", "5"), ("3", "5")]


def test_diff_interval_adds_the_shared_test_noise():
  rng = np.random.default_rng(12)
  seed_std, test_sd = 0.002, 0.015  # Test noise shared by each arm's runs (same images), larger than the seed spread.

  def draw(with_test):
    e_a, e_b = test_sd * rng.standard_normal(2)
    a = 0.9 + seed_std * rng.standard_normal(2) + e_a
    b = 0.9 + seed_std * rng.standard_normal(2) + e_b
    # Each arm's runs share one test error (variance test_sd^2), independent between the arms.
    joint = np.kron(np.eye(2), np.full((2, 2), test_sd ** 2))
    return stats.diff_interval(a, b, cov=joint if with_test else None)

  assert _coverage(lambda: draw(False), 0.0, 1000) < 0.8  # Seed spread alone misses the shared test noise.
  assert 0.92 <= _coverage(lambda: draw(True), 0.0) <= 0.98
  # Known answer (3 seeds per arm: Welch-Satterthwaite; the paired form is test_scheffe_pairing_by_hand): seed spread +
  # u^T cov u - the runs' own (unshared) test noise, which the spread already holds.
  c = np.full((6, 6), 0.5e-5)
  c[:3, :3], c[3:, 3:] = np.full((3, 3), 1e-5) + 3e-5 * np.eye(3), np.full((3, 3), 1e-5) + 2e-5 * np.eye(3)
  a, b = [0.9, 0.91, 0.93], [0.89, 0.9, 0.88]
  u = np.array([1, 1, 1, -1, -1, -1]) / 3
  own = (4.0 - 1.0) * 1e-5 / 3 + (3.0 - 1.0) * 1e-5 / 3
  iv = stats.diff_interval(a, b, cov=c)
  assert iv.rule == stats.SATTERTHWAITE
  assert iv.se == pytest.approx(math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3 + u @ c @ u - own))
  with pytest.raises(UsageError):
    stats.diff_interval(a, b, cov=np.eye(3))


def test_contrast_interval_coverage_and_weights():
  rng = np.random.default_rng(13)
  mus, sds, w = [0.8, 0.7, 0.9, 0.88], [0.01, 0.02, 0.005, 0.01], [1, -1, -1, 1]
  truth = float(np.dot(w, mus))
  draw = lambda: stats.contrast_interval([m + s * rng.standard_normal(3) for m, s in zip(mus, sds)], w)
  assert 0.92 <= _coverage(draw, truth) <= 0.98
  iv = stats.contrast_interval([[1.0, 3.0, 2.0], [2.0], [0.0, 2.0, 1.0]], [1.0, 0.0, -0.5])  # A zero weight needs no
  assert iv.mean == pytest.approx(1.5) and iv.lo is not None  # spread, nor does it count as a smaller arm.
  assert iv.rule == stats.SATTERTHWAITE and iv.se == pytest.approx(math.sqrt(1.0 / 3 + 0.25 * 1.0 / 3))
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
  # A run stopped at its plateau (step 100 of a 150-step area): held at its last value.
  assert stats.curve_area([0, 100], [0.5, 1.0], 150) == pytest.approx((0.75 * 100 + 1.0 * 50) / 150)
  assert stats.normalized_curve_area([0, 100], [0.5, 1.0], 150) == pytest.approx((0.75 * 100 + 1.0 * 50) / 150 * 2 - 1)
  with pytest.raises(UsageError):
    stats.curve_area([0, 100], [0.5, 1.0], 0)


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
  return stats.Interval(mean, None, lo, hi, 4, 2.0, (hi - lo) / (2 * sp_stats.t.ppf(0.975, 2)))


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
           ((_iv(0.02, 0.04), 0.01), stats.DOES_NOT_HOLD),
           ((_iv(-0.05, -0.02), 0.01), stats.DOES_NOT_HOLD),
           ((_iv(0.012, 0.03), 0.01), stats.INCONCLUSIVE),  # The 95% CI is outside, the 97.5% one is not.
           ((_iv(-0.004, 0.016), 0.01), stats.INCONCLUSIVE),
           ((_iv(-0.03, 0.03), 0.01), stats.INCONCLUSIVE),  # Wider than the margin on both sides.
           ((NO_INTERVAL, 0.01), stats.INCONCLUSIVE)]
  _check_all_three(cases, lambda iv, m: stats.read_equivalence(iv, m, what="T1 ResNet50"))
  v = stats.read_equivalence(NO_INTERVAL, 0.01)
  assert "fewer than 2 seeds" in v.text
  assert "97.5% CI does not" in stats.read_equivalence(_iv(0.012, 0.03), 0.01).text
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
  same = stats.diff_interval([0.9, 0.9005, 0.9010], [0.9002, 0.9007, 0.9003], cov=np.eye(6) * 1e-6)
  assert stats.read_equivalence(same, 0.01).verdict == stats.HOLDS
  assert stats.read_direction(same).verdict == stats.INCONCLUSIVE
  one = stats.diff_interval([0.95], [0.85])
  assert stats.read_direction(one).verdict == stats.INCONCLUSIVE


# --- Clustered DeLong, the combined interval's coverage, refutation, Holm, power ----------------------------------------

def _brute_clustered(scores, labels, clusters):
  """Obuchowski (1997) written from its definition: psi for every (positive, negative) pair, structural components
  summed per cluster, the three S terms with their cluster counts."""
  s, y, c = np.atleast_2d(np.asarray(scores, float)), np.asarray(labels).astype(bool), np.asarray(clusters)
  ids = sorted(set(c.tolist()))
  m, n = int(y.sum()), int((~y).sum())
  k = s.shape[0]
  aucs, v10c, v01c = np.zeros(k), np.zeros((k, len(ids))), np.zeros((k, len(ids)))
  mc = np.array([np.sum(y & (c == i)) for i in ids], float)
  nc = np.array([np.sum(~y & (c == i)) for i in ids], float)
  for r in range(k):
    x, z = s[r, y], s[r, ~y]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    aucs[r] = psi.mean()
    for j, i in enumerate(ids):
      v10c[r, j] = psi.mean(axis=1)[c[y] == i].sum()
      v01c[r, j] = psi.mean(axis=0)[c[~y] == i].sum()
  i10, i01, big = int((mc > 0).sum()), int((nc > 0).sum()), len(ids)
  cov = np.zeros((k, k))
  for r in range(k):
    for t in range(k):
      d10r, d10t = v10c[r] - mc * aucs[r], v10c[t] - mc * aucs[t]
      d01r, d01t = v01c[r] - nc * aucs[r], v01c[t] - nc * aucs[t]
      s10 = i10 / ((i10 - 1) * m) * np.sum(d10r * d10t)
      s01 = i01 / ((i01 - 1) * n) * np.sum(d01r * d01t)
      s11_rt = big / (big - 1) * np.sum(d10r * d01t)
      s11_tr = big / (big - 1) * np.sum(d10t * d01r)
      cov[r, t] = s10 / m + s01 / n + (s11_rt + s11_tr) / (m * n)
  return aucs, cov


def _eye_pairs(rng, patients, patient_sd=1.2):
  """Two eyes per patient: a shared patient effect and, in 80% of eyes, the patient's label."""
  yp = rng.random(patients) < 0.4
  y = np.repeat(yp, 2).astype(int)
  y = np.where(rng.random(2 * patients) < 0.2, 1 - y, y)
  y[:2] = [0, 1]
  effect = np.repeat(rng.standard_normal(patients), 2) * patient_sd
  return y, effect, np.repeat(np.arange(patients), 2)


@pytest.mark.parametrize("seed", range(3))
def test_clustered_delong_matches_brute_force_with_ties(seed):
  rng = np.random.default_rng(seed)
  y, effect, clusters = _eye_pairs(rng, 15)
  clusters = np.where(rng.random(clusters.size) < 0.2, 100 + np.arange(clusters.size), clusters)  # Some singletons.
  scores = np.stack([np.round(y + effect + rng.standard_normal(y.size), 0),
                     np.round(0.5 * y + effect + rng.standard_normal(y.size), 1)])  # Ties within and across.
  aucs, cov = stats.delong_cov(scores, y, clusters)
  b_aucs, b_cov = _brute_clustered(scores, y, clusters)
  np.testing.assert_allclose(aucs, b_aucs, atol=1e-12)
  np.testing.assert_allclose(cov, b_cov, atol=1e-12)
  auc, var = stats.delong_auc(scores[0], y, clusters)
  assert (auc, var) == (pytest.approx(b_aucs[0], abs=1e-12), pytest.approx(b_cov[0, 0], abs=1e-12))


def test_clustered_delong_with_single_image_clusters_is_the_unclustered_one():
  rng = np.random.default_rng(7)
  s, y = _binormal(rng, 150)
  scores = np.stack([s, 0.7 * s + rng.standard_normal(s.size)])
  _, plain = stats.delong_cov(scores, y)
  _, single = stats.delong_cov(scores, y, clusters=rng.permutation(s.size) * 3)
  np.testing.assert_allclose(single, plain, atol=1e-15)
  with pytest.raises(UsageError):
    stats.delong_cov(scores, y, clusters=np.arange(s.size - 1))


def test_clustered_delong_matches_the_true_variance_of_eye_pairs():
  """Simulated eye pairs: the clustered variance is near the AUC's true variance; the unclustered one is too small."""
  rng = np.random.default_rng(3)
  aucs, clustered, plain = [], [], []
  for _ in range(600):
    y, effect, clusters = _eye_pairs(rng, 150)
    scores = y + effect + rng.standard_normal(y.size)
    auc, var = stats.delong_auc(scores, y, clusters)
    aucs.append(auc)
    clustered.append(var)
    plain.append(stats.delong_auc(scores, y)[1])
  truth = np.var(aucs, ddof=1)
  assert 0.85 <= np.mean(clustered) / truth <= 1.15
  assert np.mean(plain) / truth < 0.9


def _study(rng, seeds, seed_sd, n_test=500, auc=0.75, rho=0.7):
  """A simulated two-arm study with no true difference: each run's population AUC varies with its seed; scores on one
  shared test set (binormal, rho of the variance shared by all runs). Returns the combined diff Interval."""
  true = auc + seed_sd * rng.standard_normal(2 * seeds)
  d = math.sqrt(2) * sp_stats.norm.ppf(true)
  y = (rng.random(n_test) < 0.4).astype(int)
  y[:2] = [0, 1]
  scores = d[:, None] * y + math.sqrt(rho) * rng.standard_normal(n_test) + math.sqrt(1 - rho) * rng.standard_normal(
      (2 * seeds, n_test))
  aucs, cov = stats.delong_cov(scores, y)
  return stats.diff_interval(aucs[:seeds], aucs[seeds:], cov=cov)


@pytest.mark.parametrize("seeds,seed_sd", [(2, 0.01), (5, 0.0), (5, 0.02), (20, 0.01)])
def test_combined_interval_covers_at_2_5_and_20_seeds(seeds, seed_sd):
  rng = np.random.default_rng(seeds * 100 + int(seed_sd * 1000))
  studies = 300 if seeds < 20 else 150
  hits = sum(iv.lo <= 0.0 <= iv.hi for iv in (_study(rng, seeds, seed_sd) for _ in range(studies)))
  assert 0.9 <= hits / studies <= 0.99, hits / studies


def test_combined_interval_shrinks_with_seeds():
  """The test part is averaged over the runs: at 20 seeds the SE is far below one run's DeLong SE."""
  rng = np.random.default_rng(5)
  se2 = np.mean([_study(rng, 2, 0.0).se for _ in range(30)])
  se20 = np.mean([_study(rng, 20, 0.0).se for _ in range(30)])
  assert se20 < 0.45 * se2


def test_direction_is_refuted_inside_the_margin_and_p_values_agree_with_the_ci():
  m = 0.01
  cases = [((_iv(0.002, 0.03), "greater", m), stats.HOLDS),
           ((_iv(-0.004, 0.006), "greater", m), stats.DOES_NOT_HOLD),  # Rules out an effect of 1 point or more.
           ((_iv(-0.03, -0.012), "greater", m), stats.DOES_NOT_HOLD),  # The other side.
           ((_iv(-0.004, 0.016), "greater", m), stats.INCONCLUSIVE),
           ((_iv(-0.006, 0.004), "less", m), stats.DOES_NOT_HOLD),
           ((NO_INTERVAL, "greater", m), stats.INCONCLUSIVE)]
  _check_all_three(cases, lambda iv, c, mm: stats.read_direction(iv, claimed=c, margin=mm))
  for (iv, c, mm), expected in cases[:-1]:
    v = stats.read_direction(iv, claimed=c, margin=mm)
    assert (v.p_holds < 0.025) == (expected == stats.HOLDS), (iv, v)
    if expected != stats.HOLDS:
      assert (v.p_not < 0.025) == (expected == stats.DOES_NOT_HOLD), (iv, v)
  assert stats.read_direction(_iv(-0.004, 0.006), margin=None).verdict == stats.INCONCLUSIVE  # No margin: old rule.
  for (iv, mm), expected in [((_iv(-0.004, 0.006), 0.01), stats.HOLDS), ((_iv(0.02, 0.04), 0.01),
                                                                          stats.DOES_NOT_HOLD),
                             ((_iv(0.012, 0.03), 0.01), stats.INCONCLUSIVE),
                             ((_iv(-0.004, 0.016), 0.01), stats.INCONCLUSIVE)]:
    v = stats.read_equivalence(iv, mm)
    assert v.verdict == expected
    assert (v.p_holds < 0.025) == (expected == stats.HOLDS) and (v.p_not < 0.025) == (expected == stats.DOES_NOT_HOLD)


def test_holm_keeps_the_strong_readings_and_adjusts_the_rest():
  strong = stats.read_direction(_iv(0.05, 0.07), margin=0.01)  # p_holds tiny.
  weak = stats.read_direction(_iv(0.0005, 0.03), margin=0.01)  # Holds, but only just.
  refuted = stats.read_equivalence(_iv(0.0141, 0.03), 0.01)  # Does not hold (its 97.5% CI), only just.
  open_ = stats.read_direction(_iv(-0.01, 0.03), margin=0.01)
  assert (strong.verdict, weak.verdict, refuted.verdict, open_.verdict) == (
      stats.HOLDS, stats.HOLDS, stats.DOES_NOT_HOLD, stats.INCONCLUSIVE)
  adjusted, ps = stats.holm([strong, weak, refuted, open_])
  assert [v.verdict for v in adjusted] == [stats.HOLDS, stats.INCONCLUSIVE, stats.INCONCLUSIVE, stats.INCONCLUSIVE]
  assert adjusted[1].raw_verdict == stats.HOLDS and "before adjustment" in adjusted[1].text
  assert adjusted[2].raw_verdict == stats.DOES_NOT_HOLD
  assert ps[0] < 0.05 <= ps[1] and all(0.0 <= p <= 1.0 for p in ps)
  alone, _ = stats.holm([weak])  # A family of one is the unadjusted rule.
  assert alone[0].verdict == stats.HOLDS
  none, ps = stats.holm([stats.read_direction(NO_INTERVAL)])
  assert none[0].verdict == stats.INCONCLUSIVE and ps == [None]


def test_holm_controls_the_family_wise_rate_under_a_global_null():
  rng = np.random.default_rng(21)
  raw_any = adj_any = 0
  studies, readings = 400, 17
  for _ in range(studies):
    verdicts = [stats.read_direction(stats.diff_interval(rng.standard_normal(3), rng.standard_normal(3)),
                                     margin=None) for _ in range(readings)]
    adjusted, _ = stats.holm(verdicts)
    raw_any += any(v.verdict == stats.HOLDS for v in verdicts)
    adj_any += any(v.verdict == stats.HOLDS for v in adjusted)
  assert raw_any / studies > 0.15  # About 1 - 0.975^17 = 35% without adjustment.
  assert adj_any / studies <= 0.05


def test_minimum_detectable_effect():
  assert stats.minimum_detectable(0.01) == pytest.approx((sp_stats.norm.ppf(0.975) + sp_stats.norm.ppf(0.8)) * 0.01)
  assert stats.minimum_detectable(0.01, df=3) == pytest.approx(
      (sp_stats.t.ppf(0.975, 3) + sp_stats.t.ppf(0.8, 3)) * 0.01)
  assert stats.minimum_detectable(None) is None
  v = stats.read_equivalence(stats.diff_interval([0.9, 0.91, 0.92], [0.9, 0.905, 0.91]), 0.01)
  assert v.mde is not None and v.mde > 0


def test_normalized_curve_area_reads_speed_not_plateau_height():
  steps = [0, 100, 200, 300, 400]
  low = [0.5, 0.6, 0.65, 0.7, 0.7]  # Plateau 0.7.
  high = [0.5, 0.7, 0.8, 0.9, 0.9]  # Same shape, plateau 0.9: not faster.
  assert stats.normalized_curve_area(steps, low, 400) == pytest.approx(stats.normalized_curve_area(steps, high, 400))
  assert stats.curve_area(steps, high, 400) > stats.curve_area(steps, low, 400)
  fast = [0.5, 0.7, 0.7, 0.7, 0.7]
  assert stats.normalized_curve_area(steps, fast, 400) > stats.normalized_curve_area(steps, low, 400)
  assert stats.normalized_curve_area(steps, [0.5, 0.51, 0.5, 0.505, 0.51], 400) is None  # Never learned.


def test_module_imports_neither_tensorflow_nor_keras():
  code = ("import sys, transfusion_tf.experiments.stats; "
          "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def test_seeds_needed_follows_the_variance_parts():
  z_dir = sp_stats.norm.ppf(0.975) + sp_stats.norm.ppf(0.8)
  # Seed noise only: se^2 = 2 s^2 / n, so n = ceil(2 s^2 z^2 / margin^2).
  iv = stats.diff_interval([0.69, 0.71, 0.73], [0.73, 0.71, 0.69])  # s^2 = 4e-4 per arm.
  assert iv.seed_var == pytest.approx(2 * 4e-4 / 3) and iv.shared_var == 0.0 and iv.n_min == 3
  # With t quantiles at 2 (n - 1) df (1 at 2 seeds, Scheffé's pairing): the first n with
  # (t_.975 + t_.8) sqrt(2 s^2 / n) <= margin.
  df = lambda n: 2 * n - 2 if n >= 3 else 1
  expected = next(n for n in range(2, 1000) if (sp_stats.t.ppf(0.975, df(n)) + sp_stats.t.ppf(0.8, df(n)))
                  * math.sqrt(2 * 4e-4 / n) <= 0.01)
  assert expected > math.ceil(2 * 4e-4 * z_dir ** 2 / 0.01 ** 2)  # More than the normal approximation says.
  assert stats.seeds_needed(iv, 0.01, "direction") == expected
  assert stats.seeds_needed(iv, 0.01, "equivalence") > expected  # TOST at true 0 needs z_{0.9}, not z_{0.8}.
  assert stats.predicted_se(iv, 3) == pytest.approx(iv.se)
  # Shared test noise alone larger than the target: no number of seeds helps, more test images do.
  shared = np.full((4, 4), 4e-5) + np.eye(4) * 1e-5
  iv = stats.diff_interval([0.70, 0.7001], [0.70, 0.7001], cov=shared + np.kron(np.eye(2), np.full((2, 2), 1e-4)))
  assert iv.shared_var > (0.01 / z_dir) ** 2
  assert stats.seeds_needed(iv, 0.01, "direction") is None
  more = [stats.seeds_needed(iv, 0.01, "direction", test_factor=f) for f in (2, 5, 10, 50)]
  assert more[-1] is not None and more[-1] >= 2


def test_zero_spread_without_test_noise_has_no_interval():
  iv = stats.diff_interval([0.7, 0.7], [0.6, 0.6])
  assert iv.lo is None and iv.note == stats.ZERO_SPREAD
  assert stats.read_direction(iv).verdict == stats.INCONCLUSIVE
  shared = np.kron(np.eye(2), np.full((2, 2), 1e-4)) + np.eye(4) * 1e-5  # Each arm's runs share test noise.
  with_noise = stats.diff_interval([0.7, 0.7], [0.6, 0.6], cov=shared)
  assert with_noise.lo is not None  # The shared test noise alone gives an interval.


# --- The share of a gain (Fieller) ----------------------------------------------------------------------------------

def test_share_interval_known_answer_when_only_the_numerator_is_noisy():
  # Base and full arms without spread: V_bb = V_ab = 0, so Fieller's interval is the numerator's t-interval divided
  # by the (exact) denominator: (0.2 +- t_2 * 0.1 / sqrt(3)) / 0.4.
  iv = stats.share_interval([0.2, 0.2, 0.2], [0.3, 0.4, 0.5], [0.6, 0.6, 0.6])
  half = sp_stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
  assert iv.mean == pytest.approx(0.5)
  assert iv.df == pytest.approx(2.0)
  assert (iv.lo, iv.hi) == pytest.approx(((0.2 - half) / 0.4, (0.2 + half) / 0.4))
  # Mirrored: a full gain below the base gives the same share.
  mirror = stats.share_interval([0.6, 0.6, 0.6], [0.5, 0.4, 0.3], [0.2, 0.2, 0.2])
  assert (mirror.mean, mirror.lo, mirror.hi) == pytest.approx((iv.mean, iv.lo, iv.hi))


def test_share_interval_is_unbounded_when_the_denominator_may_be_zero():
  iv = stats.share_interval([0.30, 0.40, 0.35], [0.40, 0.42, 0.38], [0.33, 0.45, 0.36])
  assert stats.diff_interval([0.33, 0.45, 0.36], [0.30, 0.40, 0.35]).lo < 0  # The full gain's CI includes 0.
  assert iv.lo is None and iv.hi is None and iv.note == stats.UNBOUNDED
  few = stats.share_interval([0.3], [0.4, 0.5], [0.6, 0.7])
  assert few.lo is None and few.note == stats.FEW_SEEDS and few.mean == pytest.approx(0.15 / 0.35)
  with pytest.raises(UsageError):
    stats.share_interval([], [0.4], [0.6])


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("sds", [(0.04, 0.06, 0.03), (0.02, 0.08, 0.02)])
def test_share_interval_covers_the_true_share(seeds, sds):
  # Normal seeds, true share 0.4 of a 0.3 gain, unequal spreads: 95% coverage within simulation error (2,000
  # studies: +-1 point), counting an unbounded interval as covering. The worst case, 3 seeds with Mean-Var's arm
  # 4x as spread as the others, covers about 93% (Satterthwaite's df is an approximation there).
  rng = np.random.default_rng(seeds)
  hits = 0
  for _ in range(2000):
    base, part, full = (rng.normal(m, sd, seeds) for m, sd in zip((0.3, 0.42, 0.6), sds))
    iv = stats.share_interval(base, part, full)
    hits += iv.lo is None or iv.lo <= 0.4 <= iv.hi
  assert 0.92 <= hits / 2000 <= 0.975


@pytest.mark.parametrize("seeds", [(5, 3, 3), (2, 2, 2)])
def test_share_interval_pairs_unequal_arms(seeds):
  # Random 5 vs Mean-Var and transfer 3 (the flagfiles' counts), and 2 seeds each: Scheffé's pairing, exact for
  # normal seeds, with Mean-Var's arm 4x as spread as the others (where Satterthwaite's df covered about 93%).
  rng = np.random.default_rng(sum(seeds))
  hits = 0
  for _ in range(2000):
    base, part, full = (rng.normal(m, sd, n) for m, sd, n in zip((0.3, 0.42, 0.6), (0.02, 0.08, 0.02), seeds))
    iv = stats.share_interval(base, part, full)
    hits += iv.lo is None or iv.lo <= 0.4 <= iv.hi
  assert 0.93 <= hits / 2000 <= 0.97
  paired = stats.share_interval([0.3, 0.31, 0.29], [0.4, 0.45], [0.6, 0.62, 0.61])
  assert paired.df == pytest.approx(1.0) and paired.rule == stats.SCHEFFE and paired.n_min == 2


# -- several labelings of the same images (auc_mean of multi-label and one-vs-rest tasks) ----------------------------


def _labelings(rng, patients, per=2, labels=3, rho=0.85, mask_rate=0.2, runs=2, decimals=None):
  """Patients with `per` images each; L labels that co-occur (one latent per image, shared by the labels at weight
  rho, part of it shared by the patient's images), some masked; R runs' scores of each label (the label's latent plus
  run noise and a per-image nuisance every label and run shares). Returns (scores (R, L, N), labels (L, N), mask
  (L, N), patients (N,))."""
  n = patients * per
  pat = np.repeat(np.arange(patients), per)
  u = 0.6 * rng.standard_normal(patients)[pat] + 0.8 * rng.standard_normal(n)
  latent = rho * u[None] + math.sqrt(1 - rho ** 2) * rng.standard_normal((labels, n))
  y = (latent > 0.3).astype(np.int8)
  scores = latent[None] + 0.9 * rng.standard_normal((runs, labels, n)) + 0.5 * rng.standard_normal(n)
  if decimals is not None:
    scores = np.round(scores, decimals)  # Ties within and across labels.
  return scores, y, rng.random((labels, n)) > mask_rate, pat


def _brute_labels(scores, labels, mask, clusters):
  """delong_cov_labels written from its definition by loops: psi for every (positive, negative) pair of a label's
  defined images, the structural components summed per cluster into A_l(c), B_l(c), and the cluster sums with their
  K / (K - 1) factors."""
  runs, num_labels, _ = scores.shape
  ids = sorted(set(clusters.tolist()))
  aucs = np.zeros((runs, num_labels))
  a, b = np.zeros((runs, num_labels, len(ids))), np.zeros((runs, num_labels, len(ids)))
  counts = {}
  for lab in range(num_labels):
    pos = [i for i in range(labels.shape[1]) if mask[lab, i] and labels[lab, i] == 1]
    neg = [i for i in range(labels.shape[1]) if mask[lab, i] and labels[lab, i] == 0]
    held = lambda images: sum(any(clusters[i] == c for i in images) for c in ids)  # noqa: E731
    counts[lab] = (held(pos), held(neg), held(pos + neg))
    for r in range(runs):
      s = scores[r, lab]
      psi = np.array([[1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for j in neg] for i in pos])
      aucs[r, lab] = psi.mean()
      for ci, c in enumerate(ids):
        a[r, lab, ci] = sum(psi[p].mean() - aucs[r, lab] for p, i in enumerate(pos) if clusters[i] == c) / len(pos)
        b[r, lab, ci] = sum(psi[:, q].mean() - aucs[r, lab] for q, j in enumerate(neg) if clusters[j] == c) / len(neg)
  factor = lambda k: k / (k - 1.0)  # noqa: E731
  labelled = sum(any(clusters[i] == c and mask[:, i].any() for i in range(labels.shape[1])) for c in ids)
  cov = np.zeros((runs, num_labels, runs, num_labels))
  for r, l, t, k in itertools.product(range(runs), range(num_labels), range(runs), range(num_labels)):
    if l == k:
      f10, f01, fl = (factor(x) for x in counts[l])
      cov[r, l, t, k] = sum(f10 * a[r, l, c] * a[t, l, c] + f01 * b[r, l, c] * b[t, l, c]
                            + fl * (a[r, l, c] * b[t, l, c] + b[r, l, c] * a[t, l, c]) for c in range(len(ids)))
    else:
      cov[r, l, t, k] = factor(labelled) * sum((a[r, l, c] + b[r, l, c]) * (a[t, k, c] + b[t, k, c])
                                               for c in range(len(ids)))
  return aucs, cov


@pytest.mark.parametrize("seed", range(2))
def test_label_covariance_matches_brute_force_with_masks_clusters_and_ties(seed):
  rng = np.random.default_rng(seed)
  scores, y, mask, pat = _labelings(rng, 12, per=3, decimals=0)
  pat = np.where(rng.random(pat.size) < 0.2, 100 + np.arange(pat.size), pat)  # Some singletons.
  scores[:, ~mask] = np.nan  # A masked label's score is never read.
  aucs, cov = stats.delong_cov_labels(scores, y, mask, pat)
  b_aucs, b_cov = _brute_labels(scores, y, mask, pat)
  np.testing.assert_allclose(aucs, b_aucs, atol=1e-12)
  np.testing.assert_allclose(cov, b_cov, atol=1e-12)
  assert np.abs(cov[0, 0, 0, 1]) > 1e-5  # The labels' covariance is there to be checked.


def test_label_covariance_of_one_label_is_delong_cov():
  rng = np.random.default_rng(4)
  scores, y, mask, pat = _labelings(rng, 60, labels=1, runs=3, decimals=1)
  for clusters in (None, pat):
    for m in (None, mask):
      aucs, cov = stats.delong_cov_labels(scores, y, m, clusters)
      keep = np.ones(y.shape[1], bool) if m is None else m[0]
      d_aucs, d_cov = stats.delong_cov(scores[:, 0, keep], y[0, keep], None if clusters is None else clusters[keep])
      np.testing.assert_allclose(aucs[:, 0], d_aucs, rtol=0, atol=1e-15)
      np.testing.assert_allclose(cov[:, 0, :, 0], d_cov, rtol=1e-12, atol=1e-18)
      means, mean_cov = stats.delong_cov_mean(scores, y, m, clusters)
      np.testing.assert_allclose(mean_cov, d_cov, rtol=1e-12, atol=1e-18)


def test_label_covariance_agrees_with_the_cluster_jackknife():
  """An independent estimator: the delete-one-patient jackknife's pseudo-values of every (run, label) AUC."""
  rng = np.random.default_rng(5)
  scores, y, mask, pat = _labelings(rng, 150)
  aucs, cov = stats.delong_cov_labels(scores, y, mask, pat)
  runs, labels = aucs.shape
  ids = np.unique(pat)
  loo = np.array([[[stats.delong_auc(scores[r, lab, mask[lab] & (pat != c)], y[lab, mask[lab] & (pat != c)])[0]
                    for lab in range(labels)] for r in range(runs)] for c in ids]).reshape(ids.size, -1)
  dev = loo - loo.mean(axis=0)
  jack = (ids.size - 1) / ids.size * dev.T @ dev
  flat = cov.reshape(runs * labels, -1)
  np.testing.assert_allclose(flat, jack, rtol=0.06, atol=0.01 * np.diag(flat).max())
  assert flat[0, 1] > 0.1 * np.sqrt(flat[0, 0] * flat[1, 1])  # Correlated labels, as CheXpert's are.


def test_label_mean_variance_matches_simulated_test_sets_and_independence_does_not():
  """Many simulated test sets with co-occurring labels: the predicted variance of auc_mean (and of two runs'
  difference in it) matches its spread across test sets; summing the per-label variances / L^2 (labels taken as
  independent) is too small."""
  rng = np.random.default_rng(11)
  means, predicted, independent = [], [], []
  for _ in range(1600):  # The variance ratio's standard error is about sqrt(2 / 1600) = 0.035.
    scores, y, mask, pat = _labelings(rng, 100, labels=4, rho=0.9)
    aucs, cov = stats.delong_cov_labels(scores, y, mask, pat)
    m, mean_cov = stats.label_mean_cov(aucs, cov)
    means.append(m)
    predicted.append(mean_cov)
    # Each label's own block is its delong_cov (tested above): the old formula, sum of the variances / L^2.
    independent.append(np.trace(cov[0, :, 0, :]) / y.shape[0] ** 2)
  means, predicted = np.array(means), np.array(predicted)
  truth = np.var(means[:, 0], ddof=1)
  assert 0.85 <= predicted[:, 0, 0].mean() / truth <= 1.15
  assert np.mean(independent) / truth < 0.8
  diff = np.var(means[:, 0] - means[:, 1], ddof=1)
  assert 0.85 <= (predicted[:, 0, 0] + predicted[:, 1, 1] - 2 * predicted[:, 0, 1]).mean() / diff <= 1.15


def test_label_mean_leaves_out_labels_without_an_auc_and_checks_input():
  rng = np.random.default_rng(6)
  scores, y, mask, pat = _labelings(rng, 40, labels=3)
  y[2] = 0  # No positives: no AUC, left out of the mean as compute_metrics leaves it out.
  aucs, cov = stats.delong_cov_labels(scores, y, mask, pat)
  assert np.isnan(aucs[:, 2]).all() and np.isnan(cov[:, 2]).all() and np.isfinite(cov[:, :2, :, :2]).all()
  means, mean_cov = stats.label_mean_cov(aucs, cov)
  np.testing.assert_allclose(means, aucs[:, :2].mean(axis=1))
  np.testing.assert_allclose(mean_cov, cov[:, :2, :, :2].sum(axis=(1, 3)) / 4)
  with pytest.raises(UsageError):
    stats.label_mean_cov(aucs[:, 2:], cov[:, 2:, :, 2:])
  with pytest.raises(UsageError):
    stats.delong_cov_labels(scores[:, :, :-1], y)
  with pytest.raises(UsageError):
    stats.delong_cov_labels(scores, y, clusters=pat[:-1])
  bad = y.copy()
  bad[0, 0] = 2
  with pytest.raises(UsageError):
    stats.delong_cov_labels(scores, bad)
