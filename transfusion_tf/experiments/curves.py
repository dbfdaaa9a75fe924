"""Validation-curve figures for the convergence experiments (MV, WT, SL, GB) and the claim they share.

Convergence claims ("X converges faster than Y") are read on the normalised area under the validation curve up to
--curve_area_steps (each run's progress towards its own plateau, never censored), the difference of means across
seeds with its 95% CI; steps to the threshold
(k evaluations in a row at or above it, --converge_k) are reported beside it, with runs that never reach it shown
as censored (">budget"), never counted at the budget.
"""
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transfusion_tf import files
from transfusion_tf.experiments import common


def save(fig, out_prefix, data):
  """Writes <out_prefix>.png and .json atomically; returns the PNG path."""
  png = out_prefix + ".png"
  FigureCanvasAgg(fig)
  with files.atomic_open(png, "wb") as f:
    fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
  files.atomic_write_json(out_prefix + ".json", data)
  return png


def mean_curve(curves):
  """Mean and std over seeds at the steps every curve shares. curves: [(steps, values)]."""
  if not curves:
    return [], [], []
  steps = sorted(set.intersection(*[set(s) for s, _ in curves]))
  vals = np.array([[dict(zip(s, v))[t] for t in steps] for s, v in curves], float)
  return steps, vals.mean(axis=0).tolist(), (vals.std(axis=0, ddof=1) if len(curves) > 1
                                             else np.zeros(len(steps))).tolist()


def figure_curves(ctx, model, labels, out_prefix, title):
  """Validation primary metric against steps, one line per init label (mean over seeds, band = std over seeds).
  Writes PNG + JSON under ctx.adir; returns the PNG path."""
  fig = Figure(figsize=(6.4, 4.2))
  ax = fig.add_subplot(1, 1, 1)
  data = {"figure": os.path.basename(out_prefix), "metric": ctx.primary, "threshold": ctx.threshold, "curves": {}}
  for label in labels:
    curves = [res.curve_points(ctx.primary) for res in ctx.group(model, label)]
    steps, mean, std = mean_curve([c for c in curves if c[0]])
    if not steps:
      continue
    data["curves"][label] = {"steps": steps, "mean": mean, "std": std, "seeds": len(curves)}
    line, = ax.plot(steps, mean, marker="o", ms=3, label=f"{label} (n={len(curves)})")
    ax.fill_between(steps, np.subtract(mean, std), np.add(mean, std), color=line.get_color(), alpha=0.15)
  if ctx.threshold is not None:
    ax.axhline(ctx.threshold, color="gray", ls="--", lw=1, label=f"threshold {ctx.threshold}")
  ax.set_xlabel("training step")
  ax.set_ylabel(f"validation {ctx.primary}")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return save(fig, os.path.join(ctx.adir, out_prefix), data)


def convergence_rows(ctx, model, labels):
  """Table rows (label, steps to threshold, curve area and normalised curve area mean ± std [CI]) for `labels` of
  `model`."""
  rows = []
  for label in labels:
    areas = common.area_group(ctx, model, label)
    norm, _ = common.normalized_area_group(ctx, model, label)
    rows.append([label, common.steps_cell(ctx, model, label),
                 common.fmt_interval(common.t_iv(areas), bounds=common.AUC_BOUNDS) if areas else "—",
                 # Each point's progress (value - 0.5) / (best - 0.5) is at most 1, so their mean is too.
                 common.fmt_interval(common.t_iv(norm), scale=1, digits=3, bounds=(-np.inf, 1.0)) if norm
                 else "—"])
  return rows


def read_faster(ctx, model, faster, slower, what):
  """The directional reading of "`faster` converges faster than `slower`" on normalised curve areas: each run's mean
  progress towards its own plateau up to cfg.area_steps, so an arm that plateaus higher is not read as faster
  (stats.normalized_curve_area). Seed spread only (every run is evaluated on the same validation images, and the
  claim is about training). Inconclusive when a run is still improving or shows no plateau (its plateau is not known)
  or did not learn."""
  a, runs_a = common.normalized_area_group(ctx, model, faster)
  b, runs_b = common.normalized_area_group(ctx, model, slower)
  iv = common.diff_iv(a, b)
  verdict = common.read_direction(
      iv, what=f"{model}: {what}: normalised validation curve area (to step {ctx.cfg.area_steps}) {faster} − "
      f"{slower}", margin=common.direction_margin(ctx.cfg, "fraction"))
  return common.gate_trained(ctx, verdict, runs_a + runs_b)
