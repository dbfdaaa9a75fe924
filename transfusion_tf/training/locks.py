"""Directory locks: one process at a time trains into a run directory or pretrains a source.

The lock on a directory DIR is the file `DIR.lock`, a sibling (so that DIR itself can be created, moved aside or
removed while it is held). It is created atomically (written to a private file, then os.link'ed to its name, which
fails when the name exists; os.open(O_CREAT | O_EXCL) where there are no hard links) and holds one JSON object:
{"host", "pid", "proc_start" (the process start time in clock ticks since boot, from /proc; null elsewhere),
"acquired" (unix seconds)}. While it is held, a daemon thread touches it every HEARTBEAT_SECONDS, so its mtime
says when its holder was last seen alive.

A lock is stale, and is taken over, when
  - it names this host and its pid is not alive, is a zombie, or is a different process (the pid was reused:
    its start time differs), or
  - it names another host and its last heartbeat is older than `stale_after` seconds (default: the environment
    variable TRANSFUSION_TF_LOCK_STALE_SECONDS, else REMOTE_STALE_SECONDS = 300 s, ten missed heartbeats), or
  - it holds nothing or no JSON object (its holder died on a full disk, say): stale at once. A live process never
    leaves such a file: the lock is written in full to a private file first and then linked to its name (only
    where a file system has no hard links is a lock briefly empty while it is written).
An unreadable lock file (permissions) is judged like another host's, by its heartbeat.
A takeover renames the stale file to a name of our own (only one process wins the rename), checks that it moved
the very lock it judged stale, deletes it and creates a fresh lock with O_EXCL. Two processes racing for one stale
lock therefore end with one holder. (If a third process creates a lock in the instant between another's rename and
its put-back of a lock it moved by mistake, two could hold; that needs three processes within microseconds.)

Within one process locks are re-entrant: acquiring a directory this process already holds returns a nested handle,
and the file goes only when the outermost handle is released. So the study can hold a run's lock and then call
trainer.train, which takes the same lock again.

API:
  try_acquire(directory, stale_after=None) -> Lock or None (None: another live process holds it)
  hold(directory, stale_after=None): context manager yielding a Lock or None; releases on exit
  holder(directory, stale_after=None) -> dict or None: the live holder's {"host", "pid", ...} (None: free or stale)
  wait_for(predicate, lock_dir, timeout=None, poll_seconds=2.0, stale_after=None) -> bool
  describe(info) -> "host:pid"
  remote_wait_line(lock_dir, info, stale_after=None) -> the line wait_for prints once for another host's holder
  remote_stale_seconds(stale_after=None) -> seconds without a heartbeat after which another host's lock is stale
"""
import contextlib
import json
import os
import socket
import threading
import time
import uuid

HEARTBEAT_SECONDS = 30.0
# Another host's lock is live while its heartbeat is younger than this: ten missed heartbeats. A live holder on
# another machine sharing the folder (shards of one study) beats every 30 s, clocks of hosts sharing a file system
# differ by seconds and NFS caches attributes for up to a minute; a container restarted under a new host name
# leaves a lock that is stale 5 minutes after its last beat. STALE_ENV (seconds) overrides it.
REMOTE_STALE_SECONDS = 300.0
STALE_ENV = "TRANSFUSION_TF_LOCK_STALE_SECONDS"

_registry = {}  # lock path -> [Lock, depth]: the locks this process holds.
_registry_lock = threading.Lock()


def lock_path(directory):
  """The lock file of `directory`: <absolute directory>.lock."""
  return os.path.abspath(os.path.expanduser(str(directory))).rstrip(os.sep) + ".lock"


