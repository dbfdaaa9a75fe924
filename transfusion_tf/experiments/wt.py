"""WT: weight transfusion, pretrained weights up to stage k and random above (none, conv1, ..., all).

Claim read (the paper): most of the speed-up comes from the lowest layers. A directional test on normalised
validation curve areas (each run's progress to its own plateau) of the contrast A(lowest stage) − (A(random) +
A(full transfer)) / 2 > 0: transfusing the lowest stage alone closes more than half of the gap between random init
and full transfer.
"""
import os

from matplotlib.figure import Figure

from transfusion_tf.experiments import common, curves, plan, registry, stats


def labels_of(cfg, model):
  return [plan.wt_label(s) for s in plan.wt_stages(cfg, model)] + ["pretrained"]


def runs(cfg):
  return [(m, label, None) for m in cfg.models for label in labels_of(cfg, m)]


def figure_areas(ctx, model, labels, out_prefix):
  """Curve area per run against the number of transfused stages (0 = random); writes PNG + JSON."""
  fig = Figure(figsize=(6.4, 4.0))
  ax = fig.add_subplot(1, 1, 1)
  data = {"figure": "wt_areas", "model": model, "area_steps": ctx.cfg.area_steps, "points": []}
  for k, label in enumerate(labels):
    for res in ctx.group(model, label):
      reached, _, area = common.convergence(ctx, res)
      if area is None:
        continue
      ax.plot(k, area, "o", color="tab:blue", mfc="tab:blue" if reached is not None else "none")
      data["points"].append({"stages": k, "label": label, "seed": res.run.seed, "area": area,
                             "steps_to_threshold": reached})
  ax.set_xticks(range(len(labels)))
  ax.set_xticklabels([lab.split(":")[-1] for lab in labels], rotation=30, fontsize=8)
  ax.set_xlabel("transfused up to stage (open marker: never reached the threshold)")
  ax.set_ylabel(f"validation curve area to step {ctx.cfg.area_steps}")
  ax.set_title(f"WT: weight transfusion, {model}")
  ax.grid(alpha=0.3)
  return curves.save(fig, os.path.join(ctx.adir, out_prefix), data)


def lowest_share(ctx, model):
  """Interval of A(lowest) − (A(random) + A(pretrained)) / 2 over seeds (seed variance) on normalised curve areas
  (each run's progress to its own plateau: common.normalized_area_group), and the lowest label."""
  labels = labels_of(ctx.cfg, model)
  if len(labels) < 3:
    return None, None
  low = labels[1]
  groups = [common.normalized_area_group(ctx, model, lab)[0] for lab in (low, "random", "pretrained")]
  return common.contrast_iv(groups, [1.0, -0.5, -0.5]), low


def section(ctx):
  lines = []
  for m in ctx.cfg.models:
    labels = labels_of(ctx.cfg, m)
    png = curves.figure_curves(ctx, m, labels, f"wt_{m}", f"WT: weight transfusion, {m}")
    lines += [f"### WT: {m}", "", common.figure_link(ctx, f"WT {m}", png), ""]
    png = figure_areas(ctx, m, labels, f"wt_areas_{m}")
    lines += [f"### WT: {m} curve areas", "", common.figure_link(ctx, f"WT areas {m}", png), ""]
  return lines


def readings(ctx):
  out = []
  for m in ctx.cfg.models:
    iv, low = lowest_share(ctx, m)
    if iv is None:
      out.append(stats.Verdict("inconclusive", f"{m}: WT needs at least one transfused stage between none and all",
                               "direction"))
      continue
    verdict = common.read_direction(iv, what=(
        f"{m}: normalised curve area of {low} minus the midpoint of random and full transfer (positive: the lowest "
        "stage alone gives most of the speed-up, as the paper finds)"), margin=common.direction_margin(ctx.cfg, "fraction"))
    out.append(common.gate_trained(ctx, verdict, common.arm_runs(ctx, m, (low, "random", "pretrained"))))
  return out


EXPERIMENT = registry.register(registry.Experiment(
    id="WT", title="WT: weight transfusion", runs=runs, section=section, readings=readings))
