"""Every experiment of the study, in the report's order. Importing this module registers them (registry.py says
how to add one)."""
from transfusion_tf.experiments import registry
from transfusion_tf.experiments import t1, t2, t3, convergence, f2, f3, f4, f5, mv, wt, sl, gb  # noqa: F401  pylint: disable=unused-import


def experiments():
  """The registered experiments, in registration order."""
  return registry.registered()
