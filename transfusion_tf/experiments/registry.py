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

Presets (PRESETS) name a set of experiments in --experiments: ANSWER selects those the report's first section, "The
answer for this task" (experiments/answer.py), reads. `expand` replaces them; StudyConfig does so on construction.

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
  """Ids of experiments a user can name in --experiments (the convergence table also comes with MV, WT, SL and
  GB); the presets (PRESETS) come on top."""
  return [e.id for e in _REGISTRY.values()]


# --experiments presets -> the registered ids they select. ANSWER: Q1 reads T1 (retina) or T2 (chest x-ray; the
# other one's section is one line), Q2 and the convergence table come with the runs of T1/T2 and MV/WT, Q3 reads
# WT, MV and F3, Q4 the arms of all of them, Q5 their readings.
PRESETS = {"ANSWER": ("T1", "T2", "F3", "MV", "WT")}


def expand(ids):
  """The experiment ids of `ids` (as --experiments lists them) with each preset replaced by its ids, in order,
  each once; other ids pass unchanged (validate_config checks them). Returns a tuple."""
  out = []
  for i in ids:
    out += PRESETS.get(i, (i,))
  return tuple(dict.fromkeys(out))
