"""Images/second of the full trainer next to a bare compiled train step on the same model, batch and optimiser.

  python benchmarks/trainer_benchmark.py [--models=cbr_small:128,resnet50:64] [--batch_size=32] [--steps=30]
      [--warmup=3] [--rounds=3] [--settle=2] [--jit] [--mixed_precision] [--no_diagnose] [--quick]

Full trainer: `Trainer(cfg, run_dir).run()` itself, on synthetic_retina (num_train=512, num_val=64 by default). The
trainer's compiled step is wrapped by a clock that stamps each call, so the timed interval is exactly what `run()`
does per step: `next()` on the trainer's tf.data iterator (index shuffle, gather, augmentation, preprocessing,
prefetch), the `strategy.run` step, the `float(loss)` host sync and the loop's Python bookkeeping. The first
--warmup steps (tracing) and the evaluations are outside the timed intervals; the run is stopped right after the
last timed step, so the final evaluation and checkpoint never happen.

Bare step: a fresh model of the same architecture with the same optimiser (`make_optimizer(cfg)`, same schedule)
and loss (`per_example_loss`), trained by one `tf.function` (forward, backward, apply) on one constant batch taken
from the same pipeline and kept on the compute device; the host syncs once per chunk, not per step.

The two are interleaved: each round runs a bare chunk, then a full chunk (inside `run()`, from the clock), so both
see the same background load. The reported ratio full/bare is the median of the per-round ratios. Each chunk
starts with --settle untimed steps, so that a prefetch buffer filled while the other side ran is not counted. The
goal is full/bare >= 0.9.

Every figure comes twice: wall-clock img/s, and images per CPU-second of this process (time.process_time(), all
its threads, tf.data's included). On a CPU shared with other jobs the wall figures swing by 2x from round to round;
the CPU-time figures barely move, so their ratio is the one to trust there. On a GPU the wall figures count.

--diagnose (default on, --no_diagnose skips it) then takes the difference apart, again in interleaved rounds: the trainer's step over a
constant-batch dataset (tf.distribute iterator and loop, no pipeline work), the trainer's step over the real
pipeline without the per-step host sync, and the input pipeline alone (with and without augmentation). On a CPU the
pipeline competes with training for the same cores; the prediction P/(P+T) (P: pipeline alone, T: bare) is printed
beside the measured ratio.

The load average is printed before and after. `gpu_check.py` reuses the helpers of this file.
"""
import argparse
import contextlib
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from transfusion_tf.cli import import_tensorflow_quietly  # noqa: E402  pylint: disable=g-import-not-at-top
import_tensorflow_quietly()  # TensorFlow without its C++ start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from transfusion_tf import models  # noqa: E402
from transfusion_tf.data import pipeline  # noqa: E402
from transfusion_tf.training import strategy as strategy_lib  # noqa: E402
from transfusion_tf.training import trainer as trainer_lib  # noqa: E402

DEFAULT_MODELS = "cbr_small:128,resnet50:64"
DEFAULT_SIZE = {"cbr_small": 128, "cbr_tiny": 128, "cbr_larget": 128, "cbr_largew": 128, "resnet50": 64,
                "inceptionv3": 96}
GOAL = 0.9

BARE = "bare step, constant batch in memory"
FULL = "full trainer (Trainer.run loop)"
CONST = "trainer step, constant-batch dataset"
NOSYNC = "trainer step, pipeline, no per-step sync"
PIPE = "input pipeline alone"
PIPE_NOAUG = "input pipeline alone, no augmentation"


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared with gpu_check.py.


def parse_models(spec):
  """Parses "cbr_small:128,resnet50" into [("cbr_small", 128), ("resnet50", 64)] (default sizes per model)."""
  out = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    name, _, size = item.partition(":")
    models.check_model_name(name)
    out.append((name, int(size) if size else DEFAULT_SIZE[name]))
  return out


def load_average():
  try:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
  except OSError:
    return "load average unknown"


def host_info():
  return (f"{platform.node()}: {os.cpu_count()} CPU cores, TF {tf.__version__}, Keras {keras.__version__}, "
          f"{trainer_lib.device_description()}; {load_average()}")


def compute_device():
  return "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"


