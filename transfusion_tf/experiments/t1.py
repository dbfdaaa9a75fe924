"""T1: RETINA referable AUC, random init vs transfer, for every model (the paper's Table 1).

Claim read: transfer and random init reach the same test AUC (an equivalence test with --equivalence_margin), on
runs trained to a plateau (inconclusive otherwise: common.gate_trained).
"""
from transfusion_tf.experiments import common, registry

# PAPER.md section 4: (random, transfer) in AUC percent with the paper's std where given; True marks secondary
# sources ([unsure]).
PAPER = {"resnet50": ((96.4, 0.05), (96.7, 0.04), False), "inceptionv3": ((96.6, 0.13), (96.7, 0.05), False),
         "cbr_larget": ((96.2, 0.04), (96.2, 0.04), False), "cbr_largew": ((95.8, None), (95.8, None), True),
         "cbr_small": ((95.7, None), (95.8, None), True), "cbr_tiny": ((95.8, None), (95.8, None), True)}


def runs(cfg):
  return [(m, init, None) for m in cfg.models for init in ("random", "pretrained")]


def _applies(ctx):
  return ctx.task.kind == "grading"


def section(ctx):
  if not _applies(ctx):
    return [f"T1 reads the retina task; this study's task is `{ctx.task.name}` (see T2)."]
  key = ctx.primary
  header = ["model", "params", "random", "transfer", "transfer − random", "random (paper)", "transfer (paper)"]
  rows = []
  for m in ctx.cfg.models:
    (pr, prs), (pt, pts), unsure = PAPER.get(m, ((None, None), (None, None), True))
    rows.append([m, f"{common.param_count(ctx.cfg, m):,}",
                 common.fmt_interval(common.group_interval(ctx, m, "random", key), bounds=common.AUC_BOUNDS),
                 common.fmt_interval(common.group_interval(ctx, m, "pretrained", key), bounds=common.AUC_BOUNDS),
                 common.fmt_interval(common.auc_difference(ctx, m, "pretrained", "random", key), signed=True,
                                     bounds=common.DIFF_BOUNDS),
                 common.paper_value(pr, prs, unsure), common.paper_value(pt, pts, unsure)])
  common.write_csv(f"{ctx.out}/table_t1.csv", header, rows)
  return [f"Test `{key}` × 100 at each run's checkpoint picked on validation: mean ± std over seeds [95% CI, seeds "
          "and test images]; the difference column is transfer − random with its 95% CI.", "",
          common.table(header, rows)]


def readings(ctx):
  if not _applies(ctx):
    return []
  return [common.gate_trained(ctx, common.read_equivalence(
      common.auc_difference(ctx, m, "pretrained", "random", ctx.primary), ctx.cfg.equivalence_margin,
      what=f"{m}: test AUC transfer − random (the paper: equal within 0.3 points)"),
      common.arm_runs(ctx, m, ("pretrained", "random"))) for m in ctx.cfg.models]


EXPERIMENT = registry.register(registry.Experiment(
    id="T1", title="T1: RETINA referable AUC, random init vs transfer", runs=runs, section=section,
    readings=readings))
