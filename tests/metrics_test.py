"""Tests for transfusion_tf.training.metrics: exact AUC, quadratic kappa, per-task metrics."""
import itertools

import numpy as np
import tensorflow as tf

from transfusion_tf.data import tasks
from transfusion_tf.training import metrics


def brute_force_auc(labels, scores):
  pos = [s for s, y in zip(scores, labels) if y == 1]
  neg = [s for s, y in zip(scores, labels) if y == 0]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
  return wins / (len(pos) * len(neg))


class MetricsTest(tf.test.TestCase):

  def test_auc_equals_pairwise_count_with_ties(self):
    rng = np.random.default_rng(0)
    for _ in range(20):
      n = rng.integers(5, 60)
      labels = rng.integers(0, 2, n)
      labels[:2] = [0, 1]
      scores = rng.integers(0, 6, n) / 5.0  # Many ties.
      self.assertAllClose(metrics.roc_auc(labels, scores), brute_force_auc(labels, scores), atol=1e-12)

  def test_auc_mask_and_degenerate(self):
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.1, 0.9, 0.2, 0.8])
    self.assertAllClose(metrics.roc_auc(labels, scores, mask=[1, 1, 0, 0]), 1.0)
    self.assertTrue(np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3])))

  def test_quadratic_kappa(self):
    y = np.array([0, 1, 2, 3, 4, 2])
    self.assertAllClose(metrics.quadratic_kappa(y, y, 5), 1.0)
    # By hand: observed [[1, 1], [0, 2]], expected outer([2, 2], [1, 3]) / 4 = [[.5, 1.5], [.5, 1.5]],
    # weights [[0, 1], [1, 0]]: kappa = 1 - (0 + 1 + 0 + 0) / (1.5 + 0.5) = 0.5.
    self.assertAllClose(metrics.quadratic_kappa([0, 0, 1, 1], [0, 1, 1, 1], 2), 0.5)

  def test_grading_metrics_use_referable_probability(self):
    task = tasks.get_task("retina")
    grades = np.array([0, 1, 2, 3, 4, 0])
    # Logits favour grade 0 for the first two and high grades for the rest: perfect referable ranking.
    logits = np.log(np.array([[.9, .05, .02, .02, .01], [.5, .4, .05, .03, .02], [.1, .1, .6, .1, .1],
                              [.05, .05, .1, .7, .1], [.01, .01, .08, .1, .8], [.7, .2, .05, .03, .02]]))
    out = metrics.compute_metrics(task, grades, np.ones(6), logits)
    self.assertAllClose(out["auc_referable"], 1.0)
    self.assertAllClose(out["accuracy"], 5 / 6)
    self.assertIn("kappa_quadratic", out)

  def test_multilabel_masks_and_mean(self):
    task = tasks.get_task("cxr", uncertainty_policy="ignore")
    labels = np.array([[1, 0, 1, 0, 1], [0, 1, 0, 1, 0], [1, 1, 0, 0, 1], [0, 0, 1, 1, 0]], np.float32)
    masks = np.ones_like(labels)
    logits = np.where(labels > 0, 2.0, -2.0)
    logits[0, 0] = -5.0  # Wrong, but masked out below.
    masks[0, 0] = 0.0
    out = metrics.compute_metrics(task, labels, masks, logits)
    self.assertAllClose(out["auc_atelectasis"], 1.0)
    self.assertAllClose(out["auc_mean"], 1.0)
    self.assertEqual(len([k for k in out if k.startswith("auc_")]), 6)

  def test_binary_image_task_has_no_auc_mean(self):
    # One 0/1 column: its AUC is the metric; an auc_mean would repeat it as a second, different-looking name.
    task = tasks.image_task("binary", ("tumour",))
    labels = np.array([[1], [0], [1], [0]], np.float32)
    out = metrics.compute_metrics(task, labels, np.ones_like(labels), np.array([[2.0], [-1.0], [0.5], [1.0]]))
    self.assertEqual(sorted(out), ["auc_tumour"])
    self.assertAllClose(out["auc_tumour"], 0.75)
    self.assertEqual(set(out), set(task.metric_names))

  def test_auc_inputs_are_what_compute_metrics_scores(self):
    rng = np.random.default_rng(1)
    for task in (tasks.get_task("retina"), tasks.get_task("retina", binary_head=True)):
      grades = rng.integers(0, 5, 40)
      logits = rng.normal(size=(40, task.num_outputs))
      masks = np.ones(40, np.float32)
      masks[:3] = 0.0  # Masked examples leave the AUC inputs.
      inputs = metrics.auc_inputs(task, grades, masks, logits)
      self.assertEqual(list(inputs), ["auc_referable"])
      scores, binary = inputs["auc_referable"]
      self.assertEqual((scores.shape, scores.dtype, binary.dtype), ((37,), np.float64, np.int8))
      self.assertAllEqual(binary, (grades[3:] >= 2).astype(np.int8))
      if not task.binary_head:
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        self.assertAllClose(scores, probs[3:, 2:].sum(1))
      out = metrics.compute_metrics(task, grades, masks, logits)
      self.assertEqual(out["auc_referable"], metrics.roc_auc(binary, scores))
      self.assertAllEqual(metrics.auc_indices(task, masks, 40)["auc_referable"], np.arange(3, 40))
    cxr = tasks.get_task("cxr")
    labels = rng.integers(0, 2, (30, 5)).astype(np.float32)
    masks = (rng.random((30, 5)) > 0.3).astype(np.float32)
    logits = rng.normal(size=(30, 5))
    inputs = metrics.auc_inputs(cxr, labels, masks, logits)
    out = metrics.compute_metrics(cxr, labels, masks, logits)
    self.assertLen(inputs, 5)
    for j, (key, (scores, binary)) in enumerate(inputs.items()):
      self.assertEqual(out[key], metrics.roc_auc(binary, scores))
      self.assertEqual(out[key], metrics.roc_auc(labels[:, j], 1 / (1 + np.exp(-logits[:, j])), masks[:, j]))
    self.assertEqual(metrics.auc_inputs(tasks.get_task("source", num_classes=4), np.zeros(3), np.ones(3),
                                        np.zeros((3, 4))), {})

  def test_label_matrices_put_each_label_back_on_its_images(self):
    rng = np.random.default_rng(2)
    cxr = tasks.get_task("cxr")
    labels = rng.integers(0, 2, (30, 5)).astype(np.float32)
    masks = (rng.random((30, 5)) > 0.3).astype(np.float32)
    logits = rng.normal(size=(30, 5))
    inputs, indices = metrics.auc_inputs(cxr, labels, masks, logits), metrics.auc_indices(cxr, masks, 30)
    keys, scores, binary, defined = metrics.label_matrices(inputs, indices, 30)
    self.assertEqual(keys, sorted(inputs))
    for row, key in enumerate(keys):
      j = list(inputs).index(key)
      self.assertAllEqual(defined[row], masks[:, j] > 0)
      self.assertAllClose(scores[row, defined[row]], 1 / (1 + np.exp(-logits[masks[:, j] > 0, j])))
      self.assertTrue(np.isnan(scores[row, ~defined[row]]).all())
      self.assertAllEqual(binary[row, defined[row]], labels[masks[:, j] > 0, j])
    with self.assertRaises(ValueError):
      metrics.label_matrices(inputs, dict(indices, auc_edema=indices["auc_edema"][:-1]), 30)
    with self.assertRaises(ValueError):
      metrics.label_matrices(inputs, indices, 20)  # Indices beyond the images.
