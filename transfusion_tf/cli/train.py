"""`transfusion-train`: trains one model on one task with one init scheme and one seed into --run_dir."""
import os

from absl import flags

from transfusion_tf.cli.common import run_app
from transfusion_tf.errors import UsageError, exit_on_usage_error
from transfusion_tf.training import flags as train_flags
from transfusion_tf.training import strategy as strategy_lib
from transfusion_tf.training import trainer

FLAGS = flags.FLAGS


@exit_on_usage_error
def main(argv):
  del argv  # run_app refuses positional arguments.
  if not FLAGS.run_dir:
    raise UsageError("--run_dir is required")
  if os.path.isfile(os.path.join(FLAGS.run_dir, "plan.json")):
    # Training into a study's root would mix a run's files with the study's plan, runs and report.
    raise UsageError(f"--run_dir={FLAGS.run_dir} is a study folder (it holds plan.json), not a run folder; pass a "
                     f"new folder, or let transfusion-study train the study's runs")
  cfg = train_flags.config_from_flags()
  result = trainer.train(cfg, FLAGS.run_dir, overwrite=FLAGS.overwrite, flags_text=train_flags.flags_text(),
                         refuse_held=True)
  if result is None:  # A non-chief worker (the chief writes the results).
    if not strategy_lib.is_chief():
      print("worker done", flush=True)
    return
  primary = result["primary_metric"]
  print(f"done: final {primary} {result['final'][primary]:.4f}, best {result['best'][primary]:.4f} "
        f"at step {result['best']['step']}; results in {FLAGS.run_dir}/result.json", flush=True)


def run():
  run_app(main)


if __name__ == "__main__":
  run()
