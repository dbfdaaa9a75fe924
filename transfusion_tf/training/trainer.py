"""The trainer: one model, one task, one init scheme, one seed, into one run directory (see rundir.py).

A custom tf.distribute loop (Keras 3's `fit` fails under MultiWorkerMirroredStrategy): the dataset is distributed
with `experimental_distribute_dataset` (read as it is on one CPU: `strategy.distribute_dataset`), each step runs
`strategy.run` inside one traced `tf.function`, and the per-replica loss is scaled by the global batch. Evaluation
gathers every logit of the split and computes exact metrics in numpy. Checkpoints hold model, optimiser, step and
elapsed time; the input position is the step itself, because the pipeline's order and augmentation are a pure
function of (seed, example index).

Test protocol. Each run picks its checkpoint on validation: the best validation primary metric, ties going to the
earlier step (SELECTION_RULE). When an evaluation strictly improves on the best so far, the model is exported to
weights/best.weights.h5 (attribute "step") right after that step's checkpoint is saved; a resume re-derives the
best from curve.json and re-exports it when a kill fell between the two. At the end the best weights are loaded,
the test split is scored once, and result.json["selected"] plus test_predictions.npz record it.

Cost. result.json["cost"] records the model's parameters and arithmetic per image at the run's image size
(models/cost.py: multiply-accumulates of the conv and dense layers, and FLOPs = 2 x those), and two throughputs
measured on this machine as a by-product of work the run does anyway, so they change no result: training images/s
over this process's training steps (the first left out: it traces the step; evaluations and checkpoints left out)
and inference images/s over the test scoring's forward passes (the first batch left out for the same reason; the
input pipeline left out). Timings vary from run to run and machine to machine; nothing compares them exactly.

Safety. A run directory is locked (training/locks.py) by the process training into it; another process finding
a live lock skips it. Every input (config, weights, data) is checked before an --overwrite touches the old run,
which is moved to DIR.previous and deleted once the new run has written its first checkpoint (put back if the new
run fails before that). A damaged newest checkpoint falls back to the previous one (two are kept). A full disk
(ResourceExhaustedError from TensorFlow, OSError from h5py) is re-raised as OSError(ENOSPC, ..., run folder), and
interrupted_line() says where a Ctrl-C or SIGTERM stopped: cli/common.py turns both into one line.
"""
import contextlib
import dataclasses
import errno
import json
import math
import os
import platform
import re
import shutil
import sys
import time

import keras
import h5py
import numpy as np
import tensorflow as tf

from transfusion_tf import models
from transfusion_tf.data import pipeline
from transfusion_tf.errors import UsageError
from transfusion_tf.models import cost as cost_lib
from transfusion_tf.models import init as init_lib
from transfusion_tf.models import weights as weights_lib
from transfusion_tf.training import metrics as metrics_lib
from transfusion_tf.training import locks
from transfusion_tf.training import plateau, rundir, strategy as strategy_lib, summaries

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "step")
# How a run's checkpoint is selected; {split} and {metric} are the eval split and the task's primary metric.
SELECTION_RULE = "best {split} {metric}, ties to the earlier step"
# Config keys that do not change what is trained: a resumed run may differ in these.
_NON_SEMANTIC = ("strategy", "jit", "log_every_seconds")
# The run this process is training, for the one line a signal ends it with (interrupted_line): {"run_dir", "step",
# "checkpoint" (step of the last checkpoint; None before the first)}; empty between runs.
_now_training = {}


@dataclasses.dataclass
class TrainConfig:
  """Everything that defines a training run. `batch_size` is per replica; the global batch is
  batch_size x num_replicas_in_sync. `convergence_auc` is the threshold for steps-to-threshold (None: not
  measured). plateau_patience / plateau_min_delta / min_train_steps: the plateau stop (training/plateau.py; None:
  off). model_kwargs go to build_model, data_kwargs to data.pipeline.build_data."""
  model: str = "cbr_tiny"
  dataset: str = "synthetic_retina"
  image_size: int = 64
  init: str = "random"
  weights: str = None
  seed: int = 0
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_schedule: str = "cosine"
  warmup_steps: int = 0
  momentum: float = 0.9
  weight_decay: float = 0.0
  batch_size: int = 32
  train_steps: int = 1000
  eval_every: int = 100
  eval_split: str = "validation"
  # The plateau stop (training/plateau.py): None = off, every run trains to train_steps (its budget).
  plateau_patience: int = None
  plateau_min_delta: float = None
  min_train_steps: int = None
  convergence_auc: float = None
  strategy: str = "auto"
  # False (float32), True (mixed_float16 with loss scaling) or "bfloat16" (mixed_bfloat16: bfloat16 has float32's
  # exponent range, so no loss scaling). A value, not a new field, so runs recorded before bfloat16 keep matching.
  mixed_precision: object = False
  jit: bool = False
  gabor_frequency: str = "low"
  meanvar_bn: str = "identity"
  log_every_seconds: float = 0.0
  model_kwargs: dict = dataclasses.field(default_factory=dict)
  data_kwargs: dict = dataclasses.field(default_factory=dict)

  def to_dict(self):
    return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def precision_policy(mixed_precision):
  """The Keras global policy of a TrainConfig.mixed_precision value: float32, mixed_float16 or mixed_bfloat16."""
  if mixed_precision is True:
    return "mixed_float16"
  if mixed_precision == "bfloat16":
    return "mixed_bfloat16"
  if mixed_precision is False or mixed_precision is None:
    return "float32"
  raise UsageError(f"mixed_precision={mixed_precision!r} must be False, True (float16) or 'bfloat16'")


