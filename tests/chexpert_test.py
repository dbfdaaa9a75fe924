"""Tests for transfusion_tf/data/chexpert.py: the CheXpert folder layout, policies, splits, bad input, TFDS (mocked)."""
import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from transfusion_tf.data import chexpert
from transfusion_tf.data import pipeline
from transfusion_tf.data import tasks
from transfusion_tf.errors import UsageError

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + list(chexpert.OBSERVATIONS)
# Raw values for [Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion], cycled over rows.
VALUES = [["-1.0", "1.0", "", "-1.0", "0.0"],
          ["1.0", "", "-1.0", "0.0", "-1.0"],
          ["", "0.0", "1.0", "", "1.0"]]


def make_chexpert(parent, train_patients=8, valid_patients=2, prefix="CheXpert-v1.0-small/", seed=0):
  """Writes parent/CheXpert-v1.0-small/{train,valid}.csv and grayscale JPEGs; returns the root."""
  rng = np.random.default_rng(seed)
  root = os.path.join(parent, "CheXpert-v1.0-small")
  for split, patients, start in (("train", train_patients, 1), ("valid", valid_patients, 60001)):
    lines = [",".join(HEADER)]
    k = 0
    for p in range(start, start + patients):
      for study, view in ((1, "frontal"), (1, "lateral"), (2, "frontal")):
        rel = f"{split}/patient{p:05d}/study{study}/view{1 if view == 'frontal' else 2}_{view}.jpg"
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray((rng.random((40, 32)) * 255).astype(np.uint8)).save(path, "JPEG")
        obs = {name: "" for name in chexpert.OBSERVATIONS}
        obs.update(zip(tasks.CXR_PATHOLOGIES, VALUES[k % 3]))
        obs["Support Devices"] = "1.0"
        row = [prefix + rel, "Female", "60", view.capitalize(), "AP" if view == "frontal" else ""]
        lines.append(",".join(row + [obs[n] for n in chexpert.OBSERVATIONS]))
        k += 1
    with open(os.path.join(root, f"{split}.csv"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return root


class ReaderTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.parent = self.create_tempdir().full_path
    self.root = make_chexpert(self.parent)

  def test_read_raw_labels(self):
    rec = chexpert.read_csv(self.root, "train.csv")
    self.assertLen(rec, 24)
    self.assertEqual(rec.labels.dtype, np.int8)
    self.assertAllEqual(rec.labels[:3], [[-1, 1, 0, -1, 0], [1, 0, -1, 0, -1], [0, 0, 1, 0, 1]])
    self.assertEqual(rec.patient_ids[0], "patient00001")
    self.assertTrue(rec.has_patients)
    self.assertTrue(all(os.path.isfile(p) for p in rec.paths))
    self.assertEqual(list(rec.extra["view"][:3]), ["Frontal", "Lateral", "Frontal"])

  def test_csv_not_utf8_names_file_and_encoding(self):
    path = os.path.join(self.root, "valid.csv")
    with open(path, encoding="utf-8") as f:
      text = f.read()
    with open(path, "w", encoding="latin-1") as f:
      f.write(text.replace("Female", "F\u00e9male"))
    with self.assertRaisesRegex(UsageError, r"CheXpert CSV .*valid.csv is not UTF-8 text \(byte 0xe9 on line 2\)"):
      chexpert.read_csv(self.root, "valid.csv")

  def test_root_found_from_parent_and_itself(self):
    self.assertEqual(chexpert.find_root(self.parent), self.root)
    self.assertEqual(chexpert.find_root(self.root), self.root)
    with self.assertRaisesRegex(UsageError, "--data_dir"):
      chexpert.find_root(self.create_tempdir().full_path)
    with self.assertRaisesRegex(UsageError, "--data_dir"):
      chexpert.find_root(None)

  def test_paths_relative_to_root(self):
    root = make_chexpert(self.create_tempdir().full_path, train_patients=2, prefix="")
    rec = chexpert.read_csv(root, "train.csv")
    self.assertTrue(all(os.path.isfile(p) for p in rec.paths))

  def test_renamed_root(self):
    parent = self.create_tempdir().full_path
    root = make_chexpert(parent, train_patients=2)
    renamed = os.path.join(parent, "chexpert")
    os.rename(root, renamed)
    rec = chexpert.read_csv(renamed, "train.csv")
    self.assertTrue(all(os.path.isfile(p) for p in rec.paths))

  def test_frontal_only(self):
    rec = chexpert.read_csv(self.root, "train.csv", frontal_only=True)
    self.assertLen(rec, 16)
    self.assertTrue(all("frontal" in p for p in rec.paths))

  def test_patient_holdout_never_splits_a_patient(self):
    for seed in range(4):
      parts = chexpert.read_splits(self.parent, val_fraction=0.2, seed=seed)
      train, val = set(parts["train"].patient_ids), set(parts["validation"].patient_ids)
      self.assertEmpty(train & val)
      self.assertNotEmpty(val)
      self.assertEqual(len(parts["train"]) + len(parts["validation"]), 24)
      self.assertEqual(len(parts["test"]), 6)  # The official valid.csv.
      self.assertTrue(all(p.startswith("patient6") for p in parts["test"].patient_ids))
    a = chexpert.read_splits(self.parent, seed=1)["validation"].patient_ids
    b = chexpert.read_splits(self.parent, seed=1)["validation"].patient_ids
    self.assertAllEqual(a, b)
    self.assertNotEmpty(a)  # 5% of 24 images still holds out one patient.

  def test_patient_id(self):
    self.assertEqual(chexpert.patient_id_from_path("CheXpert-v1.0-small/train/patient00042/study1/v.jpg"),
                     "patient00042")
    self.assertEqual(chexpert.patient_id_from_path("x.jpg"), "")

  def test_paths_without_patient_folders_name_no_patients(self):
    loose = os.path.join(self.root, "loose")
    os.makedirs(loose)
    lines = [",".join(HEADER)]
    for i in range(2):
      Image.fromarray(np.zeros((40, 32), np.uint8)).save(os.path.join(loose, f"{i}.jpg"), "JPEG")
      lines.append(",".join([f"CheXpert-v1.0-small/loose/{i}.jpg", "Male", "50", "Frontal", "PA"] +
                            [""] * len(chexpert.OBSERVATIONS)))
    with open(os.path.join(self.root, "loose.csv"), "w") as f:
      f.write("\n".join(lines) + "\n")
    rec = chexpert.read_csv(self.root, "loose.csv")
    self.assertFalse(rec.has_patients)
    self.assertLen(set(rec.patient_ids), 2)  # Each image its own patient.


class BadInputTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.parent = self.create_tempdir().full_path
    self.root = make_chexpert(self.parent, train_patients=3)
    self.csv = os.path.join(self.root, "train.csv")
    with open(self.csv) as f:
      self.lines = f.read().splitlines()

  def _write(self, lines):
    with open(self.csv, "w") as f:
      f.write("\n".join(lines) + "\n")

  def test_missing_column(self):
    header = self.lines[0].replace("Edema", "Oedema")
    self._write([header] + self.lines[1:])
    with self.assertRaisesRegex(UsageError, r"train.csv lacks column 'Edema'"):
      chexpert.read_csv(self.root, "train.csv")

  def test_bad_value_and_skip(self):
    cells = self.lines[2].split(",")
    cells[HEADER.index("Cardiomegaly")] = "2.0"
    self._write(self.lines[:2] + [",".join(cells)] + self.lines[3:])
    with self.assertRaisesRegex(UsageError, r"train.csv row 3: Cardiomegaly='2.0' is not 1.0, 0.0, -1.0 or blank"):
      chexpert.read_csv(self.root, "train.csv")
    with self.assertLogs(level="WARNING") as logs:
      rec = chexpert.read_csv(self.root, "train.csv", on_bad_image="skip")
    self.assertLen(rec, 8)
    self.assertIn("skipped 1 of 9 rows", logs.output[0])

  def test_missing_and_corrupt_images(self):
    rec = chexpert.read_csv(self.root, "train.csv")
    os.remove(rec.paths[1])
    data = open(rec.paths[4], "rb").read()
    open(rec.paths[4], "wb").write(data[:100])
    with self.assertRaisesRegex(UsageError, r"view2_lateral.jpg \(row 3 of .*train.csv\): file not found; 1 more"):
      chexpert.read_csv(self.root, "train.csv")
    with self.assertLogs(level="WARNING") as logs:
      rec = chexpert.read_csv(self.root, "train.csv", on_bad_image="skip")
    self.assertLen(rec, 7)
    self.assertIn("skipped 2 of 9 image files", logs.output[0])

  def test_missing_csv_and_empty(self):
    os.remove(os.path.join(self.root, "valid.csv"))
    with self.assertRaisesRegex(UsageError, "valid.csv not found"):
      chexpert.read_splits(self.parent)
    self._write(self.lines[:1])
    with self.assertRaisesRegex(UsageError, "has no rows"):
      chexpert.read_csv(self.root, "train.csv")


class PipelineTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.parent = self.create_tempdir().full_path
    make_chexpert(self.parent)

  def test_build_data_policies(self):
    expected_first = {"zeros": ([0, 1, 0, 0, 0], [1] * 5), "ones": ([1, 1, 0, 1, 0], [1] * 5),
                      "ignore": ([0, 1, 0, 0, 0], [0, 1, 1, 0, 1]), "per_pathology": ([1, 1, 0, 1, 0], [1] * 5)}
    for policy, (label, mask) in expected_first.items():
      data = pipeline.build_data("chexpert", 24, 4, "cbr_tiny", data_dir=self.parent, uncertainty_policy=policy)
      labels, masks = data.labels("test")  # Test = valid.csv, whose first row has VALUES[0].
      self.assertAllEqual(labels[0], label, msg=policy)
      self.assertAllEqual(masks[0], mask, msg=policy)
    images, labels, masks = next(iter(data.train(0)))
    self.assertEqual(images.shape, (4, 24, 24, 3))
    self.assertEqual(labels.shape, (4, 5))
    self.assertEqual(labels.dtype, tf.float32)
    self.assertEqual(masks.shape, (4, 5))
    self.assertEqual(data.num_examples["test"], 6)

  def test_one_channel_and_frontal_only(self):
    data = pipeline.build_data("chexpert", 24, 4, "cbr_tiny", data_dir=self.parent, channels=1, frontal_only=True)
    images, _, _ = next(iter(data.eval("test")))
    self.assertEqual(images.shape, (4, 24, 24, 1))
    self.assertEqual(data.num_examples["test"], 4)
    self.assertIn("frontal only", data.source_description)

  def test_patients_reach_the_test_split_in_eval_order(self):
    # valid.csv: patients 60001 and 60002, three images each (study1 frontal and lateral, study2 frontal).
    data = pipeline.build_data("chexpert", 24, 4, "cbr_tiny", data_dir=self.parent)
    self.assertAllEqual(data.patients("test"), [60001] * 3 + [60002] * 3)
    self.assertEqual(data.patients("test").dtype, np.int64)
    frontal = pipeline.build_data("chexpert", 24, 4, "cbr_tiny", data_dir=self.parent, frontal_only=True)
    self.assertAllEqual(frontal.patients("test"), [60001] * 2 + [60002] * 2)
    train = set(data.patients("train")) | set(data.patients("validation"))
    self.assertEqual(train, set(range(1, 9)))


class TfdsTest(tf.test.TestCase):
  """CheXpert through TFDS, always under tfds.testing.mock_data: nothing here may reach the network."""

  def setUp(self):
    super().setUp()
    self.manual = self.create_tempdir().full_path
    for rel in chexpert.TFDS_REQUIRED:
      os.makedirs(os.path.join(self.manual, rel))

  def test_labels_and_hashed_holdout(self):
    with tfds.testing.mock_data(num_examples=40):
      ds, size, exact = chexpert.load_chexpert_tfds("test", manual_dir=self.manual)
      self.assertEqual((size, exact), (40, True))
      image, raw = next(iter(ds))
      self.assertEqual(image.dtype, tf.uint8)
      self.assertEqual(raw.shape, (5,))
      all_raw = np.stack([r.numpy() for _, r in ds])
      self.assertTrue(np.all(np.isin(all_raw, (-1.0, 0.0, 1.0))))
      self.assertIn(-1.0, all_raw)
      n_train = sum(1 for _ in chexpert.load_chexpert_tfds("train", manual_dir=self.manual, val_fraction=0.5)[0])
      val, vsize, vexact = chexpert.load_chexpert_tfds("validation", manual_dir=self.manual, val_fraction=0.5)
      self.assertFalse(vexact)
      self.assertEqual(n_train + sum(1 for _ in val), 40)

  def test_fails_fast(self):
    with tfds.testing.mock_data(num_examples=2):
      with self.assertRaisesRegex(UsageError, "--tfds_manual_dir"):
        chexpert.load_chexpert_tfds("train")
      os.rmdir(os.path.join(self.manual, chexpert.TFDS_REQUIRED[1]))
      with self.assertRaisesRegex(UsageError, "lacks CheXpert-v1.0-small/valid"):
        chexpert.load_chexpert_tfds("train", manual_dir=self.manual)

  def test_build_data(self):
    with tfds.testing.mock_data(num_examples=12):
      data = pipeline.build_data("chexpert_tfds", 24, 4, "resnet50", tfds_manual_dir=self.manual,
                                 uncertainty_policy="ignore")
      images, labels, masks = next(iter(data.train(0)))
      n_test = sum(len(b[1]) for b in data.eval("test"))
    self.assertEqual(images.shape, (4, 24, 24, 3))
    self.assertEqual(labels.shape, (4, 5))
    self.assertEqual(masks.shape, (4, 5))
    self.assertEqual(n_test, 12)
    self.assertFalse(data.num_examples_exact["train"])

  def test_patients_from_tfds_names(self):
    names = [f"CheXpert-v1.0-small/valid/patient{p}/study{s}/view{v}_{'frontal' if v == 1 else 'lateral'}.jpg"
             for p, s, v in ((64541, 1, 1), (64541, 1, 2), (64542, 1, 1), (64541, 2, 1))]
    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(buf, "JPEG")

    def as_dataset(self, *args, **kwargs):
      del self, args, kwargs
      n = len(names)
      return tf.data.Dataset.from_tensor_slices({
          "name": names, "image": [buf.getvalue()] * n, "label": np.full((n, 14), 3, np.int64),
          "image_view": np.array([0 if "frontal" in name else 1 for name in names], np.int64)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
      self.assertEqual(list(chexpert.chexpert_tfds_patients("test", manual_dir=self.manual)),
                       ["patient64541", "patient64541", "patient64542", "patient64541"])
      data = pipeline.build_data("chexpert_tfds", 24, 4, "cbr_tiny", tfds_manual_dir=self.manual)
      self.assertAllEqual(data.patients("test"), [64541, 64541, 64542, 64541])
      frontal = pipeline.build_data("chexpert_tfds", 24, 4, "cbr_tiny", tfds_manual_dir=self.manual,
                                    frontal_only=True)
      self.assertAllEqual(frontal.patients("test"), [64541, 64542, 64541])  # The same filter as the images.
      self.assertEqual(sum(len(b[1]) for b in frontal.eval("test")), 3)


if __name__ == "__main__":
  tf.test.main()
