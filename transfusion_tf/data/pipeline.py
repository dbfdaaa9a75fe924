"""The tf.data input pipeline: any source plus a task spec -> batched, preprocessed datasets.

Entry point: `build_data(dataset, image_size, batch_size, model_name, ...) -> Data`.

Every dataset yields elements `(images float32 (B, S, S, C), labels, masks)`; see `tasks.py` for the label forms.

Resumability. The training dataset is infinite and its order is a pure function of (seed, global example index g):
example g is item `index_shuffle(g mod N, seed=(seed, g div N))` of the split, a seeded per-epoch permutation
computed on the fly, and its augmentation is drawn by stateless ops seeded by (seed, g). `Data.train(start_step)`
therefore starts at `Dataset.range(start_step * batch_size, ...)` and decodes nothing it skips: batch k of
`train(j)` equals batch j + k of `train(0)`. TFDS splits offer no random access, so they fall back to a seeded
shuffle buffer and `Dataset.skip`, which reads (but does not decode) the skipped records.

Bad images. Files are checked before any tf.data op runs (`check_image_files`): existence, readability, a known
image header and, for JPEG and PNG, the end marker that a truncated download lacks. `validate_images="full"` also
decodes every file once with PIL (threads) and caches the verdicts in a JSON sidecar keyed by size and mtime.
`on_bad_image="fail"` raises a UsageError naming the first bad file; "skip" drops them with one counted warning.
Anything that still fails to decode inside tf.data is dropped by `ignore_errors` and noticed by a gap check on the
example index, which names the file (skip: a warning; fail: an error whose message starts with "UsageError:").
"""
import concurrent.futures
import dataclasses
import hashlib
import inspect
import json
import math
import os
import threading

from absl import logging
import numpy as np
import tensorflow as tf

from transfusion_tf.data import tasks as tasks_lib
from transfusion_tf.errors import UsageError
from transfusion_tf.models.preprocessing import preprocess, preprocessing_mode

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation", "test")
ON_BAD_IMAGE = ("fail", "skip")
VALIDATE_LEVELS = ("quick", "full", "off")
SYNTHETIC_DEFAULT_SIZES = {"train": 2000, "validation": 1000, "test": 1000}
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "transfusion_tf")

