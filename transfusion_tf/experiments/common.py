"""What the experiment modules share: the study context they read, run results on the test protocol, the
convergence measures of a curve, and the formatting of numbers with their uncertainty.

Test protocol: each run picks its checkpoint on validation (the trainer's rule, recorded in result.json
"selected") and the tables report that checkpoint's metrics on the TEST split; the test predictions
(test_predictions.npz) give DeLong variances, so every AUC carries the test-set noise as well as the seed noise.
Curves and convergence measures stay on validation.
"""
import csv
import dataclasses
import functools
import io
import os
import zipfile

import numpy as np
from scipy import stats as sp_stats

from transfusion_tf import files
from transfusion_tf.errors import UsageError
from transfusion_tf.data import registry as data_registry
from transfusion_tf.experiments import plan, stats
from transfusion_tf.training import metrics as metrics_lib
from transfusion_tf.training import rundir

LEVEL = 0.95
# The note on an auc_mean interval whose runs cannot align their labels by image (a test_predictions.npz without
# per-label image indices): the old approximation, which makes the interval too narrow for co-occurring labels.
INDEPENDENT_LABELS = "labels taken as independent: old run dir without image index"


def _delong_var(pred, patients):
  """The (clustered) DeLong variance of one metric's (scores, labels), or None when it has no AUC (one class)."""
  try:
    return stats.delong_auc(*pred, clusters=patients)[1]
  except UsageError:
    return None


@dataclasses.dataclass
class RunResult:
  """One finished run: result.json, its validation curve and (lazily) its test predictions."""
  run: plan.Run
  dir: str
  result: dict
  curve: list

  def test_metric(self, key):
    """The selected checkpoint's test value of `key` (e.g. "auc_referable"), or None."""
    value = ((self.result.get("selected") or {}).get("test") or {}).get(key)
    return None if value is None or not np.isfinite(value) else float(value)

  @functools.cached_property
  def predictions(self):
    """{auc metric key: (scores (N,), labels (N,))} on the test split, or {} when not written."""
    try:
      return rundir.load_test_predictions(self.dir)
    except (UsageError, OSError, KeyError, ValueError):
      return {}

  @functools.cached_property
  def indices(self):
    """(N or None, {auc metric key: image positions int64 (N_k,) or None}) on the test split
    (rundir.load_test_indices), or (None, {}) when not written."""
    try:
      return rundir.load_test_indices(self.dir)
    except (UsageError, OSError, KeyError, ValueError):
      return None, {}

  @functools.cached_property
  def _patients(self):
    """{metric key: patient codes (N_k,) or None}, filled lazily."""
    return {}

  def patients(self, key):
    """The test images' patient codes aligned with predictions[key] (key None: all N test images), or None (no
    patient ids: each image is its own cluster)."""
    if key not in self._patients:
      try:
        self._patients[key] = rundir.load_test_patients(self.dir, key=key)
      except (UsageError, OSError, KeyError, ValueError):
        self._patients[key] = None
    return self._patients[key]

  def auc_with_var(self, key):
    """(test AUC, DeLong variance or None) of `key`, clustered by patient where the data has patients. auc_mean's
    variance is that of the mean of the per-label AUCs with the labels' covariance (they are scored on the same
    images: stats.delong_cov_mean); a run dir without per-label image indices falls back to the sum of the per-label
    variances / L^2 (`labels_note` then says so)."""
    value = self.test_metric(key)
    if value is None:
      return None, None
    preds = self.predictions
    if key in preds:
      return value, _delong_var(preds[key], self.patients(key))
    if key == "auc_mean":
      cov, _ = joint_test_cov([self], key)
      if cov is not None:
        return value, float(max(cov[0, 0], 0.0))
    return value, None

  def labels_note(self, key):
    """INDEPENDENT_LABELS when this run's `key` variance takes its labels as independent (auc_mean of a run dir
    without per-label image indices), else None."""
    if key != "auc_mean" or not self.predictions:
      return None
    n, why = _label_alignment([self])
    return INDEPENDENT_LABELS if n is None and why == INDEPENDENT_LABELS else None

  def auc_ci(self, key, level=LEVEL):
    """(lo, hi) of this run's test AUC of `key` (DeLong, clustered by patient where known), or None."""
    value, var = self.auc_with_var(key)
    if value is None or var is None:
      return None
    q = float(sp_stats.norm.ppf(0.5 + level / 2.0))
    return max(0.0, value - q * var ** 0.5), min(1.0, value + q * var ** 0.5)

  def curve_points(self, metric):
    """(steps, values) of the validation curve of `metric`, sorted by step, NaN evaluations dropped."""
    pts = sorted((p["step"], p[metric]) for p in self.curve if p.get(metric) is not None and np.isfinite(p[metric]))
    return [s for s, _ in pts], [v for _, v in pts]


