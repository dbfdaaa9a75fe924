"""Tests for transfusion_tf/data/tasks.py: task specs, dataset -> task mapping, uncertainty policies."""
import dataclasses

import numpy as np
import tensorflow as tf

from transfusion_tf.data import tasks
from transfusion_tf.errors import UsageError


class TaskSpecTest(tf.test.TestCase):

  def test_retina(self):
    spec = tasks.get_task("retina")
    self.assertEqual((spec.kind, spec.head, spec.num_outputs, spec.channels), ("grading", "softmax", 5, 3))
    self.assertEqual(spec.metric_names, ("auc_referable", "accuracy", "kappa_quadratic"))
    self.assertEqual(spec.primary_metric, "auc_referable")
    self.assertLen(spec.class_names, 5)
    probs = np.array([[0.1, 0.2, 0.3, 0.2, 0.2], [0.9, 0.1, 0.0, 0.0, 0.0]])
    self.assertAllClose(spec.referable_probability(probs), [0.7, 0.0])
    self.assertAllEqual(spec.binary_targets(np.array([0, 1, 2, 3, 4])), [0, 0, 1, 1, 1])
    with self.assertRaises(dataclasses.FrozenInstanceError):
      spec.num_outputs = 3

  def test_retina_binary_head(self):
    spec = tasks.get_task("retina", binary_head=True)
    self.assertEqual((spec.head, spec.num_outputs, spec.primary_metric), ("sigmoid", 1, "auc_referable"))
    self.assertNotIn("kappa_quadratic", spec.metric_names)
    self.assertAllClose(spec.referable_probability(np.array([[0.3], [0.8]])), [0.3, 0.8])

  def test_cxr(self):
    spec = tasks.get_task("cxr", uncertainty_policy="ones")
    self.assertEqual((spec.kind, spec.head, spec.num_outputs, spec.channels), ("multilabel", "sigmoid", 5, 1))
    self.assertEqual(spec.metric_names, ("auc_atelectasis", "auc_cardiomegaly", "auc_consolidation", "auc_edema",
                                         "auc_pleural_effusion", "auc_mean"))
    self.assertEqual(spec.primary_metric, "auc_mean")
    self.assertEqual(spec.label_shape, (5,))
    self.assertEqual(spec.label_transform["uncertainty_policy"], "ones")
    self.assertEqual(tasks.get_task("cxr").uncertainty_policy, "per_pathology")
    self.assertEqual(tasks.get_task("cxr").label_transform["uncertain_as_one"], ["Atelectasis", "Edema"])

  def test_source(self):
    spec = tasks.get_task("source", num_classes=1000)
    self.assertEqual((spec.kind, spec.head, spec.num_outputs), ("multiclass", "softmax", 1000))
    self.assertEqual(spec.metric_names, ("accuracy", "top5_accuracy"))
    self.assertEqual(spec.primary_metric, "accuracy")
    with self.assertRaisesRegex(ValueError, "num_classes"):
      tasks.get_task("source")  # The dataset decides the class count: registry.task_spec.
    self.assertEqual(tasks.get_task("source", num_classes=4).metric_names, ("accuracy",))

  def test_unknown(self):
    with self.assertRaisesRegex(UsageError, "retina, cxr, source"):
      tasks.get_task("mnist")
    with self.assertRaisesRegex(UsageError, "uncertainty_policy"):
      tasks.get_task("cxr", uncertainty_policy="maybe")


class UncertaintyTest(tf.test.TestCase):
  # Columns: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion.
  RAW = np.array([[-1, -1, -1, -1, -1],
                  [1, 0, np.nan, 1, 0],
                  [0, 1, -1, np.nan, 1]], np.float32)

  def test_policies(self):
    u = np.array([-1, -1, -1, -1, -1])
    cases = {"zeros": ([0, 0, 0, 0, 0], [1, 1, 1, 1, 1]),
             "ones": ([1, 1, 1, 1, 1], [1, 1, 1, 1, 1]),
             "ignore": ([0, 0, 0, 0, 0], [0, 0, 0, 0, 0]),
             "per_pathology": ([1, 0, 0, 1, 0], [1, 1, 1, 1, 1])}
    for policy, (label, mask) in cases.items():
      labels, masks = tasks.apply_uncertainty(u[None], policy)
      self.assertAllEqual(labels[0], label, msg=policy)
      self.assertAllEqual(masks[0], mask, msg=policy)
      self.assertEqual(labels.dtype, np.float32)
      self.assertEqual(masks.dtype, np.float32)

  def test_blank_is_zero_and_certain_labels_pass(self):
    labels, masks = tasks.apply_uncertainty(self.RAW, "ignore")
    self.assertAllEqual(labels[1], [1, 0, 0, 1, 0])
    self.assertAllEqual(masks[1], [1, 1, 1, 1, 1])
    self.assertAllEqual(labels[2], [0, 1, 0, 0, 1])
    self.assertAllEqual(masks[2], [1, 1, 0, 1, 1])

  def test_bad_values(self):
    with self.assertRaisesRegex(UsageError, "label 2 for Cardiomegaly"):
      tasks.apply_uncertainty(np.array([[0, 2, 0, 0, 0]]), "zeros")
    with self.assertRaisesRegex(UsageError, "uncertainty_policy"):
      tasks.apply_uncertainty(self.RAW, "half")
    with self.assertRaises(ValueError):
      tasks.apply_uncertainty(np.zeros((2, 4)), "zeros")


if __name__ == "__main__":
  tf.test.main()
