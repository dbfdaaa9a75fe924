"""The paper's representation experiments F2-F5 (PAPER.md section 4), one compute helper and one figure each.

Every `figure_*` function takes plain data (the dict its compute helper returns, or one built by hand), writes
`<out_prefix>.png` and `<out_prefix>.json` atomically (temp file + os.replace) and returns the JSON dict, so the
study runner, the report and notebooks all draw the same figure. Plots use matplotlib's object API with the Agg
canvas: no display, no pyplot state.

Compute helpers read run directories (`training.rundir`: config.json, weights/step0 and weights/final) and take a
re-iterable of image batches preprocessed for the models (a list, a tf.data.Dataset, or a zero-argument callable
returning an iterable); every comparison sees exactly those images in that order (see `activations`).

  F2  f2_similarities -> figure_f2  top-two-stage similarity, pretrained-vs-random against random-vs-random
  F3  f3_similarities -> figure_f3  per stage: similarity of each trained model to its own initialisation
  F4  f4_points       -> figure_f4  conv1 similarity of a pair of networks at init (x) vs after training (y)
  F5  f5_filters      -> figure_f5  conv1 filters before and after training, and how far they moved
"""
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transfusion_tf import files
from transfusion_tf import models
from transfusion_tf.models import gabor
from transfusion_tf.analysis import activations
from transfusion_tf.errors import UsageError
from transfusion_tf.training import rundir

METRICS = ("svcca", "pwcca", "cka")
F2_KINDS = ("pretrained_vs_random", "random_vs_random")
_KIND_LABELS = {"pretrained_vs_random": "pretrained vs random", "random_vs_random": "random vs random"}
_COLOURS = {"pretrained": "tab:blue", "random": "tab:orange", "pretrained_vs_random": "tab:blue",
            "random_vs_random": "tab:orange"}


# -- shared helpers -------------------------------------------------------------------------------------------------


def top_two_stages(model_or_arch):
  """The paper's "top two layers" for F2: the last two conv layers of a CBR, block3 and block4 of ResNet50, the last
  two mixed blocks (mixed9, mixed10) of InceptionV3. Takes a model built by `build_model` or an architecture name."""
  if isinstance(model_or_arch, str):
    arch = model_or_arch
    if arch == "resnet50":
      return ("block3", "block4")
    if arch == "inceptionv3":
      return ("mixed9", "mixed10")
    if arch.startswith("cbr_"):
      from transfusion_tf.models import cbr  # pylint: disable=import-outside-toplevel
      if arch not in cbr.CBR_SPECS:
        raise UsageError(f"unknown model {arch!r}; known: {', '.join(models.MODEL_NAMES)}")
      n = len(cbr.CBR_SPECS[arch].widths)
      return (f"conv{n - 1}", f"conv{n}")
    raise UsageError(f"unknown model {arch!r}; known: {', '.join(models.MODEL_NAMES)}")
  body = [s for s in models.stage_names(model_or_arch) if s not in ("stem", "pool")]
  return tuple(body[-2:])


def init_kind(config):
  """'pretrained' or 'random' (or the scheme, e.g. 'meanvar') from a run's config["init"]."""
  return str(config.get("init") or "random").split(":")[0]


def _load(run_dir, which):
  model, config = rundir.load_run_model(run_dir, which)
  return model, config


class ModelSlots:
  """Built models reused across the comparisons of an analysis: one model per (architecture, slot) whose weights
  are replaced for each run (rundir.load_weights_into), and the traced activation streams of those models
  (`streams`, for activations.compare_models). On the demo, building a model for every checkpoint and tracing a step
  for every comparison took 56% of F3's time (py-spy); the numbers are the same, since the same graph runs on the
  same weights. A slot that already holds the asked checkpoint is not loaded again."""

  def __init__(self):
    self.models = {}  # (architecture key, slot) -> [model, (run dir, which, file mtime) it holds]
    self.streams = {}

  def load(self, run_dir, which, slot=0):
    """(model, config) of `run_dir`'s `which` weights, in slot `slot` of its architecture. The model stays this
    slot's: a later load into the same slot replaces its weights."""
    config = rundir.load_config(run_dir)
    key = (rundir.architecture_key(config), slot)
    path = rundir.weights_path(run_dir, which)
    stamp = (os.path.abspath(run_dir), which, os.path.getmtime(path) if os.path.exists(path) else None)
    held = self.models.get(key)
    if held is not None and held[1] == stamp:
      return held[0], config
    if held is not None:
      held[1] = None  # Until the load below has finished: a failed one leaves no checkpoint named.
      if rundir.load_weights_into(held[0], run_dir, which):
        held[1] = stamp
        return held[0], config
    model, config = rundir.load_run_model(run_dir, which)
    self.models[key] = [model, stamp]
    return model, config


