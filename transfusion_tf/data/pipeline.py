"""The tf.data input pipeline: a registered dataset plus a task spec -> batched, preprocessed datasets.

Entry point: `build_data(dataset, image_size, batch_size, model_name, ...) -> Data`. The dataset's builder (see
`registry.py`) gives one source per split (`sources.py`); this module decodes, resizes, augments, batches and
preprocesses them.

Every dataset yields elements `(images float32 (B, S, S, C), labels, masks)`; see `tasks.py` for the label forms.

Resumability. The training dataset is infinite and its order is a pure function of (seed, global example index g):
example g is item `index_shuffle(g mod N, seed=(seed, g div N))` of the split, a seeded per-epoch permutation
computed on the fly, and its augmentation is drawn by stateless ops seeded by (seed, g). `Data.train(start_step)`
therefore starts at `Dataset.range(start_step * batch_size, ...)` and decodes nothing it skips: batch k of
`train(j)` equals batch j + k of `train(0)`. TFDS splits offer no random access, so they fall back to a seeded
shuffle buffer and `Dataset.skip`, which reads (but does not decode) the skipped records.

Bad images. Files are checked before any tf.data op runs (`records.check_image_files`). Anything that still fails
to decode inside tf.data is dropped by `ignore_errors` and noticed by a gap check on the example index, which names
the file (skip: a warning; fail: an error whose message starts with "UsageError:", see `as_usage_error`).
"""
import dataclasses
import math
import threading

from absl import logging
import numpy as np
import tensorflow as tf

from transfusion_tf.data import records as records_lib
from transfusion_tf.data import registry
from transfusion_tf.data import tasks as tasks_lib
from transfusion_tf.data.sources import ArraySource, FileSource, TfdsSource, subset_source
from transfusion_tf.errors import UsageError
from transfusion_tf.models.preprocessing import preprocess, preprocessing_mode

AUTOTUNE = tf.data.AUTOTUNE
_ARRAY_CALLS, _ARRAY_PREFETCH = 2, 2  # In-memory sources' batch parallelism and prefetched batches (not autotuned).
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DataOptions = registry.DataOptions


# ---------------------------------------------------------------------------------------------------------------
# Decoding, resizing, augmentation (TensorFlow).


def _pil_decode_np(path, channels):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(path.decode() if isinstance(path, bytes) else path) as im:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
      arr = np.asarray(im, np.float32)
      arr = arr * (255.0 / max(float(arr.max()), 1.0))
      im = Image.fromarray(arr.astype(np.uint8))
    arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), np.uint8)
  return arr[..., None] if channels == 1 else arr


def _decode_tf(contents, channels, target):
  """Decodes JPEG (DCT-domain downscale by 2/4/8 when the image is that much larger than target), PNG, GIF, BMP into
  float32 (H, W, channels) in [0, 255].

  PNG is decoded as uint16 and divided by 257: 8-bit values come out exact, and 16-bit ones as v * 255 / 65535, i.e.
  scaled by the dtype's maximum, never by the image's own, so intensities mean the same in every image and a 12-bit
  scan keeps its 4096 levels instead of 16 uint8 ones. Grayscale is replicated to 3 channels (and RGB averaged to 1)
  by the decoder; an alpha channel is dropped."""
  def jpeg():
    shape = tf.image.extract_jpeg_shape(contents)
    side = tf.minimum(shape[0], shape[1])
    branch = (tf.cast(side >= 2 * target, tf.int32) + tf.cast(side >= 4 * target, tf.int32) +
              tf.cast(side >= 8 * target, tf.int32))
    return tf.switch_case(branch, [lambda r=r: tf.io.decode_jpeg(contents, channels=channels, ratio=r)
                                   for r in (1, 2, 4, 8)])

  def png():
    return tf.cast(tf.io.decode_png(contents, channels=channels, dtype=tf.uint16), tf.float32) / 257.0

  def other():
    return tf.cast(tf.io.decode_image(contents, channels=channels, expand_animations=False), tf.float32)

  def not_jpeg():
    return tf.cond(tf.equal(tf.strings.substr(contents, 0, 8), _PNG_SIGNATURE), png, other)

  image = tf.cond(tf.io.is_jpeg(contents), lambda: tf.cast(jpeg(), tf.float32), not_jpeg)
  image.set_shape([None, None, channels])
  return image


