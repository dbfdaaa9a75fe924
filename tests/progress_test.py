"""Tests for experiments/progress.py: the study's progress line, its ETA (with a fake clock and fake states) and
the files it reads (a run's lock, progress file and result.json)."""
import os
import threading

import tensorflow as tf

from transfusion_tf.experiments import progress
from transfusion_tf.training import locks, rundir

A0 = progress.Item("cbr_tiny/random/seed0", "/x/a0", 100, "cbr_tiny")
A1 = progress.Item("cbr_tiny/random/seed1", "/x/a1", 100, "cbr_tiny")
B0 = progress.Item("resnet50/random/seed0", "/x/b0", 100, "resnet50")
SRC = progress.Item("pretrain/cbr_tiny", "/x/p", 40, "pretrain/cbr_tiny", source=True)


class FakeClock:

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


class ProgressTest(tf.test.TestCase):

  def test_eta_unknown_until_a_run_finishes_then_from_finished_runs_seconds(self):
    items = [A0, A1, B0]
    states = {A0.name: progress.State(running=True, step=50), A1.name: progress.State(),
              B0.name: progress.State()}
    self.assertIsNone(progress.eta_seconds(items, states))
    text = progress.line(items, states, 75)
    self.assertEqual(text, "study progress (00:01:15): 0/3 runs done; running [cbr_tiny/random/seed0] step 50/100; "
                           "training ETA unknown (no run finished yet)")
    # A0 done: 200 s for 100 steps, 2 s/step for cbr_tiny; resnet50 has no finished run and takes the mean rate.
    states[A0.name] = progress.State(done=True, step=100, seconds=200.0, steps=100)
    states[A1.name] = progress.State(running=True, step=25)
    self.assertEqual(progress.eta_seconds(items, states, procs=1), 75 * 2 + 100 * 2)
    # Two processes share the work, but no faster than the longest single run left (B0: 200 s).
    self.assertEqual(progress.eta_seconds(items, states, procs=2), 200.0)
    self.assertEqual(progress.eta_seconds(items, states, procs=8), 200.0)
    self.assertEndsWith(progress.line(items, states, 3725, procs=1), "; training ETA 00:05:50, analyses after")
    self.assertStartsWith(progress.line(items, states, 3725), "study progress (01:02:05): 1/3 runs done;")
    # A run stopped early at its plateau counts its own steps; sources count apart from the training runs.
    states = {A0.name: progress.State(done=True, step=100, seconds=30.0, steps=60), A1.name: progress.State(),
              SRC.name: progress.State(done=True, step=40, seconds=8.0, steps=40)}
    self.assertEqual(progress.eta_seconds([SRC, A0, A1], states), 100 * 0.5)
    final = progress.line([SRC, A0, A1], states, 10, final=True)
    self.assertEqual(final, "study progress (00:00:10): 1/2 runs done, source pretraining 1/1")
    self.assertEqual(progress.eta_seconds([A0], {A0.name: states[A0.name]}), 0.0)

  def test_lines_are_plain(self):
    states = {A0.name: progress.State(running=True, step=3)}
    for text in (progress.line([A0], states, 5), progress.line([A0], states, 5, final=True)):
      self.assertNotIn("\r", text)
      self.assertNotIn("\x1b", text)
      self.assertNotIn("\n", text)

  def test_reporter_reads_unfinished_items_only_and_prints_a_final_line(self):
    clock, seen, reads = FakeClock(), [], []
    states = {A0.name: progress.State(running=True, step=10), A1.name: progress.State()}

    def read(item):
      reads.append(item.name)
      return states[item.name]

    rep = progress.Reporter([A0, A1], procs=2, every=60, clock=clock, read=read, out=seen.append)
    clock.now += 30
    rep.report()
    states[A0.name] = progress.State(done=True, step=100, seconds=50.0, steps=100)
    clock.now += 30
    rep.report()
    rep.report()
    self.assertEqual(reads.count(A0.name), 2)  # Not read again once done.
    self.assertEqual(reads.count(A1.name), 3)
    self.assertIn("(00:00:30): 0/2 runs done; running [cbr_tiny/random/seed0] step 10/100; training ETA unknown", seen[0])
    self.assertIn("(00:01:00): 1/2 runs done; training ETA 00:00:50, analyses after", seen[1])
    rep.stop()  # Never started: only the closing line.
    self.assertEqual(seen[-1], "study progress (00:01:00): 1/2 runs done")
    failed = progress.Reporter([A0], every=60, clock=clock, read=read, out=seen.append)
    before = len(seen)
    failed.stop(final=False)
    self.assertLen(seen, before)

  def test_reporter_thread_keeps_a_steady_pace(self):
    seen, printed = [], threading.Event()

    def out(text):
      seen.append(text)
      if len(seen) >= 3:
        printed.set()

    rep = progress.Reporter([A0], every=0.05, read=lambda item: progress.State(running=True, step=1),
                            out=out).start()
    self.assertTrue(printed.wait(10))
    rep.stop()
    self.assertGreaterEqual(len(seen), 4)
    self.assertTrue(all("1/100" in s for s in seen[:-1]))
    self.assertEqual(seen[-1].split(": ")[1], "0/1 runs done")

  def test_read_state_from_the_run_folder(self):
    run = os.path.join(self.create_tempdir().full_path, "run")
    item = progress.Item("m/random/seed0", run, 300, "m")
    self.assertEqual(progress.read_state(item), progress.State())  # Nothing there: waiting.
    os.makedirs(run)
    rundir.write_progress(run, 120, 300, 33.3)
    self.assertEqual(progress.read_state(item), progress.State())  # A progress file no live process holds: stale.
    with locks.hold(run) as lock:
      self.assertIsNotNone(lock)
      self.assertEqual(progress.read_state(item), progress.State(running=True, step=120))
      with open(os.path.join(run, rundir.PROGRESS), "w") as f:
        f.write("{")  # Damaged: running, step unknown.
      self.assertEqual(progress.read_state(item), progress.State(running=True, step=0))
    rundir.atomic_write_json(os.path.join(run, "result.json"),
                             {"selected": {"step": 300}, "final": {"step": 250}, "seconds": 75.0})
    self.assertEqual(progress.read_state(item), progress.State(done=True, step=300, seconds=75.0, steps=250))
    self.assertEqual(progress.hms(90061), "25:01:01")


if __name__ == "__main__":
  tf.test.main()