@dataclasses.dataclass
class Context:
  """What every experiment reads: the configuration, the planned runs, the finished runs' results and the
  analyses (id -> JSON dict). `adir` is OUT/analysis."""
  cfg: plan.StudyConfig
  runs: list
  results: dict  # Run -> RunResult, finished runs only.
  analyses: dict = dataclasses.field(default_factory=dict)
  # callable(model, stages=None) -> the preprocessed image batches (B, S, S, 3) of the leading images the given
  # stages need (all stages by default), as a re-iterable: the study's `compare.ImageBatches` reads them from the
  # pipeline on each pass (never all in memory); a list does for tests. The study sets it.
  batches: object = None
  damaged: dict = dataclasses.field(default_factory=dict)  # Run -> why its files were left out (check_run_files).

  @property
  def out(self):
    return self.cfg.out

  @property
  def adir(self):
    path = os.path.join(self.cfg.out, "analysis")
    os.makedirs(path, exist_ok=True)
    return path

  @functools.cached_property
  def task(self):
    # A dataset whose files decide its task (image_csv) reads them: its labels CSV, not its images.
    return data_registry.task_spec(self.cfg.base.dataset, options=self.cfg.base.data_kwargs)

  @property
  def source_classes(self):
    return data_registry.task_spec("synthetic_source").num_outputs

  @property
  def primary(self):
    return self.task.primary_metric

  @property
  def threshold(self):
    return self.cfg.base.convergence_auc

  def group(self, model, init, subset=None):
    """The finished RunResults of (model, init, subset), by seed."""
    return sorted((res for r, res in self.results.items()
                   if r.model == model and r.init == init and r.subset == subset), key=lambda x: x.run.seed)

  def planned(self, model, init, subset=None):
    return [r for r in self.runs if r.model == model and r.init == init and r.subset == subset]

  def finished(self, inits=None, models=None, subset=None):
    """Finished Runs (plan order) with the given inits / models and subset."""
    return [r for r in self.runs if r in self.results and r.subset == subset
            and (inits is None or r.init in inits) and (models is None or r.model in models)]

  def rel(self, path):
    return os.path.relpath(path, self.out)


