"""`transfusion-models`: prints each model's parameter count beside the paper's."""
from absl import flags

from transfusion_tf import models
from transfusion_tf.cli.common import run_app
from transfusion_tf.errors import exit_on_usage_error

flags.DEFINE_integer("table_image_size", 224, "Input size (px) at which to build each model for the table.")
flags.DEFINE_integer("num_outputs", 5, "Head size for the 'ours' column (5 for RETINA and CheXpert).")
flags.DEFINE_list("models", list(models.MODEL_NAMES), "Models to list.")
FLAGS = flags.FLAGS


def param_table(names, image_size, num_outputs):
  """Returns rows (name, ours at image_size/3 channels with head, paper convention, paper's quoted count)."""
  rows = []
  for name in names:
    models.check_model_name(name)
    size = max(image_size, models.MIN_SIZE[name])
    ours = models.build_model(name, num_outputs, (size, size, 3)).count_params()
    rows.append((name, ours, models.paper_convention_count(name), models.PAPER_PARAMS[name]))
  return rows


def format_table(rows, image_size, num_outputs):
  """Formats `param_table` rows as a fixed-width text table with thousands separators."""
  head = (f"{'model':<12} {'ours (' + str(image_size) + 'px, RGB, ' + str(num_outputs) + ' logits)':>28} "
          f"{'paper convention':>17} {'paper':>12} {'conv - paper':>13}")
  lines = [head, "-" * len(head)]
  for name, ours, conv, paper in rows:
    lines.append(f"{name:<12} {ours:>28,} {conv:>17,} {paper:>12,} {conv - paper:>+13,}")
  lines.append("paper convention: 1-channel input, conv kernels without bias, one BatchNorm offset per channel, "
               "no head. Paper counts are [unsure] (PAPER.md).")
  return "\n".join(lines)


@exit_on_usage_error
def main(argv):
  del argv
  print(format_table(param_table(FLAGS.models, FLAGS.table_image_size, FLAGS.num_outputs),
                     FLAGS.table_image_size, FLAGS.num_outputs))


def run():
  run_app(main)


if __name__ == "__main__":
  run()
