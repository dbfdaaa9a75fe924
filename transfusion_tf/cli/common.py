"""What every command-line entry point shares: absl flag errors and UsageError as one stderr line + exit 2."""
import sys

from absl import app, flags
from absl import logging as absl_logging


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # absl's own handler prints a usage banner and exits 1; a user mistake here is one line and status 2.
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def run_app(main):
  """Runs an absl `main(argv)` with one-line flag errors and TensorFlow's INFO logs kept out of the progress.

  Every command takes flags only, so a stray positional argument is a user mistake too.
  """
  def wrapped(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments: {' '.join(argv[1:])} (every option is a --flag)", file=sys.stderr,
            flush=True)
      sys.exit(2)
    absl_logging.set_verbosity(absl_logging.WARNING)
    return main(argv)
  app.run(wrapped, flags_parser=_parse_flags)
