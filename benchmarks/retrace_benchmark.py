"""What one tf.function retrace of evaluation costs, and what the trainer's fixed signature saves per run.

  python benchmarks/retrace_benchmark.py [--model inceptionv3] [--size 587] [--batch 8] [--partial 3]

An eval split whose size is not a multiple of the batch ends in a partial batch. A predict function traced on the
batch's shape traces again for that last batch: once per run and split (tf.function keeps both traces), and since
every run builds its own function TensorFlow counts those traces across runs and warned "5 out of the last 13 calls
... triggered tf.function retracing" for InceptionV3 at 587 px. `trainer.predict_function` leaves the batch
dimension free in its input signature, so one trace serves both shapes. This script times, on random weights:
  - the shape-bound function: first call (trace + run) and a call on the partial batch (retrace + run);
  - the trainer's function: first call, and the partial batch (no retrace);
  - a steady call of each shape, to separate the trace from the compute.
It prints the retrace's cost (partial-batch call minus its steady time), paid once per run and eval split with a
partial batch (validation, and test at the end). Wall time on this machine, with whatever else is running.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def timed(fn, x):
  """Seconds of one call, with the result pulled to the host."""
  t0 = time.perf_counter()
  fn(x).numpy()
  return time.perf_counter() - t0


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="inceptionv3")
  p.add_argument("--size", type=int, default=587)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--partial", type=int, default=3, help="images in the last, partial eval batch")
  args = p.parse_args()
  import numpy as np  # pylint: disable=g-import-not-at-top
  from transfusion_tf.cli import import_tensorflow_quietly  # pylint: disable=g-import-not-at-top
  import_tensorflow_quietly()  # TensorFlow without its C++ start-up lines
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from transfusion_tf import models  # pylint: disable=g-import-not-at-top
  from transfusion_tf.training import trainer  # pylint: disable=g-import-not-at-top
  model = models.build_model(args.model, 5, (args.size, args.size, 3))
  rng = np.random.default_rng(0)
  full = tf.constant(rng.normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32))
  part = full[:args.partial]
  bound = tf.function(lambda x: model(x, training=False))  # Traced per input shape.
  free = trainer.predict_function(model, args.size)  # Batch dimension free: one trace.
  rows = {}
  for name, fn in (("shape-bound", bound), ("trainer (free batch)", free)):
    first = timed(fn, full)
    steady_full = min(timed(fn, full) for _ in range(2))
    first_part = timed(fn, part)
    steady_part = min(timed(fn, part) for _ in range(2))
    rows[name] = (first, steady_full, first_part, steady_part)
    print(f"{name:22s} first call {first:6.2f} s, steady {steady_full:5.2f} s (batch {args.batch}); partial batch "
          f"first {first_part:5.2f} s, steady {steady_part:5.2f} s (batch {args.partial})", flush=True)
  retrace = rows["shape-bound"][2] - rows["shape-bound"][3]
  print(f"{args.model} at {args.size} px: a retrace for the partial batch costs {retrace:.2f} s, up to "
        f"{2 * retrace:.1f} s per run (validation and test); with the free batch dimension the first partial batch "
        f"costs {rows['trainer (free batch)'][2] - rows['trainer (free batch)'][3]:+.2f} s over its steady time")


if __name__ == "__main__":
  main()
