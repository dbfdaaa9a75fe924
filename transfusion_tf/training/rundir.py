"""Run directories: the on-disk contract between training, analysis and the study.

A run directory holds:
  flags.txt                  the resolved flags (one --flag=value per line)
  config.json                what is needed to rebuild the model and its data (see `save_config`)
  checkpoints/               tf.train.CheckpointManager files (model, optimiser, step, RNG, input position)
  weights/step0.weights.h5   the model right after initialisation (F3 needs it)
  weights/final.weights.h5   the model at the last step
  weights/best.weights.h5    the model at the selected step (best validation primary metric, ties to the earlier
                             step); its "step" attribute is that step
  tb/                        TensorBoard logs
  curve.json                 [{"step", "seconds", <metric>...}, ...], one entry per evaluation (validation)
  test_predictions.npz       the selected model's test-split AUC inputs and, where the data has them, the test images'
                             patients (see `save_test_predictions`, `load_test_patients`)
  progress.json              while it trains: {"step", "total", "seconds"}, rewritten every few seconds and removed
                             with result.json's writing; the study's progress line reads it (see `write_progress`)
  result.json                written last and atomically: a run without it is unfinished
Beside it, while a process trains into it, `DIR.lock` (training/locks.py); while an --overwrite replaces a run,
the old one waits in `DIR.previous` until the new run's first checkpoint.
"""
import io
import json
import os

import numpy as np

from transfusion_tf import files
from transfusion_tf.errors import UsageError


def atomic_write_json(path, obj):
  """Writes `obj` as JSON to `path` via a temp file and rename, so readers never see half a file."""
  files.atomic_write_json(path, obj)  # Keys keep their order: readers take stage orders from them.


class JSONDecodeError(UsageError, ValueError):
  """read_json's error for a file that is not valid JSON (truncated, emptied, overwritten). A UsageError, so a caller
  that cannot recover ends with one line naming the file, and a ValueError, so the callers that recover (a damaged
  file makes a run unfinished, a damaged cache is rebuilt) catch it as before; named as json's own error, which
  their messages name."""


def read_json(path, default=None):
  """Reads JSON from `path`; returns `default` when the file does not exist. Raises JSONDecodeError (one line naming
  the file) when it is not valid JSON."""
  if not os.path.exists(path):
    return default
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except ValueError as e:  # json.JSONDecodeError, or UnicodeDecodeError for binary garbage.
    raise JSONDecodeError(f"{path} is damaged: not valid JSON ({' '.join(str(e).split())[:120]})") from None


def read_result(run_dir):
  """(result.json of `run_dir` as a finished run's, or None; one line naming the file when it exists but cannot make
  the run finished: not valid JSON, empty, or without a selected checkpoint). The one check of a run's result that
  the trainer, the study and the report share; a missing file is (None, None)."""
  path = os.path.join(run_dir, "result.json")
  try:
    res = read_json(path)
  except (ValueError, OSError) as e:
    return None, str(e) if isinstance(e, JSONDecodeError) else f"{path} is unreadable ({e.__class__.__name__})"
  if res is not None and not (isinstance(res, dict) and isinstance(res.get("selected"), dict)):
    return None, f"{path} is damaged: it holds no selected checkpoint"
  return res, None


PROGRESS = "progress.json"


def write_progress(run_dir, step, total, seconds):
  """Records where the run training into `run_dir` is: step of total (ints), seconds trained (float, across
  resumes). Atomic, so a reader in another process (the study's progress line) never sees half of it."""
  atomic_write_json(os.path.join(run_dir, PROGRESS), {"step": int(step), "total": int(total),
                                                      "seconds": round(float(seconds), 2)})


def read_progress(run_dir):
  """The run's last `write_progress` record {"step", "total", "seconds"}, or None when there is none or it is not
  one (the file is a hint for the progress line, never an input to a result)."""
  try:
    rec = read_json(os.path.join(run_dir, PROGRESS))
  except (ValueError, OSError):
    return None
  if not (isinstance(rec, dict) and isinstance(rec.get("step"), int) and isinstance(rec.get("total"), int)):
    return None
  return rec


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


WHICH = ("final", "best", "step0")
TEST_PREDICTIONS = "test_predictions.npz"
PATIENT_KEY = "patient"  # test_predictions.npz: int64 (N,) patient codes, only where the data names patients.


