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

import numpy as np

from transfusion_tf import files
from transfusion_tf.errors import UsageError
from transfusion_tf.data import registry as data_registry
from transfusion_tf.experiments import plan, stats
from transfusion_tf.training import rundir

LEVEL = 0.95


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

  def auc_with_var(self, key):
    """(test AUC, DeLong variance or None) of `key`; auc_mean averages the per-label AUCs and their variances
    (labels taken as independent test sets, a stated approximation)."""
    value = self.test_metric(key)
    preds = self.predictions
    if key in preds:
      return value, stats.delong_auc(*preds[key])[1]
    if key == "auc_mean":
      parts = [stats.delong_auc(*v)[1] for k, v in preds.items() if k != "auc_mean"]
      if parts:
        return value, float(np.sum(parts) / len(parts) ** 2)
    return value, None

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
  # callable(model, stages=None) -> list of preprocessed image batches (B, S, S, 3), the leading images the given
  # stages need (all stages by default); the study sets it.
  batches: object = None

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
    return data_registry.task_spec(self.cfg.base.dataset)

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


def load_context(cfg, runs, analyses=None):
  """The Context of `runs`: result.json and curve.json of every finished run."""
  results = {}
  for r in runs:
    d = plan.run_dir(cfg, r)
    res = rundir.read_json(os.path.join(d, "result.json"))
    if res is not None:
      results[r] = RunResult(r, d, res, rundir.read_json(os.path.join(d, "curve.json"), []))
  return Context(cfg, list(runs), results, dict(analyses or {}))


# -- AUC comparisons ---------------------------------------------------------------------------------------------


def auc_group(ctx, model, init, key, subset=None):
  """([test AUC per seed], [DeLong variance per seed or None]) of a group."""
  vals, vars_ = [], []
  for res in ctx.group(model, init, subset):
    v, var = res.auc_with_var(key)
    if v is not None:
      vals.append(v)
      vars_.append(var)
  return vals, vars_


def group_interval(ctx, model, init, key, subset=None):
  """The 95% CI of a group's mean test AUC: seed spread plus the mean test-set (DeLong) variance."""
  vals, vars_ = auc_group(ctx, model, init, key, subset)
  return t_iv(vals, test_vars=_known(vars_))


def _known(values):
  return None if not values or any(v is None for v in values) else list(values)


def cross_test_vars(ctx, model, init_a, init_b, key, subset_a=None, subset_b=None):
  """DeLong variances of AUC_a - AUC_b for every pair of runs of the two groups scored on the same test images
  (None when predictions are missing or the test sets differ)."""
  out = []
  for a in ctx.group(model, init_a, subset_a):
    for b in ctx.group(model, init_b, subset_b):
      pa, pb = a.predictions.get(key), b.predictions.get(key)
      if pa is None or pb is None or pa[1].shape != pb[1].shape or not np.array_equal(pa[1], pb[1]):
        return None
      out.append(stats.delong_diff(pa[0], pb[0], pa[1])[1])
  return out or None


def auc_difference(ctx, model, init_a, init_b, key, subset=None):
  """The Interval of mean test AUC(init_a) - mean test AUC(init_b) across seeds, with the test-set variance of
  the difference (see stats.diff_interval)."""
  a, va = auc_group(ctx, model, init_a, key, subset)
  b, vb = auc_group(ctx, model, init_b, key, subset)
  keyed = key if key != "auc_mean" else None
  cross = cross_test_vars(ctx, model, init_a, init_b, keyed, subset, subset) if keyed else None
  known_a, known_b = _known(va), _known(vb)
  if known_a is None or known_b is None:
    known_a = known_b = None
  return diff_iv(a, b, a_test_vars=known_a, b_test_vars=known_b, cross_test_vars=cross)


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


def area_difference(ctx, model, init_a, init_b):
  """Interval of the mean curve area of init_a minus init_b across seeds (seed variance only: every run is
  evaluated on the same validation images, and the claim is about training, not about the test population)."""
  return diff_iv(area_group(ctx, model, init_a), area_group(ctx, model, init_b))


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


def fmt_interval(iv, scale=100.0, digits=1, signed=False):
  """'mean ± std [lo, hi]' (scaled), '(1 seed)' when the spread is unknown, '—' when empty."""
  if iv is None or iv.n == 0 or iv.mean is None:
    return "—"
  f = f"{{:{'+' if signed else ''}.{digits}f}}"
  s = f.format(iv.mean * scale)
  if iv.std is not None:
    s += f" ± {iv.std * scale:.{digits}f}"
  if iv.lo is not None:
    s += f" [{iv.lo * scale:.{digits}f}, {iv.hi * scale:.{digits}f}]"
  elif iv.std is None and iv.n == 1:
    s += " (n=1, no CI)"
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


def param_count(cfg, model):
  """Parameters of `model` as the study builds it (widths included)."""
  from transfusion_tf import models  # pylint: disable=import-outside-toplevel
  import keras  # pylint: disable=import-outside-toplevel
  size = max(cfg.base.image_size, models.MIN_SIZE[model])
  m = models.build_model(model, 5, (size, size, 3), initialize_weights=False, **cfg.model_kwargs(model))
  n = m.count_params()
  keras.backend.clear_session()
  return n


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
  inconclusive. parts: stats.Verdicts."""
  verdicts = [p.verdict for p in parts]
  word = ("holds" if all(v == "holds" for v in verdicts) else
          "does not hold" if "does not hold" in verdicts else "inconclusive")
  texts = [p.text[len(subject) + 2:] if p.text.startswith(f"{subject}: ") else p.text for p in parts]
  return stats.Verdict(word, f"{subject}: {what}: " + "; ".join(t.rstrip(".") for t in texts) + ".", parts[0].rule)


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


def t_iv(values, test_vars=None):
  """stats.t_interval of `values`, or None when there are none."""
  return stats.t_interval(values, level=LEVEL, test_vars=test_vars) if len(values) else None


def diff_iv(a, b, **kw):
  """stats.diff_interval of mean(a) - mean(b), or None when either side is empty."""
  return stats.diff_interval(a, b, level=LEVEL, **kw) if len(a) and len(b) else None


def contrast_iv(groups, weights):
  """stats.contrast_interval, or None when a group with a non-zero weight is empty."""
  if any(not len(g) and w for g, w in zip(groups, weights)):
    return None
  kept = [(g, w) for g, w in zip(groups, weights) if len(g)]
  return stats.contrast_interval([g for g, _ in kept], [w for _, w in kept], level=LEVEL)


def read_equivalence(iv, margin, what):
  if iv is None:
    return stats.Verdict(stats.INCONCLUSIVE, f"{what}: {NO_DATA}", "equivalence")
  return stats.read_equivalence(iv, margin, what=what)


def read_direction(iv, what, claimed="greater"):
  if iv is None:
    return stats.Verdict(stats.INCONCLUSIVE, f"{what}: {NO_DATA}", "direction")
  return stats.read_direction(iv, claimed=claimed, what=what)
