"""The one-sided size, coverage, width and power of the study's difference rule on the seed spread
(stats.diff_interval without a covariance) on normal data, beside the other well-known answers to the two-means
(Behrens-Fisher) problem.

Every "faster/larger" reading on seed-level values (normalised curve areas, conv1 statistics, SVCCA per run) says
"holds" when the 95% CI of mean(a) - mean(b) excludes 0 on the claimed side, so at a true difference of 0 it is
wrong at the rule's one-sided size, nominally 2.5%. The study's rule (stats.uses_pairing) is Student's t with the
Welch-Satterthwaite degrees of freedom, (sum p_i)^2 / sum p_i^2 / (n_i - 1) with p_i = s_i^2 / n_i, between equal arms
of 3 or more seeds, and Scheffe's pairing (below) at unequal counts or 2 seeds per arm. This script measures it
against each of its parts used everywhere and against
  - Welch's (1947) df, (sum p_i)^2 / sum p_i^2 / (n_i + 1) - 2 (the module's rule two versions ago);
  - the pooled df n_a + n_b - 2 on the same statistic (Student's t when n_a = n_b, exact when the spreads are equal);
  - Cochran & Cox (1950): the critical value is the p_i-weighted mean of each arm's t quantile at n_i - 1;
  - Scheffe (1943): runs paired by seed order into n = min(n_a, n_b) differences
    d_j = a_j - sqrt(n/m) b_j + sum_{k<=n} b_k / sqrt(n m) - mean(b) (arm b the one with m >= n runs), which are
    independent normals with mean mean(a) - mean(b)'s expectation whatever the two spreads, read by Student's t at
    n - 1 df: exact at every variance ratio, at the price of the larger arm's extra degrees of freedom,
on exactly normal seeds, for the seed counts the flagfiles use and for arms whose spreads differ, among them the
ratios measured in the README's demo report (T1, 3 transfer vs 5 random seeds: ResNet50 2.0 vs 1.2 points, a
variance ratio of 2.8; CBR-Small 0.7 vs 1.5, 0.22) and offline_paper.cfg's 2-seed arms (MV, WT, GB) against its 5
random runs. The Behrens-Fisher problem has no exact answer that uses every run: each df rule is off somewhere, and
only Scheffe's pairing, which gives up degrees of freedom, is exact everywhere; the study uses it at unequal seed
counts and at 2 seeds per arm (stats.uses_pairing), where Satterthwaite is liberal or over-covers, and keeps
Satterthwaite between equal arms of 3 or more. Before measuring anything the script checks that its vectorised
formulas give stats.diff_interval's bounds.

  python benchmarks/welch_df_size.py [--studies 1000000]

Prints one block per design (seeds per arm, the variance ratio of arm a to arm b) and a line per rule: its rate of a
wrong "holds" at a true 0 (Monte Carlo SE about 0.016 points at 10^6 studies), its two-sided coverage of the truth,
its median half-width in units of the difference's true standard error, and its power: how often "holds" at a true
difference of 3 true standard errors.
"""
import argparse
import math
import os
import sys

import numpy as np
from scipy import stats as sp_stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from transfusion_tf.experiments import stats  # noqa: E402  pylint: disable=g-import-not-at-top

# (seeds a, seeds b, variance ratio a / b, where the design comes from).
DESIGNS = ((2, 2, 1.0, "answer.cfg's 2 seeds per arm"), (2, 2, 4.0, ""), (2, 2, 25.0, ""),
           (3, 3, 1.0, "the paper's 3 seeds per arm"), (3, 3, 4.0, ""), (3, 3, 25.0, ""),
           (3, 5, 1.0, "the flagfiles' 3 transfer vs 5 random"),
           (3, 5, 2.8, "the demo's ResNet50 T1, as measured"), (3, 5, 0.22, "the demo's CBR-Small T1, as measured"),
           (3, 5, 4.0, ""), (5, 3, 1.0, ""), (5, 3, 4.0, ""),
           (2, 5, 1.0, "offline_paper.cfg's 2-seed MV/WT/GB arms vs 5 random"), (2, 5, 2.8, ""), (2, 3, 25.0, ""),
           (5, 5, 1.0, ""), (5, 5, 4.0, ""), (20, 20, 1.0, ""))
POWER_SE = 3.0  # The power column's true difference, in true standard errors of the difference.
RULE = "the study's rule"
SATTERTHWAITE = "satterthwaite"
SCHEFFE = "scheffe 1943 (pairs by seed)"


