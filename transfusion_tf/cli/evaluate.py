"""`transfusion-evaluate`: scores a run directory (its final, best or step-0 weights, or a checkpoint) on a split.

`--which=best` is the checkpoint the run selected on validation (result.json["selected"]); a run already scores
it on the test split once when it finishes, so this is for other splits or other checkpoints.
"""
import os

import tensorflow as tf
from absl import flags

from transfusion_tf.data import pipeline
from transfusion_tf.cli.common import run_app
from transfusion_tf.errors import UsageError, exit_on_usage_error
from transfusion_tf.training import flags as train_flags  # noqa: F401  (defines --run_dir)
from transfusion_tf.training import rundir, trainer

flags.DEFINE_enum("which", "final", list(rundir.WHICH), "Which exported weights of the run to score: final (last "
                  "step), best (selected on validation: best primary metric, ties to the earlier step) or step0.")
flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (e.g. RUN/checkpoints/ckpt-200) instead of --which.")
flags.DEFINE_string("split", "test", "Split to score: test, validation or train.")
flags.DEFINE_integer("eval_batch_size", 64, "Batch size for scoring.")
flags.DEFINE_string("metrics_out", None, "Output JSON (default: <run_dir>/eval_<split>_<which>.json).")
FLAGS = flags.FLAGS


def evaluate_run(run_dir, split="test", which="final", checkpoint=None, batch_size=64):
  """Scores `run_dir` on `split`; returns {"metrics", "split", "weights", "num_examples", "data"}."""
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
  metrics = trainer.evaluate_model(predict, data, split)
  return {"metrics": metrics, "split": split, "weights": source, "num_examples": data.num_examples.get(split),
          "data": data.source_description}


@exit_on_usage_error
def main(argv):
  del argv  # run_app refuses positional arguments.
  if not FLAGS.run_dir:
    raise UsageError("--run_dir is required (the run directory to score)")
  out = evaluate_run(FLAGS.run_dir, FLAGS.split, FLAGS.which, FLAGS.checkpoint, FLAGS.eval_batch_size)
  path = FLAGS.metrics_out or os.path.join(FLAGS.run_dir, f"eval_{FLAGS.split}_{FLAGS.which}.json")
  rundir.atomic_write_json(path, out)
  print("  ".join(f"{k} {v:.4f}" for k, v in out["metrics"].items()) + f"\nwritten to {path}", flush=True)


def run():
  run_app(main)


if __name__ == "__main__":
  run()
