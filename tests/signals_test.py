"""Ctrl-C (SIGINT) and SIGTERM end `transfusion-train` with one line and 130 / 143, and the same command resumes."""
import contextlib
import errno
import io
import os
import re
import signal
import subprocess
import sys
import time

import tensorflow as tf

from transfusion_tf.cli import common
from transfusion_tf.training import locks, rundir, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for_checkpoint_after(proc, ckpt_dir, after, timeout=120):
  """Waits until `proc` has saved a checkpoint past step `after`; returns its step (None: proc ended first)."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    # The checkpoint list, not the files: a save writes ckpt-N.* first and names it in the list last.
    latest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    step = int(re.search(r"ckpt-(\d+)$", latest).group(1)) if latest else 0
    if step > after:
      return step
    time.sleep(0.05)
  return None


def end_of(main):
  """(exit status, stderr) of `main` run as every command runs it (cli.common.checked_main)."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    try:
      common.checked_main(main)(["prog"])
      code = 0
    except SystemExit as e:
      code = e.code
  return code, err.getvalue()


class SignalsTest(tf.test.TestCase):

  def test_in_process_sigterm_and_full_disk_lines(self):
    before, before_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def terminated(argv):
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # The handler raises here.

    code, err = end_of(terminated)
    self.assertEqual((code, err), (143, "interrupted; re-run the same command to resume\n"))
    # Restored for whatever runs next (an ignored SIGINT would be inherited by the processes it starts).
    self.assertEqual(signal.getsignal(signal.SIGTERM), before)
    # As it was: Python's default_int_handler, or SIG_IGN when the tests run from a background job (`cmd &`).
    self.assertEqual(signal.getsignal(signal.SIGINT), before_int)
    # A full disk anywhere (the report, the analyses) is one line naming the folder, exit 1.
    tmp = self.create_tempdir().full_path

    def report_on_a_full_disk(argv):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(tmp, "report.md.tmp"))

    code, err = end_of(report_on_a_full_disk)
    self.assertEqual((code, err), (1, f"error: no space left on device writing {tmp}; free space and re-run to "
                                      "resume\n"))

    def other_os_error(argv):
      raise PermissionError(errno.EACCES, "Permission denied", tmp)

    with self.assertRaises(PermissionError):  # Anything else keeps its traceback.
      end_of(other_os_error)

  def test_a_signal_a_finalizer_swallowed_is_delivered_again(self):
    # A signal's exception raised inside a __del__ (TensorFlow's EagerResourceDeleter runs at every garbage
    # collection) is dropped by Python; a SIGTERMed study went on training. The command must still end.
    hook = sys.unraisablehook
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
      reached = []

      class Finalized:

        def __del__(self):
          signal.raise_signal(sig)  # The handler runs here, inside the finalizer.

      def swallowed(argv):
        obj = Finalized()
        del obj
        for _ in range(500):
          time.sleep(0.01)
        reached.append(True)

      end, err = end_of(swallowed)
      self.assertEqual((end, err), (code, "interrupted; re-run the same command to resume\n"), sig)
      self.assertEqual(reached, [], "the command ran on after the signal")
    self.assertIs(sys.unraisablehook, hook)

    class Broken:

      def __del__(self):
        raise ValueError("a finalizer's own bug")

    def other(argv):
      obj = Broken()
      del obj

    end, err = end_of(other)  # Other unraisable exceptions are reported as Python reports them, and ignored.
    self.assertEqual(end, 0)
    self.assertIn("a finalizer's own bug", err)

  def test_interrupted_line_names_the_checkpoint_the_list_on_disk_names(self):
    folder = self.create_tempdir().full_path
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), folder, max_to_keep=2)
    manager.save(checkpoint_number=50)
    saved = dict(trainer._now_training)
    try:
      # A signal right after the save, before the trainer noted it: the resume reads the list, which says 50.
      trainer._now_training.update(run_dir="R", step=50, checkpoint=25, checkpoint_dir=folder)
      self.assertEqual(trainer.interrupted_line(),
                       "interrupted at step 50 of R (last checkpoint: step 50); re-run the same command to resume")
      trainer._now_training.update(checkpoint_dir=os.path.join(folder, "none"))  # No list yet: the noted step.
      self.assertIn("(last checkpoint: step 25)", trainer.interrupted_line())
    finally:
      trainer._now_training.clear()
      trainer._now_training.update(saved)

  def test_sigint_and_sigterm_end_with_one_line_and_resume(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    args = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--model=cbr_tiny", "--image_size=32",
            "--width_multiplier=0.25", "--train_steps=200", "--eval_every=25", "--batch_size=8", "--num_train=256",
            "--num_val=64", "--num_test=64", f"--run_dir={run_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    line = re.compile(rf"^interrupted at step (\d+) of {re.escape(run_dir)} \(last checkpoint: step (\d+)\); "
                      r"re-run the same command to resume$")
    last = 0
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
      # The child starts with SIGINT at its default, as a command typed at a terminal does: a test run from a
      # background job (`pytest &`) would otherwise pass on an ignored SIGINT, and Ctrl-C could not reach it.
      proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
      saved = wait_for_checkpoint_after(proc, ckpt_dir, last)
      self.assertIsNotNone(saved, "training ended before it could be interrupted; make the run longer")
      proc.send_signal(sig)
      out, err = proc.communicate(timeout=120)
      self.assertEqual(proc.returncode, code, err[-3000:])
      self.assertNotIn("Traceback", err)
      said = [l for l in err.splitlines() if "interrupted" in l]
      self.assertLen(said, 1, err)
      match = line.match(said[0])
      self.assertIsNotNone(match, said[0])
      self.assertGreaterEqual(int(match.group(1)), int(match.group(2)))
      self.assertGreaterEqual(int(match.group(2)), saved)
      self.assertFalse(os.path.exists(locks.lock_path(run_dir)))  # Released on the way out.
      if last:
        self.assertIn(f"resuming {run_dir} from step", out)
      last = int(match.group(2))
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertIn(f"resuming {run_dir} from step {last}", done.stdout)
    curve = rundir.read_json(os.path.join(run_dir, "curve.json"))
    self.assertEqual([p["step"] for p in curve], list(range(0, 201, 25)))
    self.assertEqual(rundir.read_json(os.path.join(run_dir, "result.json"))["final"]["step"], 200)


if __name__ == "__main__":
  tf.test.main()