def _check_same_arch(config_a, config_b, run_a, run_b):
  if config_a["model"] != config_b["model"]:
    raise UsageError(f"{run_a} is a {config_a['model']} and {run_b} a {config_b['model']}: the paper's comparisons "
                     "pair runs of one architecture")


def lite(result):
  """The JSON-worthy part of one `compare_pairs` result."""
  keys = ("svcca", "pwcca", "cka", "datapoints", "neurons", "mode", "fallback", "few_datapoints", "svcca_dims",
          "datapoints_per_neuron", "below_min", "baseline")
  return {k: result.get(k) for k in keys if k in result}


def _stats(values):
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not v.size:
    return {"mean": None, "std": None, "n": 0}
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def _check_metric(metric):
  if metric not in METRICS:
    raise UsageError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
  return metric


def _new_figure(width, height):
  fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig, png_path):
  """Writes `fig` as PNG to `png_path` atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
  with files.atomic_open(png_path) as f:
    fig.savefig(f, format="png", dpi=fig.dpi, bbox_inches="tight")
  return png_path


def portable(data):
  """`data` as its JSON file holds it: "png" and "json" relative to that file's folder (their names), so a moved
  or copied folder names its own figure, never the old folder's."""
  return dict(data, **{k: os.path.basename(data[k]) for k in ("png", "json") if isinstance(data.get(k), str)})


def _write(fig, data, out_prefix):
  """Writes <out_prefix>.png and <out_prefix>.json; returns `data` with the two paths added (the file holds them
  relative to its folder: `portable`)."""
  data = dict(data, png=f"{out_prefix}.png", json=f"{out_prefix}.json")
  save_figure(fig, data["png"])
  rundir.atomic_write_json(data["json"], portable(data))
  return data


# -- F2 -------------------------------------------------------------------------------------------------------------


def f2_similarities(run_pairs, batches, which="final", metric="svcca", conv_mode="positions",
                    max_positions=activations.DEFAULT_MAX_POSITIONS, seed=0, keep_variance=0.99, **compare_kw):
  """F2 data: the top-two-stage similarity of each pair of trained runs.

  run_pairs: [(run_a, run_b, kind), ...], kind "pretrained_vs_random" (a pretrained-init run against a random-init
  run of the same architecture) or "random_vs_random" (two random-init runs with different seeds); other kinds are
  kept as given. batches: a re-iterable of preprocessed image batches. which: the weights compared ("final").
  Returns {"figure": "F2", "metric", "conv_mode", "which", "pairs": [{"model", "kind", "run_a", "run_b", "stages",
  "per_stage": {stage: compare result}, "similarity": mean of `metric` over the two stages}]}.
  """
  _check_metric(metric)
  batches = activations.reiterable(batches)
  records = []
  slots = ModelSlots()
  for item in run_pairs:
    run_a, run_b, kind = item
    model_a, config_a = slots.load(run_a, which, 0)
    model_b, config_b = slots.load(run_b, which, 1)
    _check_same_arch(config_a, config_b, run_a, run_b)
    stages = list(top_two_stages(model_a))
    res = activations.compare_models(model_a, model_b, stages, batches, conv_mode=conv_mode,
                                     max_positions=max_positions, seed=seed, keep_variance=keep_variance,
                                     streams=slots.streams, **compare_kw)
    per_stage = {s: lite(r) for s, r in res.items()}
    records.append({"model": config_a["model"], "kind": str(kind), "run_a": str(run_a), "run_b": str(run_b),
                    "stages": stages, "per_stage": per_stage,
                    "similarity": _stats([per_stage[s][metric] for s in stages])["mean"]})
  return {"figure": "F2", "metric": metric, "conv_mode": conv_mode, "which": which, "pairs": records}


