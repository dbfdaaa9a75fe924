"""F5: conv1 filters before and after training, random and pretrained init, for ResNet50 and CBR-Small.

One value per run, the independent unit (never a filter: the 64 filters of one run share its training): each run's
mean orientation selectivity of conv1 after training and its mean relative L2 change per filter. The figure shows
the first seed of each (model, init).

Claims read (the paper): (a) pretrained conv1 filters are Gabor-like: after the same training, the pretrained-init
runs' conv1 is more oriented than the random-init runs' (mean selectivity per run, diff_interval over runs,
directional); (b) ResNet50's filters barely move while the CBR's move a lot (random init, mean relative L2 change per
run, diff_interval over runs, directional). diff_interval pairs the runs by seed where the arms' counts differ or are
2 each (Scheffe), else Welch-Satterthwaite (stats.uses_pairing). Directional margin 0.05 (common.FRACTION_MARGIN).
"""
import numpy as np

from transfusion_tf import files
from transfusion_tf.analysis import representation as rep
from transfusion_tf.experiments import common, plan, registry

RANDOM_KERNELS = 8  # Random reference kernels per panel: 8 x the filters of one conv1.


def runs(cfg):
  return [(m, init, None) for m in plan.figure_models(cfg) for init in ("random", "pretrained")]


def analysis_runs(ctx):
  return ctx.finished(inits=("random", "pretrained"), models=plan.figure_models(ctx.cfg))


def analysis(ctx, finished):
  entries = rep.f5_filters([ctx.results[r].dir for r in finished])
  if not entries:
    return None
  shown, firsts = set(), []
  for e in entries:  # The figure: the first seed of each (model, init).
    if (e["model"], e["kind"]) not in shown:
      shown.add((e["model"], e["kind"]))
      firsts.append(e)
  data = rep.figure_f5(firsts, f"{ctx.adir}/f5")
  rng = np.random.default_rng(0)
  for panel, e in zip(data["panels"], firsts):
    kh, kw, cin, nf = np.shape(e["before"])
    rand = rng.normal(0.0, np.sqrt(2.0 / (kh * kw * cin)), (kh, kw, cin, nf * RANDOM_KERNELS))
    panel["selectivity_random_per_filter"] = rep.orientation_selectivity(rand).tolist()
  data["runs"] = []
  for e in entries:
    change = rep.filter_change(e["before"], e["after"])
    data["runs"].append({"run": e["run"], "model": e["model"], "kind": e["kind"],
                         "moved": change["mean_relative_l2_change"],
                         "selectivity_before": float(rep.orientation_selectivity(e["before"]).mean()),
                         "selectivity_after": float(rep.orientation_selectivity(e["after"]).mean())})
  files.atomic_write_json(data["json"], rep.portable(data))
  return data


def per_run(ctx, model, kind, key):
  """[value of `key` per run] of (model, kind) from the F5 analysis (finite values only)."""
  data = ctx.analyses.get("F5") or {}
  return _finite([r[key] for r in data.get("runs", []) if r["model"] == model and r["kind"] == kind])


def section(ctx):
  data = ctx.analyses.get("F5")
  if not data or "runs" not in data:
    return ["Needs a finished random or pretrained run of ResNet50 or a CBR."]
  header = ["model", "init", "runs", "moved (mean relative L2 per filter)", "orientation selectivity before",
            "after", "He-normal random", "Gabor bank"]
  refs = {p["model"]: p.get("selectivity_references") or {} for p in data["panels"]}
  rows = []
  for m, kind in dict.fromkeys((r["model"], r["kind"]) for r in data["runs"]):
    ref = refs.get(m, {})
    rows.append([m, kind, len(per_run(ctx, m, kind, "moved"))]
                + [common.fmt_interval(common.t_iv(per_run(ctx, m, kind, k)), 1, 3,
                                       bounds=None if k == "moved" else common.AUC_BOUNDS)
                   for k in ("moved", "selectivity_before", "selectivity_after")]
                + [f"{ref.get('random', float('nan')):.2f}", f"{ref.get('gabor', float('nan')):.2f}"])
  return [common.figure_link(ctx, "F5", data["png"]), "",
          "Per run: the mean over its conv1 filters; mean ± std over runs [95% CI]. Orientation selectivity: 0 for "
          "an unoriented (blob or colour-only) filter, 1 for a pure grating.", "", common.table(header, rows)]


def _finite(values):
  return [v for v in values if v is not None and np.isfinite(v)]


def readings(ctx):
  data = ctx.analyses.get("F5")
  out = []
  if not data or "runs" not in data:
    return out
  margin = common.direction_margin(ctx.cfg, "fraction")
  for m in dict.fromkeys(r["model"] for r in data["runs"]):
    pre, rnd = per_run(ctx, m, "pretrained", "selectivity_after"), per_run(ctx, m, "random", "selectivity_after")
    if pre:
      out.append(common.read_direction(common.diff_iv(pre, rnd), what=(
          f"{m}: conv1 orientation selectivity after training, pretrained init minus random init, over "
          f"{len(pre)} + {len(rnd)} runs (the paper: pretrained conv1 filters are Gabor-like)"), margin=margin))
  moved = {m: per_run(ctx, m, "random", "moved") for m in dict.fromkeys(r["model"] for r in data["runs"])}
  cbr = next((m for m in moved if m.startswith("cbr_") and moved[m]), None)
  if moved.get("resnet50") and cbr:
    out.append(common.read_direction(common.diff_iv(moved[cbr], moved["resnet50"]), what=(
        f"relative conv1 change per run, {cbr} minus resnet50, random init, over {len(moved[cbr])} + "
        f"{len(moved['resnet50'])} runs (the paper: ResNet filters barely move, CBR-Small's move a lot)"),
        margin=margin))
  return out


EXPERIMENT = registry.register(registry.Experiment(
    id="F5", title="F5: conv1 filters before and after training", runs=runs, section=section, readings=readings,
    analysis=analysis, analysis_runs=analysis_runs))
