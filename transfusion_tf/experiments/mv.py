"""MV: Mean-Var init (feature-independent transfer of each weight tensor's mean and variance).

Claim read (the paper): Mean-Var converges faster than random init, but not as fast as full transfer. Two
directional tests on validation curve areas, meanvar − random > 0 and pretrained − meanvar > 0; the claim holds
when both hold, does not hold when either is reversed, and is inconclusive otherwise.
"""
from transfusion_tf.experiments import common, curves, registry

LABELS = ("random", "meanvar", "pretrained")


def runs(cfg):
  return [(m, init, None) for m in cfg.models for init in LABELS]


def section(ctx):
  lines = []
  for m in ctx.cfg.models:
    png = curves.figure_curves(ctx, m, LABELS, f"mv_{m}", f"MV: Mean-Var init, {m}")
    lines += [f"### MV: {m}", "", common.figure_link(ctx, f"MV {m}", png), ""]
  return lines


def readings(ctx):
  out = []
  for m in ctx.cfg.models:
    parts = [curves.read_faster(ctx, m, "meanvar", "random", "Mean-Var faster than random"),
             curves.read_faster(ctx, m, "pretrained", "meanvar", "transfer faster than Mean-Var")]
    out.append(common.all_of(m, parts, "the paper: Mean-Var between random and transfer"))
  return out


EXPERIMENT = registry.register(registry.Experiment(
    id="MV", title="MV: Mean-Var init", runs=runs, section=section, readings=readings))