def figure_f2(results, out_prefix, title=None):
  """Draws F2: per model, grouped bars of the mean top-two-stage similarity per pair kind, error bars = std over
  pairs (ddof=1). `results` is what `f2_similarities` returns (or {"pairs": [{"model", "kind", "similarity"}]}).

  Writes <out_prefix>.png/.json; the JSON holds {"figure": "F2", "metric", "models", "kinds", "summary": {model:
  {kind: {"mean", "std", "n"}}}, "pairs", "png", "json"}.
  """
  pairs = list(results["pairs"])
  if not pairs:
    raise UsageError("figure_f2 got no pairs: nothing to draw")
  metric = results.get("metric", "svcca")
  model_names = list(dict.fromkeys(p["model"] for p in pairs))
  kinds = [k for k in F2_KINDS if any(p["kind"] == k for p in pairs)]
  kinds += [k for k in dict.fromkeys(p["kind"] for p in pairs) if k not in kinds]
  summary = {m: {k: _stats([p["similarity"] for p in pairs if p["model"] == m and p["kind"] == k]) for k in kinds}
             for m in model_names}

  fig = _new_figure(max(4.0, 1.4 * len(model_names) + 2.0), 3.6)
  ax = fig.add_subplot(1, 1, 1)
  width = 0.8 / max(1, len(kinds))
  x = np.arange(len(model_names))
  for i, k in enumerate(kinds):
    means = [summary[m][k]["mean"] for m in model_names]
    stds = [summary[m][k]["std"] for m in model_names]
    ax.bar(x + (i - (len(kinds) - 1) / 2) * width, [np.nan if v is None else v for v in means], width,
           yerr=[0.0 if s is None else s for s in stds], capsize=3, label=_KIND_LABELS.get(k, k),
           color=_COLOURS.get(k), edgecolor="black", linewidth=0.5)
  ax.set_xticks(x)
  ax.set_xticklabels(model_names, rotation=20)
  ax.set_ylabel(f"{metric.upper()} similarity, top two layers")
  ax.set_ylim(0.0, 1.0)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(loc="lower right", fontsize="small")
  ax.set_title(title or "F2: representational similarity of trained networks")
  data = {"figure": "F2", "metric": metric, "models": model_names, "kinds": kinds, "summary": summary,
          "pairs": pairs, "conv_mode": results.get("conv_mode")}
  return _write(fig, data, out_prefix)


# -- F3 -------------------------------------------------------------------------------------------------------------


def f3_similarities(runs, batches, stages=None, metric="svcca", conv_mode="positions",
                    max_positions=activations.DEFAULT_MAX_POSITIONS, seed=0, keep_variance=0.99, **compare_kw):
  """F3 data: per stage, the similarity of each trained model (weights/final) to its own initialisation
  (weights/step0), on the same images.

  runs: run directories, or (run_dir, kind) or (run_dir, kind, init_from) tuples; kind defaults to the run's init
  scheme ("pretrained", "random", ...); init_from (a control) names another run whose initialisation is compared
  with this run's trained weights instead of its own. stages: stage names (default: every stage but `pool`).
  Returns {"figure": "F3", "metric", "conv_mode", "runs": [{"run", "model", "kind", "stages", "per_stage": {stage:
  compare result}, "similarity": {stage: value}, "init_from" (only for a control)}]}.
  """
  _check_metric(metric)
  batches = activations.reiterable(batches)
  records = []
  slots = ModelSlots()
  for item in runs:
    run_dir, kind = (item, None) if isinstance(item, (str, os.PathLike)) else item[:2]
    init_from = item[2] if not isinstance(item, (str, os.PathLike)) and len(item) > 2 else None
    final, config = slots.load(run_dir, "final", 0)
    init, init_config = slots.load(init_from or run_dir, "step0", 1)
    if init_from:
      _check_same_arch(config, init_config, run_dir, init_from)
    run_stages = list(stages) if stages else [s for s in models.stage_names(final) if s != "pool"]
    res = activations.compare_models(init, final, run_stages, batches, conv_mode=conv_mode,
                                     max_positions=max_positions, seed=seed, keep_variance=keep_variance,
                                     streams=slots.streams, **compare_kw)
    per_stage = {s: lite(r) for s, r in res.items()}
    records.append({"run": str(run_dir), "model": config["model"], "kind": str(kind or init_kind(config)),
                    "stages": run_stages, "per_stage": per_stage,
                    "similarity": {s: per_stage[s][metric] for s in run_stages}})
    if init_from:
      records[-1]["init_from"] = str(init_from)
  return {"figure": "F3", "metric": metric, "conv_mode": conv_mode, "runs": records}


