"""The plateau stop's rule on hand-made curves: it stops on a flat curve, not on a rising one, never before the
minimum, and a curve cut at any evaluation decides as the whole one did up to there (resume)."""
import math

import pytest

from transfusion_tf.training import plateau


def _curve(values, every=50):
  return [{"step": i * every, "auc": v} for i, v in enumerate(values)]


def test_stops_on_a_flat_curve_not_on_a_rising_one():
  flat = _curve([0.5, 0.7, 0.78, 0.80, 0.801, 0.799, 0.800])
  rising = _curve([0.5, 0.6, 0.65, 0.69, 0.72, 0.74, 0.76])
  assert plateau.plateau_reached(flat, "auc", patience=3, min_delta=0.005)
  assert not plateau.plateau_reached(rising, "auc", patience=3, min_delta=0.005)
  # A gain below min_delta counts as noise; one above it keeps the run going.
  assert plateau.plateau_reached(_curve([0.5, 0.8, 0.801, 0.803, 0.804]), "auc", patience=3, min_delta=0.005)
  assert not plateau.plateau_reached(_curve([0.5, 0.8, 0.801, 0.803, 0.81]), "auc", patience=3, min_delta=0.005)


def test_never_before_the_minimum_and_off_without_patience():
  flat = _curve([0.5, 0.8, 0.8, 0.8, 0.8])  # Last evaluation at step 200.
  assert plateau.plateau_reached(flat, "auc", patience=2, min_delta=0.0, min_steps=200)
  assert not plateau.plateau_reached(flat, "auc", patience=2, min_delta=0.0, min_steps=250)
  assert not plateau.plateau_reached(flat, "auc", patience=None, min_delta=0.0)
  assert not plateau.plateau_reached(flat, "auc", patience=0, min_delta=0.0)
  assert not plateau.plateau_reached(flat[:2], "auc", patience=2, min_delta=0.0)  # Too few evaluations.


def test_nan_never_counts_as_a_gain():
  curve = _curve([0.5, 0.8, math.nan, math.nan])
  assert plateau.plateau_reached(curve, "auc", patience=2, min_delta=0.0)


@pytest.mark.parametrize("cut", range(1, 10))
def test_a_resumed_curve_decides_as_the_whole_one(cut):
  values = [0.5, 0.62, 0.70, 0.74, 0.755, 0.757, 0.756, 0.758, 0.757]
  whole = _curve(values)
  first = next((i for i in range(1, len(whole) + 1)
                if plateau.plateau_reached(whole[:i], "auc", patience=3, min_delta=0.005)), None)
  assert first == 8  # Steps 250-350 add at most 0.003 over the 0.755 of step 200: it stops at step 350.
  assert plateau.plateau_reached(whole[:cut], "auc", 3, 0.005) == (cut >= first)


def test_describe_states_the_rule():
  assert "last 3 evaluations" in plateau.describe(3, 0.005, 200)
  assert "never before step 200" in plateau.describe(3, 0.005, 200)
  assert "no plateau stop" in plateau.describe(None, 0.005, 0)
