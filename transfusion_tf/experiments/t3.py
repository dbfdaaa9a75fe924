"""T3: the small-data regime (RETINA with --small_data_subset training images; the paper: 5,000).

Claim read: transfer gains more over random init with little data than with all of it, i.e. the contrast
(transfer_small − random_small) − (transfer_full − random_full) is positive (a directional test, with the runs' joint
test-set covariance, on runs trained to a plateau).
"""
from transfusion_tf.experiments import common, registry

# (random, transfer) AUC percent at n = 5,000 and whether the source is secondary ([unsure]).
PAPER = {"resnet50": (92.2, 94.6, False), "cbr_larget": (93.6, 93.9, True), "cbr_largew": (93.6, 93.7, True)}


def runs(cfg):
  return [(m, init, subset) for m in cfg.models for init in ("random", "pretrained")
          for subset in (cfg.small_data_subset, None)]


def gain_contrast(ctx, model):
  """Interval of (transfer − random with few images) − (transfer − random with all): the seed spread plus the
  test-set noise the four arms' runs share (their joint DeLong covariance, stats.contrast_interval)."""
  n, key = ctx.cfg.small_data_subset, ctx.primary
  cells = [("pretrained", n), ("random", n), ("pretrained", None), ("random", None)]
  return common.auc_contrast(ctx, model, cells, [1.0, -1.0, -1.0, 1.0], key)


def section(ctx):
  n, key = ctx.cfg.small_data_subset, ctx.primary
  header = ["model", f"random, n={n}", f"transfer, n={n}", "random, full", "transfer, full",
            "gain(small) − gain(full)", "paper (n=5000)"]
  rows = []
  for m in ctx.cfg.models:
    p = PAPER.get(m)
    rows.append([m] + [common.fmt_interval(common.group_interval(ctx, m, init, key, subset),
                                           bounds=common.AUC_BOUNDS)
                       for subset in (n, None) for init in ("random", "pretrained")]
                + [common.fmt_interval(gain_contrast(ctx, m), signed=True),
                   f"{p[0]} / {p[1]}" + (" [unsure]" if p[2] else "") if p else "unknown"])
  common.write_csv(f"{ctx.out}/table_t3.csv", header, rows)
  return [f"Test `{key}` × 100 (checkpoint picked on validation), mean ± std [95% CI]. Full-data runs are T1's.",
          "", common.table(header, rows)]


def readings(ctx):
  n = ctx.cfg.small_data_subset
  return [common.gate_trained(ctx, common.read_direction(
      gain_contrast(ctx, m), what=f"{m}: transfer gain with {n} images minus the gain with all (the paper, "
      "ResNet50: +2.4 vs +0.3 points)", margin=common.direction_margin(ctx.cfg, "auc")),
      [res for init in ("pretrained", "random") for sub in (n, None) for res in ctx.group(m, init, sub)])
      for m in ctx.cfg.models]


EXPERIMENT = registry.register(registry.Experiment(
    id="T3", title="T3: small-data regime", runs=runs, section=section, readings=readings))
