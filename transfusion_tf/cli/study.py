"""`transfusion-study`: runs a whole study from a flagfile (pretraining, the sweep, analyses, report).

  transfusion-study --flagfile=flags/quick.cfg --out=DIR
Re-running the same command resumes; on a finished DIR it trains nothing. Runs DIR holds with other settings (another
--train_steps, say) stop the study before it trains anything, naming them; --overwrite retrains them. Shard a sweep
over processes or machines with --shard=i/n --study_stage=train, then run once more without --shard for the analyses
and report.
"""
import math
import sys

from absl import flags

from transfusion_tf.cli.common import run_app
from transfusion_tf.errors import UsageError, exit_on_usage_error
from transfusion_tf.experiments import parallel, plan, study
from transfusion_tf.training import flags as train_flags
from transfusion_tf.training import policy

flags.DEFINE_string("out", None, "Output folder of the study: runs, TensorBoard root, figures, report.md.")
flags.DEFINE_list("study_models", ["cbr_tiny"], "Models of the sweep.")
flags.DEFINE_list("study_inits", ["random", "pretrained"], "Init schemes every model runs with, besides those the "
                  "experiments add (random, pretrained, meanvar, transfuse:<stage>, slim, gabor_low, gabor_high).")
flags.DEFINE_integer("study_seeds", 1, "Repetitions per setting (seeds 0..n-1; the paper: 3).")
flags.DEFINE_list("experiments", ["T1"], "Experiments: T1, T2, T3, convergence, F2, F3, F4, F5, MV, WT, SL, "
                  "GB (the convergence table also comes with MV, WT, SL and GB), or ANSWER: those the report's first section needs (T1, T2, "
                  "F3, MV, WT).")
flags.DEFINE_string("source_weights", "auto", "Pretrained source: auto (ImageNet from the Keras cache where "
                    "present, else pretraining on synthetic_source), synthetic, imagenet, or a weights path.")
flags.DEFINE_integer("pretrain_steps", policy.pretrain_defaults()["train_steps"],
                     "Steps of synthetic-source pretraining per model.")
flags.DEFINE_integer("pretrain_image_size", None, "Input size of synthetic-source pretraining (default: "
                     "policy.pretrain_image_size: 32 px, or the model's minimum if larger: there the source patterns "
                     "meet conv1's scale and it grows oriented filters).")
flags.DEFINE_integer("pretrain_num_train", policy.pretrain_data_sizes()["num_train"],
                     "Synthetic source images for pretraining.")
flags.DEFINE_float("pretrain_learning_rate", None, "Peak learning rate of source pretraining (AdamW, cosine "
                   "decay; default: policy.pretrain_learning_rate, 2e-3, InceptionV3 6e-4).")
flags.DEFINE_float("pretrain_weight_decay", policy.pretrain_defaults()["weight_decay"],
                   "Decoupled weight decay of source pretraining, on convolution kernels only.")
flags.DEFINE_integer("small_data_subset", 5000, "T3's training-set size (the paper: 5,000).")
flags.DEFINE_list("wt_stages", None, "WT stages (default: none, every stage bottom-up); 'none' is random init.")
flags.DEFINE_integer("analysis_images", 256, "Validation images fed to the SVCCA analyses.")
flags.DEFINE_integer("analysis_max_positions", 2000, "Cap on spatial positions per image of a conv stage (raised "
                     "where needed to reach --analysis_min_datapoints).")
flags.DEFINE_float("analysis_min_datapoints", 10.0, "Minimum SVCCA datapoints per neuron; cells below it are marked "
                   "and left out of the readings (SVCCA of independent noise reads 0.38 at 5x, 0.12 at 50x).")
flags.DEFINE_float("equivalence_margin", 0.01, "Margin of the 'no difference' readings, in AUC (0.01 = 1 point): "
                   "equal when the 95% CI of the difference lies inside +-margin.")
flags.DEFINE_float("similarity_margin", 0.05, "Margin of F2's 'little difference' reading for small models, in "
                   "SVCCA units.")
flags.DEFINE_integer("converge_k", 2, "Steps to threshold: the first evaluation from which the validation metric "
                     "stays at or above --convergence_auc for this many evaluations in a row.")
flags.DEFINE_integer("curve_area_steps", None, "Step up to which the area under the validation curve is taken "
                     "(default: --train_steps).")
flags.DEFINE_list("study_width_multipliers", [], "Per-model width multipliers, e.g. resnet50=0.25 (others use "
                  "--width_multiplier).")
flags.DEFINE_list("study_learning_rates", [], "Per-model peak learning rates, e.g. resnet50=0.004 (others use "
                  "--learning_rate): a deep random-init ResNet50 may train faster at a higher rate than a CBR.")
