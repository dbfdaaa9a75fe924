"""The plateau stop: when a run may end before its step budget because its validation metric stopped improving.

Rule (`plateau_reached`): at an evaluation at step s >= min_steps, the run has plateaued when none of its last
`patience` evaluations beat the best value before them by more than `min_delta` (the metric's units, e.g. AUC; set
it above the evaluation's own noise, which a gain smaller than that cannot be told from). The budget
(--train_steps) still ends a run that never plateaus. The rule reads the validation curve alone, so a resumed run
(its curve.json holds every evaluation up to the checkpoint) decides exactly as an uninterrupted one.
"""
import math

REASON_PLATEAU, REASON_BUDGET = "plateau", "budget"


def _value(point, metric):
  v = point.get(metric)
  return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def plateau_reached(curve, metric, patience, min_delta, min_steps=0):
  """Whether the curve has plateaued at its last evaluation (module docstring).

  curve: [{"step": int, metric: float, ...}] sorted by step (curve.json's points); patience: evaluations (>= 1), or
  None/0 for no plateau stop; min_delta: the smallest gain that counts (metric units, >= 0); min_steps: no stop
  before this step. Returns bool.
  """
  if not patience or len(curve) <= patience:
    return False
  if curve[-1]["step"] < (min_steps or 0):
    return False
  before = max(_value(p, metric) for p in curve[:-patience])
  recent = max(_value(p, metric) for p in curve[-patience:])
  return not recent > before + min_delta


def describe(patience, min_delta, min_steps):
  """The rule as one sentence, for result.json and the report."""
  if not patience:
    return "no plateau stop: every run trains to its budget (--train_steps)"
  return (f"stop when none of the last {patience} evaluations beats the best before them by more than "
          f"{min_delta:g}, never before step {min_steps or 0}; --train_steps is the budget")
