"""Tests for benchmarks/readings_calibration.py: what counts as wrong, and the scenario functions on few studies (the
combined interval's coverage, the family-wise rate before and after Holm, pseudo-replication). About 15 s."""
import importlib.util
import os

import numpy as np
import pytest

from transfusion_tf.experiments import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
  spec = importlib.util.spec_from_file_location(
      "readings_calibration", os.path.join(ROOT, "benchmarks", "readings_calibration.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


cal = _load()
DEMO = cal.Design(auc=0.72, seed_std=0.03, n_test=500, seeds=2)


@pytest.mark.parametrize("claim, delta, wrong", [
    (cal.EQUIVALENCE, 0.0, {cal.NOT_UP, cal.NOT_DOWN}),
    (cal.EQUIVALENCE, 0.01, {cal.HOLDS, cal.NOT_DOWN}),  # At the margin "holds" is wrong: the rule's size.
    (cal.EQUIVALENCE, -0.02, {cal.HOLDS, cal.NOT_UP}),
    (cal.DIRECTION, 0.0, {cal.HOLDS}),
    (cal.DIRECTION, 0.005, set()),  # A real effect below the margin: both decided verdicts are true statements.
    (cal.DIRECTION, 0.01, {cal.NOT}),
    (cal.DIRECTION, -0.02, {cal.HOLDS}),
])
def test_wrong_verdicts(claim, delta, wrong):
  assert cal.wrong_verdicts(claim, delta, 0.01) == wrong
  right = cal.right_verdict(claim, delta, 0.01)
  assert right is None or right not in wrong


def test_combined_interval_covers_at_five_seeds():
  rng = np.random.default_rng(1)
  assert 0.90 <= cal.coverage(rng, 300, DEMO, 5) <= 0.99


def test_coverage_on_eye_pairs_with_clustered_delong():
  rng = np.random.default_rng(2)
  design = cal.Design(auc=0.72, seed_std=0.002, n_test=500, seeds=2, rho=0.5, arm_rho=0.95, patients=True)
  res = cal.two_arms(rng, 200, design, 0.0, 0.01)
  assert 0.90 <= np.mean(res["covered"]) <= 0.995
  assert 0.88 <= np.mean(res["run_covered"]) <= 0.995  # One run's clustered DeLong CI.
  assert len(res["equivalence_unclustered"]) == 200


def test_paper_scale_decides_and_rarely_errs():
  rng = np.random.default_rng(3)
  var_off = cal.design_test_cov(rng, 20000, 0.93)
  paper = cal.Design(0.93, 0.0013, 20000, 3, test_cov=var_off)
  null = cal.two_arms(rng, 300, paper, 0.0, 0.01)
  assert cal.rates(null["equivalence"])[cal.HOLDS] > 0.9
  assert cal.rates(null["direction"])[cal.HOLDS] < 0.06
  assert cal.rates(null["direction"])[cal.NOT] > 0.9  # The null is refuted: the CI rules out a 1-point effect.


def test_family_wise_rate_falls_with_holm():
  rng = np.random.default_rng(4)
  var_off = cal.design_test_cov(rng, 20000, 0.93)
  paper = cal.Design(0.93, 0.0013, 20000, 3, test_cov=var_off)
  curves = cal.CurveDesign(seeds=3, tau=1000.0, every=500, budget=5000, eval_noise=0.005, a_inf=0.93, a_std=0.005)
  before, after = cal.family(rng, 150, paper, curves, 3, 0.01, 0.05)
  assert after <= before
  assert before > 0.08  # 17 readings at 2.5% each: far above 5% without an adjustment.
  assert after <= 0.06


def test_pseudo_replication_is_caught_and_run_level_is_not():
  rng = np.random.default_rng(5)
  res = cal.run_level(rng, 300, 3, 0.0, 0.05)
  assert cal.rates(res["direction"])[stats.HOLDS] < 0.05
  assert cal.rates(res["direction_per_filter"])[stats.HOLDS] > 0.10


def test_convergence_truth_is_zero_without_a_speed_up_and_positive_with_one():
  cfg = cal.CurveDesign(seeds=2, tau=150.0, every=50, budget=300, eval_noise=0.015, a_inf=0.78, a_std=0.03)
  assert cal.convergence_truth(cfg, 1.0) == pytest.approx(0.0, abs=1e-12)
  assert cal.convergence_truth(cfg, 0.5) > 0.05


def test_unequal_seed_counts_per_arm():
  """The flagfiles' design, 3 transfer runs against 5 random ones: the arms keep their own counts."""
  rng = np.random.default_rng(4)
  true, aucs, cov, _ = cal.auc_study(rng, DEMO, [0.75, 0.72], (3, 5))
  assert aucs.shape == (8,) and cov.shape == (8, 8)
  assert abs(true[:3].mean() - 0.75) < 0.1 and abs(true[3:].mean() - 0.72) < 0.1
  res = cal.two_arms(rng, 30, DEMO, 0.0, 0.01, (3, 5))
  assert len(res["direction"]) == 30
  curves = cal.CurveDesign(seeds=3, tau=150.0, every=50, budget=300, eval_noise=0.011, a_inf=0.78, a_std=0.02,
                           seeds_b=5)
  assert cal._curves(rng, curves, 150.0, 0.78, seeds=curves.seeds_b).shape == (5, curves.steps.size)
  assert len(cal.convergence(rng, 20, curves, 1.0, 0.05)["direction"]) == 20


def test_each_arm_can_have_its_own_seed_spread():
  """MEASURED_SPREADS: the runs of each arm vary with that arm's seed std (population AUCs, before test noise)."""
  rng = np.random.default_rng(5)
  design = cal.Design(auc=0.72, seed_std=0.5, n_test=500, seeds=3, arm_seed_std=(0.04, 0.0))
  true = np.stack([cal.auc_study(rng, design, [0.75, 0.72], (3, 5))[0] for _ in range(40)])
  assert np.all(true[:, 3:] == 0.72)  # No seed noise in arm b; seed_std (0.5) is not used.
  assert 0.03 < true[:, :3].std(ddof=1) < 0.05
