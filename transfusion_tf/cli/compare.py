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

from transfusion_tf import models
from transfusion_tf.analysis import activations, cca, representation
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
flags.DEFINE_integer("num_images", 500, "Images to run through both models (the first of the split).")
flags.DEFINE_integer("compare_batch_size", 32, "Batch size for the forward passes.")
flags.DEFINE_string("compare_split", "validation", "Split of run_a's dataset to read images from.")
flags.DEFINE_integer("compare_seed", 0, "Seed of the position sampling.")
flags.DEFINE_float("svcca_keep_variance", 0.99, "SVCCA keeps the top directions explaining this variance.")
flags.DEFINE_boolean("stage_matrix", True, "Also compare every stage of run_a with every stage of run_b.")
flags.DEFINE_string("compare_out", None, "Output JSON path; the PNG goes beside it with the .png extension.")
FLAGS = flags.FLAGS


def _check_runs(run_a, run_b):
  for flag, run in (("--run_a", run_a), ("--run_b", run_b)):
    if not run:
      raise UsageError(f"{flag} is required (a run directory written by transfusion-train)")
    if not os.path.isdir(run):
      raise UsageError(f"{flag}={run} does not exist or is not a directory")
  config_a, config_b = rundir.load_config(run_a), rundir.load_config(run_b)
  if config_a["model"] != config_b["model"]:
    raise UsageError(f"mismatched architectures: {run_a} is a {config_a['model']}, {run_b} a {config_b['model']}")
  for key in ("image_size", "channels"):
    if int(config_a[key]) != int(config_b[key]):
      raise UsageError(f"the runs differ in {key} ({config_a[key]} vs {config_b[key]}); both must see the same "
                       "images")
  mode_a, mode_b = (models.preprocessing_mode(c["model"], c.get("weights"), c.get("preprocessing"))
                    for c in (config_a, config_b))
  if mode_a != mode_b:
    raise UsageError(f"the runs expect different preprocessing ({mode_a} vs {mode_b}); compare runs that read "
                     "images the same way")
  return config_a, config_b


def eval_batches(config, num_images, batch_size, split="validation"):
  """Yields the first `num_images` images of `split` of the run's dataset, preprocessed for its model, in batches.

  Uses `data.pipeline.build_data` with the run's config; without the pipeline module it falls back to the embedded
  synthetic generator plus `models.preprocess`.
  """
  if num_images < 1:
    raise UsageError(f"--num_images must be at least 1, got {num_images}")
  if batch_size < 1:
    raise UsageError(f"--compare_batch_size must be at least 1, got {batch_size}")
  try:
    from transfusion_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  except ModuleNotFoundError as e:
    if e.name != "transfusion_tf.data.pipeline":
      raise
    yield from _synthetic_batches(config, num_images, batch_size)
    return
  kwargs = dict(config.get("data_kwargs") or {})
  kwargs.setdefault("channels", int(config.get("channels", 3)))
  if config.get("preprocessing"):
    kwargs.setdefault("preprocessing", config["preprocessing"])
  data = pipeline.build_data(config["dataset"], int(config["image_size"]), batch_size, config["model"],
                             weights=config.get("weights"), seed=int(config.get("seed", 0)), **kwargs)
  left = int(num_images)
  for batch in data.eval(split):
    if left <= 0:
      break
    images = activations.batch_images(batch)[:left]
    left -= int(images.shape[0])
    yield images


def _synthetic_batches(config, num_images, batch_size):
  from transfusion_tf.data import synthetic, tasks  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  task = tasks.DATASETS.get(config["dataset"])
  if task is None or not str(config["dataset"]).startswith("synthetic_"):
    raise UsageError(f"cannot read dataset {config['dataset']!r} without transfusion_tf.data.pipeline")
  images, _ = synthetic.generate(task, int(num_images), int(config["image_size"]), 1)
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    images = images[..., None]
  channels = int(config.get("channels", 3))
  if images.shape[-1] != channels:
    images = np.repeat(images, channels, axis=-1) if images.shape[-1] == 1 else images.mean(-1, keepdims=True)
  mode = models.preprocessing_mode(config["model"], config.get("weights"), config.get("preprocessing"))
  images = models.preprocess(images, mode)
  for start in range(0, len(images), batch_size):
    yield images[start:start + batch_size]


def compare_runs(run_a, run_b, which_a="final", which_b="final", stages=None, conv_mode="positions",
                 max_positions=activations.DEFAULT_MAX_POSITIONS, num_images=500, batch_size=32,
                 split="validation", seed=0, keep_variance=0.99, stage_matrix=True):
  """Compares two runs; returns the JSON-ready dict `transfusion-compare` writes.

  Keys: run_a, run_b, which_a, which_b, model, stages, conv_mode, max_positions, num_images (images actually
  read), split, dataset, per_stage {stage: result} (see `activations.compare_pairs`), and with stage_matrix,
  matrix {"stages_a", "stages_b", "svcca", "pwcca", "cka", "mode", "cells"}.
  """
  activations.check_conv_mode(conv_mode)
  config_a, _ = _check_runs(run_a, run_b)
  model_a, _ = rundir.load_run_model(run_a, which_a)
  model_b, _ = rundir.load_run_model(run_b, which_b)
  all_stages = models.stage_names(model_a)
  stages = list(stages) if stages else all_stages
  for s in stages:
    if s not in all_stages:
      raise UsageError(f"--stages: {s!r} is not a stage of {config_a['model']}; stages are {', '.join(all_stages)}")
  batches = eval_batches(config_a, num_images, batch_size, split)
  common = dict(conv_mode=conv_mode, max_positions=max_positions, seed=seed, keep_variance=keep_variance)
  out = {"run_a": run_a, "run_b": run_b, "which_a": which_a, "which_b": which_b, "model": config_a["model"],
         "stages": stages, "conv_mode": conv_mode, "max_positions": max_positions, "split": split,
         "dataset": config_a["dataset"], "label_a": f"{os.path.basename(os.path.normpath(run_a))} ({which_a})",
         "label_b": f"{os.path.basename(os.path.normpath(run_b))} ({which_b})"}
  if stage_matrix:
    matrix = activations.similarity_matrix(model_a, model_b, stages, stages, batches, **common)
    n = len(stages)
    per_stage = {s: matrix["cells"][i * n + i] for i, s in enumerate(stages)}
    out["matrix"] = matrix
  else:
    per_stage = activations.compare_models(model_a, model_b, stages, batches, **common)
  out["per_stage"] = per_stage
  out["num_images"] = next(iter(per_stage.values()))["images"]
  return out


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
                          FLAGS.compare_seed, FLAGS.svcca_keep_variance, FLAGS.stage_matrix)
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
