"""Exact evaluation metrics computed in numpy from all gathered scores (no 200-threshold approximation).

`roc_auc` uses the rank-sum (Mann-Whitney U) formula with average ranks for ties, which equals the probability
that a random positive scores above a random negative, ties counting one half.
"""
import numpy as np
from scipy import stats

from transfusion_tf.data.tasks import metric_key


def roc_auc(labels, scores, mask=None):
  """Exact ROC-AUC. labels: (N,) in {0, 1}; scores: (N,) floats; mask: optional (N,) weights in {0, 1}.

  Returns NaN when only one class is present (AUC is undefined then).
  """
  labels = np.asarray(labels).reshape(-1)
  scores = np.asarray(scores, np.float64).reshape(-1)
  if mask is not None:
    keep = np.asarray(mask).reshape(-1) > 0
    labels, scores = labels[keep], scores[keep]
  pos = labels > 0.5
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = stats.rankdata(scores)  # Average ranks: ties count one half.
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def quadratic_kappa(labels, preds, num_classes):
  """Cohen's kappa with quadratic weights between integer labels and predictions in [0, num_classes)."""
  labels = np.asarray(labels, np.int64).reshape(-1)
  preds = np.asarray(preds, np.int64).reshape(-1)
  observed = np.zeros((num_classes, num_classes))
  np.add.at(observed, (labels, preds), 1.0)
  expected = np.outer(observed.sum(1), observed.sum(0)) / max(1.0, observed.sum())
  i, j = np.meshgrid(np.arange(num_classes), np.arange(num_classes), indexing="ij")
  weights = (i - j) ** 2 / float((num_classes - 1) ** 2)
  denom = (weights * expected).sum()
  return float(1.0 - (weights * observed).sum() / denom) if denom > 0 else float("nan")


def _softmax(logits):
  z = logits - logits.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def _sigmoid(logits):
  return 1.0 / (1.0 + np.exp(-logits))


def compute_metrics(task, labels, masks, logits):
  """Returns {metric name: float} for `task` (a TaskSpec) from gathered arrays.

  labels/masks: as the pipeline yields them, concatenated over the split ((N,) or (N, P)); logits: (N, outputs).
  grading: auc_referable (from P(grade >= 2) = p2 + p3 + p4, or the binary sigmoid), accuracy, kappa_quadratic.
  multilabel: auc_<pathology> per output (masked labels left out) and auc_mean over the defined ones.
  multiclass: accuracy and top5_accuracy.
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  masks = np.asarray(masks)
  out = {}
  if task.kind == "grading":
    referable = task.binary_targets(labels)
    if task.binary_head:
      prob = _sigmoid(logits.reshape(-1))
      out["auc_referable"] = roc_auc(referable, prob)
      out["accuracy"] = float(np.mean((prob > 0.5) == (referable > 0.5)))
    else:
      probs = _softmax(logits)
      out["auc_referable"] = roc_auc(referable, task.referable_probability(probs))
      preds = probs.argmax(axis=1)
      out["accuracy"] = float(np.mean(preds == labels))
      out["kappa_quadratic"] = quadratic_kappa(labels, preds, task.num_outputs)
  elif task.kind == "multilabel":
    probs = _sigmoid(logits)
    aucs = []
    for j, name in enumerate(task.class_names):
      auc = roc_auc(labels[:, j], probs[:, j], masks[:, j])
      out[f"auc_{metric_key(name)}"] = auc
      if not np.isnan(auc):
        aucs.append(auc)
    out["auc_mean"] = float(np.mean(aucs)) if aucs else float("nan")
  elif task.kind == "multiclass":
    out["accuracy"] = float(np.mean(logits.argmax(axis=1) == labels))
    k = min(5, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    out["top5_accuracy"] = float(np.mean((top == labels[:, None]).any(axis=1)))
  else:
    raise ValueError(f"unknown task kind {task.kind!r}")
  return out
