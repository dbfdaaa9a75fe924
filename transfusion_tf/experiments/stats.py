"""Uncertainty for the study's numbers and the rules that read claims from them (numpy and scipy only).

AUC is in [0, 1] units everywhere (0.01 is one AUC point).

Test-set noise (one run's scores on the test images):
  `delong_auc`, `delong_diff`, `delong_cov`, `pairwise_diff_vars`: the fast DeLong variance (Sun & Xu 2014,
  midranks, ties counted half) of one AUC and of the difference of two AUCs scored on the SAME images;
  `bootstrap_diff`: a paired, label-stratified bootstrap over test images.
Seed noise (one value per run): `t_interval` (mean, std and t-interval across seeds), `diff_interval` and
  `contrast_interval` (differences and other linear combinations of arm means, optionally plus test-set variance);
  `format_interval` writes one as a table cell.
Convergence: `steps_to_threshold`, `curve_area`, `censored_rank_test`.
Readings: `read_equivalence`, `read_direction`, `read_threshold` return a `Verdict`; `RULES` states each rule once.

The combined rule (`diff_interval`, `contrast_interval`): every run is scored on the same test images, so the
spread across seeds does not contain the test-set sampling noise that all runs share. The variance of a contrast of arm
means is
  seed part:  sum_i w_i^2 s_i^2 / n_i       (s_i: std across arm i's seeds, ddof=1)
  test part:  the test-set variance of the contrast, e.g. the mean DeLong variance of the difference over the seed
              pairs (a, b) (an upper bound on the variance of the difference of the two means: Jensen), or, without
              the cross term, mean(var_a) + mean(var_b), which overstates it when the arms' errors are positively
              correlated (the usual case).
The interval is estimate +- t_{df} * sqrt(seed + test), df by Welch-Satterthwaite with the test part taken as known
(infinite df). The seed spread also holds the part of the test noise that differs between runs, so the rule counts that
part twice: it errs towards wider intervals (fewer wrong verdicts, less power), never narrower. With fewer than 2 seeds
in any arm the seed variance cannot be estimated and lo/hi are None: the readings then say inconclusive and why.
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

RULES = {
    "equivalence": "A 'no difference' claim holds when the 95% CI of the difference lies inside +-margin, does not "
                   "hold when the CI lies entirely outside +-margin, and is inconclusive otherwise or with fewer "
                   "than 2 seeds per arm.",
    "direction": "A 'faster/larger' claim holds when the 95% CI of the difference excludes zero in the claimed "
                 "direction, does not hold when it excludes zero in the other direction, and is inconclusive "
                 "otherwise or with fewer than 2 seeds per arm.",
    "threshold": "A claim that a quantity is above (below) a threshold holds when its whole 95% CI is on that side, "
                 "does not hold when the whole CI is on the other side, and is inconclusive otherwise.",
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


def delong_cov(score_matrix, labels):
  """AUCs of k score vectors on the same images and their DeLong covariance.

  score_matrix: (k, N) or (N,) floats, higher = more likely positive; labels: (N,) 0/1. Returns (aucs (k,), cov (k, k)).
  Fast form (Sun & Xu 2014): midranks in the pooled and per-class samples, O(k N log N). Ties count one half.
  """
  s, y = _check_scores(score_matrix, labels)
  pos, neg = s[:, y], s[:, ~y]
  m, n = pos.shape[1], neg.shape[1]
  tz = sp_stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
  tx = sp_stats.rankdata(pos, axis=1)
  ty = sp_stats.rankdata(neg, axis=1)
  aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
  v10 = (tz[:, :m] - tx) / n  # Per positive: share of negatives scored below it.
  v01 = 1.0 - (tz[:, m:] - ty) / m  # Per negative: share of positives scored above it.
  s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((s.shape[0],) * 2)
  s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((s.shape[0],) * 2)
  return aucs, s10 / m + s01 / n


def delong_auc(scores, labels):
  """AUC of one score vector and its DeLong variance. scores: (N,) floats; labels: (N,) 0/1. Returns (auc, var)."""
  aucs, cov = delong_cov(np.asarray(scores, dtype=np.float64)[None], labels)
  return float(aucs[0]), float(max(cov[0, 0], 0.0))


def delong_diff(scores_a, scores_b, labels):
  """AUC_a - AUC_b of two score vectors on the same images, and its DeLong variance (with the covariance term).

  scores_a, scores_b: (N,) floats; labels: (N,) 0/1. Returns (diff, var); identical scores give (0.0, 0.0).
  """
  aucs, cov = delong_cov(np.stack([np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)]), labels)
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
  note: why there is no interval, or "".
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


def _mean_var(test_vars, name):
  """Mean of per-run test-set variances (None -> 0.0)."""
  if test_vars is None:
    return 0.0
  v = _values(test_vars, name)
  if np.any(v < 0):
    raise UsageError(f"{name} has a negative variance")
  return float(v.mean())


def _t_bounds(est, seed_var, seed_df_denominator, test_var, level):
  """(lo, hi, se, df) of est +- t * sqrt(seed_var + test_var), Satterthwaite df with the test part known."""
  total = seed_var + test_var
  if seed_df_denominator > 0:
    df = total ** 2 / seed_df_denominator
  else:
    df = math.inf  # No seed spread at all: only the (known) test part is left.
  se = math.sqrt(total)
  # special.ndtri/stdtrit are the normal and t quantiles without scipy.stats' per-call overhead (the benchmark calls
  # this tens of thousands of times).
  q = float(sp_special.ndtri(0.5 + level / 2.0) if math.isinf(df) else sp_special.stdtrit(df, 0.5 + level / 2.0))
  return est - q * se, est + q * se, se, df


def t_interval(values, level=0.95, test_vars=None):
  """Mean across seeds with a t-interval. values: (n,) one number per run (e.g. a test AUC).

  Optional test_vars: (n,) each run's test-set variance (e.g. DeLong); their mean is added to the seed variance s^2/n
  (the combined rule in the module docstring). Returns an Interval; lo/hi/std are None when n < 2.
  """
  _check_level(level)
  v = _values(values, "values")
  n = v.size
  mean = float(v.mean())
  if n < 2:
    return Interval(mean, None, None, None, n, None, None, level, FEW_SEEDS)
  std = float(v.std(ddof=1))
  seed_var = std ** 2 / n
  lo, hi, se, df = _t_bounds(mean, seed_var, seed_var ** 2 / (n - 1), _mean_var(test_vars, "test_vars"), level)
  return Interval(mean, std, float(lo), float(hi), n, float(df), float(se), level)


def contrast_interval(groups, weights, level=0.95, test_var=None):
  """Interval for sum_i w_i * mean(groups[i]), the groups being independent sets of runs (one value per seed).

  groups: a list of (n_i,) arrays; weights: one float per group. Each set of runs must appear once: merge the weights
  of a group used twice, e.g. conv1_gain - 0.5 * full_gain = conv1 - 0.5 * full - 0.5 * random. test_var: the test-set
  variance of the contrast itself (e.g. a DeLong variance), added to the seed part. Returns an Interval (std None);
  lo/hi None when a group with non-zero weight has fewer than 2 values.
  """
  _check_level(level)
  if len(groups) != len(weights) or not groups:
    raise UsageError(f"contrast_interval needs one weight per group, got {len(groups)} groups, {len(weights)} weights")
  vals = [_values(g, f"group {i}") for i, g in enumerate(groups)]
  w = np.asarray(weights, dtype=np.float64)
  est = float(sum(wi * v.mean() for wi, v in zip(w, vals)))
  n_total = int(sum(v.size for v in vals))
  if any(v.size < 2 and wi != 0 for wi, v in zip(w, vals)):
    return Interval(est, None, None, None, n_total, None, None, level, FEW_SEEDS)
  if test_var is not None and (not np.isfinite(test_var) or test_var < 0):
    raise UsageError(f"test_var must be a finite non-negative variance, got {test_var}")
  used = [(wi, v) for wi, v in zip(w, vals) if wi != 0]
  parts = [wi ** 2 * v.var(ddof=1) / v.size for wi, v in used]
  dens = [p ** 2 / (v.size - 1) for p, (_, v) in zip(parts, used)]  # Welch-Satterthwaite denominators.
  lo, hi, se, df = _t_bounds(est, float(sum(parts)), float(sum(dens)), float(test_var or 0.0), level)
  return Interval(est, None, float(lo), float(hi), n_total, float(df), float(se), level)


def diff_interval(a_values, b_values, a_test_vars=None, b_test_vars=None, cross_test_vars=None, level=0.95):
  """mean(a) - mean(b) across seeds with the combined interval (module docstring).

  a_values: (n_a,), b_values: (n_b,) one number per run. Test-set part, when given: cross_test_vars, the test-set
  variances of the difference for the seed pairs (e.g. `delong_diff` variances), their mean; otherwise a_test_vars and
  b_test_vars, each run's own test-set variance, as mean(a_test_vars) + mean(b_test_vars). Returns an Interval;
  lo/hi None when either arm has fewer than 2 values.
  """
  if (a_test_vars is None) != (b_test_vars is None):
    raise UsageError("diff_interval: give both a_test_vars and b_test_vars, or neither")
  if cross_test_vars is not None:
    test_var = _mean_var(cross_test_vars, "cross_test_vars")
  elif a_test_vars is not None:
    test_var = _mean_var(a_test_vars, "a_test_vars") + _mean_var(b_test_vars, "b_test_vars")
  else:
    test_var = None
  return contrast_interval([a_values, b_values], [1.0, -1.0], level=level, test_var=test_var)


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

  steps, values: (E,) sorted by step; up_to must not exceed the last step (the value there is interpolated). Before
  the first evaluation the curve is held at its first value (the trainer evaluates at step 0, so usually there is no
  such stretch).
  """
  s, v = _curve(steps, values)
  if not np.all(np.isfinite(v)):
    raise UsageError("curve_area: the curve has NaN or inf values")
  if not 0 < up_to <= s[-1]:
    raise UsageError(f"curve_area: up_to={up_to} must be in (0, last evaluated step {s[-1]:g}]")
  xs = np.concatenate([[0.0], s[(s > 0) & (s < up_to)], [up_to]])
  ys = np.interp(xs, s, v)  # Held at the first value left of steps[0].
  return float(sp_integrate.trapezoid(ys, xs) / up_to)


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
  """A reading: verdict in VERDICTS, text (the numbers, one sentence), rule (a key of RULES)."""
  verdict: str
  text: str
  rule: str


