"""ImageNet through TFDS (imagenet2012), the paper's source task for users who have it.

The official validation split is the test split here; the validation split is the first `val_fraction` (default
1%) of train, which training then skips. TFDS needs the manually downloaded tars in --tfds_manual_dir once.
"""
from transfusion_tf.data import records as records_lib
from transfusion_tf.data import sources as sources_lib

TFDS_NAME = "imagenet2012"
TFDS_REQUIRED = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
NUM_CLASSES = 1000


def build_tfds(task, options, image_size):
  """Registry builder of imagenet_tfds (see the module docstring); images left encoded."""
  del image_size
  frac = 0.01 if options.val_fraction is None else options.val_fraction
  pct = max(1, int(round(100 * frac)))
  tfds_splits = {"train": f"train[{pct}%:]", "validation": f"train[:{pct}%]", "test": "validation"}
  sources = {}
  for split in records_lib.SPLITS:
    raw, size = records_lib.load_tfds(TFDS_NAME, tfds_splits[split], None, options.tfds_data_dir,
                                      options.tfds_manual_dir, required=TFDS_REQUIRED, flag_hint="imagenet_tfds")
    raw = raw.map(lambda ex: (ex["image"], ex["label"]))
    sources[split] = sources_lib.tfds_source(raw, size, True, options.caps[split], task, TFDS_NAME)
  return sources, f"imagenet_tfds (TFDS imagenet2012; validation = first {pct}% of train, test = official val)"
