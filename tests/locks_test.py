"""Tests for transfusion_tf.training.locks: atomic create, re-entry, stale takeover, other hosts, wait_for."""
import contextlib
import errno
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from unittest import mock

import tensorflow as tf

from transfusion_tf.errors import UsageError
from transfusion_tf.training import locks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A child that tries to take the lock of argv[1], prints "acquired" or "busy", then holds it for argv[2] seconds.
_CHILD = """
import sys, time
from transfusion_tf.training import locks
lock = locks.try_acquire(sys.argv[1])
print("acquired" if lock else "busy", flush=True)
time.sleep(float(sys.argv[2]))
"""


def child(directory, hold_seconds, **kw):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-c", _CHILD, directory, str(hold_seconds)], stdout=subprocess.PIPE,
                          text=True, env=env, cwd=ROOT, **kw)


def write_lock(directory, **info):
  with open(locks.lock_path(directory), "w") as f:
    json.dump(info, f)


def dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()  # Reaped: the pid names no process now.
  return proc.pid


class LocksTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = os.path.join(self.create_tempdir().full_path, "run")

  def test_acquire_release_and_reentry(self):
    lock = locks.try_acquire(self.dir)
    self.assertIsNotNone(lock)
    path = locks.lock_path(self.dir)
    self.assertEqual(path, self.dir + ".lock")
    info = json.load(open(path))
    self.assertEqual((info["host"], info["pid"]), (socket.gethostname(), os.getpid()))
    inner = locks.try_acquire(self.dir)  # Re-entry within this process.
    self.assertIsNotNone(inner)
    inner.release()
    self.assertTrue(os.path.exists(path), "an inner release must not drop the outer lock")
    self.assertEqual(locks.holder(self.dir)["pid"], os.getpid())
    lock.release()
    self.assertFalse(os.path.exists(path))
    self.assertIsNone(locks.holder(self.dir))
    with locks.hold(self.dir) as held:
      self.assertIsNotNone(held)
    self.assertFalse(os.path.exists(path))

  def test_a_forked_child_does_not_inherit_the_lock(self):
    with locks.hold(self.dir) as lock:
      self.assertIsNotNone(lock)
      read, write = os.pipe()
      pid = os.fork()
      if pid == 0:  # Child: the parent holds the lock, so this process must find it busy.
        os.write(write, b"busy" if locks.try_acquire(self.dir) is None else b"acquired")
        os._exit(0)  # pylint: disable=protected-access
      os.close(write)
      self.assertEqual(os.read(read, 16), b"busy")
      os.waitpid(pid, 0)
      self.assertEqual(locks.holder(self.dir)["pid"], os.getpid())

  def test_another_live_process_keeps_it(self):
    proc = child(self.dir, 30)
    try:
      self.assertEqual(proc.stdout.readline().strip(), "acquired")
      self.assertIsNone(locks.try_acquire(self.dir))
      with locks.hold(self.dir) as held:
        self.assertIsNone(held)
      self.assertEqual(locks.holder(self.dir)["pid"], proc.pid)
      self.assertEqual(locks.describe(locks.holder(self.dir)), f"{socket.gethostname()}:{proc.pid}")
    finally:
      proc.kill()
      proc.wait()
    # Killed with SIGKILL: it could not remove its file, and the lock is now stale (dead pid) and taken over.
    self.assertTrue(os.path.exists(locks.lock_path(self.dir)))
    lock = locks.try_acquire(self.dir)
    self.assertIsNotNone(lock)
    self.assertEqual(json.load(open(lock.path))["pid"], os.getpid())
    lock.release()

  def test_stale_dead_pid_and_reused_pid_are_taken_over(self):
    write_lock(self.dir, host=socket.gethostname(), pid=dead_pid(), proc_start=None, acquired=0)
    lock = locks.try_acquire(self.dir)
    self.assertIsNotNone(lock)
    lock.release()
    # Our own pid, but another start time: the pid was reused by a new process, so the lock is stale.
    write_lock(self.dir, host=socket.gethostname(), pid=os.getpid(), proc_start=-5, acquired=0)
    lock = locks.try_acquire(self.dir)
    self.assertIsNotNone(lock)
    self.assertEqual(json.load(open(lock.path))["proc_start"], locks._proc_start(os.getpid()))
    lock.release()

  def test_other_host_is_live_until_its_heartbeat_is_old(self):
    write_lock(self.dir, host="elsewhere.example", pid=1, proc_start=None, acquired=0)
    self.assertIsNone(locks.try_acquire(self.dir))
    self.assertIsNone(locks.try_acquire(self.dir, stale_after=60))
    old = time.time() - 120
    os.utime(locks.lock_path(self.dir), (old, old))
    self.assertIsNone(locks.try_acquire(self.dir))  # Default: 300 s.
    lock = locks.try_acquire(self.dir, stale_after=60)
    self.assertIsNotNone(lock)
    lock.refresh()
    self.assertGreater(os.path.getmtime(lock.path), old + 60)
    lock.release()

  def test_empty_or_garbage_lock_file_is_stale_at_once(self):
    # A holder that died on a full disk leaves a lock that holds nothing; no live process leaves one (the lock is
    # linked into place whole), so the next run takes it over at once instead of waiting.
    for text in ("", "{not json"):
      with open(locks.lock_path(self.dir), "w") as f:
        f.write(text)
      self.assertIsNone(locks.holder(self.dir))
      lock = locks.try_acquire(self.dir)
      self.assertIsNotNone(lock)
      self.assertEqual(json.load(open(lock.path))["pid"], os.getpid())
      lock.release()

  def test_full_disk_while_locking_leaves_no_lock_file(self):
    def full(fd):
      raise OSError(errno.ENOSPC, "No space left on device")
    with mock.patch.object(os, "fsync", full):
      with self.assertRaises(OSError) as caught:
        locks.try_acquire(self.dir)
    self.assertEqual(caught.exception.errno, errno.ENOSPC)
    self.assertEqual(caught.exception.filename, locks.lock_path(self.dir))  # The one line names its folder.
    parent = os.path.dirname(self.dir)
    self.assertEqual(os.listdir(parent), [])
    lock = locks.try_acquire(self.dir)
    self.assertIsNotNone(lock)
    lock.release()

  def test_other_host_rule_env_and_wait_line(self):
    # A restarted container's lock (another host name) is stale 300 s after its last heartbeat, or after
    # $TRANSFUSION_TF_LOCK_STALE_SECONDS; a live holder elsewhere keeps beating and keeps its lock.
    self.assertEqual(locks.remote_stale_seconds(), 300.0)
    write_lock(self.dir, host="elsewhere.example", pid=7, proc_start=None, acquired=0)
    old = time.time() - 400
    os.utime(locks.lock_path(self.dir), (old, old))
    self.assertIsNone(locks.holder(self.dir))
    os.utime(locks.lock_path(self.dir), (time.time() - 60,) * 2)
    self.assertIsNotNone(locks.holder(self.dir))
    with mock.patch.dict(os.environ, {locks.STALE_ENV: "30"}):
      self.assertEqual(locks.remote_stale_seconds(), 30.0)
      self.assertIsNone(locks.holder(self.dir))
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        self.assertFalse(locks.wait_for(lambda: False, self.dir, timeout=1, poll_seconds=0.05))
      self.assertEqual(out.getvalue(), "")  # Stale: nobody to wait for, nothing said.
    with mock.patch.dict(os.environ, {locks.STALE_ENV: "120"}):
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        self.assertFalse(locks.wait_for(lambda: False, self.dir, timeout=0.3, poll_seconds=0.05))
      lines = out.getvalue().splitlines()
      self.assertLen(lines, 1)  # Said once, however long the wait.
      self.assertIn("elsewhere.example:7 on another host (last heartbeat 60 s ago)", lines[0])
      self.assertIn(f"120 s without a heartbeat (set {locks.STALE_ENV}", lines[0])
    with mock.patch.dict(os.environ, {locks.STALE_ENV: "soon"}):
      with self.assertRaisesRegex(UsageError, locks.STALE_ENV):
        locks.remote_stale_seconds()

  def test_racing_processes_on_a_stale_lock_end_with_one_holder(self):
    write_lock(self.dir, host=socket.gethostname(), pid=dead_pid(), proc_start=None, acquired=0)
    procs = [child(self.dir, 3) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    self.assertEqual(sorted(outs), ["acquired", "busy", "busy", "busy"], outs)

  def test_wait_for(self):
    target = os.path.join(os.path.dirname(self.dir), "source.weights.h5")
    exists = lambda: os.path.exists(target)  # pylint: disable=unnecessary-lambda-assignment
    # Nobody holds the lock and the file is missing: waiting cannot help.
    self.assertFalse(locks.wait_for(exists, self.dir, timeout=5))
    write_lock(self.dir, host="elsewhere.example", pid=1, proc_start=None, acquired=0)
    t0 = time.time()
    self.assertFalse(locks.wait_for(exists, self.dir, timeout=0.3, poll_seconds=0.05))
    self.assertGreaterEqual(time.time() - t0, 0.3)
    threading.Timer(0.3, lambda: open(target, "w").close()).start()
    self.assertTrue(locks.wait_for(exists, self.dir, timeout=30, poll_seconds=0.05))
    os.remove(target)
    threading.Timer(0.3, lambda: os.remove(locks.lock_path(self.dir))).start()
    self.assertFalse(locks.wait_for(exists, self.dir, timeout=30, poll_seconds=0.05))  # Holder gone, no file.


if __name__ == "__main__":
  tf.test.main()
