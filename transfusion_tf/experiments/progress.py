"""The study's progress line: runs done / total, the runs in progress with their step, and the whole study's ETA.

The process that leads a sweep (the study, not its --parallel_runs children) prints it at a steady pace from a
daemon thread while the sweep runs, and once more when the sweep ends:

  study progress (00:03:10): 3/8 runs done, source pretraining 1/1; running [cbr_tiny/random/seed1] step 150/300,
  [cbr_tiny/pretrained/seed0] step 40/300; training ETA 00:04:10, analyses after

It reads only files: a run in progress is one whose lock a live process holds (training/locks.py), its step is
that run's progress file (rundir.PROGRESS, which the trainer rewrites every few seconds wherever it runs), and a
finished run is one with a sound result.json. So the parent sees its children's runs as its own, and reading
never changes what is trained. The lines are plain, one per report and never rewritten in place (no carriage
return, no colour), so a log file or a CI console reads the same as a terminal.

ETA: each finished run's seconds per step (result.json's "seconds" over its final step) give a rate per kind of run
(a model's training runs; a model's source pretraining); a kind without a finished run takes the mean of the known
rates. The remaining steps of every unfinished run at its kind's rate, shared by the `procs` processes (but never
less than the longest single run left), make the ETA; "ETA unknown" until some run has finished. It covers the
training runs only, and says so: the analyses and the report come after them and have no rate to go by until they
run (on the demo they were a quarter of the wall time).
"""
import dataclasses
import sys
import threading
import time

from transfusion_tf.experiments import plan
from transfusion_tf.training import locks, rundir, trainer


@dataclasses.dataclass(frozen=True)
class Item:
  """One unit of the sweep: `name` (as the run's lines name it), its folder, its step budget, and `kind` (runs of one
  kind share a rate: the model for training runs, "pretrain/<model>" for a source pretraining)."""
  name: str
  dir: str
  total: int
  kind: str
  source: bool = False


@dataclasses.dataclass
class State:
  """An item as last seen: done (with its seconds and steps, for the rate), running at `step`, or waiting."""
  done: bool = False
  running: bool = False
  step: int = 0
  seconds: float = None  # A finished run's training seconds.
  steps: int = None  # A finished run's final step.


def read_state(item):
  """The State of `item` from its folder: result.json (finished), its lock and progress file (running)."""
  res, _ = rundir.read_result(item.dir)
  if res is not None:
    final = res.get("final") if isinstance(res.get("final"), dict) else {}
    seconds, steps = res.get("seconds"), final.get("step")
    ok = isinstance(seconds, (int, float)) and isinstance(steps, int) and steps > 0
    return State(done=True, step=item.total, seconds=float(seconds) if ok else None, steps=steps if ok else None)
  if locks.holder(item.dir) is None:
    return State()
  rec = rundir.read_progress(item.dir)
  return State(running=True, step=rec["step"] if rec else 0)


def eta_seconds(items, states, procs=1):
  """Seconds until every item is done, or None while no item has finished (no rate is known).

  items: [Item]; states: {item name: State}; procs: concurrent processes sharing the remaining work."""
  sums = {}
  for it in items:
    st = states[it.name]
    if st.done and st.seconds is not None:
      s, n = sums.get(it.kind, (0.0, 0))
      sums[it.kind] = (s + st.seconds, n + st.steps)
  if not sums:
    return None
  rates = {k: s / n for k, (s, n) in sums.items()}
  fallback = sum(rates.values()) / len(rates)
  left = [max(0, it.total - states[it.name].step) * rates.get(it.kind, fallback)
          for it in items if not states[it.name].done]
  if not left:
    return 0.0
  return max(sum(left) / max(1, procs), max(left))


def hms(seconds):
  """HH:MM:SS of a non-negative number of seconds (hours grow past 24)."""
  s = int(round(max(0.0, seconds)))
  return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def line(items, states, elapsed, procs=1, final=False):
  """The progress line for `states` ({item name: State}) `elapsed` seconds into the study; with `final`, the
  closing one (no ETA)."""
  runs = [it for it in items if not it.source]
  sources = [it for it in items if it.source]
  text = f"study progress ({hms(elapsed)}): {sum(states[it.name].done for it in runs)}/{len(runs)} runs done"
  if sources:
    text += f", source pretraining {sum(states[it.name].done for it in sources)}/{len(sources)}"
  if final:
    return text
  running = [f"[{it.name}] step {states[it.name].step}/{it.total}" for it in items if states[it.name].running]
  if running:
    text += "; running " + ", ".join(running)
  eta = eta_seconds(items, states, procs)
  return text + ("; training ETA unknown (no run finished yet)" if eta is None
                 else f"; training ETA {hms(eta)}, analyses after")


def _write_line(text):
  # One write of the whole line: print() writes the text and the newline separately, and the sweep's own thread
  # prints meanwhile.
  sys.stdout.write(text + "\n")
  sys.stdout.flush()


class Reporter:
  """Prints `line` every `every` seconds from a daemon thread between start() and stop().

  items: [Item]; procs: processes sharing the sweep; clock: time.time or a fake; read: item -> State (tests pass a
  fake); out: a print-like callable; t0: the clock time the line's elapsed counts from (default: now). A finished
  item is not read again."""

  def __init__(self, items, procs=1, every=None, clock=time.time, read=read_state, out=None, t0=None):
    self.items, self.procs, self.every = list(items), procs, every or trainer.default_log_every()
    self.clock, self.read = clock, read
    self.out = out or _write_line
    self.t0 = clock() if t0 is None else t0  # The study's start, so the line's elapsed is the study's.
    self.states = {}
    self._stop = threading.Event()
    self._thread = None

  def poll(self):
    """Reads the unfinished items' states; returns {item name: State}."""
    for it in self.items:
      if not (it.name in self.states and self.states[it.name].done):
        try:
          self.states[it.name] = self.read(it)
        except OSError:
          self.states.setdefault(it.name, State())  # Unreadable this time (a file being replaced): as last seen.
    return self.states

  def report(self, final=False):
    """Prints one line now; returns it."""
    text = line(self.items, self.poll(), self.clock() - self.t0, self.procs, final=final)
    self.out(text)
    return text

  def _loop(self):
    while not self._stop.wait(self.every):
      self.report()

  def start(self):
    self._thread = threading.Thread(target=self._loop, name="study-progress", daemon=True)
    self._thread.start()
    return self

  def stop(self, final=True):
    """Stops the thread; with `final`, prints the closing line (not after an error: it would bury the error's
    one line)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if final:
      self.report(final=True)


def sweep_items(cfg, shard_runs, pretrain_models):
  """The Items of a sweep: the source pretrainings of `pretrain_models`, then the training runs `shard_runs`."""
  items = [Item(f"pretrain/{m}", plan.pretrain_dir(cfg, m), int(plan.pretrain_config(cfg, m).train_steps),
                f"pretrain/{m}", source=True) for m in pretrain_models]
  items += [Item(r.name, plan.run_dir(cfg, r), int(cfg.base.train_steps), r.model) for r in shard_runs]
  return items
