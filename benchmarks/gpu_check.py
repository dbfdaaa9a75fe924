"""A few-minute GPU check: device facts, then ResNet50 training images/second in float32 and mixed precision.

  python benchmarks/gpu_check.py [--batch_size=64] [--image_size=224] [--steps=30] [--xla] [--no_diagnose]
  python benchmarks/gpu_check.py --quick        # CBR-Tiny, tiny sizes: a smoke test of this script on a CPU

For each precision (float32; mixed_float16 with a LossScaleOptimizer and float32 logits) and, with --xla, each of
jit_compile off/on, it builds a `Trainer` on synthetic_retina at --image_size and measures, interleaved in rounds
(see trainer_benchmark.py, whose helpers this uses):
  - the bare train step: one tf.function (forward, backward, optimiser apply) on a constant batch kept on the GPU,
    synced once per chunk;
  - the full trainer: `Trainer.run()` itself for --steps timed steps (input pipeline, tf.distribute iterator,
    per-step `float(loss)`), evaluation excluded;
  - with diagnostics (default): the trainer's step over a constant-batch dataset, over the pipeline without the
    per-step sync, and the input pipeline alone, which tells whether the CPU side can feed the GPU.
The global Keras policy is set by the Trainer from its config before any model is built and reset to float32 after
every measurement. With --xla the trainer compiles its forward/backward (TrainConfig.jit) and the bare step
compiles the whole step, optimiser included.

Everything runs on one device (OneDeviceStrategy); the first run generates the synthetic images (cached under
~/.cache/transfusion_tf, or --cache_dir).
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trainer_benchmark as tb  # noqa: E402  (this directory; it imports TensorFlow quietly)
import tensorflow as tf  # noqa: E402


def device_report():
  """Prints what the process sees: TF build, GPUs with their details, nvidia-smi's summary."""
  print(tb.host_info())
  build = tf.sysconfig.get_build_info()
  print(f"TF built with CUDA {build.get('cuda_version', '-')}, cuDNN {build.get('cudnn_version', '-')}; "
        f"is_built_with_cuda={tf.test.is_built_with_cuda()}")
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    print("no GPU visible to TensorFlow: measuring on the CPU")
  for g in gpus:
    d = tf.config.experimental.get_device_details(g)
    cc = d.get("compute_capability")
    print(f"{g.name}: {d.get('device_name', '?')}, compute capability {'.'.join(map(str, cc)) if cc else '?'}")
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm,"
                          "power.limit,mig.mode.current", "--format=csv"], capture_output=True, text=True,
                         timeout=20, check=False)
    if out.stdout.strip():
      print("nvidia-smi:\n  " + out.stdout.strip().replace("\n", "\n  "))
  except (OSError, subprocess.TimeoutExpired):
    pass
  print(flush=True)


def peak_memory_gib():
  if not tf.config.list_physical_devices("GPU"):
    return None
  try:
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 30
  except (ValueError, RuntimeError):
    return None


