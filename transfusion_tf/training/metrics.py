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


def auc_inputs(task, labels, masks, logits):
  """What every AUC of `task` is computed from: {metric key: (scores float64 (N_kept,), labels int8 (N_kept,))}.

  The one place that turns gathered arrays into AUC inputs (compute_metrics and the test predictions use it), so
  an AUC in result.json equals roc_auc(labels, scores) of the saved arrays exactly. Masked examples (mask 0) are
  dropped. labels/masks: as the pipeline yields them, concatenated over the split ((N,) or (N, P)); logits:
  (N, outputs). grading: {"auc_referable": (P(grade >= 2), grade >= 2)}; multilabel: {"auc_<pathology>":
  (sigmoid, label)} per output; multiclass with task.one_vs_rest (the image task): {"auc_<class>": (softmax
  probability of the class, label == class)} per class; other multiclass (the source task): {} (no AUC).
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  masks = np.asarray(masks)
  if task.kind == "grading":
    if task.binary_head:
      scores = _sigmoid(logits.reshape(-1))
    else:
      scores = task.referable_probability(_softmax(logits))
    columns = [("auc_referable", scores, task.binary_targets(labels), masks.reshape(-1))]
  elif task.kind == "multilabel":
    probs = _sigmoid(logits)
    columns = [(f"auc_{metric_key(name)}", probs[:, j], labels[:, j], masks[:, j])
               for j, name in enumerate(task.class_names)]
  elif task.kind == "multiclass" and task.one_vs_rest:
    probs = _softmax(logits)
    labels = labels.reshape(-1)
    columns = [(f"auc_{metric_key(name)}", probs[:, k], labels == k, masks.reshape(-1))
               for k, name in enumerate(task.class_names)]
  else:
    columns = []
  out = {}
  for key, scores, binary, mask in columns:
    keep = np.asarray(mask).reshape(-1) > 0
    out[key] = (np.asarray(scores, np.float64).reshape(-1)[keep],
                (np.asarray(binary).reshape(-1)[keep] > 0.5).astype(np.int8))
  return out


def auc_indices(task, masks, n):
  """{metric key: int64 (N_kept,)}: the example indices (in eval order, 0..n-1) behind each array of auc_inputs."""
  masks = np.asarray(masks)
  if task.kind == "grading":
    return {"auc_referable": np.flatnonzero(masks.reshape(n) > 0).astype(np.int64)}
  if task.kind == "multilabel":
    return {f"auc_{metric_key(name)}": np.flatnonzero(masks[:, j] > 0).astype(np.int64)
            for j, name in enumerate(task.class_names)}
  if task.kind == "multiclass" and task.one_vs_rest:
    kept = np.flatnonzero(masks.reshape(n) > 0).astype(np.int64)
    return {f"auc_{metric_key(name)}": kept for name in task.class_names}
  return {}


def compute_metrics(task, labels, masks, logits):
  """Returns {metric name: float} for `task` (a TaskSpec) from gathered arrays.

  labels/masks: as the pipeline yields them, concatenated over the split ((N,) or (N, P)); logits: (N, outputs).
  grading: auc_referable (from P(grade >= 2) = p2 + p3 + p4, or the binary sigmoid), accuracy, kappa_quadratic.
  multilabel: auc_<pathology> per output (masked labels left out) and, with several outputs, auc_mean over the
  defined ones (a binary image task, one output, gets only its auc_<label>: its task.metric_names).
  multiclass: accuracy and top5_accuracy; with task.one_vs_rest also auc_<class> per class and their macro mean
  auc_mean over the defined ones.
  Every AUC is roc_auc of the arrays `auc_inputs` returns.
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  masks = np.asarray(masks)
  aucs = {key: roc_auc(binary, scores) for key, (scores, binary) in auc_inputs(task, labels, masks, logits).items()}
  out = dict(aucs)
  if task.kind == "grading":
    referable = task.binary_targets(labels)
    if task.binary_head:
      prob = _sigmoid(logits.reshape(-1))
      out["accuracy"] = float(np.mean((prob > 0.5) == (referable > 0.5)))
    else:
      preds = logits.argmax(axis=1)
      out["accuracy"] = float(np.mean(preds == labels))
      out["kappa_quadratic"] = quadratic_kappa(labels, preds, task.num_outputs)
  elif task.kind == "multilabel":
    if task.num_outputs > 1:  # A binary task's one AUC is its metric: a mean of one would only repeat it.
      defined = [a for a in aucs.values() if not np.isnan(a)]
      out["auc_mean"] = float(np.mean(defined)) if defined else float("nan")
  elif task.kind == "multiclass":
    if task.one_vs_rest:
      defined = [a for a in aucs.values() if not np.isnan(a)]
      out["auc_mean"] = float(np.mean(defined)) if defined else float("nan")
    out["accuracy"] = float(np.mean(logits.argmax(axis=1) == labels))
    k = min(5, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    out["top5_accuracy"] = float(np.mean((top == labels[:, None]).any(axis=1)))
  else:
    raise ValueError(f"unknown task kind {task.kind!r}")
  return out


def label_matrices(inputs, indices, n):
  """The per-label AUC arrays of one image set side by side, for the labels' joint covariance (auc_mean's).

  inputs: {metric key: (scores (N_k,), labels (N_k,))} as `auc_inputs` returns or test_predictions.npz holds;
  indices: {metric key: int64 (N_k,)} positions of those images in 0..n-1 (`auc_indices`). Returns (keys (L,) sorted,
  scores float64 (L, n), labels int8 (L, n), mask bool (L, n)): label l of image i is defined where mask[l, i];
  elsewhere the score is NaN and the label 0. Raises ValueError when an index does not fit its arrays or 0..n-1.
  """
  keys = sorted(k for k in inputs if k != "auc_mean")
  scores = np.full((len(keys), n), np.nan)
  labels = np.zeros((len(keys), n), np.int8)
  mask = np.zeros((len(keys), n), bool)
  for row, key in enumerate(keys):
    s, y = inputs[key]
    idx = np.asarray(indices[key]).reshape(-1)
    if idx.shape != np.shape(s) or np.shape(s) != np.shape(y):
      raise ValueError(f"{key}: {idx.size} image indices for {np.size(s)} scores and {np.size(y)} labels")
    if idx.size and (idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size):
      raise ValueError(f"{key}: image indices outside 0..{n - 1} or repeated")
    scores[row, idx], labels[row, idx], mask[row, idx] = s, y, True
  return keys, scores, labels, mask
