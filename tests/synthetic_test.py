"""Tests for transfusion_tf/data/synthetic.py: shapes, determinism, label statistics, caching, no global shortcut."""
import contextlib
import hashlib
import io
import os
import tempfile
from unittest import mock

import numpy as np
from scipy.stats import rankdata
import tensorflow as tf

from transfusion_tf.data import synthetic
from transfusion_tf.errors import UsageError

SIZE = 48


def _assert_same_output(a, b):
  """Two generate_with_meta results are identical: images, labels and every metadata array."""
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert sorted(a[2]) == sorted(b[2]), (sorted(a[2]), sorted(b[2]))
  for k in a[2]:
    np.testing.assert_array_equal(a[2][k], b[2][k])


def _auc(labels, scores):
  labels = np.asarray(labels).astype(bool)
  npos, nneg = labels.sum(), (~labels).sum()
  ranks = rankdata(scores)
  return (ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def _hashes(images):
  return {hashlib.sha1(im.tobytes()).hexdigest() for im in images}


class ShapeTest(tf.test.TestCase):

  def test_shapes_dtypes_ranges(self):
    for task in synthetic.TASKS:
      images, labels = synthetic.generate(task, 6, SIZE, 0)
      self.assertEqual(images.dtype, np.uint8)
      self.assertEqual(images.shape, (6, SIZE, SIZE, synthetic.NUM_CHANNELS[task]))
      self.assertGreater(images.std(), 5.0, task)  # Not blank.
      if task == "cxr":
        self.assertEqual(labels.shape, (6, 5))
        self.assertEqual(labels.dtype, np.int8)
        self.assertTrue(np.isin(labels, (-1, 0, 1)).all())
      else:
        self.assertEqual(labels.shape, (6,))
        self.assertTrue(np.issubdtype(labels.dtype, np.integer))
        self.assertTrue(((labels >= 0) & (labels < synthetic.NUM_CLASSES[task])).all())

  def test_constants(self):
    self.assertEqual(synthetic.NUM_CLASSES["retina"], 5)
    self.assertEqual(synthetic.NUM_CLASSES["cxr"], 5)
    self.assertEqual(synthetic.NUM_CLASSES["source"], len(synthetic.SOURCE_CLASSES))
    self.assertEqual(synthetic.CXR_PATHOLOGIES,
                     ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"))
    self.assertEqual(synthetic.NUM_CHANNELS, {"retina": 3, "cxr": 1, "source": 3})

  def test_other_resolutions(self):
    for size in (16, 64, 299):
      for task in synthetic.TASKS:
        images, _ = synthetic.generate(task, 1, size, 3)
        self.assertEqual(images.shape[1:3], (size, size))

  def test_meta(self):
    for task in synthetic.TASKS:
      images, labels, meta = synthetic.generate_with_meta(task, 10, 32, 0)
      self.assertIn("patient_id", meta)
      for k, v in meta.items():
        self.assertLen(v, 10, k)
    _, _, meta = synthetic.generate_with_meta("retina", 10, 32, 0)
    np.testing.assert_array_equal(meta["patient_id"], np.arange(10) // 2)  # One patient per pair of eyes.
    np.testing.assert_array_equal(meta["eye"], np.arange(10) % 2)

  def test_bad_arguments(self):
    with self.assertRaises(UsageError):
      synthetic.generate("mnist", 2, 32, 0)
    with self.assertRaises(UsageError):
      synthetic.generate("retina", 2, 32, 0, difficulty=1.5)
    with self.assertRaises(UsageError):
      synthetic.generate("retina", 2, 32, 0, split="dev")
    with self.assertRaises(UsageError):
      synthetic.generate("retina", 2, 32, 0, grade_probs=(0.5, 0.5))
    with self.assertRaises(UsageError):
      synthetic.load_or_generate("retina", "dev", 2, 32, 0)


class DeterminismTest(tf.test.TestCase):

  def test_same_arguments_same_output(self):
    for task in synthetic.TASKS:
      _assert_same_output(synthetic.generate_with_meta(task, 5, 32, 7), synthetic.generate_with_meta(task, 5, 32, 7))

  def test_example_independent_of_count(self):
    for task in synthetic.TASKS:
      small = synthetic.generate_with_meta(task, 5, 32, 3)
      big = synthetic.generate_with_meta(task, 11, 32, 3)
      np.testing.assert_array_equal(small[0], big[0][:5])
      np.testing.assert_array_equal(small[1], big[1][:5])
      np.testing.assert_array_equal(small[2]["patient_id"], big[2]["patient_id"][:5])

  def test_independent_of_workers(self):
    for task in synthetic.TASKS:  # 23: the workers' ranges split the retina's eye pairs and the CXR patients.
      _assert_same_output(synthetic.generate_with_meta(task, 23, 32, 5, num_workers=1),
                          synthetic.generate_with_meta(task, 23, 32, 5, num_workers=2))

  def test_seeds_and_splits_differ(self):
    for task in synthetic.TASKS:
      a, _ = synthetic.generate(task, 4, 32, 0)
      b, _ = synthetic.generate(task, 4, 32, 1)
      c, _ = synthetic.generate(task, 4, 32, 0, split="train")
      self.assertFalse(_hashes(a) & _hashes(b))
      self.assertFalse(_hashes(a) & _hashes(c))


class LabelStatisticsTest(tf.test.TestCase):

  def test_retina_grades(self):
    _, grades, meta = synthetic.generate_with_meta("retina", 300, 32, 0)
    counts = np.bincount(grades, minlength=5)
    self.assertTrue((counts > 0).all(), counts)
    self.assertBetween(np.mean(grades >= 2), 0.28, 0.52)
    self.assertGreater(counts[0], counts[4])  # Skewed towards healthy eyes.
    # Lesions follow the grade: none at grade 0, microaneurysms only at grade 1.
    self.assertEqual(meta["num_ma"][grades == 0].sum() + meta["num_haem"][grades <= 1].sum(), 0)
    self.assertTrue((meta["num_nv"][grades == 4] > 0).all())
    self.assertTrue((meta["num_nv"][grades < 4] == 0).all())

  def test_cxr_labels(self):
    _, labels, meta = synthetic.generate_with_meta("cxr", 400, 32, 0)
    uncertain = (labels == -1).mean(0)
    positive = (labels == 1).mean(0)
    self.assertTrue((uncertain > 0).all(), uncertain)
    self.assertBetween(float((labels == -1).mean()), 0.04, 0.16)
    self.assertTrue(((positive > 0.04) & (positive < 0.5)).all(), positive)
    pos = (labels == 1).astype(float)
    corr = np.corrcoef(pos.T)
    edema, cardio, effusion = 3, 1, 4
    self.assertGreater(corr[edema, cardio], 0.1)
    self.assertGreater(corr[edema, effusion], 0.1)
    # Patients with several studies exist, and share their anatomy-level metadata.
    _, per_patient = np.unique(meta["patient_id"], return_counts=True)
    self.assertGreater(per_patient.max(), 1)
    self.assertLess(len(per_patient), 400)
    for p in np.unique(meta["patient_id"])[:20]:
      self.assertLen(np.unique(meta["age"][meta["patient_id"] == p]), 1)

  def test_source_covers_classes(self):
    _, labels = synthetic.generate("source", 500, 24, 0)
    self.assertLen(np.unique(labels), synthetic.NUM_CLASSES["source"])


class CacheTest(tf.test.TestCase):

  def test_second_call_reads_cache(self):
    with tempfile.TemporaryDirectory() as tmp:
      real = synthetic.generate_with_meta
      with mock.patch.object(synthetic, "generate_with_meta", side_effect=real) as gen:
        a = synthetic.load_or_generate("retina", "train", 12, 32, 0, cache_dir=tmp)
        b = synthetic.load_or_generate("retina", "train", 12, 32, 0, cache_dir=tmp)
        self.assertEqual(gen.call_count, 1)
        synthetic.load_or_generate("retina", "train", 12, 32, 0, cache_dir=tmp, difficulty=0.9)
        self.assertEqual(gen.call_count, 2)  # The difficulty is part of the key.
      np.testing.assert_array_equal(a[0], b[0])
      np.testing.assert_array_equal(a[1], b[1])
      np.testing.assert_array_equal(a[2]["patient_id"], b[2]["patient_id"])
      self.assertFalse([f for f in os.listdir(tmp) if f.startswith(".tmp")])  # No temp files left behind.
      mm = synthetic.load_or_generate("retina", "train", 12, 32, 0, cache_dir=tmp, mmap=True)
      np.testing.assert_array_equal(np.asarray(mm[0]), a[0])

  def test_damaged_cache_of_the_right_size_is_generated_again(self):
    with tempfile.TemporaryDirectory() as tmp:
      good = synthetic.load_or_generate("retina", "train", 12, 32, 0, cache_dir=tmp)
      path = os.path.join(tmp, synthetic.cache_key("retina", "train", 12, 32, 0)) + ".images.npy"
      size = os.path.getsize(path)
      with open(path, "r+b") as f:  # Zero a stretch of pixels in place: same size, valid header.
        f.seek(size // 2)
        f.write(b"\0" * 4096)
      with self.assertLogs(level="WARNING") as logs:
        again = synthetic.load_or_generate("retina", "train", 12, 32, 0, cache_dir=tmp, mmap=True)
      self.assertLen(logs.records, 1)
      self.assertRegex(logs.output[0], r"images\.npy does not match its recorded sha256.*generating the retina "
                       r"train split again")
      np.testing.assert_array_equal(np.asarray(again[0]), good[0])
      self.assertEqual(os.path.getsize(path), size)
      synthetic.load_or_generate("retina", "train", 12, 32, 0, cache_dir=tmp)  # Repaired: no warning now.

  def test_cache_without_checksum_is_generated_again(self):
    with tempfile.TemporaryDirectory() as tmp:
      synthetic.load_or_generate("source", "test", 3, 24, 0, cache_dir=tmp)
      stem = os.path.join(tmp, synthetic.cache_key("source", "test", 3, 24, 0))
      os.remove(stem + ".sha256.json")  # As an older version left it.
      real = synthetic.generate_with_meta
      with mock.patch.object(synthetic, "generate_with_meta", side_effect=real) as gen:
        with self.assertLogs(level="WARNING") as logs:
          synthetic.load_or_generate("source", "test", 3, 24, 0, cache_dir=tmp)
        self.assertEqual(gen.call_count, 1)
        self.assertIn("has no checksum file", logs.output[0])
        synthetic.load_or_generate("source", "test", 3, 24, 0, cache_dir=tmp)
        self.assertEqual(gen.call_count, 1)
      self.assertTrue(os.path.exists(stem + ".sha256.json"))

  def test_too_large_split_is_refused_before_generating(self):
    with mock.patch.object(synthetic, "available_memory", return_value=2 ** 30):
      with self.assertRaisesRegex(UsageError, r"^--num_train=1000000: .* needs 6\.5 GiB of memory .*1\.0 GiB "
                                              r"available"):
        synthetic.load_or_generate("retina", "train", 10 ** 6, 48, 0, cache_dir=self.create_tempdir().full_path,
                                   num_workers=1)
    with self.assertRaisesRegex(UsageError, r"--num_val=1000000000: .* needs \d+\.\d GiB"):
      synthetic.generate_with_meta("cxr", 10 ** 9, 24, 0, split="validation", num_workers=1)

  def test_generation_prints_progress(self):
    out = io.StringIO()
    with mock.patch.object(synthetic, "PROGRESS_EVERY_S", 0.0), contextlib.redirect_stdout(out):
      synthetic.generate_with_meta("source", 5, 16, 0, split="train", num_workers=1)
    lines = out.getvalue().splitlines()
    self.assertLen(lines, 4)  # After images 1-4; never after the last.
    self.assertRegex(lines[0], r"^generating synthetic source train: 1/5 images \(20%\), ETA \d+m\d\ds$")

  def test_env_var_sets_cache_dir(self):
    with tempfile.TemporaryDirectory() as tmp:
      with mock.patch.dict(os.environ, {synthetic.CACHE_ENV: tmp}):
        synthetic.load_or_generate("source", "test", 3, 24, 1)
      self.assertTrue(any(f.endswith(".labels.npz") for f in os.listdir(tmp)))
      self.assertIn(f"_v{synthetic.GENERATOR_VERSION}", os.listdir(tmp)[0])

  def test_splits_disjoint(self):
    with tempfile.TemporaryDirectory() as tmp:
      for task in ("retina", "cxr"):
        parts = {s: synthetic.load_or_generate(task, s, 30, 32, 0, cache_dir=tmp) for s in synthetic.SPLITS}
        for s1 in synthetic.SPLITS:
          for s2 in synthetic.SPLITS:
            if s1 < s2:
              self.assertFalse(_hashes(parts[s1][0]) & _hashes(parts[s2][0]), (task, s1, s2))
              self.assertFalse(set(parts[s1][2]["patient_id"]) & set(parts[s2][2]["patient_id"]), (task, s1, s2))


class NoShortcutTest(tf.test.TestCase):

  def test_mean_colour_does_not_predict_referable(self):
    """A linear model on mean RGB (fit on one half, scored on the other) stays near chance."""
    images, grades = synthetic.generate("retina", 600, SIZE, 11)
    feats = images.reshape(len(images), -1, 3).mean(1)
    z = np.c_[(feats - feats.mean(0)) / feats.std(0), np.ones(len(feats))]
    y = (grades >= 2).astype(float)
    w = np.linalg.lstsq(z[:300], y[:300], rcond=None)[0]
    self.assertLess(_auc(y[300:], z[300:] @ w), 0.65)
    for c in range(3):  # Each channel alone, either direction.
      self.assertLess(abs(_auc(y, feats[:, c]) - 0.5), 0.15)

  def test_global_statistics_do_not_read_referable(self):
    """The global-statistics baseline (per-channel histogram, percentiles, mean, std; L2 logistic regression) fit on
    600 training eyes reads referable DR from 600 validation eyes at AUC <= 0.65 (generator v2: 0.90 at 48 px)."""
    for size in (32, 48):
      xa, ya = synthetic.generate("retina", 600, size, 0, split="train")
      xb, yb = synthetic.generate("retina", 600, size, 0, split="validation")
      auc, _ = synthetic.global_baseline_auc(synthetic.global_statistics_features(xa), ya >= 2,
                                             synthetic.global_statistics_features(xb), yb >= 2)
      self.assertLess(auc, 0.65, size)

  def test_global_baseline_finds_a_global_leak(self):
    """Positive control: the same baseline reads a label that only adds a few bright pixels anywhere in the image."""
    images, _ = synthetic.generate("retina", 240, 32, 5)
    label = np.arange(240) % 2 == 1
    rng = np.random.default_rng(0)
    leaky = images.copy()
    for i in np.flatnonzero(label):
      r, c = rng.integers(8, 22, 2)
      leaky[i, r:r + 3, c:c + 3] = (250, 235, 110)  # A 3x3 exudate-yellow patch.
    feats = synthetic.global_statistics_features(leaky)
    self.assertEqual(feats.shape, (240, 3 * (synthetic.GLOBAL_HIST_BINS + len(synthetic.GLOBAL_PERCENTILES) + 2)))
    auc, _ = synthetic.global_baseline_auc(feats[:120], label[:120], feats[120:], label[120:])
    self.assertGreater(auc, 0.8)

  def test_label_is_in_the_lesions(self):
    """Positive control: the generator's own lesion counts separate referable eyes."""
    _, grades, meta = synthetic.generate_with_meta("retina", 200, 32, 12)
    score = meta["num_haem"] + meta["num_exudate_clusters"] + meta["num_cotton_wool"] + meta["num_nv"]
    self.assertGreater(_auc(grades >= 2, score), 0.95)


if __name__ == "__main__":
  tf.test.main()