def validate(cfg):
  """Raises UsageError for mistakes that can be seen before any data is read or any file written."""
  precision_policy(cfg.mixed_precision)
  models.check_model_name(cfg.model)
  base, _ = init_lib.parse_scheme(cfg.init)
  if base in init_lib.NEEDS_SOURCE and not cfg.weights:
    raise UsageError(f"--init={cfg.init} needs source weights: pass --weights=PATH (e.g. written by "
                     "transfusion-pretrain) or --weights=imagenet")
  if cfg.image_size < models.MIN_SIZE[cfg.model]:
    raise UsageError(f"--image_size={cfg.image_size} is below {cfg.model}'s minimum of "
                     f"{models.MIN_SIZE[cfg.model]} px")
  if cfg.optimizer not in OPTIMIZERS:
    raise UsageError(f"--optimizer={cfg.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
  if cfg.lr_schedule not in LR_SCHEDULES:
    raise UsageError(f"--lr_schedule={cfg.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
  for name in ("train_steps", "eval_every", "batch_size"):
    if getattr(cfg, name) <= 0:
      raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
  if not (math.isfinite(cfg.learning_rate) and cfg.learning_rate > 0):
    raise UsageError(f"--learning_rate={cfg.learning_rate} must be a positive finite number")
  if cfg.plateau_patience is not None:
    if cfg.plateau_patience < 1:
      raise UsageError(f"--plateau_patience={cfg.plateau_patience} must be at least 1 evaluation (or unset: no stop)")
    if cfg.plateau_min_delta is None or not (math.isfinite(cfg.plateau_min_delta) and cfg.plateau_min_delta >= 0):
      raise UsageError(f"--plateau_min_delta={cfg.plateau_min_delta} must be a finite number >= 0")
    if cfg.strategy == "multi_worker":
      raise UsageError("--plateau_patience is not supported with --strategy=multi_worker (workers decide apart)")
  if cfg.min_train_steps is not None and not 0 <= cfg.min_train_steps <= cfg.train_steps:
    raise UsageError(f"--min_train_steps={cfg.min_train_steps} must lie in [0, --train_steps={cfg.train_steps}]")
  if cfg.eval_split not in ("validation", "train"):
    raise UsageError(f"--eval_split={cfg.eval_split!r}: the checkpoint is selected on this split and the test split "
                     "is kept for scoring the selected one; use validation (or train)")
  if cfg.weights and cfg.weights != "imagenet" and not os.path.exists(os.path.expanduser(cfg.weights)):
    raise UsageError(f"--weights file not found: {cfg.weights}")


def _semantic(train_cfg):
  return {k: v for k, v in train_cfg.items() if k not in _NON_SEMANTIC}


def _same_file(a, b):
  """Whether weights values `a` and `b` name one file (./s/w.h5 and /abs/s/w.h5 are the same source)."""
  if not (isinstance(a, str) and isinstance(b, str)) or "imagenet" in (a, b):
    return False
  return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def train_config_differences(recorded, cfg):
  """The keys in which `recorded` (a TrainConfig.to_dict(), as config.json "train" or result.json "flags" hold it)
  differs from the TrainConfig `cfg`, sorted; keys that do not change what is trained are ignored."""
  old, new = _semantic(recorded), _semantic(cfg.to_dict())
  return sorted(k for k in set(old) | set(new)
                if old.get(k) != new.get(k) and not (k == "weights" and _same_file(old.get(k), new.get(k))))


def recorded_configs(run_dir, skip_damaged=False):
  """The TrainConfig dicts `run_dir` records: config.json's "train" (written when training starts) and, once
  finished, result.json's "flags"; a missing file records nothing, and so does a damaged result.json (the run is
  unfinished: existing_result). A damaged config.json is a UsageError naming it, or records nothing with
  skip_damaged (the study, which leaves it to the trainer)."""
  out = []
  for name, key in (("config.json", "train"), ("result.json", "flags")):
    try:
      recorded = rundir.read_json(os.path.join(run_dir, name))
    except ValueError:
      if name == "config.json" and not skip_damaged:
        raise
      continue
    if name == "config.json" and isinstance(recorded, dict):
      out.append(recorded.get("train", {}))  # A config without its settings differs in all of them.
    elif isinstance(recorded, dict) and isinstance(recorded.get(key), dict):
      out.append(recorded[key])
  return out


def config_differences(run_dir, cfg):
  """The TrainConfig keys whose values recorded in `run_dir` (config.json, and result.json once finished) differ
  from `cfg` (sorted; [] when the run directory holds no run or the same run; keys that do not change what is
  trained are ignored)."""
  return sorted({k for recorded in recorded_configs(run_dir) for k in train_config_differences(recorded, cfg)})


def existing_result(run_dir, cfg, overwrite):
  """Checks `run_dir` against `cfg` without changing anything. Returns the finished result when the same run is
  already complete and is not to be replaced, else None.

  overwrite: False refuses a run directory holding a different configuration (UsageError); True replaces whatever
  it holds; "different" (the study's --overwrite) replaces only a different configuration, and keeps (or resumes)
  the same one.
  """
  previous = os.path.abspath(run_dir).rstrip(os.sep) + ".previous"
  if (overwrite is not True and os.path.lexists(previous) and locks.holder(run_dir) is None
      and not tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))):
    raise UsageError(f"{previous} holds the run an interrupted --overwrite was replacing (stopped before the new "
                     f"run's first checkpoint); to restore it: rm -rf {run_dir} && mv {previous} {run_dir}; to "
                     "replace it after all, re-run with --overwrite")
  if overwrite is True:
    return None
  diff = config_differences(run_dir, cfg)
  if diff and not overwrite:
    raise UsageError(f"--run_dir={run_dir} holds a run with a different configuration ({', '.join(diff)} "
                     "differ); pass --overwrite to replace it or choose another --run_dir")
  if diff:
    return None
  return _sound_result(run_dir)


def _sound_result(run_dir):
  """result.json of `run_dir` when it is a finished run's, else None: a damaged one (rundir.read_result) makes the run
  unfinished, so training resumes from its checkpoints and scores it again."""
  res, problem = rundir.read_result(run_dir)
  if problem:
    _print(f"warning: {problem}: the run counts as unfinished and resumes", flush=True)
  return res


def _replaces(run_dir, cfg, overwrite):
  """Whether a train(..., overwrite) call replaces what `run_dir` holds (see existing_result)."""
  return overwrite is True or (overwrite == "different" and bool(config_differences(run_dir, cfg)))


def _learning_rate(cfg):
  base = cfg.learning_rate
  if cfg.lr_schedule == "cosine":
    sched = keras.optimizers.schedules.CosineDecay(base if not cfg.warmup_steps else 0.0,
                                                   max(1, cfg.train_steps - cfg.warmup_steps), alpha=0.01,
                                                   warmup_target=base if cfg.warmup_steps else None,
                                                   warmup_steps=cfg.warmup_steps)
    return sched
  if cfg.lr_schedule == "step":
    bounds = [int(cfg.train_steps * 0.6), int(cfg.train_steps * 0.85)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [base, base * 0.1, base * 0.01])
  return base


