"""absl flags owned by the training package, and `config_from_flags` which gathers model, data and training flags
into a TrainConfig."""
from absl import flags

from transfusion_tf.data import flags as data_flags
from transfusion_tf.errors import UsageError
from transfusion_tf.models import flags as model_flags
from transfusion_tf.training import strategy as strategy_lib, trainer

flags.DEFINE_string("run_dir", None, "Run directory: checkpoints, curve.json, result.json, tb/. Re-running the "
                    "same command resumes it; a finished run is left alone.")
flags.DEFINE_boolean("overwrite", False, "Replace a run directory that holds a different or finished run.")
flags.DEFINE_integer("seed", 0, "Seed for init, data order and augmentation.")
flags.DEFINE_enum("optimizer", "adam", list(trainer.OPTIMIZERS), "Optimiser (paper: Adam for RETINA, SGD+momentum "
                  "for CheXpert [unsure]).")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.")
flags.DEFINE_enum("lr_schedule", "cosine", list(trainer.LR_SCHEDULES), "Learning-rate schedule over --train_steps "
                  "(a decaying rate steadies the evaluation curve).")
flags.DEFINE_integer("warmup_steps", 0, "Linear warm-up steps (cosine schedule).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay of AdamW and SGD (0: AdamW uses 1e-4, SGD none), "
                   "applied to BatchNorm-followed convolution kernels only.")
flags.DEFINE_integer("batch_size", 32, "Per-replica batch; the global batch is this times the number of replicas.")
flags.DEFINE_integer("train_steps", 1000, "Training steps.")
flags.DEFINE_integer("eval_every", 100, "Evaluate, checkpoint and extend curve.json every this many steps.")
flags.DEFINE_integer("plateau_patience", None, "Stop a run before --train_steps (its budget) when none of its last "
                     "this many evaluations beats the best before them by more than --plateau_min_delta (default: "
                     "no plateau stop).")
flags.DEFINE_float("plateau_min_delta", 0.005, "The smallest gain of the validation metric that counts for the "
                   "plateau stop (its units, e.g. AUC); set it above the evaluation's own noise.")
flags.DEFINE_integer("min_train_steps", None, "No plateau stop before this step.")
flags.DEFINE_string("eval_split", "validation", "Split evaluated during training.")
flags.DEFINE_float("convergence_auc", None, "Threshold of the primary metric for steps-to-threshold (paper: 0.91 "
                   "on RETINA); unset: not measured.")
flags.DEFINE_enum("strategy", "auto", list(strategy_lib.STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_boolean("mixed_precision", False, "Keras mixed_float16 with loss scaling (float32 logits).")
flags.DEFINE_boolean("bfloat16", False, "Keras mixed_bfloat16: bfloat16 compute, float32 variables and logits, no "
                     "loss scaling. For CPUs with AVX-512 BF16 or AMX: a bare CBR-Small step ran 1.4x faster than "
                     "float32 on this project's EPYC, ResNet50 about 1.0x (README, 'Measured here').")
flags.DEFINE_boolean("jit", False, "XLA-compile the train step (measured slower on CPU; try it on GPU).")
flags.DEFINE_float("log_every_seconds", 0.0, "Interval of the progress lines (a run's step line, and the study's "
                   "line of runs done and its ETA); 0: 5 s on a terminal, 30 s in logs.")

FLAGS = flags.FLAGS


def _precision():
  """TrainConfig.mixed_precision from --mixed_precision and --bfloat16."""
  if FLAGS.bfloat16 and FLAGS.mixed_precision:
    raise UsageError("--mixed_precision (float16) and --bfloat16 exclude each other: choose one")
  return "bfloat16" if FLAGS.bfloat16 else FLAGS.mixed_precision


def config_from_flags():
  """Returns a TrainConfig from the parsed model, data and training flags."""
  data_kwargs = dict(data_flags.data_kwargs_from_flags())
  dataset = data_kwargs.pop("dataset", None) or FLAGS.dataset
  return trainer.TrainConfig(
      model=FLAGS.model, dataset=dataset, image_size=FLAGS.image_size, init=FLAGS.init, weights=FLAGS.weights,
      seed=FLAGS.seed, optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
      lr_schedule=FLAGS.lr_schedule, warmup_steps=FLAGS.warmup_steps, momentum=FLAGS.momentum,
      weight_decay=FLAGS.weight_decay, batch_size=FLAGS.batch_size, train_steps=FLAGS.train_steps,
      eval_every=FLAGS.eval_every, eval_split=FLAGS.eval_split, convergence_auc=FLAGS.convergence_auc,
      plateau_patience=FLAGS.plateau_patience,
      plateau_min_delta=FLAGS.plateau_min_delta if FLAGS.plateau_patience else None,
      min_train_steps=FLAGS.min_train_steps,
      strategy=FLAGS.strategy, mixed_precision=_precision(), jit=FLAGS.jit,
      gabor_frequency=FLAGS.gabor_frequency, meanvar_bn=FLAGS.meanvar_bn,
      log_every_seconds=FLAGS.log_every_seconds, model_kwargs=model_flags.model_kwargs_from_flags(),
      data_kwargs=data_kwargs)


def flags_text():
  """The resolved flags of this program's own modules, one --flag=value per line (for flags.txt)."""
  return FLAGS.flags_into_string()
