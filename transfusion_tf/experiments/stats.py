"""Uncertainty for the study's numbers and the rules that read claims from them (numpy and scipy only).

AUC is in [0, 1] units everywhere (0.01 is one AUC point).

Test-set noise (one run's scores on the test images):
  `delong_auc`, `delong_diff`, `delong_cov`, `pairwise_diff_vars`: the fast DeLong variance (Sun & Xu 2014,
  midranks, ties counted half) of one AUC and of the difference of two AUCs scored on the SAME images;
  `delong_cov_labels`, `label_mean_cov`, `delong_cov_mean`: the same for several labelings of the same images (the
  per-label AUCs of a multi-label or one-vs-rest task, correlated through the shared images) and their mean (auc_mean);
  `bootstrap_diff`: a paired, label-stratified bootstrap over test images.
Seed noise (one value per run): `t_interval` (mean, std and t-interval across seeds), `diff_interval` and
  `contrast_interval` (differences and other linear combinations of arm means, optionally with the runs' joint
  test-set covariance); `share_interval` (a ratio of two such differences with a shared base arm, by Fieller);
  `format_interval` writes one as a table cell.
Convergence: `steps_to_threshold`, `curve_area`, `normalized_curve_area`, `censored_rank_test`.
Readings: `read_equivalence`, `read_direction`, `read_threshold` return a `Verdict` with its p-values and minimum
  detectable effect; `holm` adjusts a family of them; `RULES` states each rule once.

The combined rule (`contrast_interval`, `diff_interval`, `t_interval` with `cov`): every run is scored on the same
test images. A run's test AUC is its population AUC (which varies with the seed) plus a test-set error; the errors of
different runs are correlated (they share the images), with joint covariance Sigma (`delong_cov` of all the runs'
scores, clustered by patient where the data has patients). For a contrast sum_i w_i mean(arm i), with u the per-run
weights w_i / n_i,
  Var = sum_i w_i^2 sigma_i^2 / n_i + u^T Sigma u,      sigma_i^2: arm i's seed variance of the population AUC.
The spread s_i^2 across arm i's seeds (ddof=1) estimates sigma_i^2 + own_i, where own_i = mean Sigma_jj - mean
Sigma_jk (j != k within the arm) is the part of each run's test error that the arm's other runs do not share. So
  estimate = sum_i w_i^2 s_i^2 / n_i + max(u^T Sigma u - sum_i w_i^2 own_i / n_i, 0)
           = the seed spread (which already holds each run's own test noise) + the test noise the runs share,
unbiased, counting no part twice; the floor only acts when the shared part comes out negative. The interval is
estimate +- sqrt(t_df^2 * seed spread + z^2 * shared part): each part with its own quantile, the shared part, known
from thousands of test images, with the normal one, the seed spread with Student's t at df (Interval.df is the
effective df that gives the same half-width from se; the readings' p-values use it, so they decide as the CI does).
Adding the shared part into one Satterthwaite df instead made one arm's mean cover 90-92%, so the parts keep their own
quantiles. The test part shrinks with seeds (u ~ 1/n) down to the noise every run shares.

The seed spread's degrees of freedom (`uses_pairing`, chosen from the design, never from the values):
  - one arm (a table cell): n - 1, Student's t, exact for normal seeds;
  - equal arms of n >= 3 seeds: Welch-Satterthwaite, (sum p_i)^2 / sum p_i^2 / (n_i - 1) over the terms p_i = w_i^2
    s_i^2 / n_i. On normal seeds at a true difference of 0 its one-sided rate of a wrong "larger" stays at or below
    the nominal 2.5% up to a 4x variance ratio (1.8% at 3 + 3 with equal spreads, 2.5% at 5 + 5 and 4x; 2.9% at 3 + 3
    and 25x), where Welch's (1947) form, (sum p_i)^2 / sum p_i^2 / (n_i + 1) - 2, gives 3.0% at 3 + 3 and 4x and 3.6%
    at 3 + 3 and 25x;
  - unequal seed counts, or 2 seeds per arm: Scheffe's (1943) pairing by seed (`scheffe_matrix`; Bennett's 1951
    extension to k arms), Student's t at n_min - 1 df on n_min paired values that average to the contrast, exact at
    every variance ratio. Welch-Satterthwaite fails there in both directions: at 3 + 5 seeds with the demo's measured
    ResNet50 spreads (the 3-seed arm's variance 2.8 times the other's) it reads a wrong "larger" in 2.9% of studies,
    at 2 + 5 with equal spreads 3.2%, and at 2 + 2 its df falls between 1 and 2 when the spreads differ by chance, so
    its 95% CI covers 97.6%. The price of exactness is power: at 3 + 5 seeds a difference of 3 true standard errors
    reads "larger" in 39% of studies against Welch-Satterthwaite's 60% at equal spreads (53% at the demo's measured
    ResNet50 spreads), while at 2 + 2 the two are alike (18.7% against 19.8%). Runs are paired by their place in seed
    order (the first n_min seeds of the larger arm), fixed before any value is seen; that a shared seed makes two
    arms' runs move together is not assumed (benchmarks/seed_pairing.py found no such correlation), so pairing is
    relied on for exactness, not precision.
benchmarks/welch_df_size.py measures these rules and Cochran-Cox's on 10^6 normal studies per design;
`pairing_note` states, in a study's plan and report, which of its arms are paired and what equal seed counts would
buy. The same construction reads the paired values d = M x with their covariance M Sigma M^T (seed spread and own test
noise from d, so the shared part is u^T Sigma u less that own noise: what var(d) holds is counted once). Simulated
coverage of the combined interval: benchmarks/readings_calibration.py and tests/stats_test.py (the README gives the
figures). With fewer than 2 seeds in any arm the seed variance cannot be estimated and lo/hi are None: the readings
then say inconclusive and why.
"""
import dataclasses
import itertools
import math
from typing import Optional

import numpy as np
from scipy import integrate as sp_integrate
from scipy import special as sp_special
from scipy import stats as sp_stats

from transfusion_tf.errors import UsageError

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)
FEW_SEEDS = "fewer than 2 seeds: the seed noise cannot be estimated"
STUDENT = "Student's t at n - 1 df"
SATTERTHWAITE = "Welch-Satterthwaite df"
SCHEFFE = "Scheffe's pairing by seed, n_min - 1 df"
NO_WEIGHT = "every group has weight 0: there is no contrast to estimate"
ZERO_SPREAD = "every run gave the same value and no test-set noise is known: no interval can be estimated"

RULES = {
    "equivalence": "A 'no difference' claim holds when the 95% CI of the difference lies inside +-margin, does not "
                   "hold when the 97.5% CI lies entirely outside +-margin (a difference on either side refutes it, "
                   "so each side is tested at 1.25%: a true 0 is refuted at most 2.5% of the time), and is "
                   "inconclusive otherwise or with fewer than 2 seeds per arm.",
    "direction": "A 'faster/larger' claim holds when the 95% CI of the difference excludes zero in the claimed "
                 "direction, does not hold when its claimed-side end lies below the directional margin (the CI rules "
                 "out any effect that matters, or lies on the other side) without excluding zero on the claimed side "
                 "(a CI wholly between 0 and the margin holds, with the note that the effect is below the margin), "
                 "and is inconclusive otherwise or with fewer than 2 seeds per arm.",
    "threshold": "A claim that a quantity is above (below) a threshold holds when its whole 95% CI is on that side, "
                 "does not hold when the whole CI is on the other side, and is inconclusive otherwise.",
    "family": "Every verdict is then adjusted by Holm-Bonferroni over all the study's readings with a test (per "
              "study): a decided verdict whose test does not survive at a family-wise rate of 5% reads "
              "'inconclusive', with its unadjusted verdict named.",
    "trained": "A claim about trained networks (T1, T2, T3, SL, F2-F4, and the convergence claims, which need each "
               "run's plateau) reads 'inconclusive' when any of its runs is still improving at its budget, shows no "
               "plateau, or did not learn (runs table).",
}


# ---------------------------------------------------------------------------------------------------------------------
# Test-set noise: DeLong and the paired bootstrap.