def weights_path(run_dir, which):
  """Path of the exported weights `which` ("step0", "best" or "final") of a run."""
  return os.path.join(run_dir, "weights", f"{which}.weights.h5")


def save_model_weights(model, run_dir, which, **attrs):
  """Exports `model` to weights/<which>.weights.h5 (layer-named, atomically)."""
  from transfusion_tf.models import save_weight_file
  os.makedirs(os.path.join(run_dir, "weights"), exist_ok=True)
  return save_weight_file(model, weights_path(run_dir, which), **attrs)


def build_from_config(config, weights_file=None):
  """Builds the model a config describes; with `weights_file`, loads every layer of it, head included."""
  from transfusion_tf import models
  from transfusion_tf.models.init import copy_weights
  size = int(config["image_size"])
  model = models.build_model(config["model"], int(config["num_outputs"]), (size, size, int(config["channels"])),
                             initialize_weights=weights_file is None, **(config.get("model_kwargs") or {}))
  if weights_file:
    copy_weights(model, _matched_layers(model, weights_file))
  return model


def architecture_key(config):
  """What build_from_config builds a run's model from: two runs with equal keys have models of one shape."""
  return json.dumps({k: config.get(k) for k in ("model", "num_outputs", "image_size", "channels", "model_kwargs")},
                    sort_keys=True, default=str)


def _matched_layers(model, weights_file):
  """{layer name: arrays} of `weights_file` for every weighted layer of `model`, head included (a UsageError naming
  the layer when the file does not fit)."""
  from transfusion_tf.models import weights as weights_lib
  return weights_lib.match_layers(model, weights_lib.read_weight_file(weights_file), skip=())


def _written_weights(run_dir, which):
  """Path of `run_dir`'s `which` weights, or a UsageError when the run has not written them."""
  path = weights_path(run_dir, which)
  if not os.path.exists(path):
    raise UsageError(f"{path} does not exist: the run in {run_dir} has not written its {which} weights yet")
  return path


def load_run_model(run_dir, which="final"):
  """Rebuilds the model of `run_dir` with its `which` ("step0", "best" or "final") weights. Returns (model,
  config)."""
  config = load_config(run_dir)
  return build_from_config(config, _written_weights(run_dir, which)), config


def load_weights_into(model, run_dir, which="final"):
  """Replaces every weight of `model`, built from the config of `run_dir` (or one of the same architecture), with
  that run's `which` weights. A file that does not fit the model is a UsageError, as in build_from_config
  (weights.match_layers), raised before any weight is set; False, with `model` untouched, if the match still left
  a weighted layer unset (then build the model afresh: load_run_model)."""
  from transfusion_tf.models.init import copy_weights
  matched = _matched_layers(model, _written_weights(run_dir, which))
  if any(l.name not in matched for l in model.layers if l.weights):
    return False
  copy_weights(model, matched)
  return True