def _proc_start(pid):
  """Start time of process `pid` in clock ticks since boot (Linux /proc), or None where unknown."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  # The command name (field 2) may hold spaces and parentheses; fields after its closing parenthesis are fixed.
  fields = stat[stat.rfind(")") + 2:].split()
  return int(fields[19]) if len(fields) > 19 else None


def _proc_state(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
    return stat[stat.rfind(")") + 2:].split()[0]
  except (OSError, IndexError):
    return None


def _pid_alive(pid, proc_start):
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Exists, owned by another user.
  except (OverflowError, ValueError):
    return False
  if _proc_state(pid) in ("Z", "X"):
    return False
  if proc_start is not None:
    now = _proc_start(pid)
    if now is not None and now != proc_start:
      return False  # The pid was reused by another process.
  return True


def _own_info():
  return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
          "acquired": time.time()}


def remote_stale_seconds(stale_after=None):
  """Seconds without a heartbeat after which another host's lock is stale: `stale_after`, else $STALE_ENV, else
  REMOTE_STALE_SECONDS. A value of STALE_ENV that is not a number >= 0 is a UsageError."""
  if stale_after is not None:
    return float(stale_after)
  text = os.environ.get(STALE_ENV, "").strip()
  if not text:
    return REMOTE_STALE_SECONDS
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not 0 <= value < float("inf"):
    from transfusion_tf.errors import UsageError  # pylint: disable=import-outside-toplevel
    raise UsageError(f"{STALE_ENV}={text!r} must be a number of seconds >= 0")
  return value


def _read(path):
  """(info, mtime): info is the dict the file holds, None when it holds nothing or no JSON object, or
  {"unreadable": reason} when it cannot be read; (None, None) when the file does not exist."""
  try:
    mtime = os.stat(path).st_mtime
  except FileNotFoundError:
    return None, None
  try:
    with open(path) as f:
      text = f.read()
  except FileNotFoundError:
    return None, None
  except OSError as e:
    return {"unreadable": e.__class__.__name__}, mtime
  try:
    info = json.loads(text)
  except ValueError:
    return None, mtime
  return (info if isinstance(info, dict) else None), mtime


def _is_stale(info, mtime, stale_after):
  if info is None:
    return True  # Holds nothing: no live process leaves its lock unwritten (see _create).
  if info.get("host") == socket.gethostname():
    return not _pid_alive(info.get("pid", -1), info.get("proc_start"))
  return time.time() - mtime > remote_stale_seconds(stale_after)


def describe(info):
  """'host:pid' of a lock's info dict."""
  return f"{info.get('host', '?')}:{info.get('pid', '?')}" if info else "an unknown process"


class Lock:
  """A held directory lock. `path` is the lock file, `directory` what it locks, `info` what the file holds.

  release() drops it (the file goes when the outermost handle of this process is released); refresh() touches
  the file now (a daemon thread also does every HEARTBEAT_SECONDS). Also a context manager.
  """

  def __init__(self, directory, path, info, nested=False):
    self.directory, self.path, self.info, self.nested = directory, path, info, nested
    self.released = False
    self._stop = None
    if not nested:
      self._stop = threading.Event()
      thread = threading.Thread(target=self._beat, name=f"lock-heartbeat {path}", daemon=True)
      thread.start()

  def _beat(self):
    while not self._stop.wait(HEARTBEAT_SECONDS):
      self.refresh()

  def refresh(self):
    """Touches the lock file (its mtime is the holder's heartbeat)."""
    try:
      os.utime(self.path)
    except OSError:
      pass

  def release(self):
    """Releases this handle; the outermost one removes the lock file."""
    if self.released:
      return
    self.released = True
    with _registry_lock:
      entry = _registry.get(self.path)
      if entry is None:
        return
      entry[1] -= 1
      if entry[1] > 0:
        return
      del _registry[self.path]
      owner = entry[0]
    owner._stop.set()  # pylint: disable=protected-access
    info, _ = _read(self.path)
    if info is not None and info.get("pid") == os.getpid() and info.get("host") == owner.info["host"]:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def _take_over(path, stale_info):
  """Moves the stale lock at `path` out of the way. False when it turned out not to be the stale one."""
  aside = f"{path}.stale-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return True  # Someone else removed it first; try to create ours.
  moved, _ = _read(aside)
  if moved == stale_info:
    os.remove(aside)
    return True
  # We moved a lock created after we judged the old one stale: put it back untouched.
  try:
    os.link(aside, path)
  except FileExistsError:
    pass
  os.remove(aside)
  return False


def _write(fd, info, path):
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(info, f)
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    if e.filename is None:  # Name the file, so that a full disk's one line names the folder.
      raise OSError(e.errno, e.strerror, path) from None
    raise