def _check_scores(score_matrix, labels):
  """(k, N) float64 scores and (N,) bool labels, checked: both classes present, finite scores."""
  s = np.atleast_2d(np.asarray(score_matrix, dtype=np.float64))
  y = np.asarray(labels)
  if y.ndim != 1 or s.shape[1] != y.shape[0]:
    raise UsageError(f"scores {s.shape} and labels {y.shape} must have the same number of images")
  if not np.all((y == 0) | (y == 1)):
    raise UsageError("labels must be 0/1")
  y = y.astype(bool)
  if y.all() or not y.any():
    raise UsageError(f"labels need both classes for an AUC (got {int(y.sum())} positives of {y.size})")
  if not np.all(np.isfinite(s)):
    raise UsageError("scores contain NaN or inf")
  return s, y


def _components(s, y):
  """DeLong's structural components of k score rows: (aucs (k,), v10 (k, m), v01 (k, n)); v10 per positive (in image
  order): the share of negatives scored below it, v01 per negative: the share of positives scored above it, ties
  half. s: (k, N) float64, y: (N,) bool, both checked by _check_scores."""
  pos, neg = s[:, y], s[:, ~y]
  m, n = pos.shape[1], neg.shape[1]
  tz = sp_stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
  tx = sp_stats.rankdata(pos, axis=1)
  ty = sp_stats.rankdata(neg, axis=1)
  aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
  return aucs, (tz[:, :m] - tx) / n, 1.0 - (tz[:, m:] - ty) / m


def delong_cov(score_matrix, labels, clusters=None):
  """AUCs of k score vectors on the same images and their DeLong covariance, clustered by patient when given.

  score_matrix: (k, N) or (N,) floats, higher = more likely positive; labels: (N,) 0/1; clusters: None (every image
  independent) or (N,) ints, one id per image (e.g. a patient: both eyes, several studies). Returns (aucs (k,),
  cov (k, k)) in AUC^2 units.
  Unclustered: the fast form of DeLong (Sun & Xu 2014), midranks in the pooled and per-class samples, O(k N log N);
  ties count one half. Clustered: Obuchowski (1997): the same structural components (per positive, the share of
  negatives below it; per negative, the share of positives above it) are summed per cluster, and
    cov = S10 / N10 + S01 / N01 + (S11 + S11^T) / (N10 N01)
  with S10 = I10 / ((I10 - 1) N10) sum_c (V10_c - m_c AUC)(V10_c - m_c AUC)^T over the I10 clusters holding
  positives (m_c of them), S01 likewise over negatives, S11 = I / (I - 1) sum_c (V10_c - m_c AUC)(V01_c - n_c AUC)^T
  over all I clusters. With one image per cluster this is exactly the unclustered DeLong covariance.
  """
  s, y = _check_scores(score_matrix, labels)
  aucs, v10, v01 = _components(s, y)
  m, n = v10.shape[1], v01.shape[1]
  if clusters is None:
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((s.shape[0],) * 2)
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((s.shape[0],) * 2)
    return aucs, s10 / m + s01 / n
  c = np.asarray(clusters).ravel()
  if c.shape[0] != y.shape[0]:
    raise UsageError(f"clusters {c.shape} must name one cluster per image ({y.shape[0]})")
  ids, index = np.unique(c, return_inverse=True)
  k, big_i = s.shape[0], ids.size
  pos_c, neg_c = index[y], index[~y]
  mc = np.bincount(pos_c, minlength=big_i).astype(np.float64)
  nc = np.bincount(neg_c, minlength=big_i).astype(np.float64)
  v10_c = np.stack([np.bincount(pos_c, weights=row, minlength=big_i) for row in v10])  # (k, I)
  v01_c = np.stack([np.bincount(neg_c, weights=row, minlength=big_i) for row in v01])
  d10 = v10_c - mc[None] * aucs[:, None]  # Zero in clusters without positives.
  d01 = v01_c - nc[None] * aucs[:, None]
  i10, i01 = int((mc > 0).sum()), int((nc > 0).sum())
  s10 = (i10 / ((i10 - 1) * m)) * (d10 @ d10.T) if i10 > 1 else np.zeros((k, k))
  s01 = (i01 / ((i01 - 1) * n)) * (d01 @ d01.T) if i01 > 1 else np.zeros((k, k))
  s11 = (big_i / (big_i - 1)) * (d10 @ d01.T) if big_i > 1 else np.zeros((k, k))
  return aucs, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def _small_sample(count):
  """Obuchowski's I / (I - 1) for a sum over `count` clusters of centred terms; 0 when there is at most one."""
  return count / (count - 1.0) if count > 1 else 0.0


def delong_cov_labels(score_matrices, label_matrix, mask=None, clusters=None):
  """AUCs of R runs on L labelings of the same N images and their joint DeLong covariance, clustered by patient when
  given: what the per-label `delong_cov` gives within one label, plus the covariance between labels that the shared
  images cause (CheXpert's co-occurring pathologies; the one-vs-rest classes of one softmax).

  score_matrices: (R, L, N) or (L, N) floats, run r's score of label l on image i (higher = more likely positive);
  label_matrix: (L, N) 0/1; mask: None or (L, N) bool, False where image i has no label l (masked): it contributes
  nothing to label l and its score and label there are ignored; clusters: None (each image its own cluster) or (N,)
  ids. Returns (aucs (R, L), cov (R, L, R, L)) in AUC^2 units; a label without both classes among its images has NaN
  AUCs and NaN covariance rows and columns.
  Each AUC is linearised over clusters: phi_l(c) = A_l(c) + B_l(c), A_l(c) = (V10_l,c - m_l,c AUC_l) / m_l and
  B_l(c) = (V01_l,c - n_l,c AUC_l) / n_l, with V10_l,c (V01_l,c) the sum of the structural components of cluster c's
  positives (negatives) for label l (`delong_cov`), m_l,c (n_l,c) their count. Then
    cov(l, l)  = f10_l A_l A_l^T + f01_l B_l B_l^T + f_l (A_l B_l^T + B_l A_l^T)     (Obuchowski 1997, as delong_cov)
    cov(l, l') = f (A_l + B_l)(A_l' + B_l')^T                                       (l != l')
  summed over clusters, with the small-sample factors K / (K - 1): K = the clusters holding label l's positives (f10),
  its negatives (f01), any of its images (f_l), any labelled image (f). With one label this is exactly delong_cov.
  """
  s = np.asarray(score_matrices, dtype=np.float64)
  s = s[None] if s.ndim == 2 else s
  y = np.asarray(label_matrix)
  if s.ndim != 3 or y.shape != s.shape[1:]:
    raise UsageError(f"scores {s.shape} must be (R, L, N) for labels (L, N) {y.shape}")
  runs, num_labels, n = s.shape
  keep = np.ones(y.shape, bool) if mask is None else np.asarray(mask).astype(bool)
  if keep.shape != y.shape:
    raise UsageError(f"mask {keep.shape} must match the labels {y.shape}")
  if clusters is None:
    index, big_i = np.arange(n), n
  else:
    c = np.asarray(clusters).ravel()
    if c.shape[0] != n:
      raise UsageError(f"clusters {c.shape} must name one cluster per image ({n})")
    _, index = np.unique(c, return_inverse=True)
    big_i = int(index.max()) + 1 if n else 0
  aucs = np.full((runs, num_labels), np.nan)
  a_parts, b_parts = np.zeros((runs, num_labels, big_i)), np.zeros((runs, num_labels, big_i))
  factors = np.zeros((num_labels, 3))  # f10, f01, f_l per label.
  defined = np.zeros(num_labels, bool)
  for lab in range(num_labels):
    k = keep[lab]
    yl = y[lab, k]
    if not np.all((yl == 0) | (yl == 1)):
      raise UsageError(f"labels must be 0/1 where defined (label {lab})")
    if yl.all() or not yl.any():
      continue  # No AUC for this label (metrics.compute_metrics leaves it out of auc_mean too).
    sl, yl = _check_scores(s[:, lab, k], yl)
    aucs[:, lab], v10, v01 = _components(sl, yl)
    m, nn = v10.shape[1], v01.shape[1]
    cl = index[k]
    pos_c, neg_c = cl[yl], cl[~yl]
    mc = np.bincount(pos_c, minlength=big_i).astype(np.float64)
    nc = np.bincount(neg_c, minlength=big_i).astype(np.float64)
    v10_c = np.stack([np.bincount(pos_c, weights=row, minlength=big_i) for row in v10])
    v01_c = np.stack([np.bincount(neg_c, weights=row, minlength=big_i) for row in v01])
    a_parts[:, lab] = (v10_c - mc[None] * aucs[:, lab, None]) / m
    b_parts[:, lab] = (v01_c - nc[None] * aucs[:, lab, None]) / nn
    factors[lab] = [_small_sample(int((mc > 0).sum())), _small_sample(int((nc > 0).sum())),
                    _small_sample(np.unique(cl).size)]
    defined[lab] = True
  labelled = np.zeros(big_i, bool)
  labelled[index[keep.any(axis=0)]] = True
  phi = (a_parts + b_parts).reshape(runs * num_labels, big_i)
  cov = (_small_sample(int(labelled.sum())) * (phi @ phi.T)).reshape(runs, num_labels, runs, num_labels)
  for lab in np.flatnonzero(defined):
    a, b = a_parts[:, lab], b_parts[:, lab]
    f10, f01, fl = factors[lab]
    cross = a @ b.T
    cov[:, lab, :, lab] = f10 * (a @ a.T) + f01 * (b @ b.T) + fl * (cross + cross.T)
  cov[:, ~defined] = np.nan
  cov[:, :, :, ~defined] = np.nan
  return aucs, cov


