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
                    "Folder of a folder dataset: retina_csv images (and their CSV), image_csv images (the CSV's paths "
                    "are relative to it), or the CheXpert-v1.0-small folder (or its parent) for --dataset=chexpert.")
flags.DEFINE_string("labels_csv", None,
                    "Labels CSV of retina_csv (default: train.csv, trainLabels.csv or labels.csv in --data_dir) and "
                    "image_csv (default: labels.csv or the only CSV in --data_dir).")
flags.DEFINE_string("image_column", None, "retina_csv: CSV column with the image id or file name (default: detected, "
                    "e.g. id_code or image). image_csv: column with the image path relative to --data_dir (default: "
                    "image, path, image_path, filename, file or image_id).")
flags.DEFINE_string("label_column", None, "retina_csv: CSV column with the 0-4 grade (default: detected, e.g. "
                    "diagnosis or level). image_csv: the one label column (same as --label_columns=NAME).")
flags.DEFINE_list("label_columns", None, "image_csv: label column(s). One column of integer classes: 0/1 is a binary "
                  "task (AUC), 0..K-1 with K >= 3 K classes (macro one-vs-rest AUC); several 0/1 columns are "
                  "multi-label (mean AUC). Default: label, class, target or diagnosis; else every other column when "
                  "all hold only 0 and 1.")
flags.DEFINE_string("patient_column", None, "image_csv: CSV column with the patient id, so a patient's images stay in "
                    "one split and count as one cluster in the test CIs (default: patient_id, patient, subject_id or "
                    "subject when present; without one each image is its own patient).")
flags.DEFINE_string("split_column", None, "image_csv: CSV column fixing each image's split: train, val(idation) or "
                    "test (default: split when present; without one a seeded patient-level split, "
                    "--val_fraction / --test_fraction).")
flags.DEFINE_integer("num_classes", None, "image_csv, one label column: the number of classes K (labels 0..K-1; a "
                     "larger one is a bad row). Default: the largest label + 1, every class present.")
flags.DEFINE_float("val_fraction", None, "Share of the images held out for validation (checkpoint selection) where "
                   "the data has no split of its own, by patient: image_csv 0.15, retina_csv 0.1, chexpert 0.05 "
                   "(of train.csv) by default.")
flags.DEFINE_float("test_fraction", None, "Share of the images held out for test where the data has no split of its "
                   "own, by patient: image_csv 0.15, retina_csv 0.1 by default.")
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
flags.DEFINE_enum("flips", None, ["none", "lr", "lr_ud"], "Augmentation flips, overriding the task's (retina: "
                  "lr_ud; chest x-rays, image_csv and the source task: lr). none where a mirror image changes the "
                  "label (text, digits, laterality: a heart drawn on the right); lr_ud where any orientation is "
                  "valid (e.g. histology patches).")
flags.DEFINE_enum("preprocessing", None, list(MODES), "Override the model's preprocessing mode (default: follows the "
                  "model and weights: caffe for ResNet50, tf for the others).")
flags.DEFINE_float("synthetic_difficulty", None, "Synthetic tasks: generator difficulty (default: the generator's).")
flags.DEFINE_string("data_cache_dir", None, "Cache for generated synthetic data and image-check results (default: "
                    "~/.cache/transfusion_tf).")
flags.DEFINE_integer("data_split_seed", 0, "Seed of held-out splits, subsets and synthetic data; fixed across "
                     "repetitions so every training seed sees the same data.")


def data_kwargs_from_flags():
  """The build_data keyword arguments these flags set (flags must be parsed); image_csv's columns and the held-out
  fractions only when given."""
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
      # Only when set: runs recorded before these flags existed keep matching their study's settings.
      **{k: v for k, v in dict(label_columns=tuple(FLAGS.label_columns) if FLAGS.label_columns else None,
                               patient_column=FLAGS.patient_column, split_column=FLAGS.split_column,
                               num_classes=FLAGS.num_classes, val_fraction=FLAGS.val_fraction,
                               test_fraction=FLAGS.test_fraction, flips=FLAGS.flips).items() if v is not None},
  )