def decayed_variables(model):
  """The variables weight decay applies to: the kernels of BatchNorm-followed convolutions only.

  Shrinking such a kernel leaves the function unchanged (BatchNorm divides the scale out) and only raises the
  effective learning rate; over training it erases the random-init component that gradients do not sustain (this is
  what lets a short source pretraining grow oriented conv1 filters). Decaying BatchNorm's gamma/beta, biases or the
  head would change the function itself, so they are left alone. The pairs are `models.init.conv_bn_pairs`, the
  ones `normalize_conv_scale` rescales when a pretraining is exported.
  """
  return [conv.kernel for conv, _ in init_lib.conv_bn_pairs(model) if conv.trainable]


def make_optimizer(cfg, model=None):
  """Builds the Keras optimiser (wrapped in a LossScaleOptimizer under mixed precision).

  --weight_decay is decoupled (AdamW, SGD) and, when `model` is given, applies to its BatchNorm-followed convolution
  kernels only (`decayed_variables`). Adam ignores it.
  """
  lr = _learning_rate(cfg)
  if cfg.optimizer == "adam":
    opt = keras.optimizers.Adam(lr)
  elif cfg.optimizer == "adamw":
    opt = keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay or 1e-4)
  else:
    opt = keras.optimizers.SGD(lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay or None)
  if model is not None and getattr(opt, "weight_decay", None):
    keep = {id(v) for v in decayed_variables(model)}
    opt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if id(v) not in keep])
  if cfg.mixed_precision is True:  # float16's narrow exponent needs loss scaling; bfloat16's does not.
    opt = keras.optimizers.LossScaleOptimizer(opt)
  return opt


def per_example_loss(task, labels, masks, logits):
  """Loss per example (B,) for `task`: softmax CE, sigmoid BCE (masked per label), or binary referable BCE."""
  logits = tf.cast(logits, tf.float32)
  if task.kind == "multilabel":
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32), logits=logits)
    return tf.reduce_sum(bce * masks, axis=1) / float(task.num_outputs)
  if task.kind == "grading" and task.binary_head:
    target = tf.cast(labels >= 2, tf.float32)
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits[:, 0]) * masks
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits) * masks


def device_description():
  """A short description of the devices training runs on, for result.json and reports."""
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    names = []
    for g in gpus:
      details = tf.config.experimental.get_device_details(g)
      names.append(details.get("device_name", g.name))
    return f"{len(gpus)} GPU(s): {', '.join(names)}"
  return f"CPU: {_cpu_name()}, {os.cpu_count()} cores, oneDNN {_onednn_state()}"


def _cpu_name():
  """The CPU model and its widest vector extension, e.g. "AMD EPYC (x86_64, AVX2)": a run's numbers depend on which
  kernels ran, and those on the instruction set. Linux reads /proc/cpuinfo; elsewhere platform's names."""
  name, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name in (platform.processor(), platform.machine()):
          name = value.strip()
        elif key.strip() == "flags" and not flags:
          flags = set(value.split())
  except OSError:
    pass
  isa = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
             None)
  return f"{name} ({', '.join(x for x in (platform.machine(), isa) if x)})"


