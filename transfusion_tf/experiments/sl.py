"""SL: Slim ResNet50 (pretrained through block2, blocks 3-4 at half width and random) against full transfer.

Claims read (the paper: Slim matches full transfer): test AUC slim − transfer is equivalent to zero (equivalence
test), and Slim converges faster than random init (directional test on validation curve areas).
"""
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import common, curves, registry

LABELS = ("random", "slim", "pretrained")


def runs(cfg):
  if "resnet50" not in cfg.models:
    raise UsageError("--experiments=SL needs resnet50 in --study_models")
  return [("resnet50", init, None) for init in LABELS]


def section(ctx):
  png = curves.figure_curves(ctx, "resnet50", LABELS, "sl", "SL: Slim ResNet50 vs full transfer")
  return [common.figure_link(ctx, "SL resnet50", png), "",
          "Test AUC × 100: slim "
          + common.fmt_interval(common.group_interval(ctx, "resnet50", "slim", ctx.primary), bounds=common.AUC_BOUNDS)
          + ", full transfer "
          + common.fmt_interval(common.group_interval(ctx, "resnet50", "pretrained", ctx.primary),
                                bounds=common.AUC_BOUNDS) + "."]


def readings(ctx):
  return [common.gate_trained(ctx, common.read_equivalence(
      common.auc_difference(ctx, "resnet50", "slim", "pretrained", ctx.primary), ctx.cfg.equivalence_margin,
      what="resnet50: test AUC slim − full transfer (the paper: Slim matches full transfer)"),
      common.arm_runs(ctx, "resnet50", ("slim", "pretrained"))),
          curves.read_faster(ctx, "resnet50", "slim", "random", "Slim faster than random")]


EXPERIMENT = registry.register(registry.Experiment(
    id="SL", title="SL: Slim ResNet50", runs=runs, section=section, readings=readings))