def figure_f3(results, out_prefix, title=None):
  """Draws F3: one panel per model; x = stages bottom to top, lines = mean similarity (init vs trained) per init
  kind with std error bars, and the pretrained-minus-random difference dashed in black.

  `results`: what `f3_similarities` returns (or {"runs": [{"model", "kind", "stages", "similarity": {stage: v}}]}).
  Writes <out_prefix>.png/.json; the JSON holds {"figure": "F3", "metric", "models": {model: {"stages", "kinds":
  {kind: {"mean": [...], "std": [...], "n": [...]}}, "difference": [...] or None}}, "runs", "png", "json"}.
  """
  runs = list(results["runs"])
  if not runs:
    raise UsageError("figure_f3 got no runs: nothing to draw")
  metric = results.get("metric", "svcca")
  by_model = {}
  for r in runs:
    by_model.setdefault(r["model"], []).append(r)
  summary = {}
  for m, rs in by_model.items():
    stages = list(dict.fromkeys(s for r in rs for s in r["stages"]))
    kinds = [k for k in ("pretrained", "random") if any(r["kind"] == k for r in rs)]
    kinds += [k for k in dict.fromkeys(r["kind"] for r in rs) if k not in kinds]
    per_kind = {}
    for k in kinds:
      st = [_stats([r["similarity"].get(s) for r in rs if r["kind"] == k]) for s in stages]
      per_kind[k] = {"mean": [x["mean"] for x in st], "std": [x["std"] for x in st], "n": [x["n"] for x in st]}
    diff = None
    if "pretrained" in per_kind and "random" in per_kind:
      diff = [None if a is None or b is None else a - b
              for a, b in zip(per_kind["pretrained"]["mean"], per_kind["random"]["mean"])]
    summary[m] = {"stages": stages, "kinds": per_kind, "difference": diff}

  n = max(1, len(summary))
  fig = _new_figure(4.6 * n, 3.6)
  for i, (m, s) in enumerate(summary.items()):
    ax = fig.add_subplot(1, n, i + 1)
    x = np.arange(len(s["stages"]))
    for k, v in s["kinds"].items():
      ax.errorbar(x, [np.nan if y is None else y for y in v["mean"]],
                  yerr=[0.0 if y is None else y for y in v["std"]], marker="o", capsize=3, label=f"{k} init",
                  color=_COLOURS.get(k))
    if s["difference"] is not None:
      ax.plot(x, [np.nan if y is None else y for y in s["difference"]], "k--", marker="s", markersize=4,
              label="pretrained - random")
    ax.axhline(0.0, color="gray", linewidth=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels(s["stages"], rotation=30)
    ax.set_ylim(min([-0.1] + [y - 0.05 for y in (s["difference"] or []) if y is not None]), 1.02)
    ax.set_title(m)
    ax.set_ylabel(f"{metric.upper()}(init, trained)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  fig.suptitle(title or "F3: similarity of each stage to its initialisation")
  data = {"figure": "F3", "metric": metric, "models": summary, "runs": runs, "conv_mode": results.get("conv_mode")}
  return _write(fig, data, out_prefix)


# -- F4 -------------------------------------------------------------------------------------------------------------


def f4_points(run_pairs, batches, stage="conv1", metric="svcca", conv_mode="positions",
              max_positions=activations.DEFAULT_MAX_POSITIONS, seed=0, keep_variance=0.99, **compare_kw):
  """F4 data. A point is a PAIR OF RUNS (A, B) of one architecture:
    x = similarity(A at init, B at init)        (weights/step0 of both)
    y = similarity(A after training, B after training)   (weights/final of both)
  at `stage` (conv1 in the paper), on the same images. Over many pairs (different seeds, and different init
  schemes to spread x), a large model whose low layers barely move keeps y close to x (high R²); a small model
  that rewrites conv1 does not.

  run_pairs: [(run_a, run_b), ...] (a third item, a label, is kept). Returns {"figure": "F4", "stage", "metric",
  "conv_mode", "points": [{"model", "run_a", "run_b", "label", "x", "y", "init": compare result,
  "trained": compare result}]}.
  """
  _check_metric(metric)
  batches = activations.reiterable(batches)
  points = []
  slots = ModelSlots()
  for item in run_pairs:
    run_a, run_b = item[0], item[1]
    label = item[2] if len(item) > 2 else None
    sims = {}
    for which in ("step0", "final"):
      model_a, config_a = slots.load(run_a, which, 0)
      model_b, config_b = slots.load(run_b, which, 1)
      _check_same_arch(config_a, config_b, run_a, run_b)
      res = activations.compare_models(model_a, model_b, [stage], batches, conv_mode=conv_mode,
                                       max_positions=max_positions, seed=seed, keep_variance=keep_variance,
                                       streams=slots.streams, **compare_kw)
      sims[which] = lite(res[stage])
    points.append({"model": config_a["model"], "run_a": str(run_a), "run_b": str(run_b), "label": label,
                   "kinds": [init_kind(config_a), init_kind(config_b)],
                   "x": sims["step0"][metric], "y": sims["final"][metric], "init": sims["step0"],
                   "trained": sims["final"]})
  return {"figure": "F4", "stage": stage, "metric": metric, "conv_mode": conv_mode, "points": points}


def fit_r2(x, y):
  """Least-squares line through (x, y) with scipy.stats.linregress: {"r2", "slope", "intercept", "rvalue",
  "pvalue", "n"}; the fit fields are None with fewer than 2 points or a constant x."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  pts = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
  out = {"r2": None, "slope": None, "intercept": None, "rvalue": None, "pvalue": None, "n": len(pts)}
  if len(pts) < 2 or np.ptp([a for a, _ in pts]) == 0:
    return out
  fit = stats.linregress([a for a, _ in pts], [b for _, b in pts])
  out.update(r2=float(fit.rvalue ** 2), slope=float(fit.slope), intercept=float(fit.intercept),
             rvalue=float(fit.rvalue), pvalue=None if not np.isfinite(fit.pvalue) else float(fit.pvalue))
  return out


def figure_f4(results, out_prefix, title=None):
  """Draws F4: one scatter panel per model, x = similarity at init, y = similarity after training, with the fitted
  line and R² (scipy.stats.linregress) on the plot. `results`: what `f4_points` returns (or {"points": [{"model",
  "x", "y"}]}).

  Writes <out_prefix>.png/.json; the JSON holds {"figure": "F4", "stage", "metric", "models": {model: {"r2",
  "slope", "intercept", "rvalue", "pvalue", "n"}}, "points", "png", "json"}.
  """
  points = list(results["points"])
  if not points:
    raise UsageError("figure_f4 got no points: nothing to draw")
  metric = results.get("metric", "svcca")
  stage = results.get("stage", "conv1")
  by_model = {}
  for p in points:
    by_model.setdefault(p["model"], []).append(p)
  fits = {m: fit_r2([p["x"] for p in ps], [p["y"] for p in ps]) for m, ps in by_model.items()}

  n = max(1, len(by_model))
  fig = _new_figure(4.0 * n, 3.8)
  for i, (m, ps) in enumerate(by_model.items()):
    ax = fig.add_subplot(1, n, i + 1)
    xs = np.array([np.nan if p["x"] is None else p["x"] for p in ps], np.float64)
    ys = np.array([np.nan if p["y"] is None else p["y"] for p in ps], np.float64)
    ax.scatter(xs, ys, s=18, color="tab:blue", edgecolor="black", linewidth=0.4)
    lo, hi = np.nanmin(np.r_[xs, ys]), np.nanmax(np.r_[xs, ys])
    if np.isfinite(lo) and np.isfinite(hi):
      ax.plot([lo, hi], [lo, hi], color="gray", linestyle=":", linewidth=1, label="y = x")
    f = fits[m]
    if f["r2"] is not None:
      grid = np.linspace(np.nanmin(xs), np.nanmax(xs), 20)
      ax.plot(grid, f["slope"] * grid + f["intercept"], "r-", linewidth=1,
              label=f"fit: R² = {f['r2']:.2f} (n = {f['n']})")
    else:
      ax.text(0.05, 0.92, f"R² undefined (n = {f['n']})", transform=ax.transAxes, fontsize="small")
    ax.legend(fontsize="small", loc="lower right")
    ax.set_xlabel(f"{metric.upper()} at initialisation")
    ax.set_ylabel(f"{metric.upper()} after training")
    ax.set_title(f"{m} {stage}")
    ax.grid(alpha=0.3)
  fig.suptitle(title or "F4: similarity at init vs after training")
  data = {"figure": "F4", "stage": stage, "metric": metric, "models": fits, "points": points,
          "conv_mode": results.get("conv_mode")}
  return _write(fig, data, out_prefix)


# -- F5 -------------------------------------------------------------------------------------------------------------


def conv1_filters(model):
  """conv1's kernel as float64 (kh, kw, in_channels, filters)."""
  return np.asarray(models.conv1_layer(model).kernel.numpy(), np.float64)


def filter_change(before, after):
  """How far filters moved: per filter ||after - before|| / ||before|| (L2 over kh, kw, channels).

  Returns {"mean_relative_l2_change", "median_relative_l2_change", "max_relative_l2_change",
  "total_relative_l2_change" (of the whole kernel), "per_filter": [...]}.
  """
  before = np.asarray(before, np.float64)
  after = np.asarray(after, np.float64)
  if before.shape != after.shape:
    raise UsageError(f"filter shapes differ: {before.shape} before, {after.shape} after")
  b = before.reshape(-1, before.shape[-1])
  d = (after - before).reshape(-1, before.shape[-1])
  nb = np.linalg.norm(b, axis=0)
  rel = np.linalg.norm(d, axis=0) / np.where(nb > 0, nb, np.nan)
  total = float(np.linalg.norm(d) / np.linalg.norm(b)) if np.linalg.norm(b) > 0 else None
  finite = rel[np.isfinite(rel)]
  return {"mean_relative_l2_change": float(finite.mean()) if finite.size else None,
          "median_relative_l2_change": float(np.median(finite)) if finite.size else None,
          "max_relative_l2_change": float(finite.max()) if finite.size else None,
          "total_relative_l2_change": total,
          "per_filter": [None if not np.isfinite(v) else float(v) for v in rel]}


def orientation_selectivity(kernel, pad=32):
  """How oriented each conv filter is: (filters,) floats in [0, 1].

  kernel: (kh, kw, in_channels, filters). Each filter is averaged over input channels and its mean removed; the
  value is the resultant length of its spectral energy over doubled frequency angles,
  |sum_f P(f) exp(2i angle(f))| / sum_f P(f) on a pad x pad FFT grid: 1 for a pure grating or edge, 0 for an
  isotropic blob or a colour-only filter. For 7x7 kernels, He-normal random filters average about 0.14 and the
  Gabor bank of `models.gabor.gabor_kernel` about 0.7, the two references F5 reports.
  """
  k = np.asarray(kernel, np.float64)
  if k.ndim != 4:
    raise ValueError(f"orientation_selectivity needs a (kh, kw, in, out) kernel, got shape {k.shape}")
  f = k.mean(axis=2)
  f = f - f.mean(axis=(0, 1), keepdims=True)
  power = np.abs(np.fft.fft2(f, s=(pad, pad), axes=(0, 1))) ** 2
  fy = np.fft.fftfreq(pad)[:, None]
  fx = np.fft.fftfreq(pad)[None, :]
  phasor = np.exp(2j * np.arctan2(fy, fx))
  phasor[0, 0] = 0
  total = power.sum(axis=(0, 1))
  return np.abs((power * phasor[..., None]).sum(axis=(0, 1))) / np.where(total > 0, total, np.inf)


def selectivity_references(kernel_shape, seed=0):
  """Mean orientation selectivity of a He-normal random kernel and of the Gabor bank, for `kernel_shape`."""
  rng = np.random.default_rng(seed)
  kh, kw, cin, _ = kernel_shape
  rand = rng.normal(0.0, np.sqrt(2.0 / (kh * kw * cin)), kernel_shape)
  out = {"random": float(orientation_selectivity(rand).mean())}
  if kh == kw:
    out["gabor"] = float(orientation_selectivity(gabor.gabor_kernel(kernel_shape)).mean())
  return out


def f5_filters(runs):
  """F5 data: conv1 filters of each run before (weights/step0) and after (weights/final) training.

  runs: run directories or (run_dir, kind) tuples (kind defaults to the init scheme). Returns a list of
  {"run", "model", "kind", "channel_order" ("bgr" for caffe-preprocessed models, else "rgb"), "before", "after"}
  with the kernels as (kh, kw, in_channels, filters) arrays.
  """
  out = []
  for item in runs:
    run_dir, kind = (item, None) if isinstance(item, (str, os.PathLike)) else item
    init, config = _load(run_dir, "step0")
    final, _ = _load(run_dir, "final")
    mode = models.preprocessing_mode(config["model"], config.get("weights"), config.get("preprocessing"))
    out.append({"run": str(run_dir), "model": config["model"], "kind": str(kind or init_kind(config)),
                "channel_order": "bgr" if mode == "caffe" else "rgb",
                "before": conv1_filters(init), "after": conv1_filters(final)})
  return out


def filter_grid(kernel, max_filters=64, channel_order="rgb", pad=1):
  """Tiles conv filters into one image: each filter min-max normalised to [0, 1] on its own, 1 px gaps.

  kernel: (kh, kw, in_channels, filters). Three input channels give an RGB image (BGR kernels are flipped to RGB);
  any other count gives a grayscale image (the mean over input channels). Returns (H, W, 3) or (H, W) floats.
  """
  k = np.asarray(kernel, np.float64)[..., :max_filters]
  kh, kw, cin, nf = k.shape
  if cin == 3:
    f = k[:, :, ::-1, :] if channel_order == "bgr" else k
  else:
    f = k.mean(axis=2, keepdims=True)
  lo = f.min(axis=(0, 1, 2), keepdims=True)
  hi = f.max(axis=(0, 1, 2), keepdims=True)
  f = np.where(hi > lo, (f - lo) / np.where(hi > lo, hi - lo, 1.0), 0.5)
  cols = int(np.ceil(np.sqrt(nf)))
  rows = int(np.ceil(nf / cols))
  c = f.shape[2]
  grid = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, c))
  for i in range(nf):
    r, q = divmod(i, cols)
    y, x = pad + r * (kh + pad), pad + q * (kw + pad)
    grid[y:y + kh, x:x + kw, :] = f[:, :, :, i]
  return grid if c == 3 else grid[:, :, 0]