def _onednn_state():
  """"on" or "off": whether TensorFlow's oneDNN kernels run (they change speed and the order of sums)."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return "on" if _pywrap_util_port.IsMklEnabled() else "off"
  except (ImportError, AttributeError):
    return "unknown"


def versions():
  """Package versions recorded in result.json."""
  import transfusion_tf
  return {"transfusion_tf": transfusion_tf.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
          "numpy": np.__version__, "python": platform.python_version()}


PROGRESS_FILE_SECONDS = 5.0  # How stale the study's progress line may find a run's step (rundir.PROGRESS).


def default_log_every():
  """Seconds between progress lines when --log_every_seconds is 0: 5 on a terminal, 30 in a log (a run's step line
  and the study's progress line alike)."""
  return 5.0 if sys.stdout.isatty() else 30.0


class _Progress:
  """A step/ETA line: every few seconds on a terminal, every 30 s (and at the end) in logs. With `run_dir`, also
  the run's progress file (rundir.write_progress) every PROGRESS_FILE_SECONDS, for the study's line; `seconds`
  gives the seconds trained so far (resumes included)."""

  def __init__(self, total, start, every, run_dir=None, seconds=None):
    self.total, self.start_step = total, start
    self.every = every or default_log_every()
    self.t0 = self.last = time.time()
    self.run_dir, self.seconds = run_dir, seconds
    self.last_file = -math.inf
    self._record(start, self.t0)

  def _record(self, step, now):
    if self.run_dir is None or now - self.last_file < PROGRESS_FILE_SECONDS:
      return
    self.last_file = now
    try:
      rundir.write_progress(self.run_dir, step, self.total, self.seconds() if self.seconds else 0.0)
    except OSError:
      pass  # Only the progress line reads it; a full disk is met by the next checkpoint, which says so.

  def update(self, step, loss, images_per_second, force=False):
    now = time.time()
    self._record(step, now)
    if not force and now - self.last < self.every:
      return
    self.last = now
    done = step - self.start_step
    eta = (now - self.t0) / done * (self.total - step) if done > 0 else float("nan")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    _print(f"step {step}/{self.total}  loss {loss:.4f}  {images_per_second:.1f} img/s  ETA {eta_s}", flush=True)


def predict_function(model, image_size, channels=3):
  """A traced float32 images (B, S, S, C) -> logits (B, outputs) function of `model` in inference mode.

  The batch dimension is None in its input signature, so one trace serves every batch size: an eval split whose
  size is not a multiple of the batch would otherwise retrace on its last, partial batch.
  """
  spec = tf.TensorSpec([None, int(image_size), int(image_size), int(channels)], tf.float32)
  return tf.function(lambda x: model(x, training=False), input_signature=[spec])


class Trainer:
  """Trains `cfg` into `run_dir`. Use `run()`; construction builds (and so validates) data, model and optimiser
  and writes nothing."""

  def __init__(self, cfg, run_dir, flags_text=None, export_attrs=None, tb_dir=None):
    self.cfg, self.run_dir = cfg, run_dir
    self.tb_dir = tb_dir or os.path.join(run_dir, "tb")
    self.flags_text, self.export_attrs = flags_text, dict(export_attrs or {})
    self.chief = strategy_lib.is_chief()
    keras.mixed_precision.set_global_policy(precision_policy(cfg.mixed_precision))
    self.strategy = strategy_lib.get_strategy(cfg.strategy)
    self.replicas = self.strategy.num_replicas_in_sync
    self.global_batch = cfg.batch_size * self.replicas
    self.data = pipeline.build_data(cfg.dataset, image_size=cfg.image_size, batch_size=self.global_batch,
                                    model_name=cfg.model, weights=cfg.weights, seed=cfg.seed, channels=3,
                                    **cfg.data_kwargs)
    self.task = self.data.task
    if not self.data.num_examples.get("test"):
      raise UsageError(f"{self.data.source_description} has no test split, which scores the selected checkpoint; "
                       "give it one (synthetic data: --num_test; a folder: test rows in its split column)")
    pipeline.check_classes(self.data)  # One class in a split: no AUC (nan in result.json); refuse before training.
    with self.strategy.scope():
      # `initialize` below sets every weight, so the model is built without its own (identical) random init.
      self.model = models.build_model(cfg.model, self.task.num_outputs, (cfg.image_size, cfg.image_size, 3),
                                      initialize_weights=False, **cfg.model_kwargs)
      self.init_info = models.initialize(self.model, cfg.init, source=cfg.weights, seed=cfg.seed,
                                         gabor_frequency=cfg.gabor_frequency, meanvar_bn=cfg.meanvar_bn)
      self.optimizer = make_optimizer(cfg, self.model)
      self.optimizer.build(self.model.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
    self.ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                    elapsed=self.elapsed)
    self.work_dir = run_dir if self.chief else os.path.join(run_dir, "_workers", str(_task_index()))
    self.manager = None  # Made by run(): an --overwrite moves the old run aside after construction.
    self._train_step = self._make_train_step()
    self._sync_stats = self._make_sync_stats() if self.replicas > 1 else None
    self._predict = predict_function(self.model, cfg.image_size, self.data.channels)
    self.cost = cost_lib.model_cost(self.model)
    self._train_timing = [0, 0.0]  # [images, seconds] of the timed training steps of this process.
    self._inference_timing = None  # (images, seconds) of the test scoring's timed forward passes.

  def _make_train_step(self):
    model, opt, task, strategy, gb = self.model, self.optimizer, self.task, self.strategy, self.global_batch
    mixed = isinstance(opt, keras.optimizers.LossScaleOptimizer)  # make_optimizer decides (float16 only).

    def grads_fn(images, labels, masks):
      with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.nn.compute_average_loss(per_example_loss(task, labels, masks, logits), global_batch_size=gb)
        scaled = opt.scale_loss(loss) if mixed else loss
      return loss, tape.gradient(scaled, model.trainable_variables)

    if self.cfg.jit:
      grads_fn = tf.function(grads_fn, jit_compile=True)

    def replica_step(images, labels, masks):
      loss, grads = grads_fn(images, labels, masks)
      opt.apply_gradients(zip(grads, model.trainable_variables))
      return loss

    @tf.function
    def train_step(iterator):
      per_replica = strategy.run(replica_step, args=next(iterator))
      return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step

  def _make_sync_stats(self):
    # BatchNorm moving statistics are updated from each replica's own batches and are not all-reduced like the
    # gradients, so replicas drift apart. Averaging them before each evaluation and checkpoint keeps every
    # worker's model identical and uses all replicas' batches for the estimate.
    strategy, stats = self.strategy, list(self.model.non_trainable_variables)

    @tf.function
    def sync():
      local = strategy.run(lambda: [tf.identity(v) for v in stats])
      for var, value in zip(stats, local):
        var.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))

    return sync

  def evaluate(self, split):
    """Returns exact metrics of the current model on `split`, over every example of it."""
    return evaluate_model(self._predict, self.data, split)

  def _write_config(self):
    cfg = self.cfg
    config = {"model": cfg.model, "num_outputs": self.task.num_outputs, "image_size": cfg.image_size,
              "channels": 3, "model_kwargs": cfg.model_kwargs, "dataset": cfg.dataset,
              "data_kwargs": cfg.data_kwargs, "init": cfg.init, "weights": cfg.weights, "seed": cfg.seed,
              "preprocessing": self.data.preprocessing,
              "task": self.task.name, "train": cfg.to_dict()}
    rundir.save_config(self.run_dir, config)
    if self.flags_text is not None:
      with open(os.path.join(self.run_dir, "flags.txt"), "w") as f:
        f.write(self.flags_text)

  def run(self, previous=None):
    """Trains to cfg.train_steps, resuming from the last checkpoint; returns the result dict.

    previous: a directory (the run an --overwrite replaces, moved aside) deleted once the first checkpoint is
    written.
    """
    self._previous = previous
    try:
      return self._run()
    except tf.errors.OpError as e:
      if no_space_left(e):  # TensorFlow reports a full disk (checkpoint, TensorBoard) as ResourceExhaustedError.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.work_dir) from None
      # An image that passed the up-front check but fails to decode in tf.data: one line naming the file.
      raise pipeline.as_usage_error(e) or e
    except OSError as e:
      if no_space_left(e) and (e.errno != errno.ENOSPC or not e.filename):  # h5py's says neither errno nor file.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.work_dir) from None
      raise
    finally:
      if not isinstance(sys.exc_info()[1], KeyboardInterrupt):  # Kept for the line an interrupt ends with.
        _now_training.clear()

  def _drop_previous(self):
    if self._previous and os.path.exists(self._previous):
      shutil.rmtree(self._previous)
    self._previous = None

  def _restore(self):
    """Restores the newest readable checkpoint; returns its path, None when there is none (a fresh run).

    A damaged newest checkpoint (a file cut short by a full disk or a copy) falls back to the one before it (the
    manager keeps 2), saying so in one line; its files are overwritten when training reaches its step again. When
    none can be read, a UsageError names the folder.
    """
    folder = os.path.join(self.work_dir, "checkpoints")
    # The manager's list, and any ckpt-N whose entry a damaged or lost `checkpoint` file no longer holds.
    found = {int(name[5:-6]): os.path.join(folder, name[:-6]) for name in tf.io.gfile.listdir(folder)
             if re.fullmatch(r"ckpt-\d+\.index", name)} if tf.io.gfile.isdir(folder) else {}
    found.update({int(re.search(r"(\d+)$", p).group(1)): p for p in self.manager.checkpoints})
    damaged = []
    for _, path in sorted(found.items(), reverse=True):
      try:
        self.ckpt.restore(path)
      except (tf.errors.OpError, IndexError, ValueError, OSError) as e:
        damaged.append((path, f"{e.__class__.__name__}: {' '.join(str(e).split())[:120]}"))
        continue
      if damaged:
        _print(f"warning: checkpoint {', '.join(p for p, _ in damaged)} is damaged ({damaged[0][1]}); resuming "
              f"from the previous one, {os.path.basename(path)} (step {int(self.step.numpy())})", flush=True)
      return path
    if damaged:
      why = "; ".join(f"{os.path.basename(p)}: {reason}" for p, reason in damaged)
      raise UsageError(f"no readable checkpoint in {folder} ({why}): retrain this run with --overwrite")
    return None

  def _run(self):
    cfg = self.cfg
    folder = os.path.join(self.work_dir, "checkpoints")
    try:
      self.manager = tf.train.CheckpointManager(self.ckpt, folder, max_to_keep=2)
    except ValueError as e:  # Its `checkpoint` file (the list of checkpoints) is damaged: set aside, rebuilt.
      state = os.path.join(folder, "checkpoint")
      os.replace(state, state + ".damaged")
      _print(f"warning: {state} is damaged ({' '.join(str(e).split())[:80]}); moved to checkpoint.damaged and "
            "the checkpoints found in the folder are tried instead", flush=True)
      self.manager = tf.train.CheckpointManager(self.ckpt, folder, max_to_keep=2)
    restored = self._restore()
    start = int(self.step.numpy())
    _now_training.update(run_dir=self.run_dir, step=start, checkpoint=start if restored else None,
                         checkpoint_dir=folder)
    curve_path = os.path.join(self.run_dir, "curve.json")
    curve = [p for p in (_read_curve(curve_path) if self.chief else []) if p["step"] <= start]
    if restored and self.chief:
      # The checkpoint selection and the plateau stop resume from curve.json: a resumed run whose curve lost
      # evaluations would select (and stop) differently from an uninterrupted one, silently.
      expected = set(range(0, start + 1, cfg.eval_every))
      lost = sorted(expected - {p["step"] for p in curve})
      if lost:
        raise UsageError(f"{curve_path} is missing the evaluations at steps {', '.join(map(str, lost[:5]))}"
                         f"{' ...' if len(lost) > 5 else ''} of the run resumed at step {start}: restore it, or "
                         "retrain with --overwrite")
    writer = summaries.Writer(self.tb_dir if self.chief else None)
    if restored:
      _print(f"resuming {self.run_dir} from step {start}", flush=True)
    else:
      if self.chief:
        self._write_config()
        rundir.save_model_weights(self.model, self.run_dir, "step0", **self._attrs())
        writer.hparams(cfg.to_dict(), self.run_dir)
        writer.images("train/examples", self.data.sample_images(4)[0], 0)
      _print(f"training {cfg.model} on {self.data.source_description}; init {cfg.init}"
            + (f" from {self.init_info['source']}" if self.init_info.get("source") else ""), flush=True)
    t_start, base_elapsed = time.time(), float(self.elapsed.numpy())

    def seconds():
      return base_elapsed + time.time() - t_start

    def do_eval(step):
      if self._sync_stats is not None:
        self._sync_stats()
      point = {"step": step, "seconds": round(seconds(), 3), **self.evaluate(cfg.eval_split)}
      curve[:] = [p for p in curve if p["step"] < step] + [point]
      if self.chief:
        rundir.atomic_write_json(curve_path, curve)
        prefix = "val" if cfg.eval_split == "validation" else cfg.eval_split
        writer.scalars({f"{prefix}/{k}": v for k, v in point.items() if k not in ("step", "seconds")}, step)
        writer.histogram("conv1/kernel", models.conv1_layer(self.model).weights[0], step)
      return point

    if not any(p["step"] == start for p in curve) and (start % cfg.eval_every == 0 or start == cfg.train_steps):
      do_eval(start)  # Also re-done after a kill between checkpoint and curve write.
    best, from_step = self._resume_best(curve, start) if self.chief else (None, 0)
    iterator = iter(strategy_lib.distribute_dataset(self.strategy, self.data.train(start)))
    progress = _Progress(cfg.train_steps, start, cfg.log_every_seconds, self.run_dir if self.chief else None,
                         seconds)
    losses, t_log, images_since = [], time.time(), 0
    step = start
    # A run killed after the evaluation that ended it resumes into the same decision (the rule reads curve.json).
    stopped = plateau.plateau_reached(curve, self.task.primary_metric, cfg.plateau_patience,
                                      cfg.plateau_min_delta or 0.0, cfg.min_train_steps)
    first_step = True
    while step < cfg.train_steps and not stopped:
      t_step = time.perf_counter()
      loss = float(self._train_step(iterator))  # float() waits for the step: the timing covers all of it.
      if not first_step:
        self._train_timing[0] += self.global_batch
        self._train_timing[1] += time.perf_counter() - t_step
      first_step = False
      step += 1
      _now_training["step"] = step
      losses.append(loss)
      images_since += self.global_batch
      if not np.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss} at step {step}; lower --learning_rate")
      now = time.time()
      ips = images_since / max(now - t_log, 1e-9)
      progress.update(step, float(np.mean(losses[-20:])), ips)
      if step % cfg.eval_every == 0 or step == cfg.train_steps:
        lr = self.optimizer.learning_rate
        writer.scalars({"train/loss": float(np.mean(losses)), "train/images_per_second": ips,
                        "train/lr": float(lr(step) if callable(lr) else lr)}, step)
        losses, t_log, images_since = [], time.time(), 0
        point = do_eval(step)
        self.step.assign(step)
        self.elapsed.assign(seconds())
        self.manager.save(checkpoint_number=step)
        _now_training["checkpoint"] = step
        self._drop_previous()
        if self.chief and _better(point, best, self.task.primary_metric):
          best = point
          self._export_best(step)
        progress.update(step, loss, ips, force=True)
        _print("  eval " + "  ".join(f"{k} {v:.4f}" for k, v in point.items() if k not in ("step", "seconds")),
              flush=True)
        stopped = plateau.plateau_reached(curve, self.task.primary_metric, cfg.plateau_patience,
                                          cfg.plateau_min_delta or 0.0, cfg.min_train_steps)
        if stopped and step < cfg.train_steps:
          _print(f"  plateau at step {step} of {cfg.train_steps}: "
                + plateau.describe(cfg.plateau_patience, cfg.plateau_min_delta or 0.0, cfg.min_train_steps), flush=True)
    writer.close()
    rundir.save_model_weights(self.model, self.work_dir, "final", **self._attrs())
    self._drop_previous()
    if not self.chief:
      return None
    selected = self._score_selected(best, from_step)
    result = self._result(curve, seconds(), selected)
    rundir.atomic_write_json(os.path.join(self.run_dir, "result.json"), result)
    with contextlib.suppress(OSError):
      os.remove(os.path.join(self.run_dir, rundir.PROGRESS))  # Finished: result.json says the rest.
    return result

  def _best_step_on_disk(self):
    path = rundir.weights_path(self.run_dir, "best")
    if not os.path.exists(path):
      return None
    with h5py.File(path, "r") as f:
      step = f.attrs.get("step")
    return None if step is None else int(step)

  def _export_best(self, step):
    rundir.save_model_weights(self.model, self.run_dir, "best", **self._attrs(), step=int(step))

  def _resume_best(self, curve, start):
    """The best point so far (derived from curve.json) with weights/best.weights.h5 made to match it.

    Returns (best point, first step selection may pick). The best export follows its checkpoint, so a kill between
    the two leaves a best at step `start`, the model just restored: it is exported again here. A best at an
    earlier step whose weights are not on disk (a run begun before the test protocol) cannot be rebuilt: the
    selection then starts at `start` and says so.
    """
    best = _select(curve, self.task.primary_metric)
    on_disk = self._best_step_on_disk()
    if best is None or on_disk == best["step"]:
      return best, 0
    if best["step"] == start:
      self._export_best(start)
      return best, 0
    _print(f"warning: {self.run_dir} has no weights of its best step {best['step']} (begun before the test protocol, "
          "or resumed from an older checkpoint than its newest); "
          f"the checkpoint is selected from step {start} on", flush=True)
    best = _select([p for p in curve if p["step"] >= start], self.task.primary_metric)
    if best is not None:
      self._export_best(best["step"])
    return best, start

  def _score_selected(self, best, from_step):
    """Loads the best weights, scores the test split once, writes test_predictions.npz; returns result["selected"]."""
    primary = self.task.primary_metric
    path = rundir.weights_path(self.run_dir, "best")
    if int(self.step.numpy()) != best["step"]:
      src = models.read_weight_file(path)
      init_lib.copy_weights(self.model, weights_lib.match_layers(self.model, src, skip=()))
    timings = []
    labels, masks, logits = gather_predictions(self._predict, self.data, "test", timings=timings)
    timed = timings[1:] or timings  # The first batch may trace the predict function.
    self._inference_timing = (sum(n for n, _ in timed), sum(t for _, t in timed))
    test = metrics_lib.compute_metrics(self.task, labels, masks, logits)
    rundir.save_test_predictions(self.run_dir, metrics_lib.auc_inputs(self.task, labels, masks, logits),
                                 metrics_lib.auc_indices(self.task, masks, len(labels)), len(labels),
                                 patients=split_patients(self.data, "test", len(labels)))
    return {"rule": SELECTION_RULE.format(split=self.cfg.eval_split, metric=primary), "metric": primary,
            "split": self.cfg.eval_split, "step": best["step"], "from_step": from_step,
            "validation": {k: v for k, v in best.items() if k not in ("step", "seconds")},
            "test": test, "test_examples": len(labels), "weights": os.path.join("weights", os.path.basename(path)),
            "predictions": rundir.TEST_PREDICTIONS}

  def _attrs(self):
    source = {"imagenet_tfds": "imagenet"}.get(self.cfg.dataset, self.cfg.dataset)
    attrs = {"source": source, "model_name": self.cfg.model, "image_size": self.cfg.image_size, "seed": self.cfg.seed,
             "preprocessing": self.data.preprocessing}
    attrs.update(self.export_attrs)
    return attrs

  def _result(self, curve, total_seconds, selected):
    primary = self.task.primary_metric
    names = [k for k in curve[-1] if k not in ("step", "seconds")]
    best = {k: float(np.nanmax([p[k] for p in curve])) for k in names}
    best_point = max(curve, key=lambda p: -np.inf if np.isnan(p[primary]) else p[primary])
    best["step"] = best_point["step"]
    thr = self.cfg.convergence_auc
    reached = [p["step"] for p in curve if thr is not None and p[primary] >= thr]
    return {"final": curve[-1], "best": best, "selected": selected, "primary_metric": primary,
            "steps_to_threshold": reached[0] if reached else None,
            "stopped": {"reason": (plateau.REASON_PLATEAU if curve[-1]["step"] < self.cfg.train_steps
                                   else plateau.REASON_BUDGET), "step": curve[-1]["step"],
                        "budget": self.cfg.train_steps,
                        "rule": plateau.describe(self.cfg.plateau_patience, self.cfg.plateau_min_delta or 0.0,
                                                 self.cfg.min_train_steps)},
            "convergence": {"metric": primary, "threshold": thr},
            "flags": self.cfg.to_dict(), "versions": versions(), "device": device_description(),
            "data": self.data.source_description, "init": self.init_info,
            "source_weights": self.init_info.get("source"), "seconds": round(total_seconds, 2),
            "global_batch": self.global_batch, "replicas": self.replicas, "cost": self._cost_record()}

  def _cost_record(self):
    """result.json["cost"]: the model's cost (models/cost.py) and the throughputs measured here (module
    docstring), images/s or None where nothing was timed (a run resumed at its last step trains no step)."""
    def rate(images, seconds):
      return round(images / seconds, 2) if images and seconds > 0 else None
    inference = rate(*self._inference_timing) if self._inference_timing else None
    return dict(self.cost, train_images_per_second=rate(*self._train_timing),
                inference_images_per_second=inference, device=device_description())


