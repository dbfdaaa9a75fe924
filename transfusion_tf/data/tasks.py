"""Task specs: what a dataset asks of the model, the loss and the metrics (PAPER.md section 1).

The trainer reads a `TaskSpec` and never branches on dataset names. Four tasks:

  retina  kind "grading":    5-way softmax over DR grades 0-4; P(referable) = p2 + p3 + p4 (grade >= 2).
                             Option binary_head=True: one sigmoid output for P(referable).
  cxr     kind "multilabel": 5 sigmoid outputs, one per CheXpert pathology, masked binary cross-entropy.
  source  kind "multiclass": softmax over source classes (synthetic source task or ImageNet), for pretraining.
  image   a labelled image folder (`image_csv`); its labels CSV decides the kind (`image_task`):
            binary      one 0/1 column:            kind "multilabel" with 1 sigmoid output; primary auc_<label>;
            multiclass  one column of classes 0..K-1 (K >= 3): kind "multiclass", softmax, one-vs-rest AUC per class
                        (auc_<label>_<k>); primary auc_mean (the macro mean);
            multilabel  several 0/1 columns:       kind "multilabel", one sigmoid per column; primary auc_mean.

Which dataset trains which task: `registry.py`. Labels as the pipeline delivers them (see `pipeline.py`):
  grading     int32 grades (B,), mask float32 (B,) of ones. A binary head trains on `grade >= 2`.
  multilabel  float32 (B, 5) in {0, 1} after the uncertainty policy, mask float32 (B, 5) (0 = ignored label).
  multiclass  int32 class ids (B,), mask float32 (B,) of ones.
"""
import dataclasses
import re

import numpy as np

from transfusion_tf.errors import UsageError

TASKS = ("retina", "cxr", "source", "image")
IMAGE_KINDS = ("binary", "multiclass", "multilabel")

RETINA_GRADES = ("none", "mild", "moderate", "severe", "proliferative")
REFERABLE_MIN_GRADE = 2  # [paper] referable DR = moderate or worse.

CXR_PATHOLOGIES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAINTY_POLICIES = ("per_pathology", "zeros", "ones", "ignore")
# [default] per_pathology: uncertain counts as positive for these, negative for the other three.
PER_PATHOLOGY_ONES = ("Atelectasis", "Edema")

