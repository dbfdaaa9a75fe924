"""F4: CCA similarity of a pair of networks at initialisation (x) against the same pair after training (y), at conv1
and at the next stage up, for ResNet50 and CBR-Small (plan.figure_models).

Two panels per model and stage, each with its own least-squares fit and R²: random-random pairs (two seeds) and
random-pretrained pairs. Pretrained-pretrained pairs never enter: they are identical at init.

What one point is [unsure; the paper does not say]: a pair of runs on one of SUBSETS disjoint subsets of the
analysis images. Within a pair the image subset moves x a little; across pairs the seeds move it more. Pooling
pairs of both kinds into one fit (as this project did before) measures the distance between the two clusters
(x = 1 for pretrained pairs), not a correlation. R²'s 95% CI comes from a bootstrap over runs, the independent units
(pairs that share a run are not independent): see `fit_panel`.

Claims read (the paper: R² 0.75 and 0.84 for ResNet50 conv1, none for CBR-Small): at conv1, ResNet50's R² CI lies
above 0.5 and CBR-Small's below it (read_threshold); fewer than MIN_RUNS (5) random-init runs in a panel is
inconclusive.
"""
import os

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transfusion_tf import files
from transfusion_tf.analysis import activations
from transfusion_tf.analysis import representation as rep
from transfusion_tf.experiments import common, plan, registry, stats

SUBSETS = 4
KINDS = ("random-random", "random-pretrained")
R2_LINE = 0.5
BOOTSTRAP = 1000


def runs(cfg):
  return [(m, init, None) for m in plan.figure_models(cfg) for init in ("random", "pretrained")]


def analysis_runs(ctx):
  return ctx.finished(inits=("random", "pretrained"), models=plan.figure_models(ctx.cfg))


def stages_of(model):
  """conv1 (or the stem) and the stage above it."""
  return list(plan.model_stages(model)[:2])


def _subsets(batches, n):
  """n disjoint subsets of `batches` (a list or a `compare.ImageBatches`): every n-th batch from the i-th on."""
  n = max(1, min(n, len(batches)))
  return [batches[i::n] for i in range(n)]


def analysis(ctx, finished):
  points = []
  kw = common.analysis_kwargs(ctx.cfg)
  for m in plan.figure_models(ctx.cfg):
    rnd = [ctx.results[r].dir for r in finished if r.model == m and r.init == "random"]
    pre = [ctx.results[r].dir for r in finished if r.model == m and r.init == "pretrained"]
    pairs = ([(a, b, "random-random") for i, a in enumerate(rnd) for b in rnd[i + 1:]]
             + [(r, p, "random-pretrained") for r in rnd for p in pre])
    if not pairs:
      continue
    stages = stages_of(m)
    groups = _subsets(ctx.batches(m, stages), SUBSETS)
    # Each run is in many pairs (n(n-1)/2 random-random ones): rebuilding a model took half of F4's time on the
    # demo (200 builds of 32 distinct models), then tracing a step per comparison most of the rest, so four slot
    # models (a and b, at init and trained) take each pair's weights and keep their traced steps.
    slots = rep.ModelSlots()
    for index, (a, b, kind) in enumerate(pairs):
      sims = {}
      for which in ("step0", "final"):
        slot = 0 if which == "step0" else 2
        model_a, model_b = slots.load(a, which, slot)[0], slots.load(b, which, slot + 1)[0]
        for k, sim in enumerate(activations.compare_models_on_groups(model_a, model_b, stages, groups,
                                                                     streams=slots.streams, **kw)):
          sims[which, k] = sim
      for k in range(len(groups)):
        for s in stages:
          init, trained = rep.lite(sims["step0", k][s]), rep.lite(sims["final", k][s])
          points.append({"model": m, "stage": s, "pair_kind": kind, "pair": index, "subset": k, "run_a": a,
                         "run_b": b, "x": init["svcca"], "y": trained["svcca"], "init": init, "trained": trained})
    del slots
    keras.backend.clear_session()
  if not points:
    return None
  return figure(ctx, {"figure": "F4", "metric": "svcca", "subsets": SUBSETS, "points": points})


MIN_RUNS = 5  # Random-init runs a panel needs: with 3, most resamples hold one pair and show only subset noise.
MIN_PAIRS = 3  # A resample with fewer distinct pairs is dropped (its R² would be within-pair noise).