def no_space_left(error):
  """Whether `error` (an OSError, or TensorFlow's ResourceExhaustedError) says the disk is full."""
  return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)


def _saved_step(folder):
  """The step of the latest checkpoint that `folder`'s checkpoint list names (ckpt-N), or None."""
  try:
    path = tf.train.latest_checkpoint(folder) if folder else None
  except Exception:  # pylint: disable=broad-except
    return None  # A damaged list: the in-memory step is the best this line can say.
  match = re.search(r"ckpt-(\d+)$", path or "")
  return int(match.group(1)) if match else None


def interrupted_line():
  """The line a Ctrl-C or SIGTERM ends a command with: where the run in progress stopped and how to go on."""
  if not _now_training:
    return "interrupted; re-run the same command to resume"
  step, ckpt = _now_training["step"], _now_training["checkpoint"]
  # The checkpoint list on disk is what a resume reads: a signal inside a save (its files written, the list not
  # yet) or right after it leaves the in-memory step one checkpoint off.
  on_disk = _saved_step(_now_training.get("checkpoint_dir"))
  ckpt = on_disk if on_disk is not None else ckpt
  kept = f"last checkpoint: step {ckpt}" if ckpt is not None else "no checkpoint yet: it starts over"
  return (f"interrupted at step {step} of {_now_training['run_dir']} ({kept}); re-run the same command to "
          "resume")