def reset_memory_stats():
  if tf.config.list_physical_devices("GPU"):
    try:
      tf.config.experimental.reset_memory_stats("GPU:0")
    except (ValueError, RuntimeError):
      pass


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default=None, help="model (default resnet50; --quick cbr_tiny, since tracing "
                      "and XLA-compiling ResNet50 alone take minutes on a small CPU)")
  parser.add_argument("--image_size", type=int, default=None, help="pixels (default 224; --quick 32)")
  parser.add_argument("--batch_size", type=int, default=None, help="batch size (default 64; --quick 4)")
  parser.add_argument("--steps", type=int, default=None, help="timed steps per variant and precision, split over "
                      "--rounds (default 30; --quick 2)")
  parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 5; --quick 1)")
  parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2; --quick 1)")
  parser.add_argument("--settle", type=int, default=None, help="untimed steps per chunk (default 3; --quick 0)")
  parser.add_argument("--num_train", type=int, default=None, help="synthetic training images (default 256; "
                      "--quick 16)")
  parser.add_argument("--cache_dir", default=None, help="synthetic data cache (default: the generator's)")
  parser.add_argument("--xla", action="store_true", help="also measure with jit_compile")
  parser.add_argument("--no_mixed", dest="mixed", action="store_false", help="float32 only")
  parser.add_argument("--no_diagnose", dest="diagnose", action="store_false", help="skip the diagnostics")
  parser.add_argument("--quick", action="store_true", help="CBR-Tiny, tiny sizes and steps: a smoke test "
                      "that runs on a CPU")
  args = parser.parse_args(argv)
  q = args.quick
  pick = lambda v, normal, quick: v if v is not None else (quick if q else normal)  # noqa: E731
  model = pick(args.model, "resnet50", "cbr_tiny")
  size, batch = pick(args.image_size, 224, 32), pick(args.batch_size, 64, 4)
  steps, warmup = pick(args.steps, 30, 2), pick(args.warmup, 5, 1)
  rounds, settle = pick(args.rounds, 2, 1), pick(args.settle, 3, 0)
  num_train = pick(args.num_train, 256, 16)
  if min(steps, rounds, batch, warmup + 1, settle + 1) < 1 or steps < rounds:
    parser.error("--steps >= --rounds >= 1, --batch_size >= 1, --warmup >= 0 and --settle >= 0 are required")

  t0 = time.perf_counter()
  device_report()
  combos = [(mixed, jit) for mixed in ((False, True) if args.mixed else (False,))
            for jit in ((False, True) if args.xla else (False,))]
  rows = []
  for mixed, jit in combos:
    name = f"{'mixed_float16' if mixed else 'float32'}{' + XLA' if jit else ''}"
    print(f"== {model} @ {size} px, batch {batch}, {name}", flush=True)
    tb.reset_keras()
    reset_memory_stats()
    t = time.perf_counter()
    result = tb.measure(model, size, batch, steps, rounds, warmup, settle, mixed=mixed, jit=jit,
                        diagnose=args.diagnose, num_train=num_train, num_val=max(8, batch) if q else 64,
                        cache_dir=args.cache_dir)
    peak = peak_memory_gib()
    tb.report_model(model, size, batch, result, mixed=mixed, jit=jit)
    secs = time.perf_counter() - t
    s = tb.summarize(result["main"]["wall"])
    pipe = tb.summarize(result["diag"]["wall"])[tb.PIPE][0] if result["diag"] else None
    rows.append((name, s[tb.BARE][0], s[tb.FULL][0], s[tb.FULL][3], pipe, peak, secs))
    print(f"  ({secs:.0f} s for this precision, first-step tracing {result['info']['full_warmup_seconds']:.1f} s"
          + (f", peak GPU memory {peak:.1f} GiB" if peak is not None else "") + ")\n", flush=True)
    tb.reset_keras()

  print(f"summary: {model} @ {size} px, batch {batch} (img/s, medians over rounds)")
  print(f"{'precision':<22}{'bare':>10}{'full':>10}{'full/bare':>11}{'pipeline':>10}{'peak GiB':>10}{'secs':>7}")
  for name, bare, full, ratio, pipe, peak, secs in rows:
    pipe_s = f"{pipe:10.0f}" if pipe is not None else f"{'-':>10}"
    peak_s = f"{peak:10.1f}" if peak is not None else f"{'-':>10}"
    print(f"{name:<22}{bare:10.1f}{full:10.1f}{ratio:11.3f}{pipe_s}{peak_s}{secs:7.0f}")
  base = rows[0][1]
  for name, bare, *_ in rows[1:]:
    print(f"bare {name} / bare {rows[0][0]}: {bare / base:.2f}x")
  print(f"total {time.perf_counter() - t0:.0f} s; {tb.load_average()}")


if __name__ == "__main__":
  main()
