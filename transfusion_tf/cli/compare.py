"""`transfusion-compare`: SVCCA, PWCCA and linear CKA between the stages of two trained runs.

    transfusion-compare --run_a=runs/rand_s0 --run_b=runs/pre_s0 --compare_out=cmp/rand_vs_pre.json
    transfusion-compare --run_a=runs/rand_s0 --which_a=step0 --run_b=runs/rand_s0 --compare_out=cmp/moved.json

Both runs must be the same architecture at the same input size and preprocessing. They see the same images of
run_a's dataset (`--compare_split`, the first `--num_images`), in the same order. Writes the JSON to `--compare_out`
(per-stage results and, with --stage_matrix, the stage x stage matrices) and a PNG beside it (same name, .png):
the stage x stage SVCCA heatmap and the per-stage SVCCA/PWCCA/CKA lines.
"""
import os
import sys
import warnings

from absl import flags

from transfusion_tf.analysis import activations, cca, representation
from transfusion_tf.analysis.compare import compare_runs
from transfusion_tf.cli.common import run_app
from transfusion_tf.errors import UsageError, exit_on_usage_error
from transfusion_tf.training import rundir

flags.DEFINE_string("run_a", None, "First run directory (holds config.json and weights/).")
flags.DEFINE_string("run_b", None, "Second run directory (may equal --run_a with another --which_b).")
flags.DEFINE_enum("which_a", "final", ["final", "step0"], "Weights of run_a: after training or at init.")
flags.DEFINE_enum("which_b", "final", ["final", "step0"], "Weights of run_b: after training or at init.")
flags.DEFINE_list("stages", None, "Stages to compare, e.g. conv1,block1 (default: all stages of the model).")
flags.DEFINE_enum("conv_mode", "positions", list(activations.CONV_MODES),
                  "Conv stages: each sampled spatial position is a datapoint (positions) or the spatial mean "
                  "(avgpool).")
flags.DEFINE_integer("max_positions", activations.DEFAULT_MAX_POSITIONS,
                     "positions mode: spatial positions sampled per image (0: all).")
flags.DEFINE_float("min_datapoints_per_neuron", activations.DEFAULT_MIN_DATAPOINTS_PER_NEURON,
                   "Raise positions per image above --max_positions until each stage has this many datapoints per "
                   "neuron (0: --max_positions rules).")
flags.DEFINE_integer("num_images", 500, "Images to run through both models (the first of the split).")
flags.DEFINE_integer("compare_batch_size", 32, "Batch size for the forward passes.")
flags.DEFINE_string("compare_split", "validation", "Split of run_a's dataset to read images from.")
flags.DEFINE_integer("compare_seed", 0, "Seed of the position sampling.")
flags.DEFINE_float("svcca_keep_variance", 0.99, "SVCCA keeps the top directions explaining this variance.")
flags.DEFINE_boolean("stage_matrix", True, "Also compare every stage of run_a with every stage of run_b.")
flags.DEFINE_string("compare_out", None, "Output JSON path; the PNG goes beside it with the .png extension.")
FLAGS = flags.FLAGS


@exit_on_usage_error
def main(argv):
  del argv  # run_app refuses positional arguments.
  if not FLAGS.compare_out:
    raise UsageError("--compare_out is required (the JSON file to write)")
  with warnings.catch_warnings():
    # One summary line below instead of one cca warning per compared pair.
    warnings.simplefilter("ignore", cca.FewDatapointsWarning)
    result = compare_runs(FLAGS.run_a, FLAGS.run_b, FLAGS.which_a, FLAGS.which_b, FLAGS.stages, FLAGS.conv_mode,
                          FLAGS.max_positions, FLAGS.num_images, FLAGS.compare_batch_size, FLAGS.compare_split,
                          FLAGS.compare_seed, FLAGS.svcca_keep_variance, FLAGS.stage_matrix,
                          min_datapoints_per_neuron=FLAGS.min_datapoints_per_neuron)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.compare_out)), exist_ok=True)
  png = os.path.splitext(FLAGS.compare_out)[0] + ".png"
  result["png"] = png
  representation.figure_compare(result, png, title=f"{result['label_a']} vs {result['label_b']}")
  rundir.atomic_write_json(FLAGS.compare_out, result)
  for s, r in result["per_stage"].items():
    pw = "n/a" if r["pwcca"] is None else f"{r['pwcca']:.3f}"
    print(f"{s:<8} svcca {r['svcca']:.3f}  pwcca {pw}  cka {r['cka']:.3f}  ({r['mode']}, {r['datapoints']} "
          f"datapoints, {r['neurons'][0]}/{r['neurons'][1]} neurons)", flush=True)
  cells = result["matrix"]["cells"] if "matrix" in result else list(result["per_stage"].values())
  few = sum(bool(c["few_datapoints"]) for c in cells)
  if few:
    print(f"warning: {few} of {len(cells)} comparisons have fewer than {cca.MIN_DATAPOINTS_PER_NEURON} datapoints "
          "per neuron, which biases CCA towards 1 (few_datapoints in the JSON, ! in the picture); raise "
          "--num_images or --max_positions", file=sys.stderr, flush=True)
  print(f"written to {FLAGS.compare_out} and {png}", flush=True)


def run():
  run_app(main)


if __name__ == "__main__":
  run()