_PREFIX = [""]  # The current run's "[name] " (train/pretrain's log_prefix): one process may print for several runs.


def _print(text, **kwargs):
  """print() with the current run's name in front, so the lines of runs trained side by side can be told apart."""
  # One write of the whole line (print writes the text and its end separately): the study's progress thread may
  # print between them.
  print(_PREFIX[0] + text + kwargs.pop("end", "\n"), end="", **kwargs)


def _read_curve(path):
  """curve.json's evaluations ([] when there is none), or a UsageError naming the file when it is damaged."""
  try:
    curve = rundir.read_json(path, [])
  except (ValueError, OSError) as e:
    raise UsageError(f"{path} is damaged ({e.__class__.__name__}): restore it, or retrain with --overwrite") from None
  if not isinstance(curve, list) or not all(isinstance(p, dict) and "step" in p for p in curve):
    raise UsageError(f"{path} is not a list of evaluations: restore it, or retrain with --overwrite")
  return curve


def _primary(point, metric):
  value = point[metric]
  return -np.inf if value is None or np.isnan(value) else value


def _better(point, best, metric):
  """Whether `point` strictly improves on `best` (None: nothing yet) in `metric`; NaN never improves."""
  return best is None or _primary(point, metric) > _primary(best, metric)


def _select(curve, metric):
  """The selected point of a curve: the highest `metric`, ties (and all-NaN) to the earliest step; None if empty."""
  best = None
  for point in sorted(curve, key=lambda p: p["step"]):
    if _better(point, best, metric):
      best = point
  return best