def check_run_files(run_dir):
  """(result dict, curve list, test predictions or None, problem) of a run after checking its files: problem is None
  for a finished run whose files check out, and for a run without result.json (then the rest is None too); else the
  rest is None and problem one line naming the file at fault.

  A run counts as finished only when result.json is a finished run's (rundir.read_result), curve.json is a JSON
  list, and the test_predictions.npz it names opens with every metric's scores and labels of one length: a damaged
  or missing file must never make an interval narrower or a selection different, so it makes the run unfinished."""
  res, problem = rundir.read_result(run_dir)
  if res is None:
    return None, None, None, problem
  curve_path = os.path.join(run_dir, "curve.json")
  try:
    curve = rundir.read_json(curve_path)
  except (ValueError, OSError) as e:
    return None, None, None, f"{curve_path} is not valid JSON ({e.__class__.__name__})"
  if not isinstance(curve, list):
    return None, None, None, f"{curve_path} is missing or not a list of evaluations"
  preds = None
  if res["selected"].get("predictions"):
    preds_path = os.path.join(run_dir, res["selected"]["predictions"])
    try:
      preds = rundir.load_test_predictions(run_dir)
    except (UsageError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      return None, None, None, f"{preds_path} is missing or damaged ({e.__class__.__name__})"
    if not preds or any(len(sc) != len(lb) for sc, lb in preds.values()):
      return None, None, None, f"{preds_path} holds no usable test scores"
  return res, curve, preds, None


def load_context(cfg, runs, analyses=None):
  """The Context of `runs`: result.json and curve.json of every finished run whose files check out
  (check_run_files); the others are left out, and Context.damaged names each with the file at fault."""
  results, damaged = {}, {}
  for r in runs:
    d = plan.run_dir(cfg, r)
    res, curve, preds, problem = check_run_files(d)
    if problem is not None:
      damaged[r] = problem
    elif res is not None:
      results[r] = RunResult(r, d, res, curve)
      if preds is not None:
        results[r].predictions = preds  # Read once by the check; the cached property keeps them.
  return Context(cfg, list(runs), results, dict(analyses or {}), damaged=damaged)


# -- AUC comparisons ---------------------------------------------------------------------------------------------


def _scored(ctx, model, init, key, subset):
  """The RunResults of a group that have a test value of `key`, by seed."""
  return [res for res in ctx.group(model, init, subset) if res.test_metric(key) is not None]


def _label_alignment(results):
  """(n, {label key: image positions (N_k,)}) shared by `results`' auc_mean labels, or (None, why) when a run's file
  cannot place some label's images (an old run dir without per-label image indices) or the runs place them
  differently."""
  keys = sorted(k for k in results[0].predictions if k != "auc_mean")
  first_n, first = results[0].indices
  for res in results:
    n, idx = res.indices
    if any(idx.get(k) is None or idx[k].size != res.predictions[k][0].size for k in keys if k in res.predictions):
      return None, INDEPENDENT_LABELS
    if n != first_n or any(k in idx and k in first and not np.array_equal(idx[k], first[k]) for k in keys):
      return None, "the runs' labels sit on different test images"
  n = first_n if first_n is not None else max((int(first[k].max()) + 1 for k in keys if first[k].size), default=0)
  return n, {k: first[k] for k in keys}


def _label_mean_cov(results):
  """(cov (R, R), None) of the runs' auc_mean with the labels' covariance (stats.delong_cov_mean) on the images
  they share, or (None, why) when the labels cannot be aligned by image (INDEPENDENT_LABELS) or the runs differ."""
  n, idx = _label_alignment(results)
  if n is None:
    return None, idx
  try:
    rows = [metrics_lib.label_matrices(res.predictions, idx, n) for res in results]
  except ValueError as e:
    return None, str(e)
  _, _, labels, mask = rows[0]
  if any(not (np.array_equal(r[2], labels) and np.array_equal(r[3], mask)) for r in rows):
    return None, "the runs were scored on different test sets (auc_mean)"
  patients = [res.patients(None) for res in results]
  if any((p is None) != (patients[0] is None) or (p is not None and not np.array_equal(p, patients[0]))
         for p in patients):
    return None, "the runs' test images name different patients (auc_mean)"
  if patients[0] is not None and patients[0].shape != (n,):
    return None, f"{patients[0].size} patient codes for {n} test images"
  try:
    _, cov = stats.delong_cov_mean(np.stack([r[1] for r in rows]), labels, mask, patients[0])
  except UsageError as e:
    return None, str(e)
  return cov, None


def joint_test_cov(results, key):
  """(cov, note): the joint DeLong covariance (R, R) of the test AUCs of `key` of `results` (RunResults), all
  scored on the same images, clustered by patient where the runs name patients. For auc_mean, the covariance of the
  runs' means over the labels with an AUC, the labels' covariance included (they share the images:
  stats.delong_cov_mean). note is None, or, with a covariance, the approximation it rests on: INDEPENDENT_LABELS
  for runs whose files cannot align the labels by image, whose per-label covariances are summed / L^2 as if the
  labels were independent test sets (too narrow where labels co-occur). When the covariance cannot be formed,
  (None, why): a reading must then say so, never fall back to a narrower interval."""
  if not results:
    return None, "no runs"
  keys = [key] if key != "auc_mean" else sorted(k for k in results[0].predictions if k != "auc_mean")
  if not keys:
    return None, "no test predictions"
  note = None
  if key == "auc_mean" and all(sorted(k for k in res.predictions if k != "auc_mean") == keys for res in results):
    cov, why = _label_mean_cov(results)
    if why != INDEPENDENT_LABELS:
      return cov, why
    note = INDEPENDENT_LABELS  # The old files' approximation, below.
  total, used = np.zeros((len(results), len(results))), 0
  for k in keys:
    preds = [res.predictions.get(k) for res in results]
    missing = [res.run.name for res, p in zip(results, preds) if p is None]
    if missing:
      return None, f"no test predictions of {k} for {', '.join(missing)}"
    labels = preds[0][1]
    if any(p[1].shape != labels.shape or not np.array_equal(p[1], labels) for p in preds):
      return None, f"the runs were scored on different test sets ({k})"
    patients = [res.patients(k) for res in results]
    if any((p is None) != (patients[0] is None) or (p is not None and not np.array_equal(p, patients[0]))
           for p in patients):
      return None, f"the runs' test images name different patients ({k})"
    try:
      _, cov = stats.delong_cov(np.stack([p[0] for p in preds]), labels, patients[0])
    except UsageError as e:
      if key == "auc_mean":
        continue  # A label without both classes has no AUC; auc_mean leaves it out too.
      return None, str(e)
    total += cov
    used += 1
  if not used:
    return None, "no label has both classes in the test split"
  return total / used ** 2, note


def auc_contrast(ctx, model, cells, weights, key):
  """The Interval of sum_i w_i * mean test AUC of cells[i] ((init, subset) pairs of `model`): runs_contrast."""
  return runs_contrast([ctx.group(model, init, subset) for init, subset in cells], weights, key)


def runs_contrast(groups, weights, key):
  """The Interval of sum_i w_i * mean test AUC of `key` over groups[i] (lists of RunResults, any models, one test
  set) with the runs' joint test-set covariance (stats.contrast_interval); None when a weighted group has no run with
  a test value; no CI (with the reason) when the covariance cannot be formed."""
  groups = [[res for res in g if res.test_metric(key) is not None] for g in groups]
  if any(not g and w for g, w in zip(groups, weights)):
    return None
  kept = [(g, w) for g, w in zip(groups, weights) if g]
  cov, why = joint_test_cov([res for g, _ in kept for res in g], key)
  iv = stats.contrast_interval([[res.test_metric(key) for res in g] for g, _ in kept], [w for _, w in kept],
                               level=LEVEL, cov=cov)
  return _without_test_noise(iv, cov, why)


def _without_test_noise(iv, cov, why):
  """The interval with no CI when the test-set covariance is missing (cov None, `why` says why): the seed spread
  alone would be narrower than the truth; with a covariance and a note (`joint_test_cov`), the CI carries the note."""
  if why is None or iv.lo is None:
    return iv
  if cov is not None:
    return dataclasses.replace(iv, note=why)
  return dataclasses.replace(iv, lo=None, hi=None, se=None, df=None, note=f"no test-set covariance: {why}")


def group_interval(ctx, model, init, key, subset=None):
  """The 95% CI of a group's mean test AUC: the seed spread plus the test-set noise its runs share (combined rule,
  stats module docstring)."""
  group = _scored(ctx, model, init, key, subset)
  if not group:
    return None
  cov, why = joint_test_cov(group, key)
  return _without_test_noise(stats.t_interval([res.test_metric(key) for res in group], level=LEVEL, cov=cov), cov,
                             why)


def auc_difference(ctx, model, init_a, init_b, key, subset=None):
  """The Interval of mean test AUC(init_a) - mean test AUC(init_b) across seeds, with the runs' joint test-set
  covariance (see stats.contrast_interval)."""
  return auc_contrast(ctx, model, [(init_a, subset), (init_b, subset)], [1.0, -1.0], key)


def patients_note(ctx):
  """How the test images were clustered for DeLong: by patient (with counts) or each image its own cluster."""
  for res in ctx.results.values():
    preds = res.predictions
    key = ctx.primary if ctx.primary in preds else next(iter(preds), None)
    if key is None:
      continue
    pats = res.patients(key)
    n = len(preds[key][1])
    if pats is None:
      return f"{n} test images with no patient ids: each image is its own cluster"
    return f"{n} test images of {len(np.unique(pats))} patients: DeLong clustered by patient (Obuchowski 1997)"
  return None


# -- run quality -------------------------------------------------------------------------------------------------

IMPROVING_TAIL = 0.1  # The selected checkpoint in the last 10% of the steps ...
IMPROVING_P = 0.025  # ... and the last half of the evaluations still rising at this one-sided level.

RUN_RULES = {
    "still improving": "the selected checkpoint lies in the last 10% of the steps and a least-squares line through "
                       "the last half of the validation evaluations (at least 4) rises at one-sided p < 0.025 "
                       "(slope t-test on the line's residuals) by at least half the equivalence margin over that "
                       "half (a smaller rise changes no reading)",
    "no plateau shown": "the run stopped at its budget (not by the plateau stop), its best validation evaluation "
                        "(the first, where tied) lies in the last half of its evaluations, and that half does not "
                        "show a plateau: it has fewer than 4 evaluations, or the one-sided 97.5% upper bound of "
                        "its least-squares rise reaches half the equivalence margin (a flat-looking but noisy tail "
                        "is not taken as a plateau; 'still improving' names the runs whose rise is itself "
                        "significant)",
    "did not learn": "the run's 95% test AUC CI (DeLong, clustered by patient where known) does not lie above 0.5",
}


def _last_half(ctx, res):
  """What both plateau marks read: (steps, values, half, fit), the run's validation curve (curve_points), the number
  of evaluations in its last half, and the least-squares line through that half (scipy linregress; None with fewer
  than 4 evaluations there)."""
  steps, values = res.curve_points(ctx.primary)
  half = len(steps) - len(steps) // 2
  fit = None
  if half >= 4:
    fit = sp_stats.linregress(np.asarray(steps[-half:], float), np.asarray(values[-half:], float))
  return steps, values, half, fit


def _plateau_stopped(res):
  """Whether the plateau stop ended the run (training/plateau.py): its curve had flattened by the stop's rule."""
  return (res.result.get("stopped") or {}).get("reason") == "plateau"


def still_improving(ctx, res):
  """Whether a run was still improving at its budget (RUN_RULES); None when its curve is too short to tell."""
  steps, _, half, fit = _last_half(ctx, res)
  if fit is None:
    return None
  if _plateau_stopped(res):
    return False
  sel = (res.result.get("selected") or {}).get("step")
  budget = max(steps[-1], (res.result.get("stopped") or {}).get("budget") or 0)
  if sel is None or sel < budget - IMPROVING_TAIL * budget:
    return False
  if fit.slope * (steps[-1] - steps[-half]) < 0.5 * ctx.cfg.equivalence_margin:
    return False
  if not fit.stderr > 0:
    return True
  return bool(sp_stats.t.sf(fit.slope / fit.stderr, half - 2) < IMPROVING_P)


def no_plateau_shown(ctx, res):
  """Whether a run stopped at its budget without its curve showing a plateau (RUN_RULES); None without a curve.

  Why beside still_improving: with a few noisy evaluations the slope test has almost no power (the demo's last half
  has 4 points, 2 degrees of freedom), so a run can rise by several AUC points without being marked; this mark asks
  the curve to show the plateau instead of failing to show the rise.
  """
  steps, values, half, fit = _last_half(ctx, res)
  if not steps:
    return None
  if _plateau_stopped(res):
    return False
  if int(np.argmax(values)) < len(values) - half:
    return False  # No evaluation of the last half reached the (first) best before it: a plateau, or a decline.
  if fit is None:
    return True
  se = fit.stderr if np.isfinite(fit.stderr) else 0.0  # scipy gives nan for an exactly flat or exactly linear tail.
  upper = (fit.slope + sp_stats.t.ppf(1.0 - IMPROVING_P, half - 2) * se) * (steps[-1] - steps[-half])
  return not upper < 0.5 * ctx.cfg.equivalence_margin  # Fails closed: a nan bound shows no plateau.


def did_not_learn(ctx, res):
  """Whether a run's test AUC CI does not lie above 0.5 (RUN_RULES); None without predictions."""
  ci = res.auc_ci(ctx.primary)
  if ci is None:
    return None
  return bool(ci[0] <= 0.5)


def run_marks(ctx, res):
  """The marks of a finished run: a list of RUN_RULES keys that apply ('still improving' implies 'no plateau
  shown', which is then left out)."""
  marks = [name for name, test in (("still improving", still_improving), ("no plateau shown", no_plateau_shown),
                                   ("did not learn", did_not_learn)) if test(ctx, res)]
  return [m for m in marks if not (m == "no plateau shown" and "still improving" in marks)]


def gate_trained(ctx, verdict, runs):
  """A reading about trained networks made inconclusive when any of `runs` (RunResults) carries a mark: still
  improving, no plateau shown or did not learn (stats RULES["trained"])."""
  flagged = {}
  for res in runs:
    for mark in run_marks(ctx, res):
      flagged.setdefault(mark, []).append(res.run.name)
  if not flagged:
    return verdict
  why = "; ".join(f"{', '.join(names)} {mark}" for mark, names in flagged.items())
  return stats.inconclusive_because(verdict, f"{NOT_TRAINED} ({why})")


NOT_TRAINED = "runs not trained to a plateau"  # gate_trained's reason, which the answer's Q5 counts.


def marks_summary(ctx):
  """(runs that carry a mark, finished runs, "10 no plateau shown, 6 still improving"): the finished runs' marks
  counted per mark in RUN_RULES order (a run may carry two). (0, n, "") when no run is marked."""
  counts, marked = {}, 0
  for res in ctx.results.values():
    marks = run_marks(ctx, res)
    marked += bool(marks)
    for m in marks:
      counts[m] = counts.get(m, 0) + 1
  return marked, len(ctx.results), ", ".join(f"{counts[m]} {m}" for m in RUN_RULES if m in counts)


def arm_runs(ctx, model, inits, subset=None):
  """The finished RunResults of `model` with any of `inits`."""
  return [res for init in inits for res in ctx.group(model, init, subset)]


# -- convergence ------------------------------------------------------------------------------------------------


def convergence(ctx, res):
  """(steps to threshold or None, budget, curve area up to cfg.area_steps) of one run on validation."""
  steps, values = res.curve_points(ctx.primary)
  reached = None
  if ctx.threshold is not None and steps:
    reached = stats.steps_to_threshold(steps, values, ctx.threshold, k=ctx.cfg.converge_k)
  area = stats.curve_area(steps, values, ctx.cfg.area_steps) if steps else None
  return reached, (steps[-1] if steps else None), area


def area_group(ctx, model, init):
  """[curve area per seed] of a group (validation, up to cfg.area_steps)."""
  return [a for a in (convergence(ctx, res)[2] for res in ctx.group(model, init)) if a is not None]


def normalized_area_group(ctx, model, init):
  """([normalised curve area per seed] (stats.normalized_curve_area, validation, up to cfg.area_steps), [the runs'
  RunResults]); runs whose validation curve never learned are left out of the values but kept in the runs."""
  out, runs = [], []
  for res in ctx.group(model, init):
    steps, values = res.curve_points(ctx.primary)
    runs.append(res)
    if steps:
      a = stats.normalized_curve_area(steps, values, ctx.cfg.area_steps)
      if a is not None:
        out.append(a)
  return out, runs


def steps_cell(ctx, model, init):
  """'mean steps (r/n reached)' over the runs that reached the threshold, with censored runs shown as '>budget'."""
  rows = [convergence(ctx, res) for res in ctx.group(model, init)]
  if not rows:
    return "—"
  reached = [s for s, _, _ in rows if s is not None]
  budget = max(b for _, b, _ in rows if b is not None) if any(b is not None for _, b, _ in rows) else None
  parts = [str(s) if s is not None else f">{budget}" for s, _, _ in rows]
  return f"{', '.join(parts)} ({len(reached)}/{len(rows)} reached)"


# -- formatting ----------------------------------------------------------------------------------------------------


AUC_BOUNDS = (0.0, 1.0)  # An AUC, a mean SVCCA similarity, an orientation selectivity: each lies in [0, 1].
DIFF_BOUNDS = (-1.0, 1.0)  # A difference of two such quantities.


def fmt_interval(iv, scale=100.0, digits=1, signed=False, bounds=None):
  """'mean ± std [lo, hi]' (scaled), '(1 seed)' when the spread is unknown, '—' when empty.

  bounds: (low, high) in the interval's own units (before `scale`) of the quantity's range, e.g. AUC_BOUNDS; the CI's
  ends are clipped to it. A t interval from 2 seeds can reach past an AUC of 1 (t at 1 df is 12.7); the true value
  cannot, so the clipped interval covers it whenever the unclipped one does. Readings use the unclipped interval."""
  if iv is None or iv.n == 0 or iv.mean is None:
    return "—"
  f = f"{{:{'+' if signed else ''}.{digits}f}}"
  s = f.format(iv.mean * scale)
  if iv.std is not None:
    s += f" ± {iv.std * scale:.{digits}f}"
  if iv.lo is not None:
    lo, hi = (iv.lo, iv.hi) if bounds is None else (max(iv.lo, bounds[0]), min(iv.hi, bounds[1]))
    s += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]" + (f" ({iv.note})" if iv.note else "")
  elif iv.std is None and iv.n == 1:
    s += " (n=1, no CI)"
  elif iv.note and iv.note != stats.FEW_SEEDS:
    s += f" (no CI: {iv.note})"
  else:
    s += " (no CI: < 2 seeds per arm)"
  return s