def _fmt(x):
  return f"{x:.4g}"


def _prefix(what):
  return f"{what}: " if what else ""


def _ci_text(interval):
  return (f"difference {_fmt(interval.mean)}, {interval.level:.0%} CI [{_fmt(interval.lo)}, {_fmt(interval.hi)}], "
          f"n={interval.n}")


def read_equivalence(interval: Interval, margin: float, what: str = "") -> Verdict:
  """'No difference' claim from the interval of a difference (e.g. `diff_interval`), with the margin in its units."""
  if not margin > 0:
    raise UsageError(f"the equivalence margin must be positive, got {margin}")
  if interval.lo is None or interval.hi is None:
    why = interval.note or FEW_SEEDS
    return Verdict(INCONCLUSIVE, f"{_prefix(what)}difference {_fmt(interval.mean)}, no interval ({why}).",
                   "equivalence")
  if -margin < interval.lo and interval.hi < margin:
    verdict, why = HOLDS, f"lies inside +-{_fmt(margin)}"
  elif interval.lo >= margin or interval.hi <= -margin:
    verdict, why = DOES_NOT_HOLD, f"lies entirely outside +-{_fmt(margin)}"
  else:
    verdict, why = INCONCLUSIVE, f"crosses +-{_fmt(margin)}"
  return Verdict(verdict, f"{_prefix(what)}{_ci_text(interval)}: the CI {why}.", "equivalence")