def gather_predictions(predict, data, split, timings=None):
  """Runs `predict` (images -> logits) over every example of `split` of `data`, in eval order.

  Returns (labels, masks, logits) numpy arrays: labels/masks as the pipeline yields them, concatenated ((N,) or
  (N, P)); logits float (N, outputs). timings: None, or a list that gets one (images, seconds) per batch: the
  forward pass and the copy of its logits to the host, the input pipeline left out.
  """
  labels, masks, logits = [], [], []
  for images, y, m in data.eval(split):
    t0 = time.perf_counter()
    logits.append(np.asarray(predict(images)))
    if timings is not None:
      timings.append((int(logits[-1].shape[0]), time.perf_counter() - t0))
    labels.append(y.numpy())
    masks.append(m.numpy())
  if not logits:
    raise UsageError(f"the {split} split of {data.source_description} is empty")
  return np.concatenate(labels), np.concatenate(masks), np.concatenate(logits)


def split_patients(data, split, num_scored):
  """int64 (N,) patient codes of `split` aligned with gather_predictions' arrays, or None (no patient ids).

  The codes come from the dataset builder beside tf.data (`Data.patients`), so the model's input and order are
  untouched. num_scored: the examples gather_predictions returned; when images that failed to decode were skipped
  (--on_bad_image=skip) the two no longer align, and the patients are left out with a warning.
  """
  patients = data.patients(split)
  if patients is not None and len(patients) != num_scored:
    _print(f"warning: {split} has {len(patients)} patient ids but {num_scored} scored images (undecodable images "
          f"skipped?); the patients are left out and each image counts as its own cluster", flush=True)
    return None
  return patients


def evaluate_model(predict, data, split):
  """Runs `predict` (images -> logits) over every example of `split` of `data` and returns exact metrics."""
  return metrics_lib.compute_metrics(data.task, *gather_predictions(predict, data, split))


def _task_index():
  cfg = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  return int(cfg.get("task", {}).get("index", 0))


def check_paths(run_dir, tb_dir=None):
  """Raises UsageError (one line) when `run_dir` or `tb_dir` is, or lies under, a file, or cannot be written."""
  rundir.check_writable_dir(run_dir, "--run_dir")
  if tb_dir:
    rundir.check_writable_dir(tb_dir, "--tb_dir")


def _check_lock_parent(run_dir):
  """The lock file (and an --overwrite's DIR.previous) sit beside the run directory: its parent must be writable."""
  parent = os.path.dirname(os.path.abspath(run_dir))
  if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
    raise UsageError(f"--run_dir={run_dir}: its folder {parent} is not writable, and the run's lock file goes there; "
                     "choose another --run_dir or fix its permissions")


def _make_parents(run_dir):
  """Creates the missing ancestors of `run_dir`; returns those created, outermost first."""
  missing, parent = [], os.path.dirname(os.path.abspath(run_dir))
  while not os.path.exists(parent):
    missing.append(parent)
    parent = os.path.dirname(parent)
  for path in reversed(missing):
    os.makedirs(path, exist_ok=True)
  return list(reversed(missing))


def _remove_if_empty(paths):
  """Removes each of `paths` that is an empty directory, innermost first (what a failed start created)."""
  for path in reversed(paths):
    try:
      os.rmdir(path)
    except OSError:
      pass  # Not empty (a run started, or someone else's files) or already gone: leave it.


@contextlib.contextmanager
def _run_lock(run_dir, refuse_held=False, quiet=False):
  """Yields True while this process holds `run_dir` (non-chief workers write under the chief's), False when
  another live process does, after printing who; with refuse_held, that is a UsageError naming the holder."""
  if not strategy_lib.is_chief():
    yield True
    return
  with locks.hold(run_dir) as lock:
    if lock is None:
      holder = locks.describe(locks.holder(run_dir))
      if refuse_held:
        raise UsageError(f"--run_dir={run_dir} is being trained by {holder} (a study?); nothing was done: re-run "
                         "this command once it has finished")
      if not quiet:
        _print(f"{run_dir} is held by {holder}, skipped", flush=True)
    yield lock is not None


