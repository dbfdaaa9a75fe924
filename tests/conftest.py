"""Shared pytest set-up: quiet TensorFlow's C++ logs and run headless."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

# The package sets TensorFlow's environment (log level, oneDNN) on import; first, before any test imports TensorFlow.
import transfusion_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import flags  # noqa: E402

# tf.test.TestCase helpers such as create_tempdir read absl flags (--test_tmpdir); pytest never parses them,
# so mark them parsed with their defaults. Flags defined later by imported modules keep their defaults too.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


def pytest_collection_modifyitems(config, items):
  """Drops tf.test.TestCase.test_session, which TensorFlow marks 'Not a test' and pytest would report as skipped."""
  kept = [item for item in items if item.name != "test_session"]
  if len(kept) != len(items):
    config.hook.pytest_deselected(items=[i for i in items if i.name == "test_session"])
    items[:] = kept
