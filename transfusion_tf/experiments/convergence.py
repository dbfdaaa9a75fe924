"""The convergence table: per model and init label, steps to the threshold and the validation curve area.

Selected by --experiments=convergence, and shown whenever a convergence experiment (MV, WT, SL, GB) is selected.
Claim read (the paper, implied by MV's "Mean-Var converges faster than random init, but not as fast as full
transfer"): transfer converges faster than random init, per model, by the directional test on normalised
validation curve areas (curves.read_faster: progress towards each run's own plateau, so a higher plateau is not read
as speed), on runs trained to a plateau.
"""
from transfusion_tf.experiments import common, curves, registry


def runs(cfg):
  return [(m, init, None) for m in cfg.models for init in ("random", "pretrained")]


def section(ctx):
  if ctx.threshold is None:
    return ["No --convergence_auc threshold: steps to threshold are not measured; curve areas only."]
  labels = list(dict.fromkeys(r.init for r in ctx.runs if r.subset is None))
  header = ["model", "init", f"steps to {ctx.threshold} (per seed)", f"curve area ×100 to step {ctx.cfg.area_steps}",
            "normalised curve area (share of own plateau)"]
  rows = []
  model_names = list(dict.fromkeys(r.model for r in ctx.runs if r.subset is None))
  for m in model_names:
    rows += [[m] + row for row in curves.convergence_rows(ctx, m, [lab for lab in labels if ctx.planned(m, lab)])]
  common.write_csv(f"{ctx.out}/table_convergence.csv", header, rows)
  return [f"Steps to threshold: the first validation evaluation (every {ctx.cfg.base.eval_every} steps) from which "
          f"`{ctx.primary}` stays at or above {ctx.threshold} for {ctx.cfg.converge_k} evaluations in a row; "
          "'>N' marks a run that never got there (censored at its budget N). Curve area: the mean validation "
          f"`{ctx.primary}` over steps 0..{ctx.cfg.area_steps} (trapezoid rule), never censored; normalised: the same "
          "mean of (value − 0.5) / (the run's best value − 0.5), its progress towards its own plateau, which the "
          "convergence readings use so that a higher plateau is not read as speed; mean ± std over seeds [95% CI].", "", common.table(header, rows)]


def readings(ctx):
  return [curves.read_faster(ctx, m, "pretrained", "random", "transfer faster than random")
          for m in ctx.cfg.models if ctx.planned(m, "pretrained") and ctx.planned(m, "random")]


EXPERIMENT = registry.register(registry.Experiment(
    id="convergence", title="Convergence: steps to threshold and curve area", runs=runs, section=section,
    readings=readings, shown_with=("MV", "WT", "SL", "GB")))
