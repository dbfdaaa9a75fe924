"""GB: synthetic Gabor conv1 (low- or high-frequency bank copied to RGB, the rest random).

Claim read (the paper): a Gabor conv1 speeds up convergence over random init. One directional test per bank on
validation curve areas (gabor − random > 0); the two banks are read separately, never as "the better of two".
"""
from transfusion_tf.experiments import common, curves, registry


def labels_of(model):
  return ["random", "gabor_low", "gabor_high", "transfuse:stem" if model == "inceptionv3" else "transfuse:conv1",
          "pretrained"]


def runs(cfg):
  return [(m, label, None) for m in cfg.models for label in labels_of(m)]


def section(ctx):
  lines = []
  for m in ctx.cfg.models:
    png = curves.figure_curves(ctx, m, labels_of(m), f"gb_{m}", f"GB: synthetic Gabor conv1, {m}")
    lines += [f"### GB: {m}", "", common.figure_link(ctx, f"GB {m}", png), ""]
  return lines


def readings(ctx):
  return [curves.read_faster(ctx, m, bank, "random", f"{bank.replace('_', ' ')} conv1 faster than random")
          for m in ctx.cfg.models for bank in ("gabor_low", "gabor_high")]


EXPERIMENT = registry.register(registry.Experiment(
    id="GB", title="GB: synthetic Gabor conv1", runs=runs, section=section, readings=readings))
