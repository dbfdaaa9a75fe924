"""`transfusion-evaluate`: scores a run directory (its final, best or step-0 weights, or a checkpoint) on a split.

`--which=best` is the checkpoint the run selected on validation (result.json["selected"]); a run already scores
it on the test split once when it finishes, so this is for other splits or other checkpoints.

Besides the metrics it prints each AUC with its 95% DeLong CI, `auc_referable 0.8123 [0.7901, 0.8345]` (retina; cxr
and image_csv with several labels or classes: first the primary auc_mean, the mean of the per-label AUCs with the
labels' covariance on the images they share (stats.delong_cov_mean), then one line per label), and a line with the
split's images and patients. Where the data names patients (synthetic retina and cxr, EyePACS, CheXpert) the CI is
clustered by patient (Obuchowski 1997: a patient's images are not independent); elsewhere (APTOS) each image is its
own cluster, and the line says so.
"""
import math
import os

import numpy as np
import tensorflow as tf
from absl import flags

from transfusion_tf.data import pipeline
from transfusion_tf.cli.common import run_app
from transfusion_tf.errors import UsageError, exit_on_usage_error
from transfusion_tf.experiments import stats
from transfusion_tf.training import flags as train_flags  # noqa: F401  (defines --run_dir)
from transfusion_tf.training import metrics as metrics_lib
from transfusion_tf.training import rundir, trainer

flags.DEFINE_enum("which", "final", list(rundir.WHICH), "Which exported weights of the run to score: final (last "
                  "step), best (selected on validation: best primary metric, ties to the earlier step) or step0.")
flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (e.g. RUN/checkpoints/ckpt-200) instead of --which.")
flags.DEFINE_string("split", "test", "Split to score: test, validation or train.")
flags.DEFINE_integer("eval_batch_size", 64, "Batch size for scoring.")
flags.DEFINE_string("metrics_out", None, "Output JSON (default: <run_dir>/eval_<split>_<which>.json).")
FLAGS = flags.FLAGS

Z95 = 1.959964  # Two-sided 95% normal quantile.


def _interval(auc, var):
  half = Z95 * math.sqrt(max(var, 0.0))
  return auc, max(0.0, auc - half), min(1.0, auc + half)


def auc_intervals(task, labels, masks, logits, patients=None):
  """{AUC key: (auc, lo, hi)}: each AUC of `task` with its 95% DeLong CI, clipped to [0, 1].

  labels, masks, logits: gather_predictions' arrays (N images); patients: None or int (N,) patient codes, the
  clusters (each key's masked images are dropped from its clusters too). lo and hi are NaN where the AUC is (one
  class only). Tasks with several labels or one-vs-rest classes also get "auc_mean" first: the mean over the labels
  with an AUC, its variance with the labels' covariance (they are scored on the same images).
  """
  indices = metrics_lib.auc_indices(task, masks, len(labels))
  inputs = metrics_lib.auc_inputs(task, labels, masks, logits)
  out = {}
  if task.kind == "multilabel" or (task.kind == "multiclass" and task.one_vs_rest):
    _, scores, binary, defined = metrics_lib.label_matrices(inputs, indices, len(labels))
    try:
      means, cov = stats.delong_cov_mean(scores, binary, defined, patients)
      out["auc_mean"] = _interval(float(means[0]), float(cov[0, 0]))
    except UsageError:  # No label has both classes: no auc_mean either (compute_metrics gives NaN).
      out["auc_mean"] = (math.nan, math.nan, math.nan)
  for key, (scores, binary) in inputs.items():
    if binary.size == 0 or binary.all() or not binary.any():
      out[key] = (math.nan, math.nan, math.nan)
      continue
    clusters = None if patients is None else np.asarray(patients)[indices[key]]
    out[key] = _interval(*stats.delong_auc(scores, binary, clusters=clusters))
  return out


def interval_lines(out):
  """The printed lines of an evaluate_run result: one per AUC with its CI, then the images and patients."""
  lines = [f"{key} {auc:.4f} [{lo:.4f}, {hi:.4f}]" for key, (auc, lo, hi) in out["intervals"].items()]
  n, patients = out["num_examples"], out["patients"]
  if patients is None:
    lines.append(f"{out['split']}: {n} images, no patient ids (each image its own cluster)")
  else:
    lines.append(f"{out['split']}: {n} images, {patients} patients (CI clustered by patient)")
  return lines


def evaluate_run(run_dir, split="test", which="final", checkpoint=None, batch_size=64):
  """Scores `run_dir` on `split`; returns {"metrics", "split", "weights", "num_examples", "data", "intervals"
  ({AUC key: [auc, lo, hi]}, see `auc_intervals`), "patients" (distinct patients scored, or None without ids)}."""
  config = rundir.load_config(run_dir)
  if checkpoint:
    model = rundir.build_from_config(config)
    if not tf.io.gfile.exists(checkpoint + ".index"):
      raise UsageError(f"--checkpoint={checkpoint} does not exist (no {checkpoint}.index)")
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    source = checkpoint
  else:
    model, _ = rundir.load_run_model(run_dir, which)
    source = rundir.weights_path(run_dir, which)
  data = pipeline.build_data(config["dataset"], image_size=config["image_size"], batch_size=batch_size,
                             model_name=config["model"], weights=config.get("weights"), seed=config["seed"],
                             channels=config["channels"], **(config.get("data_kwargs") or {}))
  predict = trainer.predict_function(model, config["image_size"], data.channels)
  labels, masks, logits = trainer.gather_predictions(predict, data, split)
  metrics = metrics_lib.compute_metrics(data.task, labels, masks, logits)
  patients = trainer.split_patients(data, split, len(labels))
  intervals = auc_intervals(data.task, labels, masks, logits, patients)
  return {"metrics": metrics, "split": split, "weights": source, "num_examples": len(labels),
          "data": data.source_description, "intervals": {k: list(v) for k, v in intervals.items()},
          "patients": None if patients is None else int(np.unique(patients).size)}


@exit_on_usage_error
def main(argv):
  del argv  # run_app refuses positional arguments.
  if not FLAGS.run_dir:
    raise UsageError("--run_dir is required (the run directory to score)")
  out = evaluate_run(FLAGS.run_dir, FLAGS.split, FLAGS.which, FLAGS.checkpoint, FLAGS.eval_batch_size)
  path = FLAGS.metrics_out or os.path.join(FLAGS.run_dir, f"eval_{FLAGS.split}_{FLAGS.which}.json")
  rundir.atomic_write_json(path, out)
  print("  ".join(f"{k} {v:.4f}" for k, v in out["metrics"].items()), flush=True)
  print("\n".join(interval_lines(out)) + f"\nwritten to {path}", flush=True)


def run():
  run_app(main)


if __name__ == "__main__":
  run()
