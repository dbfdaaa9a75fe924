"""Run directories: the on-disk contract between training, analysis and the study.

A run directory holds:
  flags.txt                  the resolved flags (one --flag=value per line)
  config.json                what is needed to rebuild the model and its data (see `save_config`)
  checkpoints/               tf.train.CheckpointManager files (model, optimiser, step, RNG, input position)
  weights/step0.weights.h5   the model right after initialisation (F3 needs it)
  weights/final.weights.h5   the model at the last step
  tb/                        TensorBoard logs
  curve.json                 [{"step", "seconds", <metric>...}, ...], one entry per evaluation
  result.json                written last and atomically: a run without it is unfinished
"""
import json
import os

from transfusion_tf import files
from transfusion_tf.errors import UsageError


def atomic_write_json(path, obj):
  """Writes `obj` as JSON to `path` via a temp file and rename, so readers never see half a file."""
  files.atomic_write_json(path, obj)  # Keys keep their order: readers take stage orders from them.


def read_json(path, default=None):
  """Reads JSON from `path`; returns `default` when the file does not exist."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def save_config(run_dir, config):
  """Writes config.json. Keys used downstream: model, num_outputs, image_size, channels, model_kwargs (dict for
  build_model), dataset, data_kwargs (dict for data.pipeline.build_data), init, weights, seed, preprocessing."""
  os.makedirs(run_dir, exist_ok=True)
  atomic_write_json(os.path.join(run_dir, "config.json"), config)


def load_config(run_dir):
  """Reads config.json of `run_dir`, or raises UsageError when it is not a run directory."""
  cfg = read_json(os.path.join(run_dir, "config.json"))
  if cfg is None:
    raise UsageError(f"{run_dir} is not a run directory (no config.json); train one with transfusion-train")
  return cfg


def weights_path(run_dir, which):
  """Path of the exported weights `which` ("step0" or "final") of a run."""
  return os.path.join(run_dir, "weights", f"{which}.weights.h5")


def save_model_weights(model, run_dir, which, **attrs):
  """Exports `model` to weights/<which>.weights.h5 (layer-named, atomically)."""
  from transfusion_tf.models import save_weight_file
  os.makedirs(os.path.join(run_dir, "weights"), exist_ok=True)
  return save_weight_file(model, weights_path(run_dir, which), **attrs)


def build_from_config(config, weights_file=None):
  """Builds the model a config describes; with `weights_file`, loads every layer of it, head included."""
  from transfusion_tf import models
  from transfusion_tf.models import weights as weights_lib
  from transfusion_tf.models.init import copy_weights
  size = int(config["image_size"])
  model = models.build_model(config["model"], int(config["num_outputs"]), (size, size, int(config["channels"])),
                             initialize_weights=weights_file is None, **(config.get("model_kwargs") or {}))
  if weights_file:
    src = weights_lib.read_weight_file(weights_file)
    copy_weights(model, weights_lib.match_layers(model, src, skip=()))
  return model


def load_run_model(run_dir, which="final"):
  """Rebuilds the model of `run_dir` with its `which` ("step0" or "final") weights. Returns (model, config)."""
  config = load_config(run_dir)
  path = weights_path(run_dir, which)
  if not os.path.exists(path):
    raise UsageError(f"{path} does not exist: the run in {run_dir} has not written its {which} weights yet")
  return build_from_config(config, path), config