def paper_value(value, std=None, unsure=False):
  if value is None:
    return "unknown"
  s = f"{value:.2f}".rstrip("0").rstrip(".") if std is None else f"{value} ± {std}"
  return s + (" [unsure]" if unsure else "")


def table(header, rows):
  """A markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def write_csv(path, header, rows):
  """Writes a CSV table atomically."""
  buf = io.StringIO(newline="")
  w = csv.writer(buf)
  w.writerow(header)
  w.writerows(rows)
  files.atomic_write(path, buf.getvalue())


def figure_link(ctx, what, png):
  return f"![{what}]({ctx.rel(png)})"


def model_cost(cfg, model):
  """models/cost.py's {"params", "macs_per_image", "flops_per_image", "image_size"} of `model` as the study builds it
  (widths included, a 5-logit head) at the study's image size (at least the model's minimum)."""
  from transfusion_tf import models  # pylint: disable=import-outside-toplevel
  from transfusion_tf.models import cost  # pylint: disable=import-outside-toplevel
  import keras  # pylint: disable=import-outside-toplevel
  size = max(cfg.base.image_size, models.MIN_SIZE[model])
  m = models.build_model(model, 5, (size, size, 3), initialize_weights=False, **cfg.model_kwargs(model))
  out = cost.model_cost(m)
  keras.backend.clear_session()
  return out


def param_count(cfg, model):
  """Parameters of `model` as the study builds it (widths included)."""
  return model_cost(cfg, model)["params"]


def analysis_kwargs(cfg):
  """The activation-comparison settings every SVCCA analysis uses (see analysis.activations.compare_pairs)."""
  return {"max_positions": cfg.analysis_max_positions, "min_datapoints_per_neuron": cfg.analysis_min_datapoints}


def datapoint_notes(records):
  """One sentence naming the stages below the minimum datapoints per neuron in `records` (per-stage result dicts
  keyed by (model, stage)), or None."""
  low = {}
  for (model, stage), r in records:
    if r.get("below_min") or r.get("few_datapoints"):
      dpn = r.get("datapoints_per_neuron") or (r["datapoints"] / max(r["neurons"]) if r.get("neurons") else None)
      low[(model, stage)] = min(low.get((model, stage), float("inf")), dpn if dpn is not None else float("inf"))
  if not low:
    return None
  return "below the minimum datapoints per neuron (left out of the readings): " + ", ".join(
      f"{m} {s} ({v:.1f} per neuron)" for (m, s), v in low.items())


def all_of(subject, parts, what):
  """One verdict from several that must all hold: holds if all hold, does not hold if any does not, else
  inconclusive. parts: stats.Verdicts. Its p-values: the largest p_holds (an intersection-union test: all must be
  shown) and the smallest p_not times the number of parts (Bonferroni: any one refutes); None when a part has none."""
  verdicts = [p.verdict for p in parts]
  word = ("holds" if all(v == "holds" for v in verdicts) else
          "does not hold" if "does not hold" in verdicts else "inconclusive")
  texts = [p.text[len(subject) + 2:] if p.text.startswith(f"{subject}: ") else p.text for p in parts]
  known = all(p.p_holds is not None and p.p_not is not None for p in parts)
  mdes = [p.mde for p in parts if p.mde is not None]
  return stats.Verdict(word, f"{subject}: {what}: " + "; ".join(t.rstrip(".") for t in texts) + ".", parts[0].rule,
                       p_holds=max(p.p_holds for p in parts) if known else None,
                       p_not=min(1.0, len(parts) * min(p.p_not for p in parts)) if known else None,
                       mde=max(mdes) if len(mdes) == len(parts) else None, unit=parts[0].unit, parts=tuple(parts))


def stage_records(data):
  """[((model, stage), per-stage comparison dict)] found in an analysis' JSON (F2 pairs, F3 runs, F4 points)."""
  out = []
  for item in (data or {}).get("pairs", []) + (data or {}).get("runs", []):
    out += [((item["model"], s), r) for s, r in (item.get("per_stage") or {}).items()]
  for p in (data or {}).get("points", []):
    out += [((p["model"], p.get("stage")), p[k]) for k in ("init", "trained") if isinstance(p.get(k), dict)]
  return out


