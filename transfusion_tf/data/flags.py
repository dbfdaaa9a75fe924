"""absl flags for the data: which dataset, where it lives, how much of it, and how it is read.

The image size, batch size, model, weights and seed belong to the model and trainer flags; the trainer passes them to
`pipeline.build_data(dataset, image_size=..., batch_size=..., model_name=..., ..., **data_kwargs)`; the data keywords
are `registry.DataOptions` fields.
Importing this module defines the flags once; every flag has a default, so tests can import it without parsing.
"""
from absl import flags

from transfusion_tf.data import records
from transfusion_tf.data import registry
from transfusion_tf.data import retina
from transfusion_tf.data import tasks
from transfusion_tf.models.preprocessing import MODES

FLAGS = flags.FLAGS

flags.DEFINE_enum("dataset", "synthetic_retina", list(registry.names()),
                  "Input data (registry.py): " + "; ".join(f"{d} ({registry.get(d).summary})"
                                                          for d in registry.names()) + ".")
flags.DEFINE_string("data_dir", None,
                    "Folder of a folder dataset: retina_csv images (and their CSV), or the CheXpert-v1.0-small folder "
                    "(or its parent) for --dataset=chexpert.")
flags.DEFINE_string("labels_csv", None,
                    "retina_csv labels CSV (default: train.csv, trainLabels.csv or labels.csv in --data_dir).")
flags.DEFINE_string("image_column", None, "retina_csv: CSV column with the image id or file name (default: detected, "
                    "e.g. id_code or image).")
flags.DEFINE_string("label_column", None, "retina_csv: CSV column with the 0-4 grade (default: detected, e.g. "
                    "diagnosis or level).")
flags.DEFINE_string("tfds_manual_dir", None, "TFDS manual download folder for eyepacs_tfds, chexpert_tfds and "
                    "imagenet_tfds (needed once, to prepare the dataset).")
flags.DEFINE_string("tfds_data_dir", None,
                    "Where TFDS keeps prepared datasets (default: TFDS's, ~/tensorflow_datasets).")
flags.DEFINE_enum("tfds_config", retina.DEFAULT_TFDS_CONFIG, list(retina.TFDS_CONFIGS),
                  "eyepacs_tfds config: original, 1M, 250K or btgraham-300.")
flags.DEFINE_integer("num_train", None, "Synthetic: training examples to generate (default 2000). Real data: cap on "
                     "the training split (stratified seeded subset; first N records for TFDS).")
flags.DEFINE_integer("num_val", None, "Like --num_train, for the validation split (synthetic default 1000).")
flags.DEFINE_integer("num_test", None, "Like --num_train, for the test split (synthetic default 1000).")
flags.DEFINE_integer("train_subset", None, "Small-data regime: train on a stratified seeded subset of this many "
                     "examples (the paper's RETINA small-data runs use 5000).")
flags.DEFINE_enum("uncertainty_policy", "per_pathology", list(tasks.UNCERTAINTY_POLICIES),
                  "CheXpert uncertain (-1) labels: per_pathology (ones for Atelectasis and Edema, zeros otherwise), "
                  "zeros, ones, or ignore (masked out of loss and metrics). Blank is always 0.")
flags.DEFINE_boolean("frontal_only", False, "CheXpert: keep frontal views only.")
flags.DEFINE_boolean("binary_head", False, "RETINA: one sigmoid output for P(referable) instead of a 5-way softmax.")
flags.DEFINE_enum("on_bad_image", "fail", list(records.ON_BAD_IMAGE),
                  "A missing, corrupt or truncated image, or a bad CSV value: fail (error naming it) or skip (leave it "
                  "out with a counted warning).")
flags.DEFINE_enum("validate_images", "quick", list(records.VALIDATE_LEVELS),
                  "Up-front image check: quick (exists, header, JPEG/PNG end marker), full (decode every file once "
                  "with PIL; cached in --data_cache_dir) or off (existence only).")
flags.DEFINE_boolean("augment", True, "Training augmentation: random flips, small rotations, brightness/contrast.")
flags.DEFINE_enum("preprocessing", None, list(MODES), "Override the model's preprocessing mode (default: follows the "
                  "model and weights: caffe for ResNet50, tf for the others).")
flags.DEFINE_float("synthetic_difficulty", None, "Synthetic tasks: generator difficulty (default: the generator's).")
flags.DEFINE_string("data_cache_dir", None, "Cache for generated synthetic data and image-check results (default: "
                    "~/.cache/transfusion_tf).")
flags.DEFINE_integer("data_split_seed", 0, "Seed of held-out splits, subsets and synthetic data; fixed across "
                     "repetitions so every training seed sees the same data.")


def data_kwargs_from_flags():
  """The build_data keyword arguments these flags set (flags must be parsed)."""
  return dict(
      dataset=FLAGS.dataset,
      data_dir=FLAGS.data_dir,
      labels_csv=FLAGS.labels_csv,
      image_column=FLAGS.image_column,
      label_column=FLAGS.label_column,
      tfds_manual_dir=FLAGS.tfds_manual_dir,
      tfds_data_dir=FLAGS.tfds_data_dir,
      tfds_config=FLAGS.tfds_config,
      num_train=FLAGS.num_train,
      num_val=FLAGS.num_val,
      num_test=FLAGS.num_test,
      train_subset=FLAGS.train_subset,
      uncertainty_policy=FLAGS.uncertainty_policy,
      frontal_only=FLAGS.frontal_only,
      binary_head=FLAGS.binary_head,
      on_bad_image=FLAGS.on_bad_image,
      validate_images=FLAGS.validate_images,
      augment=FLAGS.augment,
      preprocessing=FLAGS.preprocessing,
      synthetic_difficulty=FLAGS.synthetic_difficulty,
      cache_dir=FLAGS.data_cache_dir,
      split_seed=FLAGS.data_split_seed,
  )
