"""The embedded synthetic datasets (synthetic_retina, synthetic_cxr, synthetic_source) as registry builders.

The images come from `synthetic.load_or_generate` (generated once per split, size and seed, then cached); this file
only turns them into ArraySources, with the generator's patient ids (retina: the two eyes of a patient; cxr: a
patient's studies). No download, no real patients.
"""
import numpy as np

from transfusion_tf.data import records as records_lib
from transfusion_tf.data import sources as sources_lib
from transfusion_tf.data import synthetic
from transfusion_tf.errors import UsageError

DEFAULT_SIZES = {"train": 2000, "validation": 1000, "test": 1000}
PATIENT_TASKS = ("retina", "cxr")  # Tasks whose generator draws several images per patient.


def build(task, options, image_size):
  """Registry builder of every synthetic_<task> dataset: the generator's task is the TaskSpec's name.

  options.num_train/num_val/num_test: images to generate per split (DEFAULT_SIZES where None); split_seed,
  synthetic_difficulty and cache_dir go to the generator. Images are generated at `image_size`.
  """
  sources = {}
  for split in records_lib.SPLITS:
    n = int(options.caps[split] or DEFAULT_SIZES[split])
    # mmap: read from the page cache instead of holding every split in memory (587 px: GBs).
    images, raw, meta = synthetic.load_or_generate(task.name, split, n, int(image_size), options.split_seed,
                                                cache_dir=options.cache_dir, difficulty=options.synthetic_difficulty,
                                                mmap=True)
    if images.ndim == 3:
      images = images[..., None]
    if images.shape[-1] != task.channels:
      raise UsageError(f"synthetic {task.name} {split} images have {images.shape[-1]} channels, expected "
                       f"{task.channels}")
    labels, masks = sources_lib.training_labels(np.asarray(raw), task)
    sources[split] = sources_lib.ArraySource(images=images, labels=labels, masks=masks,
                                             patients=_patients(task.name, meta, len(labels)))
  return sources, f"synthetic_{task.name} (embedded synthetic data, not real patients)"


def _patients(task_name, meta, n):
  """The generator's patient ids (N,) int64: retina examples 2k and 2k+1 are the two eyes of patient k, cxr patients
  have 1-8 studies; None for the source task, whose every image is its own "patient"."""
  if task_name not in PATIENT_TASKS:
    return None
  ids = meta.get("patient_id")
  if ids is None or len(ids) != n:  # Not expected from generator v3; never guess the pairing.
    return None
  return np.asarray(ids, np.int64)