def atomic_write_npz(path, arrays):
  """Writes {name: np.ndarray} to `path` as an uncompressed .npz via a temp file and rename."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(buf.getvalue())
  os.replace(tmp, path)


def save_test_predictions(run_dir, auc_inputs, auc_indices, num_examples, patients=None):
  """Writes test_predictions.npz: for every AUC metric key k (auc_referable; auc_<pathology>),
  "k.scores" float64 (N_k,), "k.labels" int8 (N_k,) in {0, 1} and "k.index" int64 (N_k,) (positions in the test
  split's eval order, masked examples dropped), plus "index" int64 (N,) = 0..N-1, the test split's eval order, and,
  only where the data names patients, "patient" int64 (N,): each test image's patient code (data.Data.patients),
  for all N images; key k's images are patient[k.index] (`load_test_patients(run_dir, key=k)`).

  auc_inputs: {key: (scores, labels)} from metrics.auc_inputs; auc_indices: {key: indices} from
  metrics.auc_indices; patients: None or (N,) ints. Returns the path.
  """
  n = int(num_examples)
  arrays = {"index": np.arange(n, dtype=np.int64)}
  if patients is not None:
    patients = np.asarray(patients)
    if patients.shape != (n,) or patients.dtype.kind not in "iu":
      raise ValueError(f"patients must be ints (N,) = ({n},), got {patients.dtype} {patients.shape}")
    arrays[PATIENT_KEY] = patients.astype(np.int64)
  for key, (scores, labels) in auc_inputs.items():
    arrays[f"{key}.scores"] = np.asarray(scores, np.float64)
    arrays[f"{key}.labels"] = np.asarray(labels, np.int8)
    arrays[f"{key}.index"] = np.asarray(auc_indices[key], np.int64)
  path = os.path.join(run_dir, TEST_PREDICTIONS)
  atomic_write_npz(path, arrays)
  return path


def load_test_predictions(run_dir):
  """{metric key: (scores float64 (N_k,), labels int8 (N_k,))} from `run_dir`/test_predictions.npz; the inputs of
  the test AUCs in result.json["selected"]["test"] (roc_auc(labels, scores) reproduces them exactly).
  Raises UsageError when the run has none (unfinished, or trained before the test protocol)."""
  path = os.path.join(run_dir, TEST_PREDICTIONS)
  if not os.path.exists(path):
    raise UsageError(f"{path} does not exist: the run in {run_dir} is unfinished or predates the test protocol")
  with np.load(path) as z:
    keys = sorted({name[:-len(".scores")] for name in z.files if name.endswith(".scores")})
    return {k: (z[f"{k}.scores"], z[f"{k}.labels"]) for k in keys}


def load_test_indices(run_dir):
  """(N, {metric key: int64 (N_k,) or None}) from `run_dir`/test_predictions.npz: the test split's image count (None
  when the file does not say) and, per metric, its images' positions in eval order ("k.index"), which align the
  labels of one image (auc_mean's covariance needs them). A file without "k.index" but with "index" gives 0..N-1
  for a key that kept all N images (nothing was dropped) and None for one that did not: its images cannot be
  aligned. Raises UsageError when the run has no test_predictions.npz."""
  path = os.path.join(run_dir, TEST_PREDICTIONS)
  if not os.path.exists(path):
    raise UsageError(f"{path} does not exist: the run in {run_dir} is unfinished or predates the test protocol")
  with np.load(path) as z:
    n = int(z["index"].size) if "index" in z.files else None
    out = {}
    for key in sorted(name[:-len(".scores")] for name in z.files if name.endswith(".scores")):
      if f"{key}.index" in z.files:
        out[key] = z[f"{key}.index"].astype(np.int64)
      elif n is not None and z[f"{key}.scores"].size == n:
        out[key] = np.arange(n, dtype=np.int64)
      else:
        out[key] = None
    return n, out


def load_test_patients(run_dir, key=None):
  """The test images' patient codes from `run_dir`/test_predictions.npz: int64 (N,) in eval order (all images), or,
  with `key` (e.g. "auc_edema"), int64 (N_k,) aligned with load_test_predictions(run_dir)[key], i.e. patient[k.index]
  (CheXpert's per-pathology arrays drop masked images). None when the file has no patients (data without patient
  ids, e.g. APTOS, or a run from before they were saved): treat each image as its own cluster then.
  Raises UsageError when the run has no test_predictions.npz, or `key` is not one of its metrics."""
  path = os.path.join(run_dir, TEST_PREDICTIONS)
  if not os.path.exists(path):
    raise UsageError(f"{path} does not exist: the run in {run_dir} is unfinished or predates the test protocol")
  with np.load(path) as z:
    if key is not None and f"{key}.scores" not in z.files:
      known = sorted(name[:-len(".scores")] for name in z.files if name.endswith(".scores"))
      raise UsageError(f"{path} has no metric {key!r}; it has {', '.join(known) or 'none'}")
    if PATIENT_KEY not in z.files:
      return None
    patients = z[PATIENT_KEY].astype(np.int64)
    if key is None:
      return patients
    return patients[z[f"{key}.index"]]


def check_writable_dir(path, flag):
  """Raises UsageError (one line naming `flag`) unless `path` can be a directory we write into: it, or its nearest
  existing ancestor, is a writable directory, and no file stands on the way. Creates nothing."""
  path = os.path.abspath(os.path.expanduser(str(path)))
  probe = path
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    what = "is an existing file" if probe == path else f"lies under {probe}, which is a file"
    raise UsageError(f"{flag}={path} {what}, not a directory; choose another {flag}")
  if not os.access(probe, os.W_OK | os.X_OK):
    what = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
    raise UsageError(f"{flag}={path} {what}; choose another {flag} or fix its permissions")
  return path