def make_config(model, size, batch_size, train_steps, mixed=False, jit=False, num_train=512, num_val=64,
                cache_dir=None, seed=0):
  data_kwargs = {"num_train": num_train, "num_val": num_val, "num_test": num_val}
  if cache_dir:
    data_kwargs["cache_dir"] = cache_dir
  return trainer_lib.TrainConfig(model=model, dataset="synthetic_retina", image_size=size, batch_size=batch_size,
                                 train_steps=train_steps, eval_every=train_steps, seed=seed, mixed_precision=mixed,
                                 jit=jit, log_every_seconds=1e9, data_kwargs=data_kwargs)


def on_device(batch, device=None):
  """Copies a batch of tensors to the compute device (a captured CPU tensor would be copied again every step)."""
  with tf.device(device or compute_device()):
    return tuple(tf.identity(t) for t in batch)


def build_bare_step(cfg, task, batch, jit=False):
  """A fresh model + optimiser for `cfg` and a no-argument tf.function doing one full train step on `batch`.

  Build it after the global mixed-precision policy is set (the Trainer sets it from cfg.mixed_precision).
  Returns (step, model); step() returns the float32 loss tensor.
  """
  images, labels, masks = on_device(batch)
  size = int(images.shape[1])
  model = models.build_model(cfg.model, task.num_outputs, (size, size, int(images.shape[-1])), seed=cfg.seed,
                             **cfg.model_kwargs)
  opt = trainer_lib.make_optimizer(cfg)
  opt.build(model.trainable_variables)
  gb, mixed = int(images.shape[0]), cfg.mixed_precision

  def step():
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.nn.compute_average_loss(trainer_lib.per_example_loss(task, labels, masks, logits),
                                        global_batch_size=gb)
      scaled = opt.scale_loss(loss) if mixed else loss
    grads = tape.gradient(scaled, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  return tf.function(step, jit_compile=bool(jit)), model


def _now():
  """(wall seconds, CPU seconds of this process over all its threads)."""
  return time.perf_counter(), time.process_time()


def run_chunk(fn, steps, settle=0, sync_every_step=False):
  """Calls fn() settle + steps times; returns (wall, CPU) seconds of the last `steps` calls, host-synced at the end."""
  out = None
  for _ in range(settle):
    out = fn()
  if out is not None:
    _sync(out)
  w, c = _now()
  for _ in range(steps):
    out = fn()
    if sync_every_step:
      _sync(out)
  _sync(out)
  w2, c2 = _now()
  return w2 - w, c2 - c


def _sync(out):
  if isinstance(out, (tuple, list)):
    out = out[0]
  if out is not None:
    np.asarray(out)  # Waits for the device and copies to the host.


def _empty(names, rounds=0):
  return {"wall": {n: [None] * rounds for n in names}, "cpu": {n: [None] * rounds for n in names}}


def _record(rates, name, r, images, secs, log, prefix):
  rates["wall"][name][r] = images / secs[0]
  rates["cpu"][name][r] = images / max(secs[1], 1e-9)
  if log:
    log(f"    {prefix}  {name:<44}{rates['wall'][name][r]:9.1f} img/s {rates['cpu'][name][r]:9.1f} img/CPU-s")


def interleaved(variants, steps, rounds, settle, images_per_step, log=None):
  """Runs each variant round-robin over `rounds`, `steps` timed steps each per round. A variant is a no-argument
  step fn, or a dict(fn=..., sync_every_step=False, mult=1, settle=None): mult multiplies steps (cheap variants
  such as the pipeline alone need more of them), settle overrides the untimed steps.
  Returns {"wall": name -> [img/s per round], "cpu": name -> [images per CPU-second per round]}."""
  rates = _empty(variants, rounds)
  for r in range(rounds):
    for name, v in variants.items():
      v = v if isinstance(v, dict) else {"fn": v}
      n = steps * v.get("mult", 1)
      secs = run_chunk(v["fn"], n, v.get("settle", settle), v.get("sync_every_step", False))
      _record(rates, name, r, n * images_per_step, secs, log, f"round {r + 1}/{rounds}")
  return rates


class _Stop(Exception):
  pass


class _StepClock:
  """Replaces Trainer._train_step: stamps the timed intervals of run() and runs a bare chunk before each round.

  Call k (0-based) of round r: round r begins at a_r = warmup + r * (settle + steps) with a bare chunk, its timed
  interval runs from the entry of call a_r + settle to the entry of call a_r + settle + steps. run() is stopped by
  _Stop at the entry of the call that ends the last round.
  """

  def __init__(self, real, bare, warmup, steps, rounds, settle, images_per_step, log=None):
    self.real, self.bare = real, bare
    self.steps, self.settle, self.ips, self.log = steps, settle, images_per_step, log
    self.begin = {warmup + r * (settle + steps): r for r in range(rounds)}
    self.start = {a + settle: r for a, r in self.begin.items()}
    self.end = {a + settle + steps: r for a, r in self.begin.items()}
    self.last = max(self.end)
    self.calls = 0
    self.t_start = {}
    self.rates = _empty((BARE, FULL), rounds)
    self.warmup_seconds = None
    self.t0 = time.perf_counter()

  def __call__(self, iterator):
    k = self.calls
    now = _now()
    if k in self.end:
      r = self.end[k]
      start = self.t_start[r]
      _record(self.rates, FULL, r, self.steps * self.ips, (now[0] - start[0], now[1] - start[1]), self.log,
              f"round {r + 1}")
      if k == self.last:
        raise _Stop()
    if k in self.begin:
      r = self.begin[k]
      if self.warmup_seconds is None:
        self.warmup_seconds = now[0] - self.t0
      secs = run_chunk(self.bare, self.steps, self.settle)
      _record(self.rates, BARE, r, self.steps * self.ips, secs, self.log, f"round {r + 1}")
    if k in self.start:
      self.t_start[self.start[k]] = _now()
    self.calls += 1
    return self.real(iterator)


def summarize(rates, reference=BARE):
  """rates: name -> [value per round]. Returns name -> (median, min, max, median of the per-round ratios to
  `reference`, or None)."""
  out = {}
  ref = rates.get(reference)
  for name, vals in rates.items():
    ratio = None
    if ref is not None and len(ref) == len(vals):
      ratio = statistics.median(v / b for v, b in zip(vals, ref))
    out[name] = (statistics.median(vals), min(vals), max(vals), ratio)
  return out


def print_table(title, rates, reference=BARE, notes=None):
  """rates: {"wall": ..., "cpu": ...} as from interleaved()."""
  print(f"\n  {title}")
  print(f"  {'':<44}{'img/s':>9}{'min':>8}{'max':>8}{'x bare':>8}  |{'img/CPU-s':>10}{'x bare':>8}")
  wall, cpu = summarize(rates["wall"], reference), summarize(rates["cpu"], reference)
  for name, (med, lo, hi, ratio) in wall.items():
    r = f"{ratio:8.3f}" if ratio is not None else f"{'':>8}"
    c = cpu[name]
    rc = f"{c[3]:8.3f}" if c[3] is not None else f"{'':>8}"
    note = f"  {notes[name]}" if notes and name in notes else ""
    print(f"  {name:<44}{med:9.1f}{lo:8.1f}{hi:8.1f}{r}  |{c[0]:10.1f}{rc}{note}", flush=True)


def reset_keras(policy="float32"):
  keras.mixed_precision.set_global_policy(policy)
  keras.backend.clear_session()
  gc.collect()


@contextlib.contextmanager
def temp_run_dir():
  path = tempfile.mkdtemp(prefix="trainer_bench_")
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def measure(model, size, batch_size, steps, rounds, warmup, settle, mixed=False, jit=False, bare_jit=None,
            diagnose=True, num_train=512, num_val=64, cache_dir=None, verbose=True):
  """Full trainer vs bare step (and the diagnostics) for one model. Returns {"main": rates, "diag": rates or None,
  "info": {...}, "per_round": steps}; rates: {"wall": name -> [img/s per round], "cpu": name -> [img/CPU-s]}."""
  stdout = sys.stdout  # run() below prints to /dev/null; the per-round lines still go here.
  log = (lambda s: print(s, file=stdout, flush=True)) if verbose else None
  per_round = max(1, steps // rounds)
  total = warmup + rounds * (settle + per_round) + 2
  cfg = make_config(model, size, batch_size, total, mixed=mixed, jit=jit, num_train=num_train, num_val=num_val,
                    cache_dir=cache_dir)
  trainer_lib.validate(cfg)
  info = {}
  with temp_run_dir() as run_dir:
    t = time.perf_counter()
    trainer = trainer_lib.Trainer(cfg, run_dir)  # Sets the global mixed-precision policy from cfg.
    info["build_seconds"] = time.perf_counter() - t
    gb = trainer.global_batch
    batch = next(iter(trainer.data.train(0)))
    bare, bare_model = build_bare_step(cfg, trainer.task, batch, jit=jit if bare_jit is None else bare_jit)
    t = time.perf_counter()
    run_chunk(bare, warmup)
    info["bare_warmup_seconds"] = time.perf_counter() - t
    real_step = trainer._train_step  # pylint: disable=protected-access
    clock = _StepClock(real_step, bare, warmup, per_round, rounds, settle, gb, log)
    trainer._train_step = clock  # pylint: disable=protected-access
    devnull = open(os.devnull, "w")  # pylint: disable=consider-using-with
    try:
      with contextlib.redirect_stdout(devnull):  # run()'s progress and eval lines
        trainer.run()
      raise RuntimeError("Trainer.run() returned before the benchmark's last timed step")
    except _Stop:
      pass
    finally:
      devnull.close()
      trainer._train_step = real_step  # pylint: disable=protected-access
    info["full_warmup_seconds"] = clock.warmup_seconds
    main = clock.rates
    diag = None
    if diagnose:
      strategy = trainer.strategy
      const_it = iter(strategy_lib.distribute_dataset(strategy, tf.data.Dataset.from_tensors(batch).repeat()))
      pipe_it = iter(strategy_lib.distribute_dataset(strategy, trainer.data.train(0)))
      pipe_only = iter(strategy_lib.distribute_dataset(strategy, trainer.data.train(0)))
      noaug = pipeline.build_data(cfg.dataset, image_size=size, batch_size=gb, model_name=model, seed=cfg.seed,
                                  augment=False, **cfg.data_kwargs)
      noaug_only = iter(strategy_lib.distribute_dataset(strategy, noaug.train(0)))
      # The pipeline alone runs far faster than training: more batches, and enough untimed ones to drain the
      # prefetch buffers that filled while the other variants ran.
      pipe_steps = dict(mult=5, settle=max(settle, 16))
      variants = {
          BARE: bare,
          CONST: dict(fn=lambda: real_step(const_it), sync_every_step=True),
          NOSYNC: lambda: real_step(pipe_it),
          PIPE: dict(fn=lambda: next(pipe_only)[0], **pipe_steps),
          PIPE_NOAUG: dict(fn=lambda: next(noaug_only)[0], **pipe_steps),
      }
      for v in variants.values():
        run_chunk(v["fn"] if isinstance(v, dict) else v, 2)  # First calls: iterator start-up.
      if verbose:
        print("  diagnostics (interleaved rounds):", flush=True)
      diag = interleaved(variants, per_round, rounds, settle, gb, log)
    del trainer, bare, bare_model
  reset_keras()
  return {"main": main, "diag": diag, "info": info, "per_round": per_round}


def report_model(model, size, batch_size, result, mixed=False, jit=False):
  """Prints the tables for one measure() result; returns (wall full/bare, CPU-time full/bare)."""
  main, diag, info = result["main"], result["diag"], result["info"]
  label = f"{model} @ {size} px, batch {batch_size}, {'mixed_float16' if mixed else 'float32'}"
  label += ", XLA" if jit else ""
  rounds = len(main["wall"][BARE])
  print_table(f"{label}: {rounds} rounds x {result['per_round']} timed steps "
              f"(trainer built in {info['build_seconds']:.1f} s)", main)
  s, c = summarize(main["wall"]), summarize(main["cpu"])
  t_bare, t_full = 1e3 * batch_size / s[BARE][0], 1e3 * batch_size / s[FULL][0]
  cb, cf = 1e3 * batch_size / c[BARE][0], 1e3 * batch_size / c[FULL][0]
  print(f"  per step (medians): wall bare {t_bare:.1f} ms, full {t_full:.1f} ms ({t_full - t_bare:+.1f}); "
        f"CPU bare {cb:.1f} ms, full {cf:.1f} ms ({cf - cb:+.1f})", flush=True)
  if diag:
    notes = {}
    for kind in ("wall", "cpu"):
      d = summarize(diag[kind])
      p, b, pn = d[PIPE][0], d[BARE][0], d[PIPE_NOAUG][0]
      unit = "wall" if kind == "wall" else "CPU"
      notes.setdefault(PIPE, []).append(f"{unit} P/(P+T) {p / (p + b):.3f}")
      notes.setdefault(PIPE_NOAUG, []).append(f"{unit} augmentation share {1 - p / pn:.0%}")
    print_table(f"{label}: diagnostics", diag, notes={k: ", ".join(v) for k, v in notes.items()})
    print("  P/(P+T): the full/bare ratio expected if the pipeline (P img/s alone) took its time from training "
          "(T = bare img/s) on the same cores")
  return s[FULL][3], c[FULL][3]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default=None,
                      help=f"comma-separated name[:image_size] (default {DEFAULT_MODELS}; --quick: "
                           "cbr_small:32,resnet50:32)")
  parser.add_argument("--steps", type=int, default=None, help="timed steps per variant, split over --rounds "
                      "(default 30; --quick 4)")
  parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (tracing) (default 3; --quick 2)")
  parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick 2)")
  parser.add_argument("--settle", type=int, default=None, help="untimed steps at the start of every chunk "
                      "(default 2; --quick 1)")
  parser.add_argument("--batch_size", type=int, default=None, help="batch size (default 32; --quick 8)")
  parser.add_argument("--num_train", type=int, default=512, help="synthetic training images (cached)")
  parser.add_argument("--num_val", type=int, default=64, help="synthetic validation/test images (cached)")
  parser.add_argument("--cache_dir", default=None, help="synthetic data cache (default: the generator's)")
  parser.add_argument("--jit", action="store_true", help="XLA: TrainConfig.jit for the trainer, jit_compile for "
                      "the bare step")
  parser.add_argument("--mixed_precision", action="store_true", help="mixed_float16 for both")
  parser.add_argument("--no_diagnose", dest="diagnose", action="store_false", help="skip the diagnostics")
  parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (a smoke test)")
  args = parser.parse_args(argv)
  q = args.quick
  pick = lambda v, normal, quick: v if v is not None else (quick if q else normal)  # noqa: E731
  spec = pick(args.models, DEFAULT_MODELS, "cbr_small:32,resnet50:32")
  steps, warmup = pick(args.steps, 30, 4), pick(args.warmup, 3, 2)
  rounds, settle = pick(args.rounds, 3, 2), pick(args.settle, 2, 1)
  batch = pick(args.batch_size, 32, 8)
  num_train, num_val = (min(args.num_train, 64), min(args.num_val, 16)) if q else (args.num_train, args.num_val)
  if min(steps, warmup + 1, rounds, batch) < 1 or settle < 0 or steps < rounds:
    parser.error("--steps >= --rounds >= 1, --warmup >= 0, --settle >= 0 and --batch_size >= 1 are required")
  print(host_info(), flush=True)
  print(f"synthetic_retina num_train={num_train} num_val={num_val}; wall-clock timings are noisy on a shared "
        "machine", flush=True)
  summary = []
  for model, size in parse_models(spec):
    print(f"\n== {model} @ {size} px", flush=True)
    result = measure(model, size, batch, steps, rounds, warmup, settle, mixed=args.mixed_precision, jit=args.jit,
                     diagnose=args.diagnose, num_train=num_train, num_val=num_val, cache_dir=args.cache_dir)
    ratios = report_model(model, size, batch, result, mixed=args.mixed_precision, jit=args.jit)
    s, c = summarize(result["main"]["wall"]), summarize(result["main"]["cpu"])
    summary.append((model, size, s[BARE][0], s[FULL][0], ratios[0], c[BARE][0], c[FULL][0], ratios[1]))
  print(f"\nsummary (batch {batch}; medians over rounds; ratios = median of the per-round full/bare; img/CPU-s "
        "counts this process's CPU time over all its threads, which other load on the machine barely changes)")
  print(f"{'model':<12}{'size':>5}{'bare img/s':>12}{'full img/s':>12}{'full/bare':>10}  |{'bare img/CPU-s':>15}"
        f"{'full img/CPU-s':>15}{'full/bare':>10}  goal {GOAL}: wall, CPU")
  for model, size, bare, full, ratio, cbare, cfull, cratio in summary:
    print(f"{model:<12}{size:>5}{bare:12.1f}{full:12.1f}{ratio:10.3f}  |{cbare:15.1f}{cfull:15.1f}{cratio:10.3f}  "
          f"{'OK' if ratio >= GOAL else 'BELOW'}, {'OK' if cratio >= GOAL else 'BELOW'}")
  print(load_average())


if __name__ == "__main__":
  main()
