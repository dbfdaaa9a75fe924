"""T2: CheXpert AUC per pathology, random init vs transfer, for every model (the paper's Table 2). On a labelled image
folder (the image task) the same table per label or class, with the task's primary metric.

Claim read: transfer and random init reach the same primary test AUC (mean over the labels for CheXpert;
equivalence test, --equivalence_margin).
"""
from transfusion_tf.data import tasks
from transfusion_tf.experiments import common, registry

# PAPER.md section 4: ResNet50's (random, transfer) AUC percent per pathology; the other rows are unknown.
PAPER_RESNET = {"Atelectasis": (79.52, 79.76), "Cardiomegaly": (75.23, 74.93), "Consolidation": (85.49, 84.42),
                "Edema": (88.34, 88.89), "Pleural Effusion": (88.70, 88.07)}


def runs(cfg):
  return [(m, init, None) for m in cfg.models for init in ("random", "pretrained")]


def _applies(ctx):
  return ctx.task.name in ("cxr", "image")


def _labels(task):
  """The rows of each model: its labels (pathologies, classes), then their mean where there are several."""
  return task.class_names + (("mean",) if len(task.class_names) > 1 else ())


def section(ctx):
  if not _applies(ctx):
    return [f"T2 reads the chest x-ray task or a labelled image folder; this study's task is `{ctx.task.name}` (see "
            "T1)."]
  label = "pathology" if ctx.task.name == "cxr" else "label"
  header = ["model", label, "random", "transfer", "transfer − random", "random (paper)", "transfer (paper)"]
  rows = []
  for m in ctx.cfg.models:
    for p in _labels(ctx.task):
      key = f"auc_{tasks.metric_key(p)}"
      paper = PAPER_RESNET.get(p) if m == "resnet50" and ctx.task.name == "cxr" else None
      rows.append([m, p, common.fmt_interval(common.group_interval(ctx, m, "random", key), digits=2,
                                       bounds=common.AUC_BOUNDS),
                   common.fmt_interval(common.group_interval(ctx, m, "pretrained", key), digits=2,
                                       bounds=common.AUC_BOUNDS),
                   common.fmt_interval(common.auc_difference(ctx, m, "pretrained", "random", key), digits=2,
                                       signed=True, bounds=common.DIFF_BOUNDS),
                   common.paper_value(paper[0]) if paper else "unknown",
                   common.paper_value(paper[1]) if paper else "unknown"])
  common.write_csv(f"{ctx.out}/table_t2.csv", header, rows)
  return [f"Test AUC × 100 per {label} at each run's checkpoint picked on validation: mean ± std over seeds "
          "[95% CI, seeds and test images]. The mean row's test-set variance holds the labels' covariance (they "
          "are scored on the same images); a cell whose runs' files cannot align the labels by image says so.", "",
          common.table(header, rows)]


def readings(ctx):
  if not _applies(ctx):
    return []
  return [common.gate_trained(ctx, common.read_equivalence(
      common.auc_difference(ctx, m, "pretrained", "random", ctx.primary), ctx.cfg.equivalence_margin,
      what=f"{m}: {'mean ' if ctx.primary == 'auc_mean' else ''}test AUC transfer − random (the paper: within about "
      "1 point)"),
      common.arm_runs(ctx, m, ("pretrained", "random"))) for m in ctx.cfg.models]


EXPERIMENT = registry.register(registry.Experiment(
    id="T2", title="T2: AUC per pathology (CheXpert) or label (an image folder), random init vs transfer",
    runs=runs, section=section,
    readings=readings))