def metric_key(name):
  """'Pleural Effusion' -> 'pleural_effusion' (the form used in metric and TensorBoard names): lower case, every run
  of other characters than letters, digits and '_' one '_' (a user's CSV column may hold any)."""
  return re.sub(r"[^0-9a-z_]+", "_", str(name).lower()).strip("_") or "_"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Everything the trainer needs to know about a task.

  Attributes:
    name: "retina", "cxr" or "source".
    kind: "grading", "multilabel" or "multiclass" (see the module docstring).
    num_outputs: width of the model's last Dense layer.
    head: "softmax" or "sigmoid": the activation the loss and the metrics assume on the logits.
    class_names: grade names (retina), pathology names (cxr) or class ids as strings (source).
    metric_names: the metrics the trainer reports, e.g. ("auc_referable", "accuracy", "kappa_quadratic").
    primary_metric: the metric for model selection and steps-to-threshold.
    channels: channels of the stored images (retina 3, cxr 1, source 3); the pipeline converts to the model's.
    label_shape: shape of one label: () or (5,).
    label_dtype: "int32" or "float32".
    uncertainty_policy: cxr only: one of UNCERTAINTY_POLICIES; None otherwise.
    binary_head: retina only: one sigmoid output for P(referable) instead of a 5-way softmax.
    flips: augmentation flips that keep the label valid: "lr" or "lr_ud".
    crop_to_square: centre-crop to a square before resizing (fundus photographs are wider than the eye).
    one_vs_rest: multiclass only: score one AUC per class (its softmax probability against the rest) and their
      macro mean auc_mean (the image task's classes; the source task is scored on accuracy).
    every_class: every class (multiclass) or label (multilabel) needs positive and negative images in every split,
      since each AUC enters the primary metric (the image task; CheXpert only needs one pathology with both).
  """
  name: str
  kind: str
  num_outputs: int
  head: str
  class_names: tuple
  metric_names: tuple
  primary_metric: str
  channels: int
  label_shape: tuple = ()
  label_dtype: str = "int32"
  uncertainty_policy: str = None
  binary_head: bool = False
  flips: str = "lr"
  crop_to_square: bool = False
  one_vs_rest: bool = False
  every_class: bool = False

  @property
  def label_transform(self):
    """The settings that turn stored labels into training labels, as a dict (for logs and flags.txt)."""
    if self.kind == "multilabel" and self.uncertainty_policy is None:
      return {"labels": "0/1 as read"}
    if self.kind == "multilabel":
      return {"uncertainty_policy": self.uncertainty_policy, "blank": 0,
              "uncertain_as_one": [p for p in CXR_PATHOLOGIES if _uncertain_value(p, self.uncertainty_policy) == 1]}
    if self.kind == "grading":
      return {"referable_min_grade": REFERABLE_MIN_GRADE, "binary_head": self.binary_head}
    return {}

  def binary_targets(self, grades):
    """grading: 1.0 where grade >= 2 (referable), else 0.0. Works on numpy arrays and tensors alike."""
    if self.kind != "grading":
      raise ValueError(f"binary_targets is for the grading task, not {self.kind!r}")
    return (grades >= REFERABLE_MIN_GRADE) * 1.0

  def referable_probability(self, probs):
    """grading: P(referable) from the head's probabilities: p2 + p3 + p4 (softmax) or the sigmoid output.

    probs: (B, 5) softmax probabilities or (B, 1) / (B,) sigmoid probabilities. Numpy in, numpy out.
    """
    probs = np.asarray(probs)
    if self.binary_head:
      return probs.reshape(len(probs))
    return probs[:, REFERABLE_MIN_GRADE:].sum(axis=1)


def _uncertain_value(pathology, policy):
  """What an uncertain (-1) label becomes: 0, 1, or None (masked)."""
  if policy == "zeros":
    return 0
  if policy == "ones":
    return 1
  if policy == "ignore":
    return None
  if policy == "per_pathology":
    return 1 if pathology in PER_PATHOLOGY_ONES else 0
  raise UsageError(f"--uncertainty_policy={policy!r} is not one of {', '.join(UNCERTAINTY_POLICIES)}")


def check_uncertainty_policy(policy):
  if policy not in UNCERTAINTY_POLICIES:
    raise UsageError(f"--uncertainty_policy={policy!r} is not one of {', '.join(UNCERTAINTY_POLICIES)}")
  return policy


def apply_uncertainty(labels, policy, pathologies=CXR_PATHOLOGIES):
  """Applies an uncertainty policy to raw CheXpert labels.

  Args:
    labels: (N, P) array with 1 (positive), 0 (negative), -1 (uncertain) and NaN (blank; or already 0).
    policy: "zeros", "ones", "ignore" (uncertain labels masked out) or "per_pathology" (ones for Atelectasis and
      Edema, zeros for the rest).
    pathologies: the P column names, in order.

  Returns:
    (labels float32 (N, P) in {0, 1}, mask float32 (N, P)): blank becomes 0 with mask 1; a masked label is 0.
  """
  check_uncertainty_policy(policy)
  raw = np.asarray(labels, np.float32)
  if raw.ndim != 2 or raw.shape[1] != len(pathologies):
    raise ValueError(f"labels must have shape (N, {len(pathologies)}), got {raw.shape}")
  raw = np.where(np.isnan(raw), 0.0, raw)
  bad = ~np.isin(raw, (-1.0, 0.0, 1.0))
  if bad.any():
    row, col = np.argwhere(bad)[0]
    raise UsageError(f"label {float(raw[row, col]):g} for {pathologies[col]} (row {row}) is not one of 1, 0, -1 or "
                     f"blank")
  out = raw.copy()
  mask = np.ones_like(raw)
  for j, name in enumerate(pathologies):
    uncertain = raw[:, j] == -1
    value = _uncertain_value(name, policy)
    if value is None:
      out[uncertain, j] = 0.0
      mask[uncertain, j] = 0.0
    else:
      out[uncertain, j] = float(value)
  return out.astype(np.float32), mask.astype(np.float32)


def get_task(name, binary_head=False, uncertainty_policy="per_pathology", num_classes=None):
  """Returns the TaskSpec for task `name` ("retina", "cxr" or "source").

  Args:
    binary_head: retina: one sigmoid output for P(referable) instead of the 5-way softmax.
    uncertainty_policy: cxr: what uncertain (-1) labels become; see `apply_uncertainty`.
    num_classes: source: number of classes (required: the dataset decides it; `registry.task_spec(dataset)` passes
      the synthetic source task's or ImageNet's 1000).
  """
  if name == "retina":
    if binary_head:
      return TaskSpec(name="retina", kind="grading", num_outputs=1, head="sigmoid", class_names=RETINA_GRADES,
                      metric_names=("auc_referable", "accuracy"), primary_metric="auc_referable", channels=3,
                      binary_head=True, flips="lr_ud", crop_to_square=True)
    return TaskSpec(name="retina", kind="grading", num_outputs=5, head="softmax", class_names=RETINA_GRADES,
                    metric_names=("auc_referable", "accuracy", "kappa_quadratic"), primary_metric="auc_referable",
                    channels=3, flips="lr_ud", crop_to_square=True)
  if name == "cxr":
    check_uncertainty_policy(uncertainty_policy)
    metrics = tuple(f"auc_{metric_key(p)}" for p in CXR_PATHOLOGIES) + ("auc_mean",)
    return TaskSpec(name="cxr", kind="multilabel", num_outputs=len(CXR_PATHOLOGIES), head="sigmoid",
                    class_names=CXR_PATHOLOGIES, metric_names=metrics, primary_metric="auc_mean", channels=1,
                    label_shape=(len(CXR_PATHOLOGIES),), label_dtype="float32",
                    uncertainty_policy=uncertainty_policy, flips="lr")
  if name == "source":
    if num_classes is None:
      raise ValueError("get_task('source') needs num_classes; use registry.task_spec(dataset) for a dataset's task")
    n = int(num_classes)
    if n < 2:
      raise UsageError(f"the source task needs at least 2 classes, got {n}")
    metrics = ("accuracy", "top5_accuracy") if n > 5 else ("accuracy",)
    return TaskSpec(name="source", kind="multiclass", num_outputs=n, head="softmax",
                    class_names=tuple(str(i) for i in range(n)), metric_names=metrics, primary_metric="accuracy",
                    channels=3, flips="lr")
  if name == "image":
    raise ValueError("the image task comes from a labels CSV: use registry.task_spec('image_csv', options=...) or "
                     "image_task(kind, class_names)")
  raise UsageError(f"unknown task {name!r}; known: {', '.join(TASKS)}")


def image_task(kind, class_names):
  """The TaskSpec of a labelled image folder (dataset image_csv; see the module docstring for the three kinds).

  kind: one of IMAGE_KINDS. class_names: binary: (label column,); multiclass: one name per class 0..K-1 (e.g.
  ("diagnosis_0", "diagnosis_1", "diagnosis_2")); multilabel: the label columns. Their metric keys must differ
  from each other and from "mean". Images are RGB (grayscale replicated), flipped left-right only (--flips
  overrides), not cropped.
  """
  names = tuple(str(n) for n in class_names)
  keys = [metric_key(n) for n in names]
  clash = [k for k in keys if k == "mean" or keys.count(k) > 1]
  if clash:
    raise UsageError(f"label names {', '.join(names)} give the metric name auc_{clash[0]} twice or clash with "
                     "auc_mean; rename the CSV columns")
  per_label = tuple(f"auc_{k}" for k in keys)
  common = dict(name="image", class_names=names, channels=3, flips="lr", every_class=True)
  if kind == "binary":
    if len(names) != 1:
      raise ValueError(f"a binary task has one label, got {names}")
    return TaskSpec(kind="multilabel", num_outputs=1, head="sigmoid", metric_names=per_label,
                    primary_metric=per_label[0], label_shape=(1,), label_dtype="float32", **common)
  if kind == "multilabel":
    if len(names) < 2:
      raise ValueError(f"a multilabel task has several labels, got {names}")
    return TaskSpec(kind="multilabel", num_outputs=len(names), head="sigmoid",
                    metric_names=per_label + ("auc_mean",), primary_metric="auc_mean", label_shape=(len(names),),
                    label_dtype="float32", **common)
  if kind == "multiclass":
    if len(names) < 3:
      raise ValueError(f"a multiclass task has at least 3 classes (2 are binary), got {names}")
    return TaskSpec(kind="multiclass", num_outputs=len(names), head="softmax",
                    metric_names=per_label + ("auc_mean", "accuracy"), primary_metric="auc_mean", one_vs_rest=True,
                    **common)
  raise ValueError(f"unknown image task kind {kind!r}; known: {', '.join(IMAGE_KINDS)}")