# Formats tf.io.decode_image reads natively; the rest (TIFF, WebP) go through PIL in a tf.numpy_function.
_TF_FORMATS = ("jpeg", "png", "gif", "bmp")
_PIL_EXTENSIONS = (".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------------------------------------------------
# File records and up-front checks.


@dataclasses.dataclass
class FileRecords:
  """An indexable image-folder split: one row per image.

  paths: (N,) str absolute paths. labels: (N,) int grades / class ids, or (N, 5) int8 raw CheXpert labels in
  {-1, 0, 1}. patient_ids: (N,) str. rows: (N,) int line numbers in `origin` (the CSV), for messages.
  formats: (N,) str image formats found by `check_image_files` ("" until checked). extra: more (N,) arrays,
  e.g. "split" or "view".
  """
  paths: np.ndarray
  labels: np.ndarray
  patient_ids: np.ndarray
  origin: str = ""
  rows: np.ndarray = None
  formats: np.ndarray = None
  extra: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = len(self.paths)
    if self.rows is None:
      self.rows = np.arange(n)
    if self.formats is None:
      self.formats = np.full(n, "", dtype=object)

  def __len__(self):
    return len(self.paths)

  def take(self, indices):
    """The records at `indices` (an int array or a boolean mask), as a new FileRecords."""
    idx = np.asarray(indices)
    return FileRecords(paths=self.paths[idx], labels=self.labels[idx], patient_ids=self.patient_ids[idx],
                       origin=self.origin, rows=self.rows[idx], formats=self.formats[idx],
                       extra={k: v[idx] for k, v in self.extra.items()})


def check_choice(value, choices, flag):
  if value not in choices:
    raise UsageError(f"--{flag}={value!r} is not one of {', '.join(choices)}")
  return value


def report_bad_rows(bad_rows, total, csv_path, on_bad_image):
  """CSV rows with bad values: raise a UsageError naming the first (on_bad_image="fail"), or log a counted warning.

  bad_rows: messages like "<csv> row 7: label 9 is not a 0-4 grade"; total: rows read from `csv_path`.
  """
  if not bad_rows:
    return
  if on_bad_image == "fail":
    more = f" ({len(bad_rows) - 1} more bad rows)" if len(bad_rows) > 1 else ""
    raise UsageError(f"{bad_rows[0]}{more}; fix the CSV or pass --on_bad_image=skip")
  logging.warning("skipped %d of %d rows of %s with bad values (first: %s)", len(bad_rows), total, csv_path,
                  bad_rows[0])


def sniff_format(head):
  """Image format from the first bytes of a file: "jpeg", "png", "gif", "bmp", "tiff", "webp" or None."""
  if head.startswith(b"\xff\xd8\xff"):
    return "jpeg"
  if head.startswith(b"\x89PNG\r\n\x1a\n"):
    return "png"
  if head[:6] in (b"GIF87a", b"GIF89a"):
    return "gif"
  if head.startswith(b"BM"):
    return "bmp"
  if head[:4] in (b"II*\x00", b"MM\x00*"):
    return "tiff"
  if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
    return "webp"
  return None


def _quick_check(path):
  """(format or None, reason or "") from the header and, for JPEG/PNG, the end marker. Reads two small chunks."""
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      if size == 0:
        return None, "empty file"
      head = f.read(16)
      fmt = sniff_format(head)
      if fmt is None:
        return None, "not a PNG/JPEG/TIFF/BMP/GIF/WebP image (unrecognised header bytes)"
      if fmt in ("jpeg", "png"):
        f.seek(max(0, size - 1024))
        tail = f.read()
        if fmt == "jpeg" and b"\xff\xd9" not in tail:
          return fmt, "truncated JPEG (no end-of-image marker)"
        if fmt == "png" and b"IEND" not in tail:
          return fmt, "truncated PNG (no IEND chunk)"
      return fmt, ""
  except FileNotFoundError:
    return None, "file not found"
  except IsADirectoryError:
    return None, "is a directory, not an image file"
  except OSError as e:
    return None, f"unreadable ({e.strerror or e})"


def _full_check(path):
  """_quick_check, then a complete decode with PIL (JPEG at 1/8 scale: same entropy decoding, less IDCT)."""
  fmt, reason = _quick_check(path)
  if reason:
    return fmt, reason
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as im:
      im.verify()
    with Image.open(path) as im:
      if im.format == "JPEG":
        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
      im.load()
  except Exception as e:  # pylint: disable=broad-except
    return fmt, f"cannot be decoded ({type(e).__name__}: {e})"
  return fmt, ""


def _sidecar_path(cache_dir, paths):
  digest = hashlib.sha1("\n".join(map(str, paths[:1000])).encode() + str(len(paths)).encode()).hexdigest()[:16]
  return os.path.join(cache_dir or DEFAULT_CACHE_DIR, "image_checks", f"{digest}.json")


def check_image_files(records, on_bad_image="fail", level="quick", cache_dir=None, what="image"):
  """Checks every file of `records` (FileRecords) once, before tf.data sees it. Returns the kept records.

  level: "quick" (exists, readable, known header, JPEG/PNG end marker; ~20 us a file), "full" (also decode every
  file with PIL in a thread pool; verdicts are cached in a JSON sidecar under cache_dir keyed by file size and
  mtime, so only new or changed files are decoded again) or "off" (existence only).
  on_bad_image: "fail" raises a UsageError naming the first bad file, its CSV row and the count of bad files;
  "skip" drops them and logs one warning with the count.
  """
  check_choice(on_bad_image, ON_BAD_IMAGE, "on_bad_image")
  check_choice(level, VALIDATE_LEVELS, "validate_images")
  paths = [str(p) for p in records.paths]
  n = len(paths)
  results = [None] * n
  if level == "off":
    for i, p in enumerate(paths):
      results[i] = (None, "") if os.path.isfile(p) else (None, "file not found")
  else:
    check = _quick_check if level == "quick" else _full_check
    cached, sidecar = {}, None
    if level == "full":
      sidecar = _sidecar_path(cache_dir, paths)
      try:
        with open(sidecar, encoding="utf-8") as f:
          cached = json.load(f)
      except (OSError, ValueError):
        cached = {}
    todo = []
    stats = [None] * n
    for i, p in enumerate(paths):
      if level == "full":
        try:
          st = os.stat(p)
          stats[i] = [st.st_size, st.st_mtime_ns]
        except OSError:
          stats[i] = None
        hit = cached.get(p)
        if hit is not None and stats[i] is not None and hit[:2] == stats[i]:
          results[i] = (hit[2] or None, hit[3])
          continue
      todo.append(i)
    workers = min(32, 4 * (os.cpu_count() or 1)) if level == "quick" else (os.cpu_count() or 1)
    if len(todo) > 64:
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for i, res in zip(todo, pool.map(check, [paths[i] for i in todo], chunksize=64)):
          results[i] = res
    else:
      for i in todo:
        results[i] = check(paths[i])
    if sidecar and todo:
      for i in todo:
        if stats[i] is not None:
          cached[paths[i]] = stats[i] + [results[i][0] or "", results[i][1]]
      try:
        os.makedirs(os.path.dirname(sidecar), exist_ok=True)
        tmp = f"{sidecar}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
          json.dump(cached, f)
        os.replace(tmp, sidecar)
      except OSError as e:
        logging.warning("could not write the image-check cache %s: %s", sidecar, e)
  bad = [i for i in range(n) if results[i][1]]
  formats = np.array([r[0] or "" for r in results], dtype=object)
  records.formats = formats
  if not bad:
    return records
  first = bad[0]
  where = f" (row {records.rows[first]} of {records.origin})" if records.origin else ""
  if on_bad_image == "fail":
    more = f"; {len(bad) - 1} more bad {what} files" if len(bad) > 1 else ""
    raise UsageError(f"{what} file {paths[first]}{where}: {results[first][1]}{more}. Replace or remove it, or "
                     f"pass --on_bad_image=skip to leave bad files out")
  logging.warning("skipped %d of %d %s files that are missing or unreadable (first: %s%s: %s)", len(bad), n, what,
                  paths[first], where, results[first][1])
  keep = np.ones(n, bool)
  keep[bad] = False
  return records.take(keep)


# ---------------------------------------------------------------------------------------------------------------
# Splits and subsets.


def _strata(labels):
  labels = np.asarray(labels)
  if labels.ndim == 1:
    _, inverse = np.unique(labels, return_inverse=True)
  else:
    _, inverse = np.unique(labels.reshape(len(labels), -1), axis=0, return_inverse=True)
  return np.asarray(inverse).reshape(-1)


def subset_indices(labels, n, seed):
  """A seeded subset of `n` indices, stratified by label; sorted ascending.

  labels: (N,) ints (grades, class ids) -> strata are the values; (N, K) (CheXpert) -> strata are label patterns.
  Each stratum gets its proportional share (largest-remainder rounding, ties broken by the seed), so the subset
  has exactly n items and the label mix of the whole.
  """
  labels = np.asarray(labels)
  total = len(labels)
  n = int(n)
  if n <= 0:
    raise UsageError(f"a subset needs at least 1 example, got {n}")
  if n > total:
    raise UsageError(f"asked for a subset of {n} examples but the split has only {total}")
  if n == total:
    return np.arange(total)
  rng = np.random.default_rng(seed)
  strata = _strata(labels)
  counts = np.bincount(strata)
  quota = counts * (n / total)
  alloc = np.floor(quota).astype(int)
  short = n - alloc.sum()
  if short:
    order = np.lexsort((rng.random(len(counts)), -(quota - alloc)))
    alloc[order[:short]] += 1
  chosen = []
  for k, m in enumerate(alloc):
    if m:
      members = np.flatnonzero(strata == k)
      chosen.append(rng.choice(members, size=m, replace=False))
  return np.sort(np.concatenate(chosen))


def patient_split(patient_ids, fractions, seed):
  """Splits by patient, never by image: returns one index array per fraction, then the rest.

  Patients are drawn in a seeded order; each part takes whole patients until it holds at least its fraction of
  the images (parts are never empty when fraction > 0 and patients remain).
  """
  patient_ids = np.asarray(patient_ids)
  uniq, inverse = np.unique(patient_ids, return_inverse=True)
  inverse = inverse.reshape(-1)
  counts = np.bincount(inverse, minlength=len(uniq))
  order = np.random.default_rng(seed).permutation(len(uniq))
  total = len(patient_ids)
  parts, pos = [], 0
  for frac in fractions:
    target = int(round(frac * total))
    taken, got = [], 0
    while pos < len(order) and (got < target or (frac > 0 and not taken)):
      taken.append(order[pos])
      got += counts[order[pos]]
      pos += 1
    parts.append(np.flatnonzero(np.isin(inverse, taken)))
  parts.append(np.flatnonzero(np.isin(inverse, order[pos:])))
  return parts


# ---------------------------------------------------------------------------------------------------------------
# Sources: what a split holds, before batching.


@dataclasses.dataclass
class ArraySource:
  """In-memory images uint8 (N, H, W, C) with training labels and masks (already through the label policy)."""
  images: np.ndarray
  labels: np.ndarray
  masks: np.ndarray

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class FileSource:
  """Image files (checked) with training labels and masks. use_pil marks formats TF cannot decode (TIFF, WebP)."""
  paths: np.ndarray
  labels: np.ndarray
  masks: np.ndarray
  use_pil: np.ndarray = None

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class TfdsSource:
  """A TFDS split without random access. make() returns a finite dataset of (encoded image, label, mask)."""
  make: object
  size: int
  exact: bool = True
  name: str = "tfds"

  def __len__(self):
    return self.size


def file_source(records, task):
  """FileRecords (checked) -> FileSource with labels through the task's label transform."""
  labels, masks = training_labels(records.labels, task)
  # Formats come from check_image_files; with validate_images="off" they are unknown, so go by the extension.
  use_pil = np.array([(f not in _TF_FORMATS) if f else os.path.splitext(str(p))[1].lower() in _PIL_EXTENSIONS
                      for f, p in zip(records.formats, records.paths)], bool)
  return FileSource(paths=np.asarray(records.paths).astype(str), labels=labels, masks=masks, use_pil=use_pil)


def training_labels(raw, task):
  """Raw labels -> (labels, masks) as the pipeline yields them for `task` (numpy)."""
  if task.kind == "multilabel":
    return tasks_lib.apply_uncertainty(raw, task.uncertainty_policy, task.class_names)
  labels = np.asarray(raw).astype(np.int32).reshape(-1)
  hi = task.num_outputs if task.kind == "multiclass" else len(task.class_names)
  bad = (labels < 0) | (labels >= hi)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise UsageError(f"label {labels[i]} (example {i}) is outside 0..{hi - 1} for the {task.name} task")
  return labels, np.ones(len(labels), np.float32)


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
  """Decodes JPEG (DCT-domain downscale by 2/4/8 when the image is that much larger than target), PNG, GIF, BMP."""
  def jpeg():
    shape = tf.image.extract_jpeg_shape(contents)
    side = tf.minimum(shape[0], shape[1])
    branch = (tf.cast(side >= 2 * target, tf.int32) + tf.cast(side >= 4 * target, tf.int32) +
              tf.cast(side >= 8 * target, tf.int32))
    return tf.switch_case(branch, [lambda r=r: tf.io.decode_jpeg(contents, channels=channels, ratio=r)
                                   for r in (1, 2, 4, 8)])

  def other():
    return tf.io.decode_image(contents, channels=channels, expand_animations=False)

  image = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
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

  flips follow the task (retina: left-right and up-down; cxr and source: left-right only). rotation_degrees: max
  absolute angle. brightness: max shift as a fraction of 255. contrast: max relative change of the contrast.
  """
  enabled: bool = True
  rotation_degrees: float = 10.0
  brightness: float = 0.1
  contrast: float = 0.1


def _aug_params(seed, g):
  """Five uniforms in [0, 1) for example g: flip lr, flip ud, angle, brightness, contrast."""
  s = tf.stack([tf.constant(2 * seed + 1, tf.int64), tf.cast(g, tf.int64)])
  return tf.random.stateless_uniform([5], seed=s, dtype=tf.float32)


def _augment(images, params, flips, aug):
  """Applies the per-example augmentation `params` (B, 5) to float images (B, H, W, C) in [0, 255]."""
  flip_lr = params[:, 0] < 0.5
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


def _uncertainty_tf(raw, task):
  """TF twin of tasks.apply_uncertainty for one example: raw (5,) float in {-1, 0, 1} -> (label, mask)."""
  values, keep = [], []
  for name in task.class_names:
    v = tasks_lib._uncertain_value(name, task.uncertainty_policy)  # pylint: disable=protected-access
    values.append(0.0 if v is None else float(v))
    keep.append(0.0 if v is None else 1.0)
  uncertain = tf.equal(raw, -1.0)
  label = tf.where(uncertain, tf.constant(values), raw)
  mask = tf.where(uncertain, tf.constant(keep), tf.ones_like(raw))
  return label, mask


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
    self.on_bad_image = check_choice(on_bad_image, ON_BAD_IMAGE, "on_bad_image")
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
                lambda: tf.numpy_function(lambda p: _pil_decode_np(p, channels_in), [path], tf.uint8,
                                          stateful=False),
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
    flips, aug, mode, want = task.flips, self.augmentation, self.preprocessing, self.channels

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
    ds = ds.map(finish, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)

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


# ---------------------------------------------------------------------------------------------------------------
# build_data: dataset name -> Data.


def build_data(dataset, image_size, batch_size, model_name, weights=None, seed=0, data_dir=None, labels_csv=None,
               image_column=None, label_column=None, tfds_manual_dir=None, tfds_config=None, tfds_data_dir=None,
               num_train=None, num_val=None, num_test=None, train_subset=None, uncertainty_policy="per_pathology",
               frontal_only=False, on_bad_image="fail", validate_images="quick", augment=True, channels=None,
               preprocessing=None, synthetic_difficulty=None, cache_dir=None, split_seed=0, binary_head=False,
               val_fraction=None, test_fraction=0.1, augmentation=None):
  """Builds the input pipeline for `dataset` and the model that will read it.

  Args:
    dataset: one of tasks.DATASETS: synthetic_retina | synthetic_cxr | synthetic_source (embedded generator),
      retina_csv (folder + APTOS/EyePACS CSV), eyepacs_tfds, chexpert (its own folder layout), chexpert_tfds,
      imagenet_tfds.
    image_size: model input side in pixels; batch_size: global batch.
    model_name, weights, preprocessing: pick the preprocessing mode (`preprocessing_mode`); preprocessing overrides.
    seed: training order and augmentation (resumable; see the module docstring).
    split_seed: held-out splits, synthetic generation and subsets; fixed across repetitions by default so that every
      seed sees the same data.
    data_dir, labels_csv, image_column, label_column: folder sources (retina_csv, chexpert).
    tfds_manual_dir, tfds_config, tfds_data_dir: TFDS sources (tfds_data_dir: where prepared TFDS data lives).
    num_train, num_val, num_test: synthetic: examples to generate (defaults 2000/1000/1000); real data: caps
      (stratified seeded subsets for folder sources, the first N records for TFDS).
    train_subset: the small-data regime: a stratified seeded subset of N training examples (PAPER: 5,000).
    uncertainty_policy, frontal_only: CheXpert. binary_head: retina single-sigmoid head.
    on_bad_image: "fail" | "skip"; validate_images: "quick" | "full" | "off" (see check_image_files).
    augment: training augmentation on/off; augmentation: an Augmentation to change its strengths.
    channels: the model's input channels (default 3); images are converted 1<->3 as needed.
    synthetic_difficulty, cache_dir: passed to the synthetic generator (cache_dir also holds image-check sidecars).
    val_fraction, test_fraction: held-out shares for sources without an official split (CheXpert val: 0.05;
      retina_csv: 0.1 each).
  """
  task_name = tasks_lib.task_for_dataset(dataset)
  check_choice(on_bad_image, ON_BAD_IMAGE, "on_bad_image")
  check_choice(validate_images, VALIDATE_LEVELS, "validate_images")
  if int(image_size) < 8:
    raise UsageError(f"image_size must be at least 8 px, got {image_size}")
  mode = preprocessing_mode(model_name, weights, preprocessing)
  channels = 3 if channels is None else int(channels)
  if channels not in (1, 3):
    raise UsageError(f"channels must be 1 or 3, got {channels}")
  for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test),
                      ("train_subset", train_subset)):
    if value is not None and int(value) < 1:
      raise UsageError(f"--{name} must be at least 1, got {value}")
  options = dict(binary_head=binary_head, uncertainty_policy=uncertainty_policy)
  caps = {"train": num_train, "validation": num_val, "test": num_test}
  common = dict(on_bad_image=on_bad_image, validate_images=validate_images, cache_dir=cache_dir)

  if dataset.startswith("synthetic_"):
    task, sources, description = _synthetic_sources(task_name, caps, image_size, split_seed, cache_dir,
                                                   synthetic_difficulty, options)
  elif dataset == "retina_csv":
    from transfusion_tf.data import retina  # pylint: disable=import-outside-toplevel
    task = tasks_lib.get_task("retina", **options)
    records = retina.read_csv_folder(data_dir, labels_csv, image_column=image_column, label_column=label_column,
                                     **common)
    parts = retina.split_records(records, val_fraction=0.1 if val_fraction is None else val_fraction,
                                 test_fraction=test_fraction, seed=split_seed)
    sources = {s: file_source(_cap(parts[s], caps[s], split_seed, s), task) for s in SPLITS}
    description = f"retina_csv ({records.origin}, {len(records)} images)"
  elif dataset == "chexpert":
    from transfusion_tf.data import chexpert  # pylint: disable=import-outside-toplevel
    task = tasks_lib.get_task("cxr", **options)
    parts = chexpert.read_splits(data_dir, frontal_only=frontal_only,
                                 val_fraction=0.05 if val_fraction is None else val_fraction, seed=split_seed,
                                 **common)
    sources = {s: file_source(_cap(parts[s], caps[s], split_seed, s), task) for s in SPLITS}
    description = (f"chexpert ({parts['root']}{', frontal only' if frontal_only else ''}, "
                   f"uncertainty policy {uncertainty_policy})")
  elif dataset in ("eyepacs_tfds", "chexpert_tfds", "imagenet_tfds"):
    task, sources, description = _tfds_sources(dataset, tfds_config, tfds_data_dir, tfds_manual_dir, caps,
                                               frontal_only, split_seed, val_fraction, options)
  else:  # task_for_dataset already rejected unknown names.
    raise UsageError(f"unknown --dataset={dataset!r}; known: {', '.join(tasks_lib.DATASETS)}")

  if train_subset is not None:
    sources["train"] = _subset_source(sources["train"], int(train_subset), split_seed, task, cache_dir)
    description += f", train subset of {int(train_subset)} (stratified, split seed {split_seed})"
  aug = augmentation or Augmentation()
  aug = dataclasses.replace(aug, enabled=bool(augment) and aug.enabled)
  return Data(task, sources, image_size, batch_size, mode, seed=seed, channels=channels, augmentation=aug,
              on_bad_image=on_bad_image, source_description=description)


def _cap(records, cap, seed, split):
  if cap is None or int(cap) >= len(records):
    return records
  return records.take(subset_indices(records.labels, int(cap), seed + SPLITS.index(split)))


def _subset_source(src, n, seed, task, cache_dir):
  if n > len(src):
    raise UsageError(f"--train_subset={n} exceeds the {len(src)} training examples")
  if isinstance(src, TfdsSource):
    return _tfds_subset(src, n, seed, task, cache_dir)
  idx = subset_indices(src.labels if src.labels.ndim == 1 else src.labels * (src.masks > 0) + 2 * (src.masks == 0),
                       n, seed)
  if isinstance(src, ArraySource):
    return ArraySource(images=src.images[idx], labels=src.labels[idx], masks=src.masks[idx])
  return FileSource(paths=src.paths[idx], labels=src.labels[idx], masks=src.masks[idx],
                    use_pil=None if src.use_pil is None else src.use_pil[idx])


def _synthetic_sources(task_name, caps, image_size, split_seed, cache_dir, difficulty, options):
  from transfusion_tf.data import synthetic  # pylint: disable=import-outside-toplevel
  gen_task = {"retina": "retina", "cxr": "cxr", "source": "source"}[task_name]
  sources, num_classes = {}, None
  raw_parts = {}
  for split in SPLITS:
    n = int(caps[split] or SYNTHETIC_DEFAULT_SIZES[split])
    kw = dict(cache_dir=cache_dir, difficulty=difficulty)
    if "mmap" in inspect.signature(synthetic.load_or_generate).parameters:
      kw["mmap"] = True  # Read from the page cache instead of holding every split in memory (587 px: GBs).
    images, labels, _ = synthetic.load_or_generate(gen_task, split, n, int(image_size), split_seed, **kw)
    if images.dtype != np.uint8:
      images = np.asarray(images, np.uint8)
    raw_parts[split] = (images, np.asarray(labels))
  if task_name == "source":
    nc = getattr(synthetic, "NUM_CLASSES", None)
    num_classes = nc.get("source") if isinstance(nc, dict) else nc
    if not num_classes:
      num_classes = int(max(int(l.max()) for _, l in raw_parts.values())) + 1
    options = dict(options, num_classes=num_classes)
  task = tasks_lib.get_task(task_name, **options)
  for split, (images, raw) in raw_parts.items():
    if images.ndim == 3:
      images = images[..., None]
    if images.shape[-1] != task.channels:
      raise UsageError(f"synthetic {task_name} {split} images have {images.shape[-1]} channels, expected "
                       f"{task.channels}")
    labels, masks = training_labels(raw, task)
    sources[split] = ArraySource(images=images, labels=labels, masks=masks)
  return task, sources, f"synthetic_{task_name} (embedded synthetic data, not real patients)"


# -- TFDS ---------------------------------------------------------------------------------------------------------


def _tfds_sources(dataset, config, data_dir, manual_dir, caps, frontal_only, split_seed, val_fraction, options):
  if dataset == "eyepacs_tfds":
    from transfusion_tf.data import retina  # pylint: disable=import-outside-toplevel
    task = tasks_lib.get_task("retina", **options)
    sources = {}
    for split in SPLITS:
      raw, size = retina.load_eyepacs_tfds(split, config=config, data_dir=data_dir, manual_dir=manual_dir,
                                           decode=False)
      sources[split] = _tfds_source(raw, size, True, caps[split], task, f"eyepacs_tfds/{config or 'btgraham-300'}")
    return task, sources, f"eyepacs_tfds (TFDS diabetic_retinopathy_detection/{config or retina.DEFAULT_TFDS_CONFIG})"
  if dataset == "chexpert_tfds":
    from transfusion_tf.data import chexpert  # pylint: disable=import-outside-toplevel
    task = tasks_lib.get_task("cxr", **options)
    frac = 0.05 if val_fraction is None else val_fraction
    sources = {}
    for split in SPLITS:
      raw, size, exact = chexpert.load_chexpert_tfds(split, data_dir=data_dir, manual_dir=manual_dir,
                                                     frontal_only=frontal_only, val_fraction=frac, seed=split_seed,
                                                     decode=False)
      sources[split] = _tfds_source(raw, size, exact, caps[split], task, "chexpert_tfds")
    return task, sources, ("chexpert_tfds (TFDS chexpert, patient-hashed validation hold-out, official valid as "
                           f"test{', frontal only' if frontal_only else ''})")
  # imagenet_tfds
  task = tasks_lib.task_spec_for_dataset("imagenet_tfds", **options)
  frac = 0.01 if val_fraction is None else val_fraction
  pct = max(1, int(round(100 * frac)))
  tfds_splits = {"train": f"train[{pct}%:]", "validation": f"train[:{pct}%]", "test": "validation"}
  sources = {}
  for split in SPLITS:
    raw, size = load_tfds("imagenet2012", tfds_splits[split], None, data_dir, manual_dir,
                          required=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"), flag_hint="imagenet_tfds")
    raw = raw.map(lambda ex: (ex["image"], ex["label"]))
    sources[split] = _tfds_source(raw, size, True, caps[split], task, "imagenet2012")
  return task, sources, f"imagenet_tfds (TFDS imagenet2012; validation = first {pct}% of train, test = official val)"


def _tfds_source(raw, size, exact, cap, task, name):
  """raw: dataset of (encoded image, raw label) -> TfdsSource of (encoded, label, mask)."""
  if task.kind == "multilabel":
    def fix(image, label):
      lab, mask = _uncertainty_tf(tf.cast(label, tf.float32), task)
      return image, lab, mask
  else:
    def fix(image, label):
      return image, tf.cast(label, tf.int32), tf.constant(1.0, tf.float32)
  if cap is not None and int(cap) < size:
    size = int(cap)
    capped = lambda: raw.take(size).map(fix)  # pylint: disable=unnecessary-lambda-assignment
  else:
    capped = lambda: raw.map(fix)  # pylint: disable=unnecessary-lambda-assignment
  return TfdsSource(make=capped, size=int(size), exact=exact, name=name)


def _tfds_subset(src, n, seed, task, cache_dir):
  """Stratified subset of a TFDS split: one label-only pass (no decoding), then a filter on the record number."""
  labels, masks = [], []
  for _, lab, mask in src.make().batch(4096).as_numpy_iterator():
    labels.append(lab)
    masks.append(mask)
  labels = np.concatenate(labels) if labels else np.zeros([0])
  masks = np.concatenate(masks) if masks else np.zeros([0])
  strata = labels if labels.ndim == 1 else labels * (masks > 0) + 2 * (masks == 0)
  keep = np.zeros(len(labels), bool)
  keep[subset_indices(strata, n, seed)] = True
  keep_t = tf.constant(keep)
  make = src.make

  def subset():
    return make().enumerate().filter(lambda i, ex: tf.gather(keep_t, i)).map(lambda i, ex: ex)
  del cache_dir
  return TfdsSource(make=subset, size=int(n), exact=True, name=src.name)


def load_tfds(name, split, config, data_dir, manual_dir, required, flag_hint, decode=False):
  """A TFDS split as a dataset of example dicts (image left encoded unless decode) and its size.

  Fails fast, before TFDS touches the network: an unprepared dataset needs --tfds_manual_dir holding `required`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    builder = tfds.builder(name, config=config, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"TFDS cannot build {name}{'/' + config if config else ''}: {e}") from e
  if not builder.is_prepared():
    if not manual_dir:
      raise UsageError(f"--dataset={flag_hint}: TFDS {name} is not prepared under {builder.data_dir}; download it by "
                       f"hand and pass --tfds_manual_dir=DIR holding {', '.join(required)} (or --tfds_data_dir "
                       f"where it is already prepared)")
    missing = [r for r in required if not os.path.exists(os.path.join(manual_dir, r))]
    if missing:
      raise UsageError(f"--tfds_manual_dir={manual_dir} lacks {', '.join(missing)} for TFDS {name}; put the "
                       f"manually downloaded files there")
    try:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception as e:  # pylint: disable=broad-except
      raise UsageError(f"preparing TFDS {name} from {manual_dir} failed: {type(e).__name__}: {e}") from e
  decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"TFDS {name} has no split {split!r}: {e}") from e
  size = int(ds.cardinality())
  if size < 0:
    size = int(builder.info.splits[split].num_examples)
  if size == 0:
    raise UsageError(f"TFDS {name} split {split!r} is empty")
  return ds, size