def figure_f5(entries, out_prefix, max_filters=64, title=None):
  """Draws F5 in the paper's layout: one row per (model, init scheme), columns "before" and "after" training, each
  panel a grid of conv1 filters, each filter min-max normalised (RGB filters in colour, others in gray).

  entries: what `f5_filters` returns (dicts with "model", "kind", "before", "after", optional "channel_order",
  "run"). Writes <out_prefix>.png/.json; the JSON holds {"figure": "F5", "panels": [{"run", "model", "kind",
  "shape", "channel_order", "mean_relative_l2_change", "median_relative_l2_change", "max_relative_l2_change",
  "total_relative_l2_change", "per_filter", "orientation_selectivity_before", "orientation_selectivity_after",
  "selectivity_references": {"random", "gabor"}}], "png", "json"}; see `orientation_selectivity`.
  """
  entries = list(entries)
  if not entries:
    raise UsageError("figure_f5 needs at least one run's filters")
  fig = _new_figure(6.0, 3.0 * len(entries))
  panels = []
  for i, e in enumerate(entries):
    order = e.get("channel_order", "rgb")
    change = filter_change(e["before"], e["after"])
    sel = {f"orientation_selectivity_{col}": float(orientation_selectivity(e[col]).mean())
           for col in ("before", "after")}
    panels.append(dict({"run": e.get("run"), "model": e["model"], "kind": e["kind"],
                        "shape": list(np.shape(e["before"])), "channel_order": order,
                        "selectivity_references": selectivity_references(np.shape(e["before"]))}, **change, **sel))
    for j, (col, kernel) in enumerate((("before", e["before"]), ("after", e["after"]))):
      ax = fig.add_subplot(len(entries), 2, 2 * i + j + 1)
      img = filter_grid(kernel, max_filters, order)
      ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(f"{col} training")
      label = f"orientation selectivity {sel['orientation_selectivity_' + col]:.2f}"
      if j == 0:
        ax.set_ylabel(f"{e['model']}\n{e['kind']} init")
      else:
        mean = change["mean_relative_l2_change"]
        label += "\nmean relative change " + ("n/a" if mean is None else f"{mean:.2f}")
      ax.set_xlabel(label, fontsize="small")
  fig.suptitle(title or "F5: conv1 filters before and after training")
  return _write(fig, {"figure": "F5", "panels": panels}, out_prefix)


