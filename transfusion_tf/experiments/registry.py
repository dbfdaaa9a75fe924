"""The experiment registry: one entry per experiment of the paper (T1, T2, T3, convergence, F2-F5, MV, WT, SL, GB).

An experiment registers four things, each a plain function of the study:
  runs(cfg)              -> [(model, init label, subset or None), ...]  the training runs it needs (seeds are added
                            by the plan); `cfg` is a `plan.StudyConfig`
  analysis_runs(ctx)     -> [Run, ...]  the finished runs its analysis reads (None: no analysis)
  analysis(ctx, runs)    -> JSON-able dict or None  the analysis itself (e.g. SVCCA), cached by the study with the
                            exact runs it used and recomputed when they change
  section(ctx)           -> [markdown lines]  its part of the report (tables, figures); may write files under
                            ctx.out (CSV tables) or ctx.adir (figures)
  readings(ctx)          -> [stats.Verdict, ...]  its claims read against the paper, each by one stated rule
`ctx` is a `common.Context`: the configuration, the planned runs, their results, and the analyses.

To add an experiment: write `experiments/<id>.py` that builds an `Experiment` and calls `register(...)` at import
time, import it in `experiments/catalog.py` (the order there is the report's order), and add its test; the registry
test (tests/experiments_test.py) runs every registered experiment on hand-made results.
"""
import dataclasses
from typing import Callable, Optional

from transfusion_tf.errors import UsageError

_REGISTRY = {}


def _no_runs(cfg):
  del cfg
  return []


def _no_readings(ctx):
  del ctx
  return []


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One experiment: its id (as in --experiments), a title, and the four functions the module docstring names."""
  id: str
  title: str
  runs: Callable = _no_runs
  section: Callable = None
  readings: Callable = _no_readings
  analysis: Optional[Callable] = None
  analysis_runs: Optional[Callable] = None
  # Experiments whose section is drawn when any of these ids is selected (e.g. the convergence table for MV..GB).
  shown_with: tuple = ()

  def selected(self, experiments):
    """Whether this experiment takes part in a study that selected `experiments` (ids)."""
    return self.id in experiments or any(e in experiments for e in self.shown_with)


def register(experiment):
  """Adds `experiment` to the registry (ids are unique) and returns it."""
  if experiment.id in _REGISTRY:
    raise ValueError(f"experiment {experiment.id!r} is registered twice")
  if (experiment.analysis is None) != (experiment.analysis_runs is None):
    raise ValueError(f"experiment {experiment.id!r}: analysis and analysis_runs come together")
  _REGISTRY[experiment.id] = experiment
  return experiment


def registered():
  """All registered experiments in registration order (catalog.py's order)."""
  return list(_REGISTRY.values())


def get(experiment_id):
  """The experiment registered as `experiment_id`, or a UsageError naming the known ids."""
  if experiment_id not in _REGISTRY:
    raise UsageError(f"--experiments has an unknown id {experiment_id!r}; known: {', '.join(selectable_ids())}")
  return _REGISTRY[experiment_id]


def selectable_ids():
  """Ids a user can name in --experiments (the convergence table comes with MV, WT, SL and GB)."""
  return [e.id for e in _REGISTRY.values() if not e.shown_with]