def label_mean_cov(aucs, cov):
  """The mean AUC over labels of each run and their joint covariance, from `delong_cov_labels`' (aucs (R, L), cov
  (R, L, R, L)): weights 1/L' over the L' labels with an AUC, as metrics.compute_metrics forms auc_mean. Returns
  (means (R,), cov (R, R)) in AUC and AUC^2 units; raises UsageError when no label has an AUC."""
  aucs, cov = np.asarray(aucs, np.float64), np.asarray(cov, np.float64)
  defined = np.all(np.isfinite(aucs), axis=0)
  if not defined.any():
    raise UsageError("no label has both classes: no mean AUC")
  sub = cov[:, defined][:, :, :, defined]
  return aucs[:, defined].mean(axis=1), sub.sum(axis=(1, 3)) / float(defined.sum()) ** 2


def delong_cov_mean(score_matrices, label_matrix, mask=None, clusters=None):
  """The mean AUC over labels of R runs scored on the same images (auc_mean) and its joint DeLong covariance, the
  labels' correlations included: label_mean_cov(delong_cov_labels(...)). Arguments as `delong_cov_labels`. Returns
  (means (R,), cov (R, R)) in AUC and AUC^2 units."""
  return label_mean_cov(*delong_cov_labels(score_matrices, label_matrix, mask, clusters))


def delong_auc(scores, labels, clusters=None):
  """AUC of one score vector and its DeLong variance (clustered by `clusters`, (N,) ids, when given; see
  `delong_cov`). scores: (N,) floats; labels: (N,) 0/1. Returns (auc, var)."""
  aucs, cov = delong_cov(np.asarray(scores, dtype=np.float64)[None], labels, clusters)
  return float(aucs[0]), float(max(cov[0, 0], 0.0))


def delong_diff(scores_a, scores_b, labels, clusters=None):
  """AUC_a - AUC_b of two score vectors on the same images, and its DeLong variance (with the covariance term;
  clustered by `clusters`, (N,) ids, when given).

  scores_a, scores_b: (N,) floats; labels: (N,) 0/1. Returns (diff, var); identical scores give (0.0, 0.0).
  """
  aucs, cov = delong_cov(np.stack([np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)]), labels,
                         clusters)
  return float(aucs[0] - aucs[1]), float(max(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1], 0.0))


def pairwise_diff_vars(scores_a, scores_b, labels):
  """DeLong variances of AUC_a_i - AUC_b_j for every seed pair (i, j): the cross_test_vars of `diff_interval`.

  scores_a: (n_a, N) test scores of arm a's runs; scores_b: (n_b, N) of arm b's, on the same images; labels: (N,) 0/1.
  Returns (n_a * n_b,) variances, i major.
  """
  a, b = np.atleast_2d(np.asarray(scores_a, np.float64)), np.atleast_2d(np.asarray(scores_b, np.float64))
  na = a.shape[0]
  _, cov = delong_cov(np.concatenate([a, b]), labels)
  d = np.diag(cov)
  pair = d[:na, None] + d[None, na:] - 2.0 * cov[:na, na:]
  return np.maximum(pair, 0.0).ravel()


def _rank_auc_rows(s, m):
  """AUC of each row of s (B, m + n), whose first m columns are the positives."""
  n = s.shape[1] - m
  ranks = sp_stats.rankdata(s, axis=1)
  return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)


