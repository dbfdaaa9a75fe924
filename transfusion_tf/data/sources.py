"""Sources: what a split holds before batching, and the label policy that turns stored labels into training ones.

A dataset builder (see `registry.py`) returns one source per split:
  ArraySource  in-memory uint8 images (the synthetic tasks);
  FileSource   checked image files (folder datasets: retina_csv, chexpert);
  TfdsSource   a TFDS split without random access (eyepacs_tfds, chexpert_tfds, imagenet_tfds).
Labels and masks are already through the task's policy (`training_labels`; `tfds_source` does it in-graph).

Patients. A source also carries each example's patient id where the data has one (`patients`: the synthetic
retina's eye pairs and cxr studies, EyePACS `N_left`/`N_right`, CheXpert's patient folder), aligned with the eval
order; None where it has none (APTOS, the source task). They never enter tf.data: only the test scoring reads them,
so what the model sees and the order it sees it in stay as they were. A TFDS source holds a function instead of an
array, run only when asked (one pass over the split's `name` features, images left encoded).
"""
import dataclasses
import os

import numpy as np
import tensorflow as tf

from transfusion_tf.data import records as records_lib
from transfusion_tf.data import tasks as tasks_lib
from transfusion_tf.errors import UsageError

# Formats tf.io.decode_image reads natively; the rest (TIFF, WebP) go through PIL in a tf.numpy_function.
TF_FORMATS = ("jpeg", "png", "gif", "bmp")
_PIL_EXTENSIONS = (".tif", ".tiff", ".webp")


@dataclasses.dataclass
class ArraySource:
  """In-memory images uint8 (N, H, W, C) with training labels and masks (already through the label policy);
  patients: (N,) patient ids or None (see the module docstring)."""
  images: np.ndarray
  labels: np.ndarray
  masks: np.ndarray
  patients: np.ndarray = None

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class FileSource:
  """Image files (checked) with training labels and masks. use_pil marks formats TF cannot decode (TIFF, WebP).
  patients: (N,) str patient ids or None (see the module docstring)."""
  paths: np.ndarray
  labels: np.ndarray
  masks: np.ndarray
  use_pil: np.ndarray = None
  patients: np.ndarray = None

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class TfdsSource:
  """A TFDS split without random access. make() returns a finite dataset of (encoded image, label, mask).
  patients: None, or a function () -> (size,) patient ids (or None) in make()'s order; it reads the whole split."""
  make: object
  size: int
  exact: bool = True
  name: str = "tfds"
  patients: object = None

  def __len__(self):
    return self.size


def file_source(records, task):
  """FileRecords (checked) -> FileSource with labels through the task's label transform."""
  labels, masks = training_labels(records.labels, task)
  # Formats come from check_image_files; with validate_images="off" they are unknown, so go by the extension.
  use_pil = np.array([(f not in TF_FORMATS) if f else os.path.splitext(str(p))[1].lower() in _PIL_EXTENSIONS
                      for f, p in zip(records.formats, records.paths)], bool)
  patients = np.asarray(records.patient_ids) if records.has_patients else None
  return FileSource(paths=np.asarray(records.paths).astype(str), labels=labels, masks=masks, use_pil=use_pil,
                    patients=patients)


def training_labels(raw, task):
  """Raw labels -> (labels, masks) as the pipeline yields them for `task` (numpy)."""
  if task.kind == "multilabel" and task.uncertainty_policy is None:
    # The image task's 0/1 labels, checked by its reader: every one counts.
    labels = np.asarray(raw, np.float32).reshape(len(raw), task.num_outputs)
    return labels, np.ones_like(labels)
  if task.kind == "multilabel":
    return tasks_lib.apply_uncertainty(raw, task.uncertainty_policy, task.class_names)
  labels = np.asarray(raw).astype(np.int32).reshape(-1)
  hi = task.num_outputs if task.kind == "multiclass" else len(task.class_names)
  bad = (labels < 0) | (labels >= hi)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise UsageError(f"label {labels[i]} (example {i}) is outside 0..{hi - 1} for the {task.name} task")
  return labels, np.ones(len(labels), np.float32)


def uncertainty_tf(raw, task):
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


def tfds_source(raw, size, exact, cap, task, name, patients=None):
  """raw: dataset of (encoded image, raw label) -> TfdsSource of (encoded, label, mask).

  patients: None, or a function called as patients(take=n) -> the patient ids of raw's first n examples (n None: all
  of them) in raw's order, or None where the names hold no patient; the TfdsSource runs it only when asked.
  """
  if task.kind == "multilabel":
    def fix(image, label):
      lab, mask = uncertainty_tf(tf.cast(label, tf.float32), task)
      return image, lab, mask
  else:
    def fix(image, label):
      return image, tf.cast(label, tf.int32), tf.constant(1.0, tf.float32)
  take = None
  if cap is not None and int(cap) < size:
    size = take = int(cap)
    capped = lambda: raw.take(size).map(fix)  # pylint: disable=unnecessary-lambda-assignment
  else:
    capped = lambda: raw.map(fix)  # pylint: disable=unnecessary-lambda-assignment
  lazy = None if patients is None else (lambda: patients(take=take))
  return TfdsSource(make=capped, size=int(size), exact=exact, name=name, patients=lazy)


def subset_source(src, n, seed, task):
  """A stratified seeded subset of `n` examples of a source (the small-data regime), as a source of the same kind."""
  if n > len(src):
    raise UsageError(f"--train_subset={n} exceeds the {len(src)} training examples")
  if isinstance(src, TfdsSource):
    return _tfds_subset(src, n, seed)
  strata = src.labels if src.labels.ndim == 1 else src.labels * (src.masks > 0) + 2 * (src.masks == 0)
  idx = records_lib.subset_indices(strata, n, seed)
  patients = None if src.patients is None else src.patients[idx]
  if isinstance(src, ArraySource):
    return ArraySource(images=src.images[idx], labels=src.labels[idx], masks=src.masks[idx], patients=patients)
  return FileSource(paths=src.paths[idx], labels=src.labels[idx], masks=src.masks[idx],
                    use_pil=None if src.use_pil is None else src.use_pil[idx], patients=patients)


def _tfds_subset(src, n, seed):
  """Stratified subset of a TFDS split: one label-only pass (no decoding), then a filter on the record number."""
  labels, masks = [], []
  for _, lab, mask in src.make().batch(4096).as_numpy_iterator():
    labels.append(lab)
    masks.append(mask)
  labels = np.concatenate(labels) if labels else np.zeros([0])
  masks = np.concatenate(masks) if masks else np.zeros([0])
  strata = labels if labels.ndim == 1 else labels * (masks > 0) + 2 * (masks == 0)
  keep = np.zeros(len(labels), bool)
  keep[records_lib.subset_indices(strata, n, seed)] = True
  keep_t = tf.constant(keep)
  make, all_patients = src.make, src.patients

  def subset():
    return make().enumerate().filter(lambda i, ex: tf.gather(keep_t, i)).map(lambda i, ex: ex)

  def patients():
    ids = all_patients()
    return None if ids is None or len(ids) != len(keep) else np.asarray(ids)[keep]
  return TfdsSource(make=subset, size=int(n), exact=True, name=src.name,
                    patients=None if all_patients is None else patients)
