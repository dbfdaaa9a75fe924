"""The embedded synthetic datasets (synthetic_retina, synthetic_cxr, synthetic_source) as registry builders.

The images come from `synthetic.load_or_generate` (generated once per split, size and seed, then cached); this file
only turns them into ArraySources. No download, no real patients.
"""
import numpy as np

from transfusion_tf.data import records as records_lib
from transfusion_tf.data import sources as sources_lib
from transfusion_tf.data import synthetic
from transfusion_tf.errors import UsageError

DEFAULT_SIZES = {"train": 2000, "validation": 1000, "test": 1000}


def build(task, options, image_size):
  """Registry builder of every synthetic_<task> dataset: the generator's task is the TaskSpec's name.

  options.num_train/num_val/num_test: images to generate per split (DEFAULT_SIZES where None); split_seed,
  synthetic_difficulty and cache_dir go to the generator. Images are generated at `image_size`.
  """
  sources = {}
  for split in records_lib.SPLITS:
    n = int(options.caps[split] or DEFAULT_SIZES[split])
    # mmap: read from the page cache instead of holding every split in memory (587 px: GBs).
    images, raw, _ = synthetic.load_or_generate(task.name, split, n, int(image_size), options.split_seed,
                                                cache_dir=options.cache_dir, difficulty=options.synthetic_difficulty,
                                                mmap=True)
    if images.ndim == 3:
      images = images[..., None]
    if images.shape[-1] != task.channels:
      raise UsageError(f"synthetic {task.name} {split} images have {images.shape[-1]} channels, expected "
                       f"{task.channels}")
    labels, masks = sources_lib.training_labels(np.asarray(raw), task)
    sources[split] = sources_lib.ArraySource(images=images, labels=labels, masks=masks)
  return sources, f"synthetic_{task.name} (embedded synthetic data, not real patients)"
