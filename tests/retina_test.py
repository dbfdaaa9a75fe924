"""Tests for transfusion_tf/data/retina.py: APTOS / EyePACS folders + CSVs, bad input, TFDS (mocked, no network)."""
import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from transfusion_tf.data import pipeline
from transfusion_tf.data import retina
from transfusion_tf.errors import UsageError


def _image(rng, h=36, w=48):
  return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def _write_csv(path, header, rows):
  with open(path, "w") as f:
    f.write(",".join(header) + "\n")
    for row in rows:
      f.write(",".join(str(v) for v in row) + "\n")


def make_aptos(root, n=10, seed=0):
  """APTOS layout: train.csv (id_code,diagnosis) + train_images/<id>.png; returns the ids."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "train_images"))
  ids = [f"{i:04x}ab{i}" for i in range(n)]
  for i, image_id in enumerate(ids):
    Image.fromarray(_image(rng)).save(os.path.join(root, "train_images", f"{image_id}.png"))
  _write_csv(os.path.join(root, "train.csv"), ["id_code", "diagnosis"], [(d, i % 5) for i, d in enumerate(ids)])
  return ids


def make_eyepacs(root, patients=6, seed=0):
  """EyePACS layout: trainLabels.csv (image,level) + train/<patient>_<eye>.jpeg."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "train"))
  rows = []
  for p in range(patients):
    for eye in ("left", "right"):
      name = f"{p + 10}_{eye}"
      Image.fromarray(_image(rng)).save(os.path.join(root, "train", f"{name}.jpeg"), "JPEG")
      rows.append((name, (p + (eye == "right")) % 5))
  _write_csv(os.path.join(root, "trainLabels.csv"), ["image", "level"], rows)
  return rows


class FolderTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def test_aptos_detected(self):
    ids = make_aptos(self.root)
    rec = retina.read_csv_folder(self.root)
    self.assertLen(rec, 10)
    self.assertEqual(rec.labels.dtype, np.int32)
    self.assertAllEqual(rec.labels, np.arange(10) % 5)
    self.assertEqual(os.path.basename(rec.paths[3]), f"{ids[3]}.png")
    self.assertEqual(set(rec.formats), {"png"})
    self.assertEqual(list(rec.patient_ids), ids)
    self.assertFalse(rec.has_patients)  # APTOS ids name images, not patients.

  def test_csv_not_utf8_names_file_and_encoding(self):
    make_aptos(self.root, n=4)
    path = os.path.join(self.root, "train.csv")
    with open(path, encoding="utf-8") as f:
      text = f.read()
    with open(path, "w", encoding="utf-8-sig") as f:  # A byte-order mark is fine.
      f.write(text)
    self.assertLen(retina.read_csv_folder(self.root), 4)
    with open(path, "w", encoding="latin-1") as f:
      f.write(text.replace("\n", ",r\u00e9sum\u00e9\n", 2))
    with self.assertRaisesRegex(UsageError, r"labels CSV .*train.csv is not UTF-8 text \(byte 0xe9 on line 1\)"):
      retina.read_csv_folder(self.root)

  def test_eyepacs_detected_with_patients(self):
    rows = make_eyepacs(self.root)
    rec = retina.read_csv_folder(self.root)
    self.assertLen(rec, len(rows))
    self.assertEqual(list(rec.patient_ids[:2]), ["10", "10"])
    self.assertEqual(set(rec.formats), {"jpeg"})
    self.assertTrue(rec.has_patients)

  def test_patient_id_parsing(self):
    self.assertEqual(retina.patient_id("10_left"), "10")
    self.assertEqual(retina.patient_id("4521_right"), "4521")
    for image_id in ("000c1434d8d7", "10_middle", "a10_left", "10_left_2"):
      self.assertEqual(retina.patient_id(image_id), image_id)  # Its own patient.
    self.assertTrue(retina.has_eye_names(["000c1434d8d7", "3_right"]))
    self.assertFalse(retina.has_eye_names(["000c1434d8d7", "10_middle"]))

  def test_patient_column_wins(self):
    ids = make_aptos(self.root, n=6)
    _write_csv(os.path.join(self.root, "train.csv"), ["id_code", "diagnosis", "patient_id"],
               [(d, i % 5, f"p{i // 3}") for i, d in enumerate(ids)])
    rec = retina.read_csv_folder(self.root)
    self.assertTrue(rec.has_patients)
    self.assertEqual(list(rec.patient_ids), ["p0"] * 3 + ["p1"] * 3)

  def test_patients_reach_the_test_split_in_eval_order(self):
    make_eyepacs(self.root, patients=10)
    data = pipeline.build_data("retina_csv", 32, 4, "cbr_tiny", data_dir=self.root, test_fraction=0.3)
    codes = data.patients("test")
    self.assertEqual(codes.dtype, np.int64)
    self.assertLen(codes, data.num_examples["test"])
    uniq, counts = np.unique(codes, return_counts=True)
    self.assertAllEqual(counts, [2] * len(uniq))  # Both eyes, EyePACS "10" -> code 10.
    self.assertTrue(set(uniq) <= set(range(10, 20)))
    labels = np.concatenate([b[1].numpy() for b in data.eval("test")])
    for c in uniq:  # make_eyepacs grades patient p's eyes (p - 10) % 5 (left) and (p - 9) % 5 (right).
      self.assertCountEqual(labels[codes == c], [(c - 10) % 5, (c - 9) % 5])
    aptos = self.create_tempdir().full_path
    make_aptos(aptos, n=30)
    self.assertIsNone(pipeline.build_data("retina_csv", 32, 4, "cbr_tiny", data_dir=aptos).patients("test"))

  def test_explicit_columns_file_names_and_other_csv(self):
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(self.root, "imgs"))
    for i in range(4):
      Image.fromarray(_image(rng)).save(os.path.join(self.root, "imgs", f"x{i}.tif"))
    csv_path = os.path.join(self.create_tempdir().full_path, "grades.csv")
    _write_csv(csv_path, ["file", "dr", "extra"], [(f"imgs/x{i}.tif", i, "z") for i in range(4)])
    rec = retina.read_csv_folder(self.root, csv_path, image_column="file", label_column="dr")
    self.assertAllEqual(rec.labels, [0, 1, 2, 3])
    self.assertEqual(set(rec.formats), {"tiff"})
    with self.assertRaisesRegex(UsageError, r"no column 'grade'.*--label_column.*file, dr, extra"):
      retina.read_csv_folder(self.root, csv_path, image_column="file", label_column="grade")

  def test_missing_column(self):
    make_aptos(self.root)
    _write_csv(os.path.join(self.root, "train.csv"), ["id_code", "score"], [("a", 1)])
    with self.assertRaisesRegex(UsageError, r"train.csv lacks a grade column.*diagnosis.*--label_column"):
      retina.read_csv_folder(self.root)

  def test_label_out_of_range_and_skip(self):
    ids = make_aptos(self.root)
    rows = [(d, i % 5) for i, d in enumerate(ids)]
    rows[4] = (ids[4], 7)
    rows[6] = (ids[6], "severe")
    _write_csv(os.path.join(self.root, "train.csv"), ["id_code", "diagnosis"], rows)
    with self.assertRaisesRegex(UsageError, r"train.csv row 6: diagnosis='7' is not a grade 0-4 \(1 more bad rows"):
      retina.read_csv_folder(self.root)
    with self.assertLogs(level="WARNING") as logs:
      rec = retina.read_csv_folder(self.root, on_bad_image="skip")
    self.assertLen(rec, 8)
    self.assertIn("skipped 2 of 10 rows", logs.output[0])

  def test_missing_and_corrupt_images(self):
    ids = make_aptos(self.root)
    os.remove(os.path.join(self.root, "train_images", f"{ids[2]}.png"))
    bad = os.path.join(self.root, "train_images", f"{ids[5]}.png")
    data = open(bad, "rb").read()
    open(bad, "wb").write(data[: len(data) // 3])
    with self.assertRaisesRegex(UsageError, rf"train.csv row 4: no image file for id_code='{ids[2]}' in "):
      retina.read_csv_folder(self.root)
    with self.assertLogs(level="WARNING") as logs:
      rec = retina.read_csv_folder(self.root, on_bad_image="skip")
    self.assertLen(rec, 8)
    self.assertIn("skipped 1 of 10 rows of", logs.output[0])
    self.assertIn("whose image file is missing", logs.output[0])
    self.assertIn("skipped 1 of 9 image files", logs.output[1])
    self.assertIn(f"{ids[5]}.png", logs.output[1])
    with self.assertRaisesRegex(UsageError, rf"{ids[5]}.png \(row 6 of .*labels.csv\): truncated PNG"):
      retina.read_csv_folder(self.root, validate_images="full",
                             labels_csv=self._csv_without(ids[2]), cache_dir=self.create_tempdir().full_path)

  def _csv_without(self, image_id):
    path = os.path.join(self.create_tempdir().full_path, "labels.csv")
    with open(os.path.join(self.root, "train.csv")) as f:
      lines = [l for l in f if not l.startswith(image_id)]
    open(path, "w").write("".join(lines))
    return path

  def test_absent_data(self):
    with self.assertRaisesRegex(UsageError, "--data_dir"):
      retina.read_csv_folder(None)
    with self.assertRaisesRegex(UsageError, "--data_dir=.*nowhere"):
      retina.read_csv_folder(os.path.join(self.root, "nowhere"))
    with self.assertRaisesRegex(UsageError, "--labels_csv"):
      retina.read_csv_folder(self.root)
    with self.assertRaisesRegex(UsageError, "--labels_csv=missing.csv"):
      retina.read_csv_folder(self.root, "missing.csv")

  def test_patient_split_keeps_eyes_together(self):
    make_eyepacs(self.root, patients=20)
    rec = retina.read_csv_folder(self.root)
    parts = retina.split_records(rec, 0.1, 0.2, seed=0)
    self.assertEqual(sum(len(p) for p in parts.values()), 40)
    ids = {k: set(p.patient_ids) for k, p in parts.items()}
    self.assertEmpty(ids["train"] & ids["validation"])
    self.assertEmpty(ids["train"] & ids["test"])
    self.assertEmpty(ids["validation"] & ids["test"])
    for part in parts.values():
      self.assertAllEqual(np.unique(part.patient_ids, return_counts=True)[1], [2] * len(set(part.patient_ids)))

  def test_split_column_and_empty_split(self):
    ids = make_aptos(self.root, n=6)
    splits = ["train", "train", "val", "test", "train", "valid"]
    _write_csv(os.path.join(self.root, "train.csv"), ["id_code", "diagnosis", "split"],
               [(d, i % 5, s) for i, (d, s) in enumerate(zip(ids, splits))])
    parts = retina.split_records(retina.read_csv_folder(self.root))
    self.assertEqual({k: len(v) for k, v in parts.items()}, {"train": 3, "validation": 2, "test": 1})
    _write_csv(os.path.join(self.root, "train.csv"), ["id_code", "diagnosis", "split"],
               [(d, i % 5, "train") for i, d in enumerate(ids)])
    with self.assertRaisesRegex(UsageError, "validation split .* is empty"):
      retina.split_records(retina.read_csv_folder(self.root))

  def test_build_data_end_to_end(self):
    make_eyepacs(self.root, patients=10)
    data = pipeline.build_data("retina_csv", 32, 4, "inceptionv3", data_dir=self.root, num_val=1)
    self.assertEqual(data.task.name, "retina")
    self.assertEqual(sum(data.num_examples.values()), 19)
    self.assertEqual(data.num_examples["validation"], 1)
    images, labels, masks = next(iter(data.train(0)))
    self.assertEqual(images.shape, (4, 32, 32, 3))
    self.assertBetween(float(tf.reduce_min(images)), -1.0, 1.0)
    self.assertEqual(labels.dtype, tf.int32)
    n = sum(len(b[1]) for b in data.eval("test"))
    self.assertEqual(n, data.num_examples["test"])
    self.assertIn("retina_csv", data.source_description)


  def test_one_class_split_is_refused_naming_the_split_and_counts(self):
    ids = make_aptos(self.root, n=30)
    for grade, counts in ((0, r"0:\d+ 1:0 2:0 3:0 4:0, i\.e\. 0 referable \(grade >= 2\) and \d+ not"),
                          (3, r"0:0 1:0 2:0 3:\d+ 4:0, i\.e\. \d+ referable \(grade >= 2\) and 0 not")):
      _write_csv(os.path.join(self.root, "train.csv"), ["id_code", "diagnosis"], [(d, grade) for d in ids])
      data = pipeline.build_data("retina_csv", 32, 4, "cbr_tiny", data_dir=self.root)
      with self.assertRaisesRegex(UsageError, rf"^the train split of retina_csv.* has one class only \(grades "
                                              rf"{counts}\), so its AUC is undefined"):
        pipeline.check_classes(data)
      with self.assertRaisesRegex(UsageError, "^the test split"):
        pipeline.check_classes(data, splits=("test",))
    _write_csv(os.path.join(self.root, "train.csv"), ["id_code", "diagnosis"], [(d, i % 5) for i, d in enumerate(ids)])
    pipeline.check_classes(pipeline.build_data("retina_csv", 32, 4, "cbr_tiny", data_dir=self.root))

class TfdsTest(tf.test.TestCase):
  """EyePACS through TFDS, always under tfds.testing.mock_data: nothing here may reach the network."""

  def setUp(self):
    super().setUp()
    self.manual = self.create_tempdir().full_path
    for d in ("train", "test"):
      os.makedirs(os.path.join(self.manual, d))
    open(os.path.join(self.manual, "trainLabels.csv"), "w").write("image,level\n")

  def test_load_split(self):
    with tfds.testing.mock_data(num_examples=6):
      ds, size = retina.load_eyepacs_tfds("validation", manual_dir=self.manual)
      self.assertEqual(size, 6)
      image, label = next(iter(ds))
    self.assertEqual(image.dtype, tf.uint8)
    self.assertEqual(image.shape[-1], 3)
    self.assertBetween(int(label), 0, 4)

  def test_fails_fast_without_manual_files(self):
    with tfds.testing.mock_data(num_examples=2):
      with self.assertRaisesRegex(UsageError, "--tfds_manual_dir=DIR holding trainLabels.csv, train, test"):
        retina.load_eyepacs_tfds("train")
      os.remove(os.path.join(self.manual, "trainLabels.csv"))
      with self.assertRaisesRegex(UsageError, "lacks trainLabels.csv"):
        retina.load_eyepacs_tfds("train", manual_dir=self.manual)
    with self.assertRaisesRegex(UsageError, "tfds_config"):
      retina.load_eyepacs_tfds("train", config="2M")

  def test_build_data_and_skip_resume(self):
    with tfds.testing.mock_data(num_examples=10):
      data = pipeline.build_data("eyepacs_tfds", 24, 4, "cbr_small", tfds_manual_dir=self.manual, seed=3)
      self.assertEqual(data.num_examples, {"train": 10, "validation": 10, "test": 10})
      full = [[t.numpy() for t in b] for b in data.train(0).take(4)]
      resumed = [[t.numpy() for t in b] for b in data.train(2).take(2)]
      evals = [b[1].numpy() for b in data.eval("test")]
    self.assertEqual(full[0][0].shape, (4, 24, 24, 3))
    for a, b in zip(full[2:], resumed):
      for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    self.assertEqual([len(e) for e in evals], [4, 4, 2])
    self.assertIsNone(data.labels("test"))

  def test_patients_from_tfds_names(self):
    names = ["4_left", "4_right", "17_left", "9_right", "17_right"]
    with tfds.testing.mock_data(as_dataset_fn=_named_examples(names)):
      self.assertEqual(list(retina.eyepacs_tfds_patients("test", manual_dir=self.manual)),
                       ["4", "4", "17", "9", "17"])
      data = pipeline.build_data("eyepacs_tfds", 24, 2, "cbr_tiny", tfds_manual_dir=self.manual, num_test=4)
      self.assertAllEqual(data.patients("test"), [4, 4, 17, 9])  # The cap's first 4, in eval order.
    with tfds.testing.mock_data(num_examples=4):  # Random names: no eye names, so no patients.
      data = pipeline.build_data("eyepacs_tfds", 24, 2, "cbr_tiny", tfds_manual_dir=self.manual)
      self.assertIsNone(data.patients("test"))


def _named_examples(names):
  """A mock_data as_dataset_fn: EyePACS TFDS examples with these names (tiny JPEGs, grades i % 5)."""
  buf = io.BytesIO()
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(buf, "JPEG")

  def as_dataset(self, *args, **kwargs):
    del self, args, kwargs
    n = len(names)
    return tf.data.Dataset.from_tensor_slices({"name": names, "image": [buf.getvalue()] * n,
                                               "label": np.arange(n) % 5})
  return as_dataset


if __name__ == "__main__":
  tf.test.main()