flags.DEFINE_list("study_init_seeds", [], "Per-init-label seed counts overriding --study_seeds, e.g. random=5,meanvar=3 "
                  "(F4's bootstrap needs 5 random-init runs per model; other arms may need fewer).")
flags.DEFINE_boolean("force", False, "Redo every run and analysis even when finished.")
flags.DEFINE_string("shard", "0/1", "i/n: train only every n-th run starting at i (then run the report unsharded); "
                    "auto: i and n from a cluster job array (Slurm, SGE, PBS; see the README).")
flags.DEFINE_string("parallel_runs", "auto", "Concurrent training runs on this machine: auto (one per GPU; on CPU "
                    "the cores for up to 2, else half the cores, with TensorFlow's threads split between them) or N.")
flags.DEFINE_enum("study_stage", "all", ["all", "train", "report", "plan"], "all; train (the sweep only); "
                  "report (analyses and report over finished runs); plan (list the runs and stop).")
flags.DEFINE_string("pilot", None, "With --study_stage=plan: a finished study run with the same flags (a pilot); "
                    "prints the seeds and test images each claim needs to be decidable, from its variances.")
FLAGS = flags.FLAGS


def _shard(text):
  if text == "auto":
    return parallel.array_shard()
  try:
    i, n = (int(v) for v in text.split("/"))
  except ValueError:
    raise UsageError(f"--shard={text!r} must look like i/n, e.g. 0/4") from None
  if not 0 <= i < n:
    raise UsageError(f"--shard={text!r}: need 0 <= i < n")
  return i, n


def _name_values(items, flag, cast, example, check_name=None):
  """{name: cast(value)} from `flag`'s name=value items, each name passed to `check_name` in turn; a malformed
  item is one UsageError naming it."""
  out = {}
  for item in items:
    name, _, value = item.partition("=")
    try:
      out[name] = cast(value)
    except ValueError:
      raise UsageError(f"{flag} item {item!r} must look like {example}") from None
    if check_name:
      check_name(name)
  return out


def _widths(items):
  return _name_values(items, "--study_width_multipliers", float, "model=0.5")


def _learning_rates(items):
  rates = _name_values(items, "--study_learning_rates", float, "resnet50=0.004")
  for name, rate in rates.items():
    if not (math.isfinite(rate) and rate > 0):
      raise UsageError(f"--study_learning_rates item {name}={rate} must be a positive learning rate")
  return rates


def _init_seeds(items):
  return _name_values(items, "--study_init_seeds", int, "random=5",
                      lambda name: plan.check_init_label(name, flag="--study_init_seeds"))


def config_from_flags():
  """StudyConfig from the parsed flags; the training/model/data flags give every run's base configuration."""
  if not FLAGS.out:
    raise UsageError("--out is required (the study's output folder)")
  return plan.StudyConfig(
      out=FLAGS.out, base=train_flags.config_from_flags(), models=tuple(FLAGS.study_models),
      inits=tuple(FLAGS.study_inits), seeds=FLAGS.study_seeds, experiments=tuple(FLAGS.experiments),
      source_weights=FLAGS.source_weights, pretrain_steps=FLAGS.pretrain_steps,
      pretrain_image_size=FLAGS.pretrain_image_size, pretrain_num_train=FLAGS.pretrain_num_train,
      pretrain_learning_rate=FLAGS.pretrain_learning_rate,
      pretrain_weight_decay=FLAGS.pretrain_weight_decay, small_data_subset=FLAGS.small_data_subset,
      wt_stages=tuple(FLAGS.wt_stages) if FLAGS.wt_stages else None, analysis_images=FLAGS.analysis_images,
      analysis_max_positions=FLAGS.analysis_max_positions, analysis_min_datapoints=FLAGS.analysis_min_datapoints,
      equivalence_margin=FLAGS.equivalence_margin, similarity_margin=FLAGS.similarity_margin,
      converge_k=FLAGS.converge_k, curve_area_steps=FLAGS.curve_area_steps, force=FLAGS.force,
      overwrite=FLAGS.overwrite,
      shard=_shard(FLAGS.shard), parallel_runs=FLAGS.parallel_runs,
      width_multipliers=_widths(FLAGS.study_width_multipliers), init_seeds=_init_seeds(FLAGS.study_init_seeds),
      learning_rates=_learning_rates(FLAGS.study_learning_rates))


@exit_on_usage_error
def main(argv):
  del argv  # run_app refuses positional arguments.
  study.run_study(config_from_flags(), FLAGS.study_stage, argv=sys.argv, pilot=FLAGS.pilot)


def run():
  run_app(main)


if __name__ == "__main__":
  run()