# -- compare CLI figure ---------------------------------------------------------------------------------------------


def figure_compare(result, png_path, title=None):
  """The picture `transfusion-compare` writes beside its JSON: the stage x stage SVCCA matrix between the two runs
  (left; cells that fell back from positions to avgpool marked with *, cells with fewer than 5 datapoints per neuron
  with !) and the per-stage SVCCA, PWCCA and CKA of the matching stages (right).

  result: {"per_stage": {stage: {"svcca", "pwcca", "cka"}}, optional "matrix": {"stages_a", "stages_b",
  "svcca", "cells"}, "label_a", "label_b"}. Writes the PNG atomically and returns its path.
  """
  matrix = result.get("matrix")
  per_stage = result["per_stage"]
  cols = 2 if matrix else 1
  fig = _new_figure(5.2 * cols, 4.4)
  if matrix:
    ax = fig.add_subplot(1, cols, 1)
    m = np.array([[np.nan if v is None else v for v in row] for row in matrix["svcca"]], np.float64)
    im = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis")
    nb = len(matrix["stages_b"])
    for i in range(m.shape[0]):
      for j in range(m.shape[1]):
        cell = matrix["cells"][i * nb + j] if matrix.get("cells") else {}
        mark = ("*" if cell.get("fallback") else "") + ("!" if cell.get("few_datapoints") else "")
        text = "n/a" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}"
        ax.text(j, i, text + mark, ha="center", va="center", fontsize=7,
                color="white" if np.isnan(m[i, j]) or m[i, j] < 0.6 else "black")
    ax.set_xticks(range(nb))
    ax.set_xticklabels(matrix["stages_b"], rotation=45, ha="right")
    ax.set_yticks(range(len(matrix["stages_a"])))
    ax.set_yticklabels(matrix["stages_a"])
    ax.set_xlabel(result.get("label_b", "run b"))
    ax.set_ylabel(result.get("label_a", "run a"))
    ax.set_title("SVCCA, stage x stage (*: avgpool fallback, !: few datapoints)", fontsize="small")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  ax = fig.add_subplot(1, cols, cols)
  stages = list(per_stage)
  x = np.arange(len(stages))
  for metric, marker in (("svcca", "o"), ("pwcca", "s"), ("cka", "^")):
    ax.plot(x, [np.nan if per_stage[s].get(metric) is None else per_stage[s][metric] for s in stages],
            marker=marker, label=metric.upper())
  ax.set_xticks(x)
  ax.set_xticklabels(stages, rotation=45, ha="right")
  ax.set_ylim(0.0, 1.02)
  ax.set_ylabel("similarity of matching stages")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.suptitle(title or "representation similarity", fontsize="medium")
  return save_figure(fig, png_path)