def fit_panel(points, seed=0):
  """{"r2", "slope", "intercept", "n", "pairs", "runs", "r2_ci": [lo, hi] or None, "p_above", "p_below"}: the fit
  over `points` (usable only) and a bootstrap over RUNS, the independent units: each draw resamples the panel's
  random-init runs (and, for random-pretrained pairs, its pretrained runs) with replacement, and every pair of drawn
  runs enters with the product of their counts; a resample with fewer than MIN_PAIRS distinct pairs is dropped. Needs
  at least MIN_RUNS random-init runs. p_above / p_below: the
  share of draws at or below / at or above R2_LINE (one-sided bootstrap p-values of "above" / "below")."""
  pts = [p for p in points if p["x"] is not None and p["y"] is not None
         and not (p["init"].get("below_min") or p["trained"].get("below_min"))]
  fit = rep.fit_r2([p["x"] for p in pts], [p["y"] for p in pts])
  by_pair = {}
  for p in pts:
    by_pair.setdefault((p.get("run_a", p["pair"]), p.get("run_b", p["pair"])), []).append((p["x"], p["y"]))
  first = sorted({a for a, _ in by_pair})
  second = sorted({b for _, b in by_pair})
  random_kind = all(p["pair_kind"] == "random-random" for p in pts)
  randoms = sorted(set(first) | set(second)) if random_kind else first
  fit.update(pairs=len(by_pair), runs=len(set(first) | set(second)), r2_ci=None, p_above=None, p_below=None)
  if len(randoms) < MIN_RUNS or fit["r2"] is None:
    return fit
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(BOOTSTRAP):
    count = dict.fromkeys(randoms, 0)
    for k in rng.choice(len(randoms), len(randoms)):
      count[randoms[k]] += 1
    if not random_kind:
      count.update(dict.fromkeys(second, 0))
      for k in rng.choice(len(second), len(second)):
        count[second[k]] += 1
    if sum(count[a] * count[b] > 0 for a, b in by_pair) < MIN_PAIRS:
      continue
    sample = [xy for (a, b), xys in by_pair.items() for _ in range(count[a] * count[b]) for xy in xys]
    r2 = rep.fit_r2([x for x, _ in sample], [y for _, y in sample])["r2"]
    if r2 is not None:
      draws.append(r2)
  if len(draws) >= BOOTSTRAP // 2:
    d = np.asarray(draws)
    fit["r2_ci"] = [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
    fit["p_above"] = float((np.sum(d <= R2_LINE) + 1) / (d.size + 1))
    fit["p_below"] = float((np.sum(d >= R2_LINE) + 1) / (d.size + 1))
  return fit


def figure(ctx, data):
  """Draws F4: rows = stages (conv1, the next), columns = model x pair kind; writes PNG + JSON, returns the data
  with "panels": [{"model", "stage", "pair_kind", fit...}] and "png"."""
  points = data["points"]
  model_names = list(dict.fromkeys(p["model"] for p in points))
  cols = [(m, k) for m in model_names for k in KINDS]
  rows = max(len(stages_of(m)) for m in model_names)
  fig = Figure(figsize=(3.4 * len(cols), 3.2 * rows), layout="constrained")
  FigureCanvasAgg(fig)
  panels = []
  for j, (m, kind) in enumerate(cols):
    for i, s in enumerate(stages_of(m)):
      mine = [p for p in points if p["model"] == m and p["stage"] == s and p["pair_kind"] == kind]
      fit = fit_panel(mine)
      panels.append(dict(model=m, stage=s, pair_kind=kind, **fit))
      ax = fig.add_subplot(rows, len(cols), i * len(cols) + j + 1)
      xs = np.array([np.nan if p["x"] is None else p["x"] for p in mine], float)
      ys = np.array([np.nan if p["y"] is None else p["y"] for p in mine], float)
      if mine:  # An empty panel (no pair of that kind, e.g. one seed) gets its note below, not an empty scatter.
        ax.scatter(xs, ys, s=14, c=[p["pair"] for p in mine], cmap="tab10", edgecolor="black", linewidth=0.3)
      if fit["r2"] is not None:
        grid = np.linspace(np.nanmin(xs), np.nanmax(xs), 20)
        ci = "" if fit["r2_ci"] is None else f" [{fit['r2_ci'][0]:.2f}, {fit['r2_ci'][1]:.2f}]"
        ax.plot(grid, fit["slope"] * grid + fit["intercept"], "r-", lw=1,
                label=f"R² = {fit['r2']:.2f}{ci}, {fit['pairs']} pairs")
        ax.legend(fontsize="x-small", loc="lower right")
      ax.set_title(f"{m} {s}: {kind}", fontsize="small")
      ax.set_xlabel("SVCCA at initialisation", fontsize="small")
      ax.set_ylabel("SVCCA after training", fontsize="small")
      ax.grid(alpha=0.3)
  fig.suptitle("F4: similarity at init vs after training (a point: a pair of runs x an image subset [unsure])")
  data = dict(data, panels=panels)
  data["png"] = os.path.join(ctx.adir, "f4.png")
  with files.atomic_open(data["png"], "wb") as f:
    fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
  files.atomic_write_json(os.path.join(ctx.adir, "f4.json"), rep.portable(data))
  return data


def _baseline_text(points, model, stage):
  """Mean permutation-baseline SVCCA at init and after training over the points of (model, stage)."""
  out = []
  for key in ("init", "trained"):
    vals = [((p[key].get("baseline") or {}).get("svcca")) for p in points if p["model"] == model
            and p["stage"] == stage]
    vals = [v for v in vals if v is not None]
    out.append(f"{sum(vals) / len(vals):.3f}" if vals else "—")
  return " / ".join(out)


def section(ctx):
  data = ctx.analyses.get("F4")
  if not data:
    return ["Needs finished runs of two random seeds, or of a random and a pretrained run, of ResNet50 or a CBR."]
  header = ["model", "stage", "pairs", "R² (random-random)", "R² (random-pretrained)",
            "permutation baseline (init / trained)"]
  rows = []
  by = {(p["model"], p["stage"], p["pair_kind"]): p for p in data["panels"]}
  for (m, s) in dict.fromkeys((p["model"], p["stage"]) for p in data["panels"]):
    cells = []
    for kind in KINDS:
      p = by.get((m, s, kind))
      cells.append("—" if not p or p["r2"] is None else f"{p['r2']:.2f}" + (
          f" [{p['r2_ci'][0]:.2f}, {p['r2_ci'][1]:.2f}]" if p["r2_ci"] else f" (no CI: < {MIN_RUNS} random runs)"))
    pairs = " + ".join(str((by.get((m, s, k)) or {}).get("pairs", 0)) for k in KINDS)
    rows.append([m, s, pairs] + cells + [_baseline_text(data["points"], m, s)])
  return [common.figure_link(ctx, "F4", data["png"]), "",
          f"A point is a pair of runs on one of {data['subsets']} disjoint image subsets [unsure: the paper does not "
          "define it]; R² with a 95% bootstrap CI over runs. CBR stages are read after each block's max-pooling.",
          "", common.table(header, rows)]


def readings(ctx):
  data = ctx.analyses.get("F4")
  out = []
  if not data:
    return out
  for p in data["panels"]:
    if p["stage"] != stages_of(p["model"])[0]:
      continue
    strong = p["model"] == "resnet50"
    lo, hi = (p["r2_ci"] or (None, None))
    mde = None if lo is None else stats.minimum_detectable((hi - lo) / (2 * 1.959964))
    verdict = stats.read_threshold(lo, hi, R2_LINE, claimed="above" if strong else "below", what=(
        f"{p['model']} {p['stage']}, {p['pair_kind']} pairs: R² = "
        + ("n/a" if p["r2"] is None else f"{p['r2']:.2f}") + f" over {p['pairs']} pairs of {p.get('runs', '?')} "
        "runs (the paper: " + ("strong correlation, R² 0.75-0.84)" if strong else "no correlation)")),
        p_above=p.get("p_above"), p_below=p.get("p_below"), mde=mde, unit="runs (bootstrap)")
    inits = ("random",) if p["pair_kind"] == "random-random" else ("random", "pretrained")
    out.append(common.gate_trained(ctx, verdict, common.arm_runs(ctx, p["model"], inits)))
  return out


EXPERIMENT = registry.register(registry.Experiment(
    id="F4", title="F4: similarity at init vs after training", runs=runs, section=section, readings=readings,
    analysis=analysis, analysis_runs=analysis_runs))
