"""User-facing errors: one exception type for user mistakes, and the exit helper every script uses."""
import sys


class UsageError(Exception):
  """A user mistake: bad flag, missing file, wrong shape. Scripts print it on one line and exit with status 2."""


def exit_on_usage_error(fn):
  """Wraps an absl `main(argv)` so a `UsageError` prints `error: <message>` on one stderr line and exits 2.

  Any other exception propagates with its traceback: it is a bug, not a user mistake.
  """
  import functools

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except UsageError as e:
      msg = " ".join(str(e).split())  # One line, whatever the message held.
      print(f"error: {msg}", file=sys.stderr, flush=True)
      sys.exit(2)

  return wrapper