def bootstrap_diff(scores_a, scores_b, labels, n_boot=2000, seed=0, level=0.95):
  """Paired bootstrap of AUC_a - AUC_b over test images, resampling positives and negatives separately.

  scores_a, scores_b: (N,) floats on the same images; labels: (N,) 0/1. Returns (diff, lo, hi): the observed difference
  and the percentile interval at `level`. Deterministic for a given seed.
  """
  s, y = _check_scores(np.stack([np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)]), labels)
  _check_level(level)
  if int(n_boot) != n_boot or n_boot < 1:
    raise UsageError(f"n_boot must be a positive integer, got {n_boot}")
  pos_idx, neg_idx = np.flatnonzero(y), np.flatnonzero(~y)
  m = pos_idx.size
  order = np.concatenate([pos_idx, neg_idx])
  auc_a, auc_b = _rank_auc_rows(s[:, order], m)
  diff = float(auc_a - auc_b)
  rng = np.random.default_rng(seed)
  diffs = []
  chunk = max(1, 2_000_000 // y.size)  # Bounds memory to a few (chunk, N) float64 arrays.
  for start in range(0, n_boot, chunk):
    b = min(chunk, n_boot - start)
    idx = np.concatenate([rng.choice(pos_idx, (b, m)), rng.choice(neg_idx, (b, neg_idx.size))], axis=1)
    diffs.append(_rank_auc_rows(s[0][idx], m) - _rank_auc_rows(s[1][idx], m))
  diffs = np.concatenate(diffs)
  alpha = (1.0 - level) / 2.0
  lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
  return diff, float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------------------------
# Seed noise: intervals across runs.

@dataclasses.dataclass(frozen=True)
class Interval:
  """An estimate with its 95% (or `level`) interval.

  mean: the estimate (a mean across seeds, or a difference/contrast of means); std: the spread across seeds (ddof=1)
  for `t_interval`, None for differences and contrasts and for n < 2; lo, hi: the interval, None when it cannot be
  estimated (fewer than 2 seeds); n: the number of values that went in; df: the t degrees of freedom (None when no
  interval, inf when only the test part is left); se: the standard error behind lo/hi (None when no interval);
  note: why there is no interval, or, with one, an approximation it rests on (e.g. auc_mean's labels taken as
  independent), or "". The parts of se^2 (for the power estimates of `seeds_needed`):
  seed_var = sum_i w_i^2 s_i^2 / n_i (the seed spread, holding each run's own test noise), own_var = that own test
  noise, sum_i w_i^2 own_i / n_i, and shared_var = the test noise every run shares; se^2 = seed_var + shared_var.
  With Scheffe's pairing (rule SCHEFFE) seed_var is var(d) / n_min and own_var the own noise of d (from M cov M^T)
  / n_min, d = M x the paired values.
  n_min: the smallest arm's number of runs. None when unknown. rule: how the seed part's degrees of freedom were
  found (STUDENT, SATTERTHWAITE or SCHEFFE; "" when no interval).
  """
  mean: float
  std: Optional[float]
  lo: Optional[float]
  hi: Optional[float]
  n: int
  df: Optional[float]
  se: Optional[float] = None
  level: float = 0.95
  note: str = ""
  seed_var: Optional[float] = None
  own_var: Optional[float] = None
  shared_var: Optional[float] = None
  n_min: Optional[int] = None
  rule: str = ""


def _check_level(level):
  if not 0.0 < level < 1.0:
    raise UsageError(f"level must be in (0, 1), got {level}")


def _values(values, name):
  v = np.asarray(values, dtype=np.float64).ravel()
  if v.size == 0:
    raise UsageError(f"{name} is empty")
  if not np.all(np.isfinite(v)):
    raise UsageError(f"{name} contains NaN or inf")
  return v


def _check_cov(cov, size, name="cov"):
  """A (size, size) finite symmetric test-set covariance, or None."""
  if cov is None:
    return None
  c = np.asarray(cov, dtype=np.float64)
  if c.shape != (size, size):
    raise UsageError(f"{name} must be ({size}, {size}), one row per run, got {c.shape}")
  if not np.all(np.isfinite(c)):
    raise UsageError(f"{name} contains NaN or inf")
  if np.any(np.diag(c) < 0):
    raise UsageError(f"{name} has a negative variance")
  return (c + c.T) / 2.0


def _quantile(df, p):
  """The t quantile at p with df degrees of freedom (the normal one for df = inf)."""
  # special.ndtri/stdtrit are the normal and t quantiles without scipy.stats' per-call overhead (the benchmark calls
  # this tens of thousands of times).
  return float(sp_special.ndtri(p) if math.isinf(df) else sp_special.stdtrit(df, p))


def _t_bounds(est, seed_var, seed_df, test_var, level):
  """(lo, hi, se, df) of the combined interval: half-width sqrt(t_{seed_df}^2 seed_var + z^2 test_var).

  Each part gets its own quantile: the seed spread its t at seed_df (Student, Welch-Satterthwaite or Scheffe's
  pairing: contrast_interval), the test part, known from the test set's thousands of images, the normal one. df is the
  effective df: the t whose quantile times se gives the same half-width, so that the p-values of the readings (t at df
  on est / se) decide exactly as the CI does at `level`.
  """
  p = 0.5 + level / 2.0
  se = math.sqrt(seed_var + test_var)
  half = math.sqrt(_quantile(seed_df, p) ** 2 * seed_var + _quantile(math.inf, p) ** 2 * test_var)
  ratio = half / se
  if seed_var <= 0.0 or ratio <= _quantile(math.inf, p) * (1.0 + 1e-12):
    df = math.inf
  else:
    df = float(sp_special.stdtridf(p, ratio))  # The df whose t quantile at p is `ratio`.
  return est - half, est + half, se, df


def _satterthwaite_df(parts, sizes):
  """The Welch-Satterthwaite df of a sum of independent s_i^2-based parts: (sum parts)^2 / sum parts_i^2 / (n_i - 1).

  parts: the w_i^2 s_i^2 / n_i terms; sizes: each n_i (>= 2). Equal to n - 1 for one part (so one arm's mean gets
  Student's t exactly) and at least the smallest n_i - 1; why not Welch's (1947) form: the module docstring."""
  total = sum(parts)
  den = sum(x ** 2 / (n - 1) for x, n in zip(parts, sizes))
  return total ** 2 / den if den > 0 else math.inf


def scheffe_matrix(sizes, weights):
  """The (n, sum sizes) matrix M of Scheffe's (1943) pairing by seed, extended to k groups (Bennett 1951): d = M x,
  x the concatenated groups' values (sizes[i] runs of group i, in seed order), is n = min(sizes of the groups with a
  non-zero weight) values d_j = sum_i w_i z_ij with z_ij = mean(x_i) + sqrt(n / n_i) (x_ij - mean_{k<=n} x_ik)
  (z_i = x_i when n_i = n). For normal seeds the d_j are independent with one common variance and mean(d) =
  sum_i w_i mean(x_i), so Student's t at n - 1 df is exact whatever the groups' spreads. Zero-weight groups get
  zero columns. The pairing is by position, so each group must come in an order fixed before its values are seen
  (seed order; never sorted by value)."""
  if len(sizes) != len(weights) or not any(w != 0 for w in weights) or any(
      s < 1 for s, w in zip(sizes, weights) if w != 0):
    raise UsageError(f"scheffe_matrix needs one weight per group, a non-zero weight and at least 1 run in each "
                     f"weighted group, got sizes {list(sizes)} and weights {list(weights)}")
  n = min(s for s, w in zip(sizes, weights) if w != 0)
  return np.hstack([w * _pairing_block(s, n) if w != 0 else np.zeros((n, s)) for s, w in zip(sizes, weights)])


def _pairing_block(size, n):
  """(n, size): one group's z = T x of `scheffe_matrix` for `size` >= n runs."""
  t = np.full((n, size), 1.0 / size)
  t[:, :n] += math.sqrt(n / size) * (np.eye(n) - 1.0 / n)
  return t


def uses_pairing(sizes):
  """Whether contrast_interval reads a contrast of groups with these run counts (the weighted groups', each >= 2) by
  Scheffe's pairing (unequal counts, or 2 runs each) rather than by Welch-Satterthwaite (equal counts of 3 or more,
  or a single group). The choice rests on the design alone, never on the values (module docstring)."""
  sizes = [int(s) for s in sizes]
  return len(sizes) > 1 and (len(set(sizes)) > 1 or min(sizes) < 3)


def _own_noise(sub):
  """The part of each run's test error (a block `sub` of the joint covariance, (n, n), n >= 2) that the block's
  other runs do not share: mean diag - mean off-diagonal."""
  n = sub.shape[0]
  return float(np.mean(np.diag(sub)) - (sub.sum() - np.trace(sub)) / (n * (n - 1)))


def contrast_interval(groups, weights, level=0.95, cov=None):
  """Interval for sum_i w_i * mean(groups[i]), the groups being independent sets of runs (one value per seed).

  groups: a list of (n_i,) arrays, each in seed order; weights: one float per group. Each set of runs must appear
  once: merge the weights of a group used twice, e.g. conv1_gain - 0.5 * full_gain = conv1 - 0.5 * full - 0.5 * random.
  cov: None (seed spread only: values measured without test-set noise, or on a set the claim is about) or the joint
  test-set covariance of all the runs' values, (sum n_i, sum n_i) in the order of the concatenated groups (e.g.
  `delong_cov` of every run's test scores). The combined rule (module docstring): variance = seed part + u^T cov u,
  u the per-run weights w_i / n_i. The seed part's degrees of freedom: Welch-Satterthwaite when every weighted group
  has the same number n >= 3 of runs; otherwise (unequal counts, or 2 runs each) Scheffe's exact pairing by seed
  (`scheffe_matrix`, n_min - 1 df), the seed spread and own test noise then read on the paired values d = M x with
  covariance M cov M^T (`uses_pairing`; Interval.rule names the one used). Returns an Interval (std None); lo/hi
  None when a group with non-zero weight has fewer than 2 values.
  """
  _check_level(level)
  if len(groups) != len(weights) or not groups:
    raise UsageError(f"contrast_interval needs one weight per group, got {len(groups)} groups, {len(weights)} weights")
  vals = [_values(g, f"group {i}") for i, g in enumerate(groups)]
  w = np.asarray(weights, dtype=np.float64)
  est = float(sum(wi * v.mean() for wi, v in zip(w, vals)))
  n_total = int(sum(v.size for v in vals))
  c = _check_cov(cov, n_total)
  if any(v.size < 2 and wi != 0 for wi, v in zip(w, vals)):
    return Interval(est, None, None, None, n_total, None, None, level, FEW_SEEDS)
  sizes = [v.size for wi, v in zip(w, vals) if wi != 0]
  if not sizes:
    return Interval(est, None, None, None, n_total, None, None, level, NO_WEIGHT)
  n_min = min(sizes)
  u = np.concatenate([np.full(v.size, wi / v.size) for wi, v in zip(w, vals)])
  if uses_pairing(sizes):
    m = scheffe_matrix([v.size for v in vals], w)
    # Each group's spread from its first run (pairing moves every d_j alike, so var(d) is unchanged): runs that
    # all scored the same give exactly 0, not rounding noise that a reading would take for a tiny interval.
    d = m @ np.concatenate([v - v[0] for v in vals])
    seed_var, seed_df, rule = float(d.var(ddof=1)) / n_min, float(n_min - 1), SCHEFFE
    own_total = _own_noise(m @ c @ m.T) / n_min if c is not None else 0.0
  else:
    seed_parts, own_total = [], 0.0  # own_total: the runs' own (unshared) test noise that the seed spread holds.
    start = 0
    for wi, v in zip(w, vals):
      block = slice(start, start + v.size)
      start += v.size
      if wi == 0:
        continue
      seed_parts.append(wi ** 2 * float((v - v[0]).var(ddof=1)) / v.size)  # Exactly 0 for equal runs.
      if c is not None:
        own_total += wi ** 2 * _own_noise(c[block, block]) / v.size
    seed_var, seed_df = float(sum(seed_parts)), _satterthwaite_df(seed_parts, sizes)
    rule = SATTERTHWAITE if len(sizes) > 1 else STUDENT
  test_var = max(float(u @ c @ u) - own_total, 0.0) if c is not None else 0.0
  if seed_var + test_var <= 0.0:
    return Interval(est, None, None, None, n_total, None, None, level, ZERO_SPREAD)
  lo, hi, se, df = _t_bounds(est, seed_var, seed_df, test_var, level)
  return Interval(est, None, float(lo), float(hi), n_total, float(df), float(se), level, seed_var=seed_var,
                  own_var=float(own_total) if c is not None else 0.0, shared_var=float(test_var), n_min=int(n_min),
                  rule=rule)


def t_interval(values, level=0.95, cov=None):
  """Mean across seeds with its interval. values: (n,) one number per run (e.g. a test AUC).

  cov: None (seed spread only) or the (n, n) joint test-set covariance of the runs' values (e.g. `delong_cov`); the
  combined rule of `contrast_interval` with one group. Returns an Interval; lo/hi are None when n < 2, std is the
  plain spread across seeds (ddof=1).
  """
  _check_level(level)
  v = _values(values, "values")
  mean = float(v.mean())
  if v.size < 2:
    _check_cov(cov, v.size)
    return Interval(mean, None, None, None, v.size, None, None, level, FEW_SEEDS)
  iv = contrast_interval([v], [1.0], level=level, cov=cov)
  return dataclasses.replace(iv, std=float(v.std(ddof=1)))


def diff_interval(a_values, b_values, cov=None, level=0.95):
  """mean(a) - mean(b) across seeds with the combined interval (module docstring).

  a_values: (n_a,), b_values: (n_b,) one number per run; cov: None (seed spread only) or the (n_a + n_b, n_a + n_b)
  joint test-set covariance of a's runs then b's. Returns an Interval; lo/hi None when either arm has fewer than
  2 values.
  """
  return contrast_interval([a_values, b_values], [1.0, -1.0], level=level, cov=cov)


def rule_rate(n_a, n_b, effect=0.0, ratio=1.0, level=0.95, studies=200_000, seed=0):
  """The rate (0-1) at which the difference rule on the seed spread (diff_interval without cov: Welch-Satterthwaite,
  or Scheffe's pairing where `uses_pairing`) reads mean(a) > mean(b), its 95% CI's lower end above 0: the one-sided
  size at effect 0 (nominally (1 - level) / 2), the power at effect > 0. Normal seeds, arm b's seed SD 1, arm a's
  sqrt(ratio) and its mean higher by `effect` (in arm b's seed SDs); a seeded Monte Carlo of `studies` studies (SE
  about 0.035 points at a 2.5% rate and 200,000 studies), so the same call gives the same number."""
  _check_level(level)
  if min(n_a, n_b) < 2 or ratio <= 0 or studies < 1:
    raise UsageError(f"rule_rate needs at least 2 seeds per arm, a positive ratio and studies >= 1, got {n_a}, "
                     f"{n_b}, {ratio}, {studies}")
  rng = np.random.default_rng(seed)
  a = effect + math.sqrt(ratio) * rng.standard_normal((studies, n_a))
  b = rng.standard_normal((studies, n_b))
  p = 0.5 + level / 2.0
  if uses_pairing((n_a, n_b)):
    d = np.concatenate([a, b], axis=1) @ scheffe_matrix((n_a, n_b), (1.0, -1.0)).T
    n = d.shape[1]
    lo = d.mean(axis=1) - sp_special.stdtrit(n - 1, p) * d.std(axis=1, ddof=1) / math.sqrt(n)
  else:
    va, vb = a.var(axis=1, ddof=1) / n_a, b.var(axis=1, ddof=1) / n_b
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    lo = a.mean(axis=1) - b.mean(axis=1) - sp_special.stdtrit(df, p) * np.sqrt(va + vb)
  return float(np.mean(lo > 0))


POWER_EFFECT = 2.0  # pairing_note's true difference, in seed SDs.


def pairing_note(counts, level=0.95):
  """A sentence on the arms whose differences read Scheffe's pairing (unequal seed counts, or 2 seeds each), with
  the rule's simulated power at those counts against equal arms of more seeds, or "" when no pair of arms (of 2 or
  more seeds) uses it. counts: each arm's number of seeds (any iterable of ints)."""
  distinct = sorted({int(c) for c in counts if c >= 2})
  pairs = [(a, b) for i, a in enumerate(distinct) for b in distinct[i:] if uses_pairing((a, b))]
  if not pairs:
    return ""
  parts = []
  for a, b in pairs:
    k = max(b, 3)
    parts.append(f"{a} vs {b} seeds {100 * rule_rate(a, b, POWER_EFFECT, level=level):.0f}% ({k} vs {k}: "
                 f"{100 * rule_rate(k, k, POWER_EFFECT, level=level):.0f}%)")
  return ("Differences between arms of unequal seed counts, or of 2 seeds each, read Scheffé's (1943) pairing by "
          "seed: Student's t at the smaller arm's seeds − 1 degrees of freedom, exact whatever the arms' spreads "
          "(the Welch-Satterthwaite df, used between equal arms of 3 or more seeds, is liberal where the arm with "
          "fewer seeds varies more), at a cost in power. A true difference of "
          f"{POWER_EFFECT:g} seed SDs reads 'larger' in (normal seeds, equal spreads, simulated): " + "; ".join(parts)
          + ". Equal seed counts of 3 or more read Welch-Satterthwaite, with more degrees of freedom.")


UNBOUNDED = ("unbounded: the denominator's 95% CI includes 0 (Fieller), so no finite interval holds the share at "
             "95%")


def share_interval(base_values, part_values, full_values, level=0.95):
  """The share of a gain that an intermediate arm recovers, (mean(part) - mean(base)) / (mean(full) - mean(base)),
  with Fieller's interval for a ratio of means (Fieller 1954).

  base_values, part_values, full_values: (n_b,), (n_p,), (n_f,) one value per run of three independent arms (e.g.
  normalised curve areas of random, Mean-Var and transfer); the seed spread only. With a = mean(part) - mean(base),
  b = mean(full) - mean(base), their seed variances V_aa = s_p^2/n_p + s_b^2/n_b, V_bb = s_f^2/n_f + s_b^2/n_b and
  covariance V_ab = s_b^2/n_b (the shared base mean), the interval is every theta with (a - theta b)^2 <= t^2 (V_aa -
  2 theta V_ab + theta^2 V_bb), t the `level` quantile of Student's t with the Welch-Satterthwaite df of the pivot a -
  theta b = mean(part) - theta mean(full) - (1 - theta) mean(base) at theta = a / b (simulated coverage 93-97% at 3
  and 5 seeds per arm, tests/stats_test.py; the df of the plain sum of the three terms gave 92-96%). Where the arms'
  seed counts differ, or are 2 each (`uses_pairing`), V comes from Scheffe's paired values of a and b (n_min of each)
  and t has n_min - 1 df, as in contrast_interval. It is the finite interval between the two roots when b is
  significantly non-zero (b^2 > t^2 V_bb); otherwise the set is unbounded and lo/hi are None with note UNBOUNDED.
  Returns an Interval (mean: the ratio of means, std None, se None); lo/hi None with note FEW_SEEDS when an arm has
  fewer than 2 values, or with a note when b is exactly 0.
  """
  _check_level(level)
  arms = [_values(v, name) for v, name in ((base_values, "base_values"), (part_values, "part_values"),
                                           (full_values, "full_values"))]
  base, part, full = arms
  a, b = part.mean() - base.mean(), full.mean() - base.mean()
  n_total = int(sum(v.size for v in arms))
  est = float(a / b) if b != 0 else math.nan
  if any(v.size < 2 for v in arms):
    return Interval(est, None, None, None, n_total, None, None, level, FEW_SEEDS)
  if uses_pairing([v.size for v in arms]):
    # Scheffe's pairing (module docstring): n paired values of a and b, so V and the pivot's df (n - 1) are exact.
    n = min(v.size for v in arms)
    zb, zp, zf = (_pairing_block(v.size, n) @ (v - v[0]) for v in arms)  # Shifted: equal runs give exactly 0.
    pair = np.cov(np.stack([zp - zb, zf - zb]), ddof=1) / n
    v_aa, v_bb, v_ab, df = float(pair[0, 0]), float(pair[1, 1]), float(pair[0, 1]), float(n - 1)
    rule = SCHEFFE
  else:
    vb, vp, vf = (float((v - v[0]).var(ddof=1)) / v.size for v in arms)
    v_aa, v_bb, v_ab = vp + vb, vf + vb, vb
    theta = est if math.isfinite(est) else 0.0
    pivot = ((1.0 - theta) ** 2 * vb, vp, theta ** 2 * vf)  # The pivot's variance terms, arm by arm.
    den = sum(x ** 2 / (v.size - 1) for x, v in zip(pivot, arms))
    df = sum(pivot) ** 2 / den if den > 0 else math.inf
    rule = SATTERTHWAITE
  q2 = _quantile(df, 0.5 + level / 2.0) ** 2
  # (b^2 - q2 V_bb) theta^2 - 2 (a b - q2 V_ab) theta + (a^2 - q2 V_aa) <= 0.
  qa, qb, qc = b * b - q2 * v_bb, a * b - q2 * v_ab, a * a - q2 * v_aa
  if b == 0 or qa <= 0:
    note = UNBOUNDED if b != 0 or v_bb > 0 else "the full gain is exactly 0: no share"
    return Interval(est, None, None, None, n_total, float(df), None, level, note)
  root = math.sqrt(max(qb * qb - qa * qc, 0.0))  # >= 0 whenever qa > 0: a/b itself satisfies the inequality.
  return Interval(est, None, float((qb - root) / qa), float((qb + root) / qa), n_total, float(df), None, level,
                  n_min=int(min(v.size for v in arms)), rule=rule)


def format_interval(interval: Interval, scale=100.0, digits=1, signed=False) -> str:
  """A table cell: 'mean ± std [lo, hi]' in units of 1/scale (the default shows AUC in points), e.g.
  '88.1 ± 0.9 [80.0, 96.2]'; std is left out when None (differences, one run), the CI reads [no CI] when there is none.
  signed=True writes the sign of the mean, for differences: '+1.2 [-0.8, 3.2]'."""
  text = f"{interval.mean * scale:{'+' if signed else ''}.{digits}f}"
  if interval.std is not None:
    text += f" ± {interval.std * scale:.{digits}f}"
  if interval.lo is None:
    return text + " [no CI]"
  return text + f" [{interval.lo * scale:.{digits}f}, {interval.hi * scale:.{digits}f}]"


# ---------------------------------------------------------------------------------------------------------------------
# Convergence measures.

def _curve(steps, values):
  s = np.asarray(steps, dtype=np.float64).ravel()
  v = np.asarray(values, dtype=np.float64).ravel()
  if s.size == 0 or s.size != v.size:
    raise UsageError(f"a curve needs as many steps as values (got {s.size} and {v.size})")
  if np.any(np.diff(s) <= 0):
    raise UsageError("curve steps must be strictly increasing")
  return s, v


def steps_to_threshold(steps, values, threshold, k=2):
  """First evaluation step from which the value stays >= threshold for k evaluations in a row, or None (censored).

  steps, values: (E,) a validation curve sorted by step. Rule for the end of the run: when fewer than k evaluations
  remain from an evaluation, it counts if all of them (down to the last evaluation) are >= threshold. NaN counts as
  below. Returns the step (a number like those in `steps`) or None when never reached.
  """
  if int(k) != k or k < 1:
    raise UsageError(f"k must be a positive integer, got {k}")
  s, v = _curve(steps, values)
  above = np.nan_to_num(v, nan=-np.inf) >= threshold
  e = above.size
  for i in range(e):
    if above[i:min(i + int(k), e)].all():
      return int(s[i]) if float(s[i]).is_integer() else float(s[i])
  return None


def curve_area(steps, values, up_to):
  """Mean value of the curve over [0, up_to] by the trapezoid rule (in the curve's units, e.g. AUC). Never censored.

  steps, values: (E,) sorted by step; up_to > 0 (the value there is interpolated). Before the first evaluation the
  curve is held at its first value (the trainer evaluates at step 0, so usually there is no such stretch); past the
  last evaluation it is held at its last value: a run that stopped at its plateau (training/plateau.py) stays there.
  """
  s, v = _curve(steps, values)
  if not np.all(np.isfinite(v)):
    raise UsageError("curve_area: the curve has NaN or inf values")
  if not up_to > 0:
    raise UsageError(f"curve_area: up_to={up_to} must be positive")
  xs = np.concatenate([[0.0], s[(s > 0) & (s < up_to)], [up_to]])
  ys = np.interp(xs, s, v)  # Held at the first value left of steps[0] and at the last right of steps[-1].
  return float(sp_integrate.trapezoid(ys, xs) / up_to)


LEARNED_MIN = 0.02  # A curve whose best value is within this of the floor never learned: no plateau to normalise by.


def normalized_curve_area(steps, values, up_to, floor=0.5):
  """The mean over [0, up_to] of the curve's progress towards its own plateau, (v - floor) / (plateau - floor),
  with plateau the curve's best value over all its evaluations (trapezoid rule, as `curve_area`).

  steps, values: (E,) sorted by step; floor: the value of no skill (0.5 for AUC). 1.0 means at the plateau from the
  start; the measure reads speed alone, so an arm that plateaus higher is not read as faster. None when the best
  value is within LEARNED_MIN of the floor (nothing learned, no plateau to normalise by).
  """
  s, v = _curve(steps, values)
  if not np.all(np.isfinite(v)):
    raise UsageError("normalized_curve_area: the curve has NaN or inf values")
  plateau = float(v.max())
  if plateau - floor < LEARNED_MIN:
    return None
  return (curve_area(s, v, up_to) - floor) / (plateau - floor)


def _gehan_scores(times, reached):
  """(n, n) matrix: +1 where unit i is surely earlier than unit j, -1 where surely later, 0 when undecidable."""
  t = np.asarray(times, dtype=np.float64)
  r = np.asarray(reached, dtype=bool)
  ti, tj = t[:, None], t[None, :]
  ri, rj = r[:, None], r[None, :]
  # i reached at ti; j either reached later, or was censored at tj >= ti (its true time is beyond tj).
  earlier = ri & ((rj & (ti < tj)) | (~rj & (ti <= tj)))
  return earlier.astype(np.int64) - earlier.T.astype(np.int64)


def censored_rank_test(a_steps, a_reached, b_steps, b_reached, max_permutations=20000, seed=0):
  """Gehan's generalised Wilcoxon test that arm a reaches the threshold in fewer steps than arm b (one-sided).

  a_steps: (n_a,) steps to threshold, or the last evaluated step for runs that never reached it (a_reached False);
  likewise for b. Exact permutation p-value over all C(n_a + n_b, n_a) splits when there are at most max_permutations
  of them, otherwise a seeded Monte Carlo estimate. The smallest possible p is 1 / C(n_a + n_b, n_a): 1/6 with 2
  seeds per arm and 1/20 = 0.05 with 3, so with 2-3 seeds it can never reach p < 0.05.
  """
  a_t, b_t = _values(a_steps, "a_steps"), _values(b_steps, "b_steps")
  a_r, b_r = np.asarray(a_reached, bool).ravel(), np.asarray(b_reached, bool).ravel()
  if a_r.size != a_t.size or b_r.size != b_t.size:
    raise UsageError("censored_rank_test: one reached flag per run")
  na, n = a_t.size, a_t.size + b_t.size
  u = _gehan_scores(np.concatenate([a_t, b_t]), np.concatenate([a_r, b_r]))
  row = u.sum(axis=1)  # Sum over a of row sums = sum over (a, b) pairs; a-a pairs cancel.

  def stat(mask):
    return row[mask].sum()

  observed = stat(np.arange(n) < na)
  total = math.comb(n, na)
  if total <= max_permutations:
    count = 0
    for idx in itertools.combinations(range(n), na):
      mask = np.zeros(n, bool)
      mask[list(idx)] = True
      count += stat(mask) >= observed
    return float(count / total)
  rng = np.random.default_rng(seed)
  count = 1  # The observed split counts once (Phipson & Smyth), so p is never 0.
  for _ in range(max_permutations):
    mask = np.zeros(n, bool)
    mask[rng.choice(n, na, replace=False)] = True
    count += stat(mask) >= observed
  return float(count / (max_permutations + 1))


def min_rank_p(n_a, n_b):
  """Smallest p-value the exact `censored_rank_test` can give with n_a and n_b runs: 1 / C(n_a + n_b, n_a)."""
  return 1.0 / math.comb(n_a + n_b, n_a)


# ---------------------------------------------------------------------------------------------------------------------
# Readings.

@dataclasses.dataclass(frozen=True)
class Verdict:
  """A reading: verdict in VERDICTS, text (the numbers, one sentence), rule (a key of RULES).

  p_holds / p_not: one-sided p-values of the tests behind "holds" and "does not hold" (each verdict is reached at
  level 95% when its p < 0.025; None when the reading has no interval); `holm` adjusts them over a family.
  mde: the minimum detectable effect at 80% power from the observed standard error (the reading's units), None when
  unknown. unit: what one of its n values is (e.g. "runs", "disjoint pairs of runs"), "" when not stated.
  """
  verdict: str
  text: str
  rule: str
  p_holds: Optional[float] = None
  p_not: Optional[float] = None
  mde: Optional[float] = None
  unit: str = ""
  raw_verdict: Optional[str] = None  # The verdict before a family-wise adjustment or a gate, when it changed.
  interval: Optional[Interval] = None  # The interval it was read from (for `seeds_needed`; lo None: no CI, see note).
  margin: Optional[float] = None  # The margin the rule used, when it has one.
  parts: tuple = ()  # The readings a combined verdict was made of (common.all_of), else empty.


def _fmt(x):
  return f"{x:.4g}"


def _prefix(what):
  return f"{what}: " if what else ""


def _ci_text(interval, unit=""):
  paired = (f", paired by seed (Scheffé, {interval.n_min} pairs, seed spread at {interval.n_min - 1} df)"
            if interval.rule == SCHEFFE else "")
  return (f"difference {_fmt(interval.mean)}, {interval.level:.0%} CI [{_fmt(interval.lo)}, {_fmt(interval.hi)}], "
          f"n={interval.n}" + (f" {unit}" if unit else "") + paired
          + (f" ({interval.note})" if interval.note else ""))


def _sf(df, x):
  """P(T > x) for a t with df degrees of freedom (normal for inf)."""
  return float(sp_special.ndtr(-x) if math.isinf(df) else sp_special.stdtr(df, -x))


def minimum_detectable(se, df=math.inf, level=0.95, power=0.8):
  """The smallest true difference a two-sided test at `level` detects with probability `power`, given the standard
  error se (the reading's units) and df: (t_{1-alpha/2} + t_{power}) * se. None when se is None."""
  if se is None:
    return None
  df = math.inf if df is None else df
  return (_quantile(df, 0.5 + level / 2.0) + _quantile(df, power)) * float(se)


def _interval_tests(interval):
  """(est, se, df) of an Interval with a CI, for the p-values."""
  df = math.inf if interval.df is None else interval.df
  se = interval.se
  if se is None:  # An interval built from lo/hi alone: back out the standard error.
    se = (interval.hi - interval.lo) / (2.0 * _quantile(df, 0.5 + interval.level / 2.0))
  return interval.mean, max(float(se), 1e-300), df


def read_equivalence(interval: Interval, margin: float, what: str = "", unit: str = "") -> Verdict:
  """'No difference' claim from the interval of a difference (e.g. `diff_interval`), with the margin in its units."""
  if not margin > 0:
    raise UsageError(f"the equivalence margin must be positive, got {margin}")
  if interval.lo is None or interval.hi is None:
    why = interval.note or FEW_SEEDS
    return Verdict(INCONCLUSIVE, f"{_prefix(what)}difference {_fmt(interval.mean)}, no interval ({why}).",
                   "equivalence", unit=unit, interval=interval, margin=margin)
  est, se, df = _interval_tests(interval)
  alpha = (1.0 - interval.level) / 2.0  # Each one-sided test's level (2.5% at 95%).
  # TOST: both one-sided nulls |d| >= margin rejected at alpha. "Does not hold": |d| > margin on either side, two
  # chances, so each side is tested at alpha / 2 (Bonferroni): at a true 0 both sides together err at most alpha.
  p_holds = max(_sf(df, (est + margin) / se), _sf(df, (margin - est) / se))
  p_not = min(1.0, 2.0 * min(_sf(df, (est - margin) / se), _sf(df, (-margin - est) / se)))
  level_out = 1.0 - alpha  # The CI whose lying outside +-margin is "does not hold" (97.5% at 95%).
  if -margin < interval.lo and interval.hi < margin:
    verdict, why = HOLDS, f"lies inside +-{_fmt(margin)}"
  elif (interval.lo >= margin or interval.hi <= -margin) and p_not < alpha:
    verdict, why = DOES_NOT_HOLD, (f"lies entirely outside +-{_fmt(margin)}, and so does the {level_out:.1%} CI (either "
                                   "side could have erred, so each is tested at half the level)")
  elif interval.lo >= margin or interval.hi <= -margin:
    verdict, why = INCONCLUSIVE, (f"lies outside +-{_fmt(margin)}, but the {level_out:.1%} CI does not (either side "
                                  "could have erred, so each is tested at half the level)")
  else:
    verdict, why = INCONCLUSIVE, f"crosses +-{_fmt(margin)}"
  mde = minimum_detectable(interval.se, interval.df, interval.level)
  return Verdict(verdict, f"{_prefix(what)}{_ci_text(interval, unit)}: the CI {why}.", "equivalence",
                 p_holds, p_not, mde, unit, interval=interval, margin=margin)


def read_direction(interval: Interval, claimed: str = "greater", what: str = "", margin: Optional[float] = None,
                   unit: str = "") -> Verdict:
  """'Faster/larger' claim from the interval of a difference: claimed 'greater' (e.g. curve area, transfer - random)
  or 'less' (e.g. steps to threshold). margin (the reading's units, > 0): the smallest effect that matters; the
  claim does not hold when the CI rules out an effect of that size on the claimed side (RULES["direction"]); None
  leaves only the wrong side to refute it."""
  if claimed not in ("greater", "less"):
    raise UsageError(f"claimed must be 'greater' or 'less', got {claimed!r}")
  if margin is not None and not margin > 0:
    raise UsageError(f"the directional margin must be positive, got {margin}")
  if interval.lo is None or interval.hi is None:
    why = interval.note or FEW_SEEDS
    return Verdict(INCONCLUSIVE, f"{_prefix(what)}difference {_fmt(interval.mean)}, no interval ({why}).", "direction",
                   unit=unit, interval=interval, margin=margin)
  sign = 1.0 if claimed == "greater" else -1.0
  lo, hi = (interval.lo, interval.hi) if sign > 0 else (-interval.hi, -interval.lo)  # Claimed side positive.
  est, se, df = _interval_tests(interval)
  est *= sign
  m = 0.0 if margin is None else margin
  p_holds = _sf(df, est / se)
  p_not = _sf(df, (m - est) / se)  # H0: the effect is at least the margin (or > 0 without one) on the claimed side.
  if lo > 0:
    verdict, why = HOLDS, f"excludes 0 on the claimed side ({claimed})"
    if margin is not None and hi < margin:
      why += f"; the whole effect is below the margin {_fmt(margin)}"
  elif hi < 0 or (margin is not None and hi < margin):
    verdict = DOES_NOT_HOLD
    why = ("excludes 0 on the other side" if hi < 0 else
           f"rules out an effect of {_fmt(margin)} or more on the claimed side")
  else:
    verdict = INCONCLUSIVE
    why = "includes 0" + (f" and reaches the margin {_fmt(margin)}" if margin is not None else "")
  mde = minimum_detectable(interval.se, interval.df, interval.level)
  return Verdict(verdict, f"{_prefix(what)}{_ci_text(interval, unit)}: the CI {why}.", "direction",
                 p_holds, p_not, mde, unit, interval=interval, margin=margin)


def read_threshold(lo, hi, threshold, claimed: str = "above", what: str = "", estimate=None,
                   p_above=None, p_below=None, mde=None, unit: str = "") -> Verdict:
  """Claim that a quantity is above (or below) a threshold, from its interval [lo, hi] (e.g. a bootstrap CI).

  p_above / p_below: one-sided p-values of "the quantity is above / below the threshold" (e.g. the bootstrap share
  of draws on the other side), for `holm`; None when unknown."""
  if claimed not in ("above", "below"):
    raise UsageError(f"claimed must be 'above' or 'below', got {claimed!r}")
  est = "" if estimate is None else f"{_fmt(estimate)}, "
  if lo is None or hi is None:
    return Verdict(INCONCLUSIVE, f"{_prefix(what)}{est}no interval.", "threshold", unit=unit)
  if lo > hi:
    raise UsageError(f"read_threshold: lo={lo} > hi={hi}")
  p_holds, p_not = (p_above, p_below) if claimed == "above" else (p_below, p_above)
  text = f"{_prefix(what)}{est}CI [{_fmt(lo)}, {_fmt(hi)}] against {_fmt(threshold)}"
  wholly_above, wholly_below = lo > threshold, hi < threshold
  if (wholly_above and claimed == "above") or (wholly_below and claimed == "below"):
    return Verdict(HOLDS, f"{text}: wholly {claimed}.", "threshold", p_holds, p_not, mde, unit)
  if wholly_above or wholly_below:
    return Verdict(DOES_NOT_HOLD, f"{text}: wholly {'above' if wholly_above else 'below'}.", "threshold", p_holds,
                   p_not, mde, unit)
  return Verdict(INCONCLUSIVE, f"{text}: the CI contains the threshold.", "threshold", p_holds, p_not, mde, unit)


def inconclusive_because(verdict: Verdict, why: str) -> Verdict:
  """The reading made inconclusive for a stated reason (e.g. its runs never learned); the numbers stay in its text."""
  if verdict.verdict == INCONCLUSIVE:
    return dataclasses.replace(verdict, text=verdict.text.rstrip(".") + f"; {why}.")
  return dataclasses.replace(verdict, verdict=INCONCLUSIVE, raw_verdict=verdict.verdict,
                             text=verdict.text.rstrip(".") + f"; would read '{verdict.verdict}', but {why}.")


FAMILY_ALPHA = 0.05


def _decision_p(v):
  """2 x the one-sided p of the test behind a reading's decided verdict (the smaller one when inconclusive)."""
  if v.p_holds is None or v.p_not is None:
    return None
  p = {HOLDS: v.p_holds, DOES_NOT_HOLD: v.p_not}.get(v.verdict, min(v.p_holds, v.p_not))
  return min(1.0, 2.0 * p)


def holm(verdicts, alpha=FAMILY_ALPHA):
  """Holm-Bonferroni over a family of readings: each decided verdict stays only if its test survives.

  verdicts: [Verdict]. Each reading is one hypothesis with p = 2 x the one-sided p of the test behind its verdict
  (p_holds for "holds", p_not for "does not hold", the smaller when inconclusive; each test is at 2.5% unadjusted,
  so p < 0.05 is exactly the CI rule: the 95% CI, or the 97.5% CI for an equivalence's "does not hold", whose p_not
  already holds its two sides' Bonferroni factor). Holm's step-down
  at `alpha` over the readings with a p keeps the family-wise rate of any wrong decided verdict at or below alpha
  (Holm 1979; any dependence). A decided verdict whose test does not survive becomes inconclusive ("holds before
  adjustment"); readings without p-values are left as they are (they are inconclusive for want of an interval, or
  were decided by a rule that gives none, which the text says). Returns (adjusted [Verdict], adjusted p per reading
  or None), in the input order.
  """
  ps = [_decision_p(v) for v in verdicts]
  idx = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
  m = len(idx)
  adjusted = [None] * len(verdicts)
  running = 0.0
  for rank, i in enumerate(idx):
    running = max(running, min(1.0, (m - rank) * ps[i]))
    adjusted[i] = running
  out = []
  for v, p in zip(verdicts, adjusted):
    if p is None or v.verdict == INCONCLUSIVE or p < alpha:
      out.append(v)
    else:
      out.append(dataclasses.replace(
          v, verdict=INCONCLUSIVE, raw_verdict=v.verdict,
          text=v.text.rstrip(".") + f"; '{v.verdict}' before adjustment, Holm-adjusted p {p:.3g} >= {alpha:g}."))
  return out, adjusted


# ---------------------------------------------------------------------------------------------------------------------
# Power: what a claim needs to be decidable.

MAX_SEEDS = 10000


def predicted_se(interval: Interval, seeds: int, test_factor: float = 1.0):
  """The standard error the same contrast would have with `seeds` runs per arm (instead of interval.n_min) and
  test_factor times as many test images, assuming the pilot's variances: the seed variance (seed spread minus the
  runs' own test noise, floored at 0) scales with 1 / seeds, the own test noise with 1 / (seeds * test images) and
  the shared test noise with 1 / test images. None when the interval has no parts."""
  if interval.seed_var is None or interval.n_min is None or seeds < 1 or not test_factor > 0:
    return None
  per_seed = interval.n_min  # The parts were computed with about n_min runs per arm.
  seed_only = max(interval.seed_var - interval.own_var, 0.0) * per_seed / seeds
  own = interval.own_var * per_seed / seeds / test_factor
  return math.sqrt(seed_only + own + interval.shared_var / test_factor)


def seeds_needed(interval: Interval, margin: float, rule: str, test_factor: float = 1.0, power: float = 0.8,
                 level: float = 0.95):
  """The fewest runs per arm (at test_factor x the pilot's test images) with which the claim is decidable with
  probability `power` when the true difference is 0: for "equivalence", the TOST at `level` shows |d| < margin
  ((t_{1-alpha/2} + t_{1-beta/2}) se <= margin); for "direction", the CI rules out an effect of `margin` on the
  claimed side ((t_{1-alpha/2} + t_{power}) se <= margin), t at 2 (seeds - 1) degrees of freedom (1 at 2 seeds).
  Returns an int, or None when unknown or when even MAX_SEEDS runs would not do (the shared test noise alone is
  too large: more test images are needed)."""
  if interval is None or margin is None or not margin > 0:
    return None

  def enough(seeds):
    # t quantiles at about the df the interval will have with two equal arms of `seeds` runs: up to the pooled
    # 2 (seeds - 1) from Welch-Satterthwaite, 1 from Scheffe's pairing at 2 seeds (uses_pairing).
    df = 2.0 * (seeds - 1) if seeds >= 3 else 1.0
    q = _quantile(df, 0.5 + level / 2.0) + _quantile(df, 1.0 - (1.0 - power) / 2.0 if rule == "equivalence"
                                                     else power)
    return predicted_se(interval, seeds, test_factor) * q <= margin

  lo, hi = 2, MAX_SEEDS
  if predicted_se(interval, hi, test_factor) is None or not enough(hi):
    return None
  while lo < hi:  # The requirement falls with the number of seeds: bisect for the first that meets it.
    mid = (lo + hi) // 2
    if enough(mid):
      hi = mid
    else:
      lo = mid + 1
  return lo
