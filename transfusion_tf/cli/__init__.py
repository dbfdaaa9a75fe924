"""Command-line entry points (absl apps). scripts/*.py and the console scripts are thin wrappers around these.

Every command imports this package first, so it is where TensorFlow is imported, quietly: its C++ start-up lines
(the absl::InitializeLog notice, the oneDNN notice, cpu_feature_guard's CPU-instructions note) are written straight
to file descriptor 2 while `import tensorflow` runs, before Python or absl logging can filter them. They are caught
at the descriptor level and dropped; every other line written meanwhile is passed on. oneDNN itself stays on.
TRANSFUSION_TF_VERBOSE_STARTUP=1 shows them again.
"""
import os
import re
import sys
import tempfile

VERBOSE_ENV = "TRANSFUSION_TF_VERBOSE_STARTUP"
# The start-up notices of tensorflow-cpu 2.x; anything else written during the import is passed on.
STARTUP_NOISE = re.compile(r"All log messages before absl::InitializeLog\(\) is called|oneDNN custom operations are "
                           r"on|cpu_feature_guard\.cc|^To enable the following instructions: .* rebuild TensorFlow")


def import_tensorflow_quietly():
  """Imports TensorFlow with fd 2 redirected to a temp file, then re-emits every line but the start-up notices.

  Does nothing special when TensorFlow is already imported or when $TRANSFUSION_TF_VERBOSE_STARTUP is set (not 0).
  A temp file rather than a pipe: the import cannot block on a full pipe however much it writes.
  """
  if "tensorflow" in sys.modules or os.environ.get(VERBOSE_ENV, "0") not in ("", "0"):
    import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as caught:
    os.dup2(caught.fileno(), 2)
    try:
      import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      caught.seek(0)
      text = caught.read().decode("utf-8", errors="replace")
      kept = [line for line in text.splitlines(keepends=True) if not STARTUP_NOISE.search(line)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


import_tensorflow_quietly()
