"""`transfusion-pretrain`: trains a model on a source task and exports a weights file for transfer.

Offline the source is the embedded `synthetic_source` task, standing in for ImageNet; users with ImageNet use
`--dataset=imagenet_tfds --tfds_manual_dir=...`. Defaults differ from transfusion-train where
`training.policy.pretrain_defaults()` says: AdamW with strong weight decay on conv kernels, 32 px, 3,000 steps, so
that conv1 grows oriented filters on the synthetic source, and ResNet50's residual blocks start as their shortcuts
(--zero_init_residual); for ImageNet set --image_size and --train_steps yourself. The
exported file is what `--init=pretrained|meanvar|transfuse:*|slim --weights=PATH` read; it records its source so
every later output can say what stood in.
"""
from absl import flags

from transfusion_tf.cli.common import run_app
from transfusion_tf.errors import UsageError, exit_on_usage_error
from transfusion_tf.training import flags as train_flags
from transfusion_tf.training import policy
from transfusion_tf.training import trainer

flags.DEFINE_string("export", None, "Where to write the pretrained weights (default: <run_dir>/pretrained.weights.h5).")
FLAGS = flags.FLAGS


def config_from_flags():
  """The pretraining TrainConfig of the parsed flags: training.flags' config plus the policy's per-model build
  kwargs (ResNet50's zero_init_residual) unless --zero_init_residual was given, and the policy's per-model peak
  learning rate (InceptionV3's 6e-4) unless --learning_rate was given."""
  cfg = train_flags.config_from_flags()
  if FLAGS.zero_init_residual is None:
    cfg.model_kwargs.update(policy.pretrain_model_kwargs(cfg.model))
  if FLAGS["learning_rate"].using_default_value:
    cfg.learning_rate = policy.pretrain_learning_rate(cfg.model)
  return cfg


@exit_on_usage_error
def main(argv):
  del argv  # run_app refuses positional arguments.
  if not FLAGS.run_dir:
    raise UsageError("--run_dir is required")
  path = trainer.pretrain(config_from_flags(), FLAGS.run_dir, FLAGS.export, FLAGS.overwrite, train_flags.flags_text())
  if path is not None:  # None: another process holds --run_dir (the trainer said so).
    print(f"pretrained weights written to {path} (use --init=pretrained --weights={path})", flush=True)


def run():
  flags.FLAGS.set_default("dataset", "synthetic_source")
  for name, value in policy.pretrain_defaults().items():
    flags.FLAGS.set_default(name, value)
  run_app(main)


if __name__ == "__main__":
  run()
