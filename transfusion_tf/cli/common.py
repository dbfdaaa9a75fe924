"""What every command-line entry point shares: absl flag errors and UsageError as one stderr line + exit 2."""
import errno
import os
import re
import signal
import sys
import threading
import time

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


def _undecodable_flagfile(argv):
  """(path, UnicodeDecodeError) of the first flagfile, nested ones followed, that is not UTF-8 text; else None."""
  seen = set()

  def scan(args):
    for arg in args:
      arg = arg.strip()
      if not arg.startswith("--flagfile="):
        continue
      path = os.path.expanduser(arg[len("--flagfile="):])
      if path in seen:
        continue
      seen.add(path)
      try:
        with open(path, "rb") as f:
          text = f.read().decode("utf-8")
      except OSError:
        continue
      except UnicodeDecodeError as e:
        return path, e
      found = scan(text.splitlines())
      if found:
        return found
    return None
  return scan(argv[1:])


def parse_flags(argv):
  """Parses `argv` into absl's FLAGS; a flag error is one `error:` line on stderr and exit 2. Returns the rest."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # absl's own handler prints a usage banner and exits 1; a user mistake here is one line and status 2.
    print(f"error: {flag_error_line(e, argv)}", file=sys.stderr, flush=True)
    sys.exit(2)
  except UnicodeDecodeError as e:
    # absl reads flagfiles as text and lets a binary file's decode error through as a traceback.
    path, err = _undecodable_flagfile(argv) or ("(unknown)", e)
    print(f"error: --flagfile={path} is not a text flagfile (byte 0x{err.object[err.start]:02x} at offset "
          f"{err.start} is not UTF-8); pass a file of --flag=value lines", file=sys.stderr, flush=True)
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
    return ends_in_one_line(main, argv)
  return wrapped


class Terminated(KeyboardInterrupt):
  """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""


def _raise_terminated(signum, frame):
  del signum, frame
  raise Terminated()


def _redeliver_interrupts(unraisable):
  """sys.unraisablehook while a command runs: re-delivers a Ctrl-C or SIGTERM that Python swallowed.

  A signal's exception is raised in whatever the main thread runs when the signal arrives; when that is a finalizer
  (TensorFlow's EagerResourceDeleter.__del__ runs at every garbage collection), Python prints "Exception ignored in"
  and drops it, and the study went on training (seen: a SIGTERMed --parallel_runs study kept running at full CPU and
  took over its killed child's runs). Re-delivering the same signal to the main thread raises it again at the next
  bytecode outside the finalizer (from another thread: called from here, the handler would run inside this hook, and
  its exception would be dropped too; should it land in a finalizer again, this hook sends it again). Other
  unraisable exceptions go to Python's default hook."""
  if isinstance(unraisable.exc_value, KeyboardInterrupt):
    import _thread  # pylint: disable=import-outside-toplevel
    sig = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT

    def later():
      time.sleep(0.05)  # Past Thread.start's handshake and the finalizer's last bytecodes.
      _thread.interrupt_main(sig)
    threading.Thread(target=later, name="redeliver-signal", daemon=True).start()
    return
  sys.__unraisablehook__(unraisable)


def ends_in_one_line(main, argv):
  """Runs `main(argv)`; Ctrl-C, SIGTERM and a full disk end it with one stderr line instead of a traceback.

  Ctrl-C exits 130 and SIGTERM 143 (128 + the signal, as a shell reports them) after "interrupted at step N of
  RUN (...); re-run the same command to resume"; the locks and an --overwrite's old run are put right on the way
  out (context managers). A full disk exits 1 naming the folder. Other errors keep their tracebacks: they are bugs.
  """
  from transfusion_tf.training import trainer  # pylint: disable=import-outside-toplevel
  main_thread = threading.current_thread() is threading.main_thread()
  handlers = ({sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {})
  hook = sys.unraisablehook
  if main_thread:
    signal.signal(signal.SIGTERM, _raise_terminated)
    sys.unraisablehook = _redeliver_interrupts
  try:
    return main(argv)
  except KeyboardInterrupt as e:
    if main_thread:
      signal.signal(signal.SIGINT, signal.SIG_IGN)  # A second Ctrl-C must not cut the way out short.
    print(trainer.interrupted_line(), file=sys.stderr, flush=True)
    sys.exit(143 if isinstance(e, Terminated) else 130)
  except OSError as e:
    if not trainer.no_space_left(e):
      raise
    path = e.filename if e.errno == errno.ENOSPC and e.filename else None
    folder = path if path is None or os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    print(f"error: no space left on device writing {folder or 'the output folder'}; free space and re-run to "
          "resume", file=sys.stderr, flush=True)
    sys.exit(1)
  finally:
    sys.unraisablehook = hook
    for sig, handler in handlers.items():
      signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def run_app(main):
  """Runs an absl `main(argv)` with one-line flag errors and TensorFlow's INFO logs kept out of the progress."""
  app.run(checked_main(main), flags_parser=parse_flags)