# -- intervals and readings that tolerate missing runs ---------------------------------------------------------------
# A study read while runs are unfinished (a shard still running, a failed run) has empty groups: their intervals are
# None, their cells "—", and their readings inconclusive with the reason, never a traceback.


NO_DATA = ("no data: runs not finished or not planned, or every cell below the minimum datapoints per neuron.")


def t_iv(values):
  """stats.t_interval of `values` (seed spread only), or None when there are none."""
  return stats.t_interval(values, level=LEVEL) if len(values) else None


def diff_iv(a, b, **kw):
  """stats.diff_interval of mean(a) - mean(b), or None when either side is empty."""
  return stats.diff_interval(a, b, level=LEVEL, **kw) if len(a) and len(b) else None


def contrast_iv(groups, weights):
  """stats.contrast_interval, or None when a group with a non-zero weight is empty."""
  if any(not len(g) and w for g, w in zip(groups, weights)):
    return None
  kept = [(g, w) for g, w in zip(groups, weights) if len(g)]
  return stats.contrast_interval([g for g, _ in kept], [w for _, w in kept], level=LEVEL)


# The directional margin per unit: the smallest effect that matters for a "faster/larger" claim (RULES["direction"]).
FRACTION_MARGIN = 0.05  # Normalised curve areas and conv1 statistics: 5% of their 0-1 range.


def direction_margin(cfg, units):
  """The directional margin for a reading in `units`: "auc" (AUC), "similarity" (SVCCA, R²) or "fraction"."""
  return {"auc": cfg.equivalence_margin, "similarity": cfg.similarity_margin, "fraction": FRACTION_MARGIN}[units]


def read_equivalence(iv, margin, what, unit="runs"):
  if iv is None:
    return stats.Verdict(stats.INCONCLUSIVE, f"{what}: {NO_DATA}", "equivalence", unit=unit)
  return stats.read_equivalence(iv, margin, what=what, unit=unit)


def read_direction(iv, what, claimed="greater", margin=None, unit="runs"):
  if iv is None:
    return stats.Verdict(stats.INCONCLUSIVE, f"{what}: {NO_DATA}", "direction", unit=unit)
  return stats.read_direction(iv, claimed=claimed, what=what, margin=margin, unit=unit)
