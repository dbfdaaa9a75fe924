"""F5: conv1 filters before and after training, random and pretrained init, for ResNet50 and CBR-Small.

Claims read (the paper): (a) pretrained conv1 filters are Gabor-like: per filter, the orientation selectivity of the
pretrained model's conv1 against He-normal random filters of the same shape (a directional Welch test over
filters); (b) ResNet50's filters barely move while the CBR's move a lot (random init, relative L2 change per filter,
directional Welch test over filters). The noise is the spread across filters.
"""
import numpy as np

from transfusion_tf import files
from transfusion_tf.analysis import representation as rep
from transfusion_tf.experiments import common, plan, registry

RANDOM_KERNELS = 8  # Random reference kernels per panel: 8 x the filters of one conv1.


def runs(cfg):
  return [(m, init, None) for m in plan.figure_models(cfg) for init in ("random", "pretrained")]


def analysis_runs(ctx):
  chosen = []
  for m in plan.figure_models(ctx.cfg):
    for init in ("random", "pretrained"):
      chosen += ctx.finished(inits=(init,), models=(m,))[:1]
  return chosen


def analysis(ctx, finished):
  entries = rep.f5_filters([ctx.results[r].dir for r in finished])
  if not entries:
    return None
  data = rep.figure_f5(entries, f"{ctx.adir}/f5")
  rng = np.random.default_rng(0)
  for panel, e in zip(data["panels"], entries):
    shape = np.shape(e["before"])
    kh, kw, cin, nf = shape
    rand = rng.normal(0.0, np.sqrt(2.0 / (kh * kw * cin)), (kh, kw, cin, nf * RANDOM_KERNELS))
    panel["selectivity_per_filter_before"] = rep.orientation_selectivity(e["before"]).tolist()
    panel["selectivity_per_filter_after"] = rep.orientation_selectivity(e["after"]).tolist()
    panel["selectivity_random_per_filter"] = rep.orientation_selectivity(rand).tolist()
  files.atomic_write_json(data["json"], data)
  return data


def section(ctx):
  data = ctx.analyses.get("F5")
  if not data:
    return ["Needs a finished random or pretrained run of ResNet50 or a CBR."]
  header = ["model", "init", "moved (mean relative L2 per filter)", "orientation selectivity before",
            "after", "He-normal random", "Gabor bank"]
  rows = []
  for p in data["panels"]:
    refs = p.get("selectivity_references") or {}
    rows.append([p["model"], p["kind"], common.fmt_interval(common.t_iv(_finite(p["per_filter"])), 1, 3),
                 common.fmt_interval(common.t_iv(p["selectivity_per_filter_before"]), 1, 3),
                 common.fmt_interval(common.t_iv(p["selectivity_per_filter_after"]), 1, 3),
                 f"{refs.get('random', float('nan')):.2f}", f"{refs.get('gabor', float('nan')):.2f}"])
  return [common.figure_link(ctx, "F5", data["png"]), "",
          "Per-filter statistics, mean ± std over the filters of one run [95% CI]. Orientation selectivity: 0 for "
          "an unoriented (blob or colour-only) filter, 1 for a pure grating.", "", common.table(header, rows)]


def _finite(values):
  return [v for v in values if v is not None and np.isfinite(v)]


def readings(ctx):
  data = ctx.analyses.get("F5")
  out = []
  if not data:
    return out
  panels = data["panels"]
  for p in panels:
    if p["kind"] == "pretrained":
      iv = common.diff_iv(p["selectivity_per_filter_before"], p["selectivity_random_per_filter"])
      out.append(common.read_direction(iv, what=(
          f"{p['model']}: pretrained conv1 orientation selectivity minus He-normal random filters' (the paper: "
          "pretrained conv1 filters are Gabor-like)")))
  moved = {p["model"]: _finite(p["per_filter"]) for p in panels if p["kind"] == "random"}
  cbr = next((m for m in moved if m.startswith("cbr_")), None)
  if "resnet50" in moved and cbr:
    out.append(common.read_direction(common.diff_iv(moved[cbr], moved["resnet50"]), what=(
        f"relative conv1 change per filter, {cbr} minus resnet50, random init (the paper: ResNet filters barely "
        "move, CBR-Small's move a lot)")))
  return out


EXPERIMENT = registry.register(registry.Experiment(
    id="F5", title="F5: conv1 filters before and after training", runs=runs, section=section, readings=readings,
    analysis=analysis, analysis_runs=analysis_runs))