def _create(path, info):
  """Creates the lock file `path` holding `info`, whole or not at all; FileExistsError when `path` exists.

  The JSON goes to a private file first, which is then hard-linked to `path` (atomic, and refused when `path`
  exists): no process ever sees a lock that holds nothing, and a full disk leaves no lock behind.
  """
  private = f"{path}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    _write(os.open(private, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), info, path)
    try:
      os.link(private, path)
      return
    except FileExistsError:
      raise
    except OSError:
      pass  # No hard links on this file system (some network or FUSE ones): create in place below.
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(private)
  fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  try:
    _write(fd, info, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(path)  # Half written (a full disk): leave nothing that blocks the next run.
    raise


def try_acquire(directory, stale_after=None):
  """Takes the lock of `directory` (its parent must exist). Returns a Lock, or None when another live process
  holds it. A stale lock (see the module docstring) is taken over; a lock this process holds is re-entered.

  stale_after: seconds without a heartbeat after which another host's lock counts as stale (default
  remote_stale_seconds()).
  """
  path = lock_path(directory)
  with _registry_lock:
    if path in _registry and _registry[path][0].info["pid"] != os.getpid():
      del _registry[path]  # Inherited through fork(): the parent holds it, not this process.
    if path in _registry:
      _registry[path][1] += 1
      owner = _registry[path][0]
      return Lock(owner.directory, path, owner.info, nested=True)
  for _ in range(5):
    info = _own_info()
    try:
      _create(path, info)
    except FileExistsError:
      found, mtime = _read(path)
      if mtime is None:
        continue  # Released between our create and our read.
      if not _is_stale(found, mtime, stale_after):
        return None
      _take_over(path, found)
      continue
    lock = Lock(str(directory), path, info)
    with _registry_lock:
      _registry[path] = [lock, 1]
    return lock
  return None


@contextlib.contextmanager
def hold(directory, stale_after=None):
  """`with hold(dir) as lock:` lock is a Lock (held for the block, released after) or None (another live process
  holds it: do not write into `dir`)."""
  lock = try_acquire(directory, stale_after)
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()


def holder(directory, stale_after=None):
  """The info dict {"host", "pid", "proc_start", "acquired"} of the live holder of `directory`'s lock (this process
  included), or None when it is free or stale."""
  info, mtime = _read(lock_path(directory))
  if mtime is None or _is_stale(info, mtime, stale_after):
    return None
  return info or {}


def remote_wait_line(lock_dir, info, stale_after=None):
  """The line said once when `lock_dir` is held by `info` from another host (None when it is this host's): who, when
  last seen, and when the lock counts as stale."""
  if not info or info.get("host") == socket.gethostname():
    return None
  try:
    ago = f"{time.time() - os.stat(lock_path(lock_dir)).st_mtime:.0f} s ago"
  except OSError:
    ago = "unknown"
  limit = remote_stale_seconds(stale_after)
  return (f"  {lock_dir} is held by {describe(info)} on another host (last heartbeat {ago}); waiting until it "
          f"finishes, or until its lock is {limit:.0f} s without a heartbeat (set {STALE_ENV} to change)")


def wait_for(predicate, lock_dir, timeout=None, poll_seconds=2.0, stale_after=None):
  """Waits while another live process holds `lock_dir` and `predicate()` is false.

  Returns True as soon as predicate() holds. Returns False when it does not and nobody (else) holds `lock_dir`
  any more (the holder finished without producing it, or died), or after `timeout` seconds: the caller may then
  take the lock and produce it itself. Typical use, waiting for a pretraining source another process writes:
    if not locks.wait_for(lambda: os.path.exists(weights), pretrain_dir):
      trainer.pretrain(...)  # Takes the lock itself; returns None if yet another process got there first.
  """
  deadline = None if timeout is None else time.time() + float(timeout)
  entry = _registry.get(lock_path(lock_dir))
  mine = entry is not None and entry[0].info["pid"] == os.getpid()
  told = False
  while True:
    if predicate():
      return True
    info = None if mine else holder(lock_dir, stale_after)
    if info is None:
      return bool(predicate())
    if not told:
      told = True
      line = remote_wait_line(lock_dir, info, stale_after)
      if line:
        print(line, flush=True)
    if deadline is not None and time.time() >= deadline:
      return False
    time.sleep(poll_seconds if deadline is None else max(0.0, min(poll_seconds, deadline - time.time())))
