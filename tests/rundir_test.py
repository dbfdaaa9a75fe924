"""Tests for transfusion_tf.training.rundir: path checks, test predictions, atomic writes."""
import os
from unittest import mock

import numpy as np
import tensorflow as tf

from transfusion_tf.data import tasks
from transfusion_tf.errors import UsageError
from transfusion_tf.training import metrics, rundir


class CheckWritableTest(tf.test.TestCase):

  def test_file_in_the_way(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, "afile")
    open(path, "w").close()
    with self.assertRaisesRegex(UsageError, r"^--run_dir=.*afile is an existing file, not a directory"):
      rundir.check_writable_dir(path, "--run_dir")
    with self.assertRaisesRegex(UsageError, r"--out=.*afile/run/x lies under .*afile, which is a file"):
      rundir.check_writable_dir(os.path.join(path, "run", "x"), "--out")
    self.assertEqual(rundir.check_writable_dir(os.path.join(tmp, "new", "run"), "--run_dir"),
                     os.path.join(tmp, "new", "run"))
    self.assertFalse(os.path.exists(os.path.join(tmp, "new")))  # Checking creates nothing.

  def test_unwritable(self):
    # As root, permission bits do not stop writes, so os.access is what decides here (trainer_test also checks a
    # read-only bind mount, which stops root too).
    tmp = self.create_tempdir().full_path
    locked = os.path.join(tmp, "locked")
    os.makedirs(locked)
    real = os.access
    with mock.patch.object(os, "access", lambda p, m: False if p == locked else real(p, m)):
      with self.assertRaisesRegex(UsageError, r"--run_dir=.*locked is not writable"):
        rundir.check_writable_dir(locked, "--run_dir")
      with self.assertRaisesRegex(UsageError, r"--run_dir=.*locked/a/run cannot be created: .*locked is not "
                                  "writable"):
        rundir.check_writable_dir(os.path.join(locked, "a", "run"), "--run_dir")


def cxr_outputs(seed, n, masked):
  """A CXR task (uncertain labels ignored) and random (labels, masks, logits) float32 (n, 5) for it, a share
  `masked` of the labels masked out."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, (n, 5)).astype(np.float32)
  masks = (rng.random((n, 5)) > masked).astype(np.float32)
  logits = rng.normal(size=(n, 5)).astype(np.float32)
  return tasks.get_task("cxr", uncertainty_policy="ignore"), labels, masks, logits


class TestPredictionsTest(tf.test.TestCase):

  def test_round_trip_reproduces_compute_metrics_exactly(self):
    n = 97
    task, labels, masks, logits = cxr_outputs(3, n, 0.2)
    logits[:10] = 40.0  # Saturated sigmoids: ties at 1.0 that the saved scores must keep.
    run_dir = self.create_tempdir().full_path
    inputs = metrics.auc_inputs(task, labels, masks, logits)
    rundir.save_test_predictions(run_dir, inputs, metrics.auc_indices(task, masks, n), n)
    self.assertEqual([f for f in os.listdir(run_dir)], [rundir.TEST_PREDICTIONS])  # No temp file left.
    loaded = rundir.load_test_predictions(run_dir)
    expected = metrics.compute_metrics(task, labels, masks, logits)
    self.assertEqual(sorted(loaded), sorted(k for k in expected if k != "auc_mean"))
    for key, (scores, binary) in loaded.items():
      self.assertEqual(scores.dtype, np.float64)
      self.assertEqual(binary.dtype, np.int8)
      self.assertEqual(metrics.roc_auc(binary, scores), expected[key])  # Exactly, not approximately.
    with np.load(os.path.join(run_dir, rundir.TEST_PREDICTIONS)) as z:
      self.assertAllEqual(z["index"], np.arange(n))
      self.assertAllEqual(z["auc_edema.index"], np.flatnonzero(masks[:, 3] > 0))
      self.assertAllEqual(z["auc_edema.labels"], labels[masks[:, 3] > 0, 3])

  def test_indices_align_the_labels_and_old_files_without_them(self):
    n = 50
    task, labels, masks, logits = cxr_outputs(4, n, 0.3)
    masks[:, 0] = 1.0  # Atelectasis keeps every image.
    inputs, indices = metrics.auc_inputs(task, labels, masks, logits), metrics.auc_indices(task, masks, n)
    run_dir = self.create_tempdir().full_path
    rundir.save_test_predictions(run_dir, inputs, indices, n)
    got_n, got = rundir.load_test_indices(run_dir)
    self.assertEqual((got_n, sorted(got)), (n, sorted(inputs)))
    for key in inputs:
      self.assertAllEqual(got[key], indices[key])
    # A file written without per-key indices: only a key that kept all N images can be placed.
    path = os.path.join(run_dir, rundir.TEST_PREDICTIONS)
    with np.load(path) as z:
      old = {k: z[k] for k in z.files if not k.endswith(".index")}
    rundir.atomic_write_npz(path, old)
    got_n, got = rundir.load_test_indices(run_dir)
    self.assertEqual(got_n, n)
    self.assertAllEqual(got["auc_atelectasis"], np.arange(n))
    self.assertIsNone(got["auc_edema"])
    with self.assertRaisesRegex(UsageError, "test_predictions.npz does not exist"):
      rundir.load_test_indices(self.create_tempdir().full_path)

  def test_missing_predictions_is_a_usage_error(self):
    with self.assertRaisesRegex(UsageError, "test_predictions.npz does not exist"):
      rundir.load_test_predictions(self.create_tempdir().full_path)
    with self.assertRaisesRegex(UsageError, "test_predictions.npz does not exist"):
      rundir.load_test_patients(self.create_tempdir().full_path)

  def test_patients_round_trip_and_align_with_each_key(self):
    n = 40
    task, labels, masks, logits = cxr_outputs(5, n, 0.3)
    patients = np.repeat(np.arange(100, 120), 2)  # Two images a patient.
    inputs, indices = metrics.auc_inputs(task, labels, masks, logits), metrics.auc_indices(task, masks, n)
    with_ids, without = self.create_tempdir().full_path, self.create_tempdir().full_path
    rundir.save_test_predictions(with_ids, inputs, indices, n, patients=patients)
    rundir.save_test_predictions(without, inputs, indices, n)  # No patients: no key, as in files saved before.
    got = rundir.load_test_patients(with_ids)
    self.assertEqual(got.dtype, np.int64)
    self.assertAllEqual(got, patients)
    for key, (scores, _) in rundir.load_test_predictions(with_ids).items():
      aligned = rundir.load_test_patients(with_ids, key=key)
      self.assertEqual(aligned.shape, scores.shape)
      self.assertAllEqual(aligned, patients[indices[key]])
    with np.load(os.path.join(without, rundir.TEST_PREDICTIONS)) as z:
      self.assertNotIn(rundir.PATIENT_KEY, z.files)
    self.assertIsNone(rundir.load_test_patients(without))
    self.assertIsNone(rundir.load_test_patients(without, key="auc_edema"))
    # The predictions read the same either way.
    for key, (scores, binary) in rundir.load_test_predictions(with_ids).items():
      self.assertAllEqual(scores, rundir.load_test_predictions(without)[key][0])
    with self.assertRaisesRegex(UsageError, "no metric 'auc_referable'; it has auc_atelectasis"):
      rundir.load_test_patients(with_ids, key="auc_referable")
    with self.assertRaisesRegex(ValueError, "patients must be ints"):
      rundir.save_test_predictions(without, inputs, indices, n, patients=patients[:-1])


if __name__ == "__main__":
  tf.test.main()
