"""What every command-line entry point shares: absl flag errors and UsageError as one stderr line + exit 2."""
import os
import re
import sys

from absl import app, flags
from absl import logging as absl_logging


def _flagfile_of(name, argv, value=None):
  """The flagfile holding the first --name (=value when given) in parsing order, nested flagfiles followed; None
  when the command line holds it first or nothing does. Unreadable flagfiles are skipped: absl reports those."""
  pattern = re.compile(rf"^--(no)?{re.escape(name)}(=|$)")
  found, seen = [], set()

  def scan(args, origin):
    for arg in args:
      arg = arg.strip()
      if arg.startswith("--flagfile="):
        path = os.path.expanduser(arg[len("--flagfile="):])
        if path in seen:
          continue
        seen.add(path)
        try:
          with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip() and not line.lstrip().startswith("#")]
        except (OSError, UnicodeDecodeError):
          continue
        scan(lines, path)
      elif pattern.match(arg) and (value is None or arg == f"--{name}={value}"):
        found.append(origin)
  scan(argv[1:], None)
  return found[0] if found else None


def flag_error_line(error, argv):
  """One line for an absl flag error: where a flagfile holds the bad flag, the line names the flagfile."""
  msg = " ".join(str(error).split())
  if isinstance(error, flags.CantOpenFlagFileError):
    m = re.search(r"\[Errno \d+\] ([^:]+): '(.*)'", msg)
    if m:
      return f"cannot open --flagfile={m.group(2)}: {m.group(1)}"
    return re.sub(r"^ERROR::\s*", "", msg)
  name, value = getattr(error, "flagname", None), None
  m = re.match(r"^flag --(\w+)=(.*?): ", str(error))
  if name is None and m:
    name, value = m.group(1), m.group(2)
  path = _flagfile_of(name, argv, value) if name else None
  if path is None:
    return msg
  if isinstance(error, flags.UnrecognizedFlagError):
    return f"unknown flag --{name} in flagfile {path}"
  return f"{msg} (in flagfile {path})"


def parse_flags(argv):
  """Parses `argv` into absl's FLAGS; a flag error is one `error:` line on stderr and exit 2. Returns the rest."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # absl's own handler prints a usage banner and exits 1; a user mistake here is one line and status 2.
    print(f"error: {flag_error_line(e, argv)}", file=sys.stderr, flush=True)
    sys.exit(2)


def checked_main(main):
  """`main(argv)` wrapped as every command runs it after its flags are parsed: a stray positional argument is a user
  mistake (every command takes flags only; one line, exit 2), and TensorFlow's INFO logs stay out of the progress."""
  def wrapped(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments: {' '.join(argv[1:])} (every option is a --flag)", file=sys.stderr,
            flush=True)
      sys.exit(2)
    absl_logging.set_verbosity(absl_logging.WARNING)
    return main(argv)
  return wrapped


def run_app(main):
  """Runs an absl `main(argv)` with one-line flag errors and TensorFlow's INFO logs kept out of the progress."""
  app.run(checked_main(main), flags_parser=parse_flags)