def read_direction(interval: Interval, claimed: str = "greater", what: str = "") -> Verdict:
  """'Faster/larger' claim from the interval of a difference: claimed 'greater' (e.g. curve area, transfer - random)
  or 'less' (e.g. steps to threshold)."""
  if claimed not in ("greater", "less"):
    raise UsageError(f"claimed must be 'greater' or 'less', got {claimed!r}")
  if interval.lo is None or interval.hi is None:
    why = interval.note or FEW_SEEDS
    return Verdict(INCONCLUSIVE, f"{_prefix(what)}difference {_fmt(interval.mean)}, no interval ({why}).", "direction")
  above, below = interval.lo > 0, interval.hi < 0
  if (above and claimed == "greater") or (below and claimed == "less"):
    verdict, why = HOLDS, f"excludes 0 on the claimed side ({claimed})"
  elif above or below:
    verdict, why = DOES_NOT_HOLD, "excludes 0 on the other side"
  else:
    verdict, why = INCONCLUSIVE, "includes 0"
  return Verdict(verdict, f"{_prefix(what)}{_ci_text(interval)}: the CI {why}.", "direction")


def read_threshold(lo, hi, threshold, claimed: str = "above", what: str = "", estimate=None) -> Verdict:
  """Claim that a quantity is above (or below) a threshold, from its interval [lo, hi] (e.g. a bootstrap CI)."""
  if claimed not in ("above", "below"):
    raise UsageError(f"claimed must be 'above' or 'below', got {claimed!r}")
  est = "" if estimate is None else f"{_fmt(estimate)}, "
  if lo is None or hi is None:
    return Verdict(INCONCLUSIVE, f"{_prefix(what)}{est}no interval.", "threshold")
  if lo > hi:
    raise UsageError(f"read_threshold: lo={lo} > hi={hi}")
  text = f"{_prefix(what)}{est}CI [{_fmt(lo)}, {_fmt(hi)}] against {_fmt(threshold)}"
  wholly_above, wholly_below = lo > threshold, hi < threshold
  if (wholly_above and claimed == "above") or (wholly_below and claimed == "below"):
    return Verdict(HOLDS, f"{text}: wholly {claimed}.", "threshold")
  if wholly_above or wholly_below:
    return Verdict(DOES_NOT_HOLD, f"{text}: wholly {'above' if wholly_above else 'below'}.", "threshold")
  return Verdict(INCONCLUSIVE, f"{text}: the CI contains the threshold.", "threshold")
