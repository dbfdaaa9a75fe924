"""Run-vs-run comparison: SVCCA, PWCCA and linear CKA between the stages of two trained runs (`transfusion-compare`).

`compare_runs` loads both runs' weights, feeds them the same images (`eval_batches`: the first images of a split of
run_a's dataset, in eval order) and compares every stage pair with `activations`. Both runs must be the same
architecture at the same input size and preprocessing.
"""
import os

from transfusion_tf import models
from transfusion_tf.analysis import activations
from transfusion_tf.data import pipeline
from transfusion_tf.errors import UsageError
from transfusion_tf.training import rundir


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


def _check_counts(num_images, batch_size):
  if num_images < 1:
    raise UsageError(f"--num_images must be at least 1, got {num_images}")
  if batch_size < 1:
    raise UsageError(f"--compare_batch_size must be at least 1, got {batch_size}")


def _build_data(config, batch_size):
  kwargs = dict(config.get("data_kwargs") or {})
  kwargs.setdefault("channels", int(config.get("channels", 3)))
  if config.get("preprocessing"):
    kwargs.setdefault("preprocessing", config["preprocessing"])
  return pipeline.build_data(config["dataset"], int(config["image_size"]), batch_size, config["model"],
                             weights=config.get("weights"), seed=int(config.get("seed", 0)), **kwargs)


def _leading_batches(data, split, num_images):
  left = int(num_images)
  for batch in data.eval(split):
    if left <= 0:
      break
    images = activations.batch_images(batch)[:left]
    left -= int(images.shape[0])
    yield images


def eval_batches(config, num_images, batch_size, split="validation"):
  """Yields the first `num_images` images of `split` of a run's dataset, preprocessed for its model, in batches.

  config: a run's config dict (config.json: dataset, image_size, model, and optionally weights, seed, channels,
  preprocessing, data_kwargs). Yields float32 arrays (B, S, S, C), B <= batch_size, num_images in all (fewer when
  the split is smaller), always the same images in the same order (eval order, no augmentation). One pass; for
  several, `ImageBatches` reads the pipeline again each time instead of holding the images.
  """
  _check_counts(num_images, batch_size)
  yield from _leading_batches(_build_data(config, batch_size), split, num_images)


class ImageBatches:
  """The batches `eval_batches` yields, as a re-iterable that reads them from the input pipeline on every pass.

  A comparison passes over the analysis images once per pair of models (twice when it counts them first), and
  holding them costs images x S x S x C x 4 bytes (2,000 images at 587 px: 8 GB); reading them again costs a
  pass of the pipeline, which the two models' forward passes outweigh. At most the pipeline's prefetch buffer
  and one batch are alive at a time, however many images there are.

  config, num_images, batch_size, split: as in `eval_batches` (the same UsageErrors). `images`: how many images a
  pass yields (min(num_images, the split's size)), or None where the split's size is an estimate (a filtered TFDS
  split) or bad images may be skipped; `activations.count_images` reads it instead of counting by a pass.
  Supports len() (batches per pass), `head(n)` (the first n images, the same batch boundaries cut at n) and
  `[start::step]` (every step-th batch from start, as a list's slice would give; the pipeline still decodes the
  batches in between, so F4's k subsets cost k passes of the pipeline, though no more memory).
  """

  def __init__(self, config, num_images, batch_size, split="validation", data=None):
    _check_counts(num_images, batch_size)
    self.data = data if data is not None else _build_data(config, batch_size)
    self.config, self.batch_size, self.split = config, int(batch_size), split
    size = self.data.num_examples.get(split)
    self._num = int(num_images) if size is None else min(int(num_images), int(size))
    exact = self.data.num_examples_exact.get(split, True) and self.data.on_bad_image == "fail"
    self.images = self._num if exact else None
    self._start, self._step = 0, 1

  def __iter__(self):
    last = self._batches() - 1
    for k, images in enumerate(_leading_batches(self.data, self.split, self._num)):
      if k >= self._start and (k - self._start) % self._step == 0:
        yield images
      if k >= last - (last - self._start) % self._step:
        break  # This view's last batch: the rest would be read for nothing.

  def _batches(self):
    return -(-self._num // self.batch_size)

  def __len__(self):
    return len(range(self._start, self._batches(), self._step))

  def head(self, num_images):
    """The first `num_images` images (at most this view's), in the same batches cut at that count."""
    if self._step != 1 or self._start:
      raise ValueError("head() of a strided view is not defined")
    out = ImageBatches(self.config, max(1, min(int(num_images), self._num)), self.batch_size, self.split, self.data)
    if self.images is None:
      out.images = None
    return out

  def __getitem__(self, key):
    """A strided view `[start::step]` over this view's batches (only slices without a stop)."""
    if not isinstance(key, slice) or key.stop is not None:
      raise TypeError("ImageBatches supports only [start::step] views")
    start, step = key.start or 0, key.step or 1
    if start < 0 or step < 1:
      raise ValueError("ImageBatches views need start >= 0 and step >= 1")
    out = ImageBatches(self.config, self._num, self.batch_size, self.split, self.data)
    out._start, out._step = self._start + start * self._step, self._step * step  # pylint: disable=protected-access
    kept = [min(self.batch_size, self._num - k * self.batch_size) for k in range(out._start, self._batches(),
                                                                                 out._step)]
    out.images = sum(kept) if self.images is not None else None
    return out


def compare_runs(run_a, run_b, which_a="final", which_b="final", stages=None, conv_mode="positions",
                 max_positions=activations.DEFAULT_MAX_POSITIONS, num_images=500, batch_size=32,
                 split="validation", seed=0, keep_variance=0.99, stage_matrix=True,
                 min_datapoints_per_neuron=activations.DEFAULT_MIN_DATAPOINTS_PER_NEURON):
  """Compares two runs; returns the JSON-ready dict `transfusion-compare` writes.

  Keys: run_a, run_b, which_a, which_b, model, stages, conv_mode, max_positions, num_images (images actually
  read), split, dataset, per_stage {stage: result} (see `activations.compare_pairs`), and with stage_matrix,
  matrix {"stages_a", "stages_b", "svcca", "pwcca", "cka", "mode", "cells"}. min_datapoints_per_neuron raises the
  positions per image above max_positions where a stage needs them (0: max_positions rules).
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
  batches = ImageBatches(config_a, num_images, batch_size, split)
  common = dict(conv_mode=conv_mode, max_positions=max_positions, seed=seed, keep_variance=keep_variance,
                min_datapoints_per_neuron=min_datapoints_per_neuron)
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
