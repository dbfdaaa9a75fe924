"""How long deleting the training iterator takes at a run's end when two runs share the CPU (--parallel_runs).

  python benchmarks/iterator_teardown.py [--steps=300] [--step_seconds=0.1] [--trials=3] [--modes=before,now]

Two processes start together, as a 2-core `--parallel_runs` sweep runs them (1 intra-op and 1 inter-op thread
each). Each one, --trials times: builds the embedded retina's training pipeline (48 px, batch 32), reads --steps
batches through a traced step as the trainer does, each followed by --step_seconds of matrix products standing in
for the model's step, then deletes the iterator. Printed per mode: the seconds the loop took and the seconds the
deletion took, over both processes' trials.

Modes:
  before  the pipeline with tf.data autotuning on and the dataset distributed by
          `OneDeviceStrategy.experimental_distribute_dataset`, as the trainer read it before;
  now     the trainer's path: `strategy.distribute_dataset` (the dataset itself on one CPU) over the pipeline as it
          is (in-memory arrays: no autotuning).

What it showed on the 2-core AMD EPYC (AVX2), 300 steps of 0.1 s, 3 trials in each of the 2 processes: before, 4
of the 6 deletions took 9.1-9.3 s; now, none took over 0.01 s. The loops took 32 s in both modes. (In the demo
study such a wait came at the end of each run, 6-39 s seen with gdb attached.)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(mode, steps, step_seconds, trials):
  """One process's trials: prints one JSON line per trial, {"loop": s, "delete": s}."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  from transfusion_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  from transfusion_tf.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel

  data = pipeline.build_data("synthetic_retina", image_size=48, batch_size=32, model_name="cbr_small",
                             num_train=600, num_val=64, num_test=64)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  a = tf.random.normal([256, 256])

  @tf.function
  def step(iterator):
    return tf.reduce_sum(next(iterator)[0])

  for _ in range(trials):
    ds = data.train(0)
    if mode == "before":
      options = tf.data.Options()
      options.autotune.enabled = True
      iterator = iter(strategy.experimental_distribute_dataset(ds.with_options(options)))
    else:
      iterator = iter(strategy_lib.distribute_dataset(strategy, ds))
    t0 = time.perf_counter()
    for _ in range(steps):
      step(iterator)
      t = time.perf_counter()
      while time.perf_counter() - t < step_seconds:
        tf.linalg.matmul(a, a)
    t1 = time.perf_counter()
    del iterator
    print(json.dumps({"loop": round(t1 - t0, 2), "delete": round(time.perf_counter() - t1, 3)}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--step_seconds", type=float, default=0.1)
  parser.add_argument("--trials", type=int, default=3)
  parser.add_argument("--modes", default="before,now")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args.child, args.steps, args.step_seconds, args.trials)
    return
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  print(f"load average {os.getloadavg()[0]:.2f}; 2 processes x {args.trials} trials of {args.steps} steps of "
        f"{args.step_seconds} s", flush=True)
  for mode in args.modes.split(","):
    if mode not in ("before", "now"):
      sys.exit(f"--modes: unknown mode {mode!r} (before, now)")
    cmd = [sys.executable, __file__, f"--child={mode}", f"--steps={args.steps}",
           f"--step_seconds={args.step_seconds}", f"--trials={args.trials}"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
             for _ in range(2)]
    rows = []
    for p in procs:
      out, _ = p.communicate()
      if p.returncode:
        sys.exit(f"{mode}: a child exited with {p.returncode}")
      rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    loops, deletes = [r["loop"] for r in rows], [r["delete"] for r in rows]
    print(f"{mode:6s} loop s: {', '.join(f'{x:.0f}' for x in loops)} (median {statistics.median(loops):.1f}); "
          f"delete s: {', '.join(f'{x:.2f}' for x in deletes)} (max {max(deletes):.2f}, "
          f"{sum(d > 1 for d in deletes)} of {len(deletes)} over 1 s)", flush=True)
  print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