def _move_aside(run_dir):
  """Renames `run_dir` to `run_dir`.previous (replacing an older one); returns the new path.

  Except when `run_dir` has no checkpoint and a .previous exists: then `run_dir` is an earlier --overwrite killed
  before its first checkpoint, and the run worth keeping is the one already aside, so `run_dir` is deleted.
  """
  previous = os.path.abspath(run_dir).rstrip(os.sep) + ".previous"
  if os.path.lexists(previous):
    if not tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")):
      shutil.rmtree(run_dir)
      return previous
    if os.path.isdir(previous) and not os.path.islink(previous):
      shutil.rmtree(previous)
    else:
      os.remove(previous)
  os.rename(run_dir, previous)
  return previous


def train(cfg, run_dir, overwrite=False, flags_text=None, export_attrs=None, tb_dir=None, refuse_held=False,
          log_prefix="", on_start=None):
  """Runs (or resumes, or skips when finished) training `cfg` into `run_dir`. Returns the result dict; None on a
  non-chief worker, or when another live process holds `run_dir` (it prints "<run_dir> is held by host:pid,
  skipped" and writes nothing there).

  Everything is checked before anything is written: the config, the paths (a file in the way or an unwritable
  folder), the existing run, and the weights and data (built before an --overwrite moves the old run to
  `run_dir`.previous; it is deleted after the new run's first checkpoint, or put back when the new run fails
  before). A usage error leaves no directory it created behind.
  tb_dir: TensorBoard log directory (default <run_dir>/tb; the study puts every run under one root). overwrite: True,
  False or "different" (see existing_result). refuse_held: a run directory another live process holds is a
  UsageError (transfusion-train, whose only job is this run) instead of a skip (a study, which moves on).
  log_prefix: put in front of every line this run prints (the study: "[model/init/seedN] "). on_start: called once
  this process holds the run, before it trains (the study prints its header there, so a run held by another process
  gets none); with it, a held run is skipped without a line.
  """
  validate(cfg)
  check_paths(run_dir, tb_dir)
  previous, _PREFIX[0] = _PREFIX[0], log_prefix
  try:
    finished = existing_result(run_dir, cfg, overwrite)
    if finished is not None:
      _print(f"{run_dir} is already finished (result.json exists); nothing to do", flush=True)
      return finished
    return _locked(run_dir, _train_held, cfg, run_dir, overwrite, flags_text, export_attrs, tb_dir,
                   refuse_held=refuse_held, on_start=on_start)
  finally:
    _PREFIX[0] = previous


def _locked(run_dir, work, *args, refuse_held=False, on_start=None):
  """Runs work(*args) holding the lock of `run_dir`; None when another live process holds it (a UsageError with
  refuse_held). on_start: called once the lock is held (and then a held run prints nothing). A UsageError removes
  the empty folders this call created."""
  _check_lock_parent(run_dir)
  created = _make_parents(run_dir) + ([] if os.path.exists(run_dir) else [os.path.abspath(run_dir)])
  try:
    with _run_lock(run_dir, refuse_held, quiet=on_start is not None) as held:
      if not held:
        return None
      if on_start is not None:
        on_start()
      return work(*args)
  except UsageError:
    _remove_if_empty(created)
    raise


def _train_held(cfg, run_dir, overwrite, flags_text, export_attrs, tb_dir):
  finished = existing_result(run_dir, cfg, overwrite)  # Again: another process may have finished it meanwhile.
  if finished is not None:
    _print(f"{run_dir} is already finished (result.json exists); nothing to do", flush=True)
    return finished
  caller_policy = keras.mixed_precision.global_policy()
  try:
    replace = _replaces(run_dir, cfg, overwrite)  # Decided under the lock, before the Trainer is built.
    trainer = Trainer(cfg, run_dir, flags_text, export_attrs, tb_dir)
    previous = None
    if replace and strategy_lib.is_chief() and os.path.isdir(run_dir) and os.listdir(run_dir):
      previous = _move_aside(run_dir)
    try:
      return trainer.run(previous=previous)
    except BaseException:
      if previous is not None and os.path.exists(previous):  # Failed before its first checkpoint: put it back.
        shutil.rmtree(run_dir, ignore_errors=True)
        os.rename(previous, run_dir)
      raise
  finally:
    keras.mixed_precision.set_global_policy(caller_policy)  # Models built after this run keep the caller's policy.


def pretrain(cfg, run_dir, export=None, overwrite=False, flags_text=None, tb_dir=None, log_prefix="", on_start=None):
  """Trains `cfg` (a source task) into `run_dir` and copies its final weights to `export`. Returns the path; None
  when another live process holds `run_dir` (skipped: wait for its export with locks.wait_for). log_prefix and
  on_start as in `train`."""
  if not cfg.dataset.endswith("source") and cfg.dataset != "imagenet_tfds":
    raise UsageError(f"--dataset={cfg.dataset} is not a source task; use synthetic_source or imagenet_tfds")
  validate(cfg)
  check_paths(run_dir, tb_dir)
  if export:
    rundir.check_writable_dir(os.path.dirname(os.path.abspath(os.path.expanduser(export))), "--export")
  # The lock is held over training and export; train() re-enters it.
  return _locked(run_dir, _pretrain_held, cfg, run_dir, export, overwrite, flags_text, tb_dir, log_prefix,
                 on_start=on_start)


def _pretrain_held(cfg, run_dir, export, overwrite, flags_text, tb_dir, log_prefix=""):
  train(cfg, run_dir, overwrite=overwrite, flags_text=flags_text, tb_dir=tb_dir, log_prefix=log_prefix)
  export = export or os.path.join(run_dir, "pretrained.weights.h5")
  # Weight decay shrank the BatchNorm-followed conv kernels (same function, inflated effective learning rate when
  # fine-tuned). One global factor brings their overall scale back to He-normal's and keeps the per-layer profile,
  # which is what Mean-Var transfers (models.init.normalize_conv_scale). Measured, ResNet50 x0.25 pretrained 1,000
  # steps at 64 px, fine-tuned 150 steps on synthetic retina at 48 px: conv1 moved (relative L2) 0.82 unrescaled,
  # 0.12 rescaled per layer, 0.13 with the global factor, 0.105 from random init.
  final = rundir.weights_path(run_dir, "final")
  attrs = dict(models.read_weight_file(final).attrs)
  model, _ = rundir.load_run_model(run_dir, "final")
  scales = init_lib.normalize_conv_scale(model)
  attrs["conv_scale"] = "global_factor" if scales else "as_trained"
  if scales:
    attrs["conv_scale_factor"] = next(iter(scales.values()))
  models.save_weight_file(model, export, **attrs)
  return export