def df_rules(va, vb, na, nb):
  """{rule: (N,) df} for seed variances of the means va, vb ((N,) arrays) of arms with na, nb seeds."""
  welch47 = (va + vb) ** 2 / (va ** 2 / (na + 1) + vb ** 2 / (nb + 1)) - 2.0
  satterthwaite = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
  pooled = np.full_like(va, float(na + nb - 2))
  return {SATTERTHWAITE: satterthwaite, "welch 1947": welch47, "pooled df (Student at equal n)": pooled}


def scheffe_pairs(a, b):
  """(N, min(na, nb)) Scheffe (1943) differences of a: (N, na) and b: (N, nb) seed values, paired in seed order:
  stats.scheffe_matrix, the study's own pairing, applied to each study's runs."""
  return np.concatenate([a, b], axis=1) @ stats.scheffe_matrix((a.shape[1], b.shape[1]), (1.0, -1.0)).T


def bounds(a, b):
  """{rule: ((N,) lower, (N,) upper) 95% bounds of mean(a) - mean(b)} for a: (N, na), b: (N, nb) seed values."""
  na, nb = a.shape[1], b.shape[1]
  va, vb = a.var(axis=1, ddof=1) / na, b.var(axis=1, ddof=1) / nb
  est, se = a.mean(axis=1) - b.mean(axis=1), np.sqrt(va + vb)
  out = {}
  for k, df in df_rules(va, vb, na, nb).items():
    half = sp_stats.t.ppf(0.975, df) * se
    out[k] = (est - half, est + half)
  cochran = (va * sp_stats.t.ppf(0.975, na - 1) + vb * sp_stats.t.ppf(0.975, nb - 1)) / (va + vb)
  out["cochran-cox 1950"] = (est - cochran * se, est + cochran * se)
  d = scheffe_pairs(a, b)
  n = d.shape[1]
  half = sp_stats.t.ppf(0.975, n - 1) * d.std(axis=1, ddof=1) / math.sqrt(n)
  out[SCHEFFE] = (d.mean(axis=1) - half, d.mean(axis=1) + half)
  out[RULE] = out[SCHEFFE] if stats.uses_pairing((na, nb)) else out[SATTERTHWAITE]
  return {RULE: out.pop(RULE), **out}


def check_against_stats(rng):
  """The vectorised bound of the study's rule equals stats.diff_interval's on random studies (raises otherwise)."""
  for na, nb in ((2, 2), (2, 3), (3, 3), (5, 3), (4, 4)):
    a, b = rng.normal(size=(50, na)), 2.0 * rng.normal(size=(50, nb))
    mine = bounds(a, b)[RULE][0]
    theirs = np.array([stats.diff_interval(x, y).lo for x, y in zip(a, b)])
    if not np.allclose(mine, theirs, rtol=1e-9, atol=1e-12):
      raise SystemExit(f"vectorised bound differs from stats.diff_interval at {na}+{nb} seeds")
    if not np.allclose(scheffe_pairs(a, b).mean(axis=1), a.mean(axis=1) - b.mean(axis=1)):
      raise SystemExit(f"Scheffe's differences do not average to the difference of means at {na}+{nb} seeds")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--studies", type=int, default=1_000_000)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  rng = np.random.default_rng(args.seed)
  check_against_stats(rng)
  print(f"Per design and rule: wrong 'larger' at a true 0 (nominal 2.5%), [two-sided coverage] (nominal 95%), "
        f"median half-width and power at a true difference of {POWER_SE:g}, both in true standard errors of the "
        f"difference; {args.studies:,} normal studies each")
  for na, nb, ratio, where in DESIGNS:
    a = np.sqrt(ratio) * rng.standard_normal((args.studies, na))
    b = rng.standard_normal((args.studies, nb))
    true_se = math.sqrt(ratio / na + 1.0 / nb)
    print(f"seeds {na}+{nb}, variance ratio {ratio:g}" + (f" ({where})" if where else "") + ":")
    for k, (lo, hi) in bounds(a, b).items():
      wrong, covered = float(np.mean(lo > 0)), float(np.mean((lo <= 0) & (hi >= 0)))
      half = float(np.median(hi - lo)) / 2 / true_se
      power = float(np.mean(lo + POWER_SE * true_se > 0))
      print(f"  {k:<30} wrong {100 * wrong:5.2f}%  [{100 * covered:5.1f}%]  half-width {half:5.2f}  "
            f"power {100 * power:5.1f}%")

if __name__ == "__main__":
  main()