def _crop_resize(image, size, crop_to_square):
  """uint8 or float (..., H, W, C) -> float32 (..., size, size, C) in [0, 255]."""
  if crop_to_square:
    h, w = tf.shape(image)[-3], tf.shape(image)[-2]
    side = tf.minimum(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[..., top:top + side, left:left + side, :]
  image = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear", antialias=True)
  return tf.clip_by_value(image, 0.0, 255.0)


def _flip_rotate(images, flip_lr, flip_ud, angles):
  """Flips and rotates each image of (B, H, W, C) in one resampling pass (flips are exact; borders reflect).

  flip_lr, flip_ud: bool (B,) or None; angles: radians (B,) or None. The output-to-input map is the rotation
  about the centre applied after the flips.
  """
  shape = tf.shape(images)
  h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
  n = shape[0]
  ones, zeros = tf.ones([n]), tf.zeros([n])
  sx, ox = ((tf.where(flip_lr, -ones, ones), tf.where(flip_lr, w - 1.0, zeros)) if flip_lr is not None
            else (ones, zeros))
  sy, oy = ((tf.where(flip_ud, -ones, ones), tf.where(flip_ud, h - 1.0, zeros)) if flip_ud is not None
            else (ones, zeros))
  if angles is None:
    cos, sin, x_off, y_off = ones, zeros, zeros, zeros
  else:
    cos, sin = tf.cos(angles), tf.sin(angles)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
  transforms = tf.stack([cos * sx, -sin * sy, cos * ox - sin * oy + x_off,
                         sin * sx, cos * sy, sin * ox + cos * oy + y_off, zeros, zeros], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms, output_shape=shape[1:3],
                                               fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Training augmentation, drawn per example from (seed, example index) with stateless ops.

  flips: None follows the task (retina: left-right and up-down; cxr, image_csv and source: left-right only), or one
  of FLIPS: "none", "lr", "lr_ud" (--flips). rotation_degrees: max absolute angle. brightness: max shift as a
  fraction of 255. contrast: max relative change of the contrast.
  """
  enabled: bool = True
  flips: str = None
  rotation_degrees: float = 10.0
  brightness: float = 0.1
  contrast: float = 0.1


def _aug_params(seed, g):
  """Five uniforms in [0, 1) for example g: flip lr, flip ud, angle, brightness, contrast."""
  s = tf.stack([tf.constant(2 * seed + 1, tf.int64), tf.cast(g, tf.int64)])
  return tf.random.stateless_uniform([5], seed=s, dtype=tf.float32)


FLIPS = ("none", "lr", "lr_ud")


def _augment(images, params, flips, aug):
  """Applies the per-example augmentation `params` (B, 5) to float images (B, H, W, C) in [0, 255]; flips: one of
  FLIPS."""
  flip_lr = params[:, 0] < 0.5 if flips in ("lr", "lr_ud") else None
  flip_ud = params[:, 1] < 0.5 if flips == "lr_ud" else None
  angles = None
  if aug.rotation_degrees > 0:
    angles = (params[:, 2] * 2.0 - 1.0) * (aug.rotation_degrees * math.pi / 180.0)
  images = _flip_rotate(images, flip_lr, flip_ud, angles)
  if aug.brightness > 0 or aug.contrast > 0:
    delta = (params[:, 3] * 2.0 - 1.0) * (aug.brightness * 255.0)
    factor = 1.0 + (params[:, 4] * 2.0 - 1.0) * aug.contrast
    mean = tf.reduce_mean(images, axis=[1, 2, 3])
    # (x - mean) * factor + mean + delta, as one scale and one shift per image.
    shift = mean * (1.0 - factor) + delta
    images = images * factor[:, None, None, None] + shift[:, None, None, None]
  return tf.clip_by_value(images, 0.0, 255.0)


def _convert_channels(images, have, want):
  if have == want:
    return images
  if have == 1 and want == 3:
    return tf.tile(images, [1, 1, 1, 3])
  if have == 3 and want == 1:
    return tf.image.rgb_to_grayscale(images)
  raise UsageError(f"cannot convert {have}-channel images to {want} channels")


# ---------------------------------------------------------------------------------------------------------------
# Runtime bad-image reporting (the safety net behind check_image_files).


class _BadImageLog:
  """Counts images that failed inside tf.data; logs each new one once."""

  def __init__(self):
    self._lock = threading.Lock()
    self.seen = set()

  def report(self, names, on_bad_image):
    """Returns the error message for "fail" (the caller raises it in-graph), else logs new names and returns ""."""
    with self._lock:
      new = [n for n in names if n not in self.seen]
      self.seen.update(new)
      count = len(self.seen)
    if on_bad_image == "fail":
      return (f"{_ERROR_MARK}image {names[0]} could not be decoded inside the input pipeline; replace or remove it, "
              f"rerun with --validate_images=full to find every such file, or pass --on_bad_image=skip")
    for name in new:
      logging.warning("skipped undecodable image %s (%d skipped so far)", name, count)
    return ""


_ERROR_MARK = "UsageError: "


def as_usage_error(error):
  """The UsageError carried by a tf.errors.OpError raised while iterating a dataset of ours, else None.

  A file that passes the up-front check but fails to decode in tf.data stops iteration (on_bad_image="fail") with
  an InvalidArgumentError whose message holds "UsageError: image <path> ..."; callers can turn it back into a
  UsageError: `except tf.errors.OpError as e: raise pipeline.as_usage_error(e) or e`.
  """
  text = str(getattr(error, "message", None) or error)
  at = text.find(_ERROR_MARK)
  if at < 0:
    return None
  msg = text[at + len(_ERROR_MARK):].split("\n")[0].rstrip()
  return UsageError(msg[:-1] if msg.endswith("]") else msg)


# ---------------------------------------------------------------------------------------------------------------
# Data: the object the trainer holds.


class Data:
  """Batched datasets for one task. Build it with `build_data`.

  Attributes: task (TaskSpec), image_size, batch_size, channels (of the model input), preprocessing (mode),
  seed, num_examples {"train", "validation", "test"} -> int, num_examples_exact (False where a TFDS filter makes
  the count an estimate), source_description (one line), steps_per_epoch.
  """

  def __init__(self, task, sources, image_size, batch_size, preprocessing, seed=0, channels=3,
               augmentation=None, on_bad_image="fail", source_description="", shuffle_buffer=10_000):
    self.task = task
    self._sources = dict(sources)
    self.image_size = int(image_size)
    self.batch_size = int(batch_size)
    self.preprocessing = preprocessing
    self.seed = int(seed)
    self.channels = int(channels)
    self.augmentation = augmentation or Augmentation()
    self.on_bad_image = records_lib.check_choice(on_bad_image, records_lib.ON_BAD_IMAGE, "on_bad_image")
    self.source_description = source_description
    self.shuffle_buffer = int(shuffle_buffer)
    self.bad_images = _BadImageLog()
    for split, src in self._sources.items():
      if len(src) == 0:
        raise UsageError(f"the {split} split of {source_description or 'the dataset'} is empty")
    self.num_examples = {k: len(v) for k, v in self._sources.items()}
    self.num_examples_exact = {k: getattr(v, "exact", True) for k, v in self._sources.items()}
    if self.batch_size < 1:
      raise UsageError(f"--batch_size must be at least 1, got {batch_size}")

  @property
  def steps_per_epoch(self):
    return max(1, self.num_examples["train"] // self.batch_size)

  def train(self, start_step=0):
    """The infinite training dataset, starting exactly at batch `start_step` (see the module docstring)."""
    return self._dataset("train", training=True, start=int(start_step) * self.batch_size)

  def eval(self, split):
    """A finite dataset over `split` ("validation" or "test"; "train" also works), fixed order, no augmentation,
    last partial batch kept."""
    if split not in self._sources:
      raise UsageError(f"unknown split {split!r}; this dataset has {', '.join(self._sources)}")
    return self._dataset(split, training=False, start=0)

  def labels(self, split):
    """(labels, masks) numpy arrays of `split` in eval order, or None for TFDS sources (no random access)."""
    src = self._sources[split]
    if isinstance(src, TfdsSource):
      return None
    return src.labels, src.masks

  def patients(self, split):
    """int64 (N,) patient codes of `split` in eval order (`records.patient_codes`), or None where the data names no
    patients (APTOS, the source task). Read beside tf.data, never through it, so the model's input is unchanged. A
    TFDS split pays one pass over its records (names only, nothing decoded); where its size is an estimate (filters),
    N is the true count, which is what `eval(split)` yields too."""
    src = self._sources[split]
    ids = src.patients() if callable(src.patients) else src.patients
    if ids is None:
      return None
    ids = np.asarray(ids)
    if len(ids) != len(src) and getattr(src, "exact", True):
      raise ValueError(f"{split}: {len(ids)} patient ids for {len(src)} examples")
    return records_lib.patient_codes(ids)

  def sample_images(self, k=8, split="validation"):
    """(images uint8 (k, S, S, C), labels) of the first k eval images, before preprocessing: for TensorBoard."""
    split = split if split in self._sources else "train"
    ds = self._dataset(split, training=False, start=0, apply_preprocessing=False, batch=k)
    images, labels, _ = next(iter(ds.take(1)))
    return tf.cast(tf.round(images), tf.uint8).numpy(), labels.numpy()

  # -- internals -------------------------------------------------------------------------------------------------

  def _describe(self, split, training):
    """Python function: global example index -> a name for messages (file path, or TFDS example number)."""
    src = self._sources[split]
    n = len(src)

    def name(g):
      if isinstance(src, TfdsSource):
        return f"{src.name} {split} example #{g}"
      idx = int(self._index_of(g, n, training).numpy()) if training else g
      if isinstance(src, FileSource):
        return str(src.paths[idx])
      return f"{split} array example {idx}"
    return name

  def _index_of(self, g, n, training):
    if not training:
      return g
    g = tf.cast(g, tf.int64)
    epoch, pos = g // n, g % n
    seed = tf.stack([tf.constant(2 * self.seed, tf.int64), epoch])
    return tf.random.experimental.index_shuffle(pos, seed=seed, max_index=tf.constant(n - 1, tf.int64))

  def _dataset(self, split, training, start, apply_preprocessing=True, batch=None):
    src = self._sources[split]
    task, size, channels_in = self.task, self.image_size, self.task.channels
    augment = training and self.augmentation.enabled
    batch = batch or self.batch_size
    seed = self.seed

    if isinstance(src, TfdsSource):
      ds = src.make()
      if training:
        ds = ds.repeat().shuffle(min(self.shuffle_buffer, max(src.size, 1)), seed=seed, reshuffle_each_iteration=True)
      ds = ds.enumerate().skip(start)

      def element(g, ex):
        contents, label, mask = ex
        out = {"g": g, "label": label, "mask": mask,
               "image": _crop_resize(_decode_tf(contents, channels_in, size), size, task.crop_to_square)}
        if augment:
          out["aug"] = _aug_params(seed, g)
        return out
      ds = ds.map(element, num_parallel_calls=AUTOTUNE)
      ds = self._gap_check(ds.ignore_errors(), start, split, training)
    else:
      n = len(src)
      labels_t, masks_t = tf.constant(src.labels), tf.constant(src.masks)
      is_files = isinstance(src, FileSource)
      # Eval over files runs one sentinel past the end (g == n, no file read) so that the gap check also
      # notices a bad last file; the sentinel is filtered out after the check.
      stop = tf.int64.max if training else n + int(is_files)
      ds = tf.data.Dataset.range(start, stop)
      if is_files:
        paths_t = tf.constant(src.paths.astype(str))
        use_pil_t = tf.constant(src.use_pil if src.use_pil is not None else np.zeros(n, bool))
        any_pil = bool(src.use_pil is not None and src.use_pil.any())

        def load(idx):
          path = tf.gather(paths_t, idx)
          if any_pil:
            image = tf.cond(
                tf.gather(use_pil_t, idx),
                lambda: tf.cast(tf.numpy_function(lambda p: _pil_decode_np(p, channels_in), [path], tf.uint8,
                                                  stateful=False), tf.float32),
                lambda: _decode_tf(tf.io.read_file(path), channels_in, size))
            image = tf.ensure_shape(image, [None, None, channels_in])
          else:
            image = _decode_tf(tf.io.read_file(path), channels_in, size)
          return _crop_resize(image, size, task.crop_to_square)

      def element(g):
        idx = self._index_of(g, n, training) if training else tf.minimum(g, n - 1)
        out = {"g": g, "idx": idx, "label": tf.gather(labels_t, idx), "mask": tf.gather(masks_t, idx)}
        if augment:
          out["aug"] = _aug_params(seed, g)
        if is_files:
          if training:
            out["image"] = load(idx)
          else:
            out["image"] = tf.cond(g < n, lambda: load(idx), lambda: tf.zeros([size, size, channels_in]))
        return out
      ds = ds.map(element, num_parallel_calls=AUTOTUNE if is_files else None)
      if is_files:
        ds = self._gap_check(ds.ignore_errors(), start, split, training)
        if not training:
          ds = ds.filter(lambda el: el["g"] < n)

    ds = ds.batch(batch, drop_remainder=training)
    array_images = src.images if isinstance(src, ArraySource) else None
    flips, aug, mode, want = self.augmentation.flips or task.flips, self.augmentation, self.preprocessing, self.channels

    def finish(b):
      if array_images is not None:
        images = tf.numpy_function(lambda i: array_images[i], [b["idx"]], tf.uint8, stateful=False)
        images = tf.ensure_shape(images, [None] + list(array_images.shape[1:]))
        if array_images.shape[1:3] != (size, size):
          images = _crop_resize(images, size, task.crop_to_square)
        images = tf.cast(images, tf.float32)
      else:
        images = b["image"]
      if augment:
        images = _augment(images, b["aug"], flips, aug)
      images = _convert_channels(images, channels_in, want)
      if apply_preprocessing:
        images = tf.cast(preprocess(images, mode), tf.float32)
      return images, b["label"], b["mask"]
    if array_images is None:
      return ds.map(finish, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    # In-memory arrays (the embedded tasks, cached splits): a batch is a gather and a flip, which two calls and two
    # prefetched batches keep ahead of any model here. Autotuning them bought nothing and cost a thread whose
    # optimisation, beside another busy process, took about 10 s of CPU at a time and held each iterator's deletion
    # (a run's end, every evaluation) until it finished (benchmarks/iterator_teardown.py).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.map(finish, num_parallel_calls=_ARRAY_CALLS).prefetch(_ARRAY_PREFETCH).with_options(options)

  def _gap_check(self, ds, start, split, training):
    """Notices examples dropped by ignore_errors (index gaps) and reports them by name."""
    describe = self._describe(split, training)
    log, policy = self.bad_images, self.on_bad_image

    def report(expected, got):
      return log.report([describe(int(k)) for k in range(int(expected), int(got))], policy)

    def gap(expected, g):
      msg = tf.reshape(tf.py_function(report, [expected, g], tf.string), [])
      check = tf.debugging.Assert(tf.equal(tf.strings.length(msg), 0), [msg], summarize=1)
      with tf.control_dependencies([check]):
        return tf.identity(g)

    def step(expected, el):
      g = el["g"]
      checked = tf.cond(g > expected, lambda: gap(expected, g), lambda: g)
      return checked + 1, dict(el, g=checked)
    return ds.scan(tf.constant(start, tf.int64), step)


def class_counts(task, labels, masks):
  """What a split's AUC is computed from, as {name: (positives, negatives)}: grading -> {"referable": ...} (grade
  >= 2 against the rest); multilabel -> one entry per pathology, counting the labels its mask keeps; multiclass with
  one-vs-rest AUCs (the image task) -> one entry per class (its images against the rest); other multiclass (scored
  on accuracy) -> {}. labels, masks: numpy, as `Data.labels` returns them."""
  labels, masks = np.asarray(labels), np.asarray(masks)
  if task.kind == "grading":
    pos = int((labels >= tasks_lib.REFERABLE_MIN_GRADE).sum())
    return {"referable": (pos, len(labels) - pos)}
  if task.kind == "multilabel":
    kept = masks > 0
    return {name: (int(((labels[:, k] > 0.5) & kept[:, k]).sum()), int(((labels[:, k] <= 0.5) & kept[:, k]).sum()))
            for k, name in enumerate(task.class_names)}
  if task.kind == "multiclass" and task.one_vs_rest:
    flat, kept = labels.reshape(-1), masks.reshape(-1) > 0
    return {name: (int(((flat == k) & kept).sum()), int(((flat != k) & kept).sum()))
            for k, name in enumerate(task.class_names)}
  return {}


def check_classes(data, splits=("train", "validation", "test")):
  """A UsageError naming the first split of `splits` whose labels hold one class only, with its class counts.

  The trainer selects checkpoints on the validation AUC and scores the test AUC: with one class there is no AUC
  (nan in result.json), and a training split of one class teaches nothing. Grading needs referable and
  non-referable images in every split; multilabel at least one pathology with both; a task with every_class (the
  image task, whose primary metric averages every class's or label's AUC) every class or label. The labels are
  known once the
  dataset's builder has made its splits (`build_data`), before any image is decoded. TFDS splits (no labels without
  a pass over the records) are not checked.
  """
  for split in splits:
    held = data.labels(split) if split in data.num_examples else None
    if held is None:
      continue
    labels, masks = held
    counts = class_counts(data.task, labels, masks)
    if data.task.every_class:
      lacking = [(name, pos, neg) for name, (pos, neg) in counts.items() if not (pos and neg)]
      if lacking:
        name, pos, neg = lacking[0]
        more = f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""
        raise UsageError(f"the {split} split of {data.source_description or 'the dataset'} has {pos} images of "
                         f"{name} and {neg} without{more}, so its AUC is undefined; give every split images of every "
                         "class (more images, or another split: --val_fraction, --test_fraction, --data_split_seed "
                         "or the CSV's split column)")
      continue
    if not counts or any(pos and neg for pos, neg in counts.values()):
      continue
    if data.task.kind == "grading":
      grades = np.bincount(np.asarray(labels, np.int64), minlength=len(data.task.class_names))
      pos, neg = counts["referable"]
      detail = (f"grades {' '.join(f'{g}:{c}' for g, c in enumerate(grades))}, i.e. {pos} referable (grade >= "
                f"{tasks_lib.REFERABLE_MIN_GRADE}) and {neg} not")
    else:
      detail = ", ".join(f"{name} {pos} positive/{neg} negative" for name, (pos, neg) in counts.items())
    raise UsageError(f"the {split} split of {data.source_description or 'the dataset'} has one class only "
                     f"({detail}), so its AUC is undefined; give every split images of both classes")


def build_data(dataset, image_size, batch_size, model_name, weights=None, seed=0, channels=None, options=None,
               **data_kwargs):
  """Builds the input pipeline for `dataset` and the model that will read it.

  Args:
    dataset: a registered name (`registry.names()`): synthetic_retina | synthetic_cxr | synthetic_source (embedded
      generator), retina_csv (folder + APTOS/EyePACS CSV), eyepacs_tfds, chexpert (its own folder layout),
      chexpert_tfds, imagenet_tfds, image_csv (any labelled image folder; its CSV decides the task).
    image_size: model input side in pixels; batch_size: global batch.
    model_name, weights: pick the preprocessing mode (`preprocessing_mode`; data_kwargs' preprocessing overrides).
    seed: training order and augmentation (resumable; see the module docstring).
    channels: the model's input channels (default 3); images are converted 1<->3 as needed.
    options: a DataOptions; or pass its fields as keywords (`data_kwargs`, e.g. `**data.flags.data_kwargs_from_flags()`
      minus dataset, or a run's config["data_kwargs"]): data_dir, labels_csv, num_train, train_subset, split_seed, ...
      (see DataOptions). Keywords given with `options` replace its fields.
  Returns a Data.
  """
  try:
    opts = dataclasses.replace(options or DataOptions(), **data_kwargs)
  except TypeError as e:
    known = ", ".join(f.name for f in dataclasses.fields(DataOptions))
    raise TypeError(f"build_data: {e}; the data keywords are {known}") from None
  registry.get(dataset)  # An unknown name fails before any other check.
  records_lib.check_choice(opts.on_bad_image, records_lib.ON_BAD_IMAGE, "on_bad_image")
  records_lib.check_choice(opts.validate_images, records_lib.VALIDATE_LEVELS, "validate_images")
  if opts.flips is not None:
    records_lib.check_choice(opts.flips, FLIPS, "flips")
  if int(image_size) < 8:
    raise UsageError(f"image_size must be at least 8 px, got {image_size}")
  mode = preprocessing_mode(model_name, weights, opts.preprocessing)
  channels = 3 if channels is None else int(channels)
  if channels not in (1, 3):
    raise UsageError(f"channels must be 1 or 3, got {channels}")
  for name in ("num_train", "num_val", "num_test", "train_subset"):
    value = getattr(opts, name)
    if value is not None and int(value) < 1:
      raise UsageError(f"--{name} must be at least 1, got {value}")

  task, sources, description = registry.build_sources(dataset, opts, image_size)
  if opts.train_subset is not None:
    sources["train"] = subset_source(sources["train"], int(opts.train_subset), opts.split_seed, task)
    description += f", train subset of {int(opts.train_subset)} (stratified, split seed {opts.split_seed})"
  aug = opts.augmentation or Augmentation()
  aug = dataclasses.replace(aug, enabled=bool(opts.augment) and aug.enabled, flips=opts.flips or aug.flips)
  return Data(task, sources, image_size, batch_size, mode, seed=seed, channels=channels, augmentation=aug,
              on_bad_image=opts.on_bad_image, source_description=description)
