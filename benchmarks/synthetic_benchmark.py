"""Speed of the synthetic generators, how learnable the synthetic tasks are, what source pretraining does to conv1.

  python benchmarks/synthetic_benchmark.py                      # images/s per task at 128 and 224 px
  python benchmarks/synthetic_benchmark.py --sizes 64,128,587 --workers 1,2
  python benchmarks/synthetic_benchmark.py --learnability --steps 600 --size 128
  python benchmarks/synthetic_benchmark.py --learnability --size 48 --steps 600 --n_train 3000 --learning_rate 2e-3 \
      --width_multiplier 0.5                                    # the demo's model and data at 4x its steps
  python benchmarks/synthetic_benchmark.py --baseline           # global-statistics baseline, 32-224 px, retina + cxr
  python benchmarks/synthetic_benchmark.py --learnability --task cxr --steps 600 --size 128
  python benchmarks/synthetic_benchmark.py --preview /tmp/synthetic_preview   # PNG contact sheets
  python benchmarks/synthetic_benchmark.py --source_filters --size 32 --steps 3000 --out /tmp/source_filters

--learnability trains a random-init CBR-Small (7x7 convs 32-64-128-256, each Conv-BN-ReLU-MaxPool; GAP; Dense 5)
on synthetic retina training images with Adam 1e-3 (cosine decay), batch 32 and left-right flips, and prints the
referable AUC (P(referable) = p2 + p3 + p4, positive = grade >= 2) on held-out validation images every
--eval_every steps. With --task cxr it trains 5 sigmoid outputs (uncertain labels masked out) on grayscale films fed
as RGB and prints the mean AUC over the five findings (certain labels only). It uses
transfusion_tf.models.build_model("cbr_small", ...) when that imports, else an equivalent minimal Keras model. This
is the reproducible check for the README numbers.

--baseline fits an L2-regularised logistic regression on global per-channel statistics (16-bin histogram,
percentiles 1-99.9, mean, std; synthetic.global_statistics_features) of 2,000 training images and prints its AUC on
2,000 validation images: referable DR for retina, each finding for cxr. A classifier that beats it reads local
structure. Generator v3 keeps the retina at or below 0.65 at every size (tests/synthetic_test.py checks 32 and 48 px).

--source_filters pretrains a model (default CBR-Small) on synthetic_source exactly as `transfusion-pretrain` and the
study do by default (AdamW, decoupled weight decay on convolution kernels, cosine decay), then prints the mean
orientation selectivity of its conv1 filters before and after (analysis.representation.orientation_selectivity:
He-normal random 7x7 filters give about 0.15, the Gabor bank about 0.70), with a pass mark, and draws the filters as
an F5 figure under --out. This is the reproducible check that source pretraining grows oriented conv1 filters.
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
from scipy.stats import rankdata  # pylint: disable=g-import-not-at-top

from transfusion_tf.data import synthetic  # pylint: disable=g-import-not-at-top


def auc(labels, scores):
  """Exact ROC-AUC (ties count one half) from the rank-sum formula."""
  labels = np.asarray(labels).astype(bool)
  npos = labels.sum()
  nneg = len(labels) - npos
  if npos == 0 or nneg == 0:
    return float("nan")
  ranks = rankdata(scores)
  return float((ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def _cpu_seconds():
  """CPU seconds used by this process and its finished children (the worker processes)."""
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return time.process_time() + children.ru_utime + children.ru_stime


def speed(tasks, sizes, workers, num, repeats):
  """Prints wall-clock images/s, and images per CPU-second (what one free core would give; immune to load)."""
  print(f"{'task':8s} {'size':>5s} {'workers':>7s} {'wall img/s':>10s} {'img/cpu-s':>10s}   "
        f"(N={num}, best of {repeats}, cpu_count={os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
  for task in tasks:
    for size in sizes:
      synthetic.generate(task, 2, size, 0, num_workers=1)  # Warm caches (grids, interpolation matrices).
      for w in workers:
        best_wall = best_cpu = 0.0
        for r in range(repeats):
          t, c = time.perf_counter(), _cpu_seconds()
          synthetic.generate(task, num, size, 1000 + r, num_workers=w)
          best_wall = max(best_wall, num / (time.perf_counter() - t))
          best_cpu = max(best_cpu, num / max(_cpu_seconds() - c, 1e-9))
        print(f"{task:8s} {size:5d} {w:7d} {best_wall:10.1f} {best_cpu:10.1f}", flush=True)


def preview(out_dir, size, difficulty):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)

  def sheet(images, ncol):
    n, s = len(images), images.shape[1]
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, -1)
    nrow = -(-n // ncol)
    g = np.zeros((nrow * (s + 2), ncol * (s + 2), 3), np.uint8)
    for i, im in enumerate(images):
      r, c = divmod(i, ncol)
      g[r * (s + 2):r * (s + 2) + s, c * (s + 2):c * (s + 2) + s] = im
    return Image.fromarray(g)

  x, y = synthetic.generate("retina", 80, size, 0, difficulty=difficulty)
  rows = [np.flatnonzero(y == g)[:4] for g in range(5)]
  sheet(np.concatenate([x[r] for r in rows]), 4).save(os.path.join(out_dir, "retina_by_grade.png"))
  x, y = synthetic.generate("cxr", 16, size, 0, difficulty=difficulty)
  sheet(x, 4).save(os.path.join(out_dir, "cxr.png"))
  x, y = synthetic.generate("source", 200, size, 0, difficulty=difficulty)
  first = [np.flatnonzero(y == k)[0] for k in range(synthetic.NUM_CLASSES["source"]) if (y == k).any()]
  sheet(x[first], 8).save(os.path.join(out_dir, "source_by_class.png"))
  print(f"wrote retina_by_grade.png (rows: grades 0-4), cxr.png, source_by_class.png to {out_dir}")


def baseline(tasks, sizes, num, seed, difficulty):
  """Prints the global-statistics baseline's held-out AUC per task and size (train split -> validation split).

  Features: synthetic.global_statistics_features (per channel a 16-bin histogram, 8 percentiles, mean, std); model:
  synthetic.global_baseline_auc (L2 logistic regression, strength by 3-fold CV on the training split). retina: the
  referable label (grade >= 2); cxr: each finding on its certain labels, and their mean.
  """
  print(f"global-statistics baseline: {num} train / {num} validation images per size, seed {seed}", flush=True)
  for task in tasks:
    for size in sizes:
      t = time.perf_counter()
      xa, ya = synthetic.generate(task, num, size, seed, difficulty=difficulty, split="train")
      xb, yb = synthetic.generate(task, num, size, seed, difficulty=difficulty, split="validation")
      fa, fb = synthetic.global_statistics_features(xa), synthetic.global_statistics_features(xb)
      if task == "retina":
        a, l2 = synthetic.global_baseline_auc(fa, ya >= 2, fb, yb >= 2)
        what = f"referable AUC {a:.3f} (l2 {l2:g})"
      else:
        per = []
        for j in range(ya.shape[1]):
          ka, kb = ya[:, j] >= 0, yb[:, j] >= 0
          per.append(synthetic.global_baseline_auc(fa[ka], ya[ka, j] == 1, fb[kb], yb[kb, j] == 1)[0])
        names = [n.replace("Pleural ", "") for n in synthetic.CXR_PATHOLOGIES]
        what = f"mean AUC {np.mean(per):.3f}: " + ", ".join(f"{n} {a:.3f}" for n, a in zip(names, per))
      print(f"{task:6s} {size:4d} px  {what}  ({time.perf_counter() - t:.0f}s)", flush=True)


def _cbr_small(size, num_outputs=5, model="cbr_small", width_multiplier=1.0):
  """`model` (default CBR-Small) from the model zoo if available, else a minimal CBR-Small; outputs logits."""
  try:
    from transfusion_tf.models import build_model  # pylint: disable=g-import-not-at-top
    return (build_model(model, num_outputs, (size, size, 3), width_multiplier=width_multiplier),
            "transfusion_tf.models.build_model")
  except Exception as e:  # pylint: disable=broad-except
    import keras  # pylint: disable=g-import-not-at-top
    inp = keras.Input((size, size, 3))
    h = inp
    for w in (32, 64, 128, 256):
      h = keras.layers.Conv2D(w, 7, padding="same", use_bias=False, kernel_initializer="he_normal")(h)
      h = keras.layers.BatchNormalization()(h)
      h = keras.layers.ReLU()(h)
      h = keras.layers.MaxPool2D(3, 2, padding="same")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(num_outputs)(h)), f"fallback minimal model ({type(e).__name__})"


def learnability(args):
  """Trains a random-init CBR-Small on synthetic retina (or cxr with --task cxr); prints held-out AUC per eval."""
  from transfusion_tf.cli import import_tensorflow_quietly  # pylint: disable=g-import-not-at-top
  import_tensorflow_quietly()  # TensorFlow without its C++ start-up lines
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  d, task = args.difficulty, args.task
  t0 = time.perf_counter()
  xtr, ytr = synthetic.generate(task, args.n_train, args.size, args.seed, difficulty=d, split="train")
  xva, yva = synthetic.generate(task, args.n_val, args.size, args.seed, difficulty=d, split="validation")
  if task == "cxr":  # Grayscale films go in as RGB, as the pipeline feeds them.
    xtr, xva = np.repeat(xtr, 3, axis=-1), np.repeat(xva, 3, axis=-1)
  dd = synthetic.DEFAULT_DIFFICULTY[task] if d is None else d
  what = (f"train grades {np.bincount(ytr, minlength=5).tolist()}, validation referable {np.mean(yva >= 2):.2f}"
          if task == "retina" else
          f"validation positives {(yva == 1).mean(0).round(2).tolist()}, "
          f"uncertain {(yva == -1).mean(0).round(2).tolist()}")
  print(f"data: {task}, {args.n_train} train + {args.n_val} validation at {args.size} px, difficulty {dd}, "
        f"{time.perf_counter() - t0:.1f}s; {what}", flush=True)
  keras.utils.set_random_seed(args.seed)
  num_out = synthetic.NUM_CLASSES[task]
  model, origin = _cbr_small(args.size, num_out, args.model, args.width_multiplier)
  print(f"model: {args.model} (width x{args.width_multiplier}) from {origin}, {model.count_params():,} parameters, "
        f"Adam {args.learning_rate or 1e-3} cosine", flush=True)
  lr = keras.optimizers.schedules.CosineDecay(args.learning_rate or 1e-3, args.steps, alpha=0.05)
  if task == "cxr":
    def loss(y, logits):  # Uncertain labels (-1) are masked out, the `ignore` policy.
      y = tf.cast(y, tf.float32)
      mask = tf.cast(y >= 0, tf.float32)
      bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.maximum(y, 0.0), logits=logits)
      return tf.reduce_sum(bce * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
  else:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  model.compile(keras.optimizers.Adam(lr), loss)
  rng = np.random.default_rng(args.seed)
  xv = xva.astype(np.float32) / 127.5 - 1.0

  def batches():
    while True:
      perm = rng.permutation(len(xtr))
      for i in range(0, len(perm) - args.batch_size + 1, args.batch_size):
        b = perm[i:i + args.batch_size]
        x = xtr[b].astype(np.float32) / 127.5 - 1.0
        flip = rng.random(len(b)) < 0.5
        x[flip] = x[flip, :, ::-1]
        yield x, ytr[b]

  def score(logits):
    if task == "cxr":
      per = [auc(yva[yva[:, j] >= 0, j] == 1, logits[yva[:, j] >= 0, j]) for j in range(num_out)]
      return float(np.mean(per)), "mean AUC (certain labels) " + " ".join(f"{a:.2f}" for a in per)
    probs = tf.nn.softmax(logits).numpy()
    a = auc(yva >= 2, probs[:, 2:].sum(1))
    return a, f"grade accuracy {(probs.argmax(1) == yva).mean():.3f}"

  it = batches()
  t1 = time.perf_counter()
  step = 0
  curve = []
  name = "mean AUC" if task == "cxr" else "referable AUC"
  while step < args.steps:
    for _ in range(min(args.eval_every, args.steps - step)):
      model.train_on_batch(*next(it))
      step += 1
    a, extra = score(model.predict(xv, batch_size=128, verbose=0))
    curve.append((step, a))
    print(f"step {step:5d}  {time.perf_counter() - t1:6.0f}s  val {name} {a:.3f}  {extra}", flush=True)
  best = max(a for _, a in curve)
  near = next(s for s, a in curve if a >= best - 0.02)
  print(f"final {name} {curve[-1][1]:.3f}, best {best:.3f}, first within 0.02 of best at step {near} of "
        f"{args.steps}; {time.perf_counter() - t1:.0f}s training, "
        f"{args.steps * args.batch_size / (time.perf_counter() - t1):.1f} img/s")


def source_filters(args):
  """Pretrains args.model on synthetic_source with the default recipe; prints conv1 orientation selectivity."""
  from transfusion_tf.cli import import_tensorflow_quietly  # pylint: disable=g-import-not-at-top
  import_tensorflow_quietly()  # TensorFlow without its C++ start-up lines
  from transfusion_tf.analysis import representation  # pylint: disable=g-import-not-at-top
  from transfusion_tf.training import policy, rundir, trainer  # pylint: disable=g-import-not-at-top
  out = args.out or os.path.join("/tmp", "transfusion_source_filters")
  cfg = trainer.TrainConfig(**dict(
      policy.pretrain_defaults(), model=args.model, dataset="synthetic_source", image_size=args.size,
      train_steps=args.steps, eval_every=max(1, args.steps // 4), batch_size=args.batch_size, seed=args.seed,
      model_kwargs=policy.pretrain_model_kwargs(args.model), learning_rate=policy.pretrain_learning_rate(args.model),
      data_kwargs={"num_train": args.n_train, "num_val": args.n_val, "num_test": 64}))
  if args.learning_rate:
    cfg.learning_rate = args.learning_rate
  if args.weight_decay is not None:
    cfg.weight_decay = args.weight_decay
  print(f"pretraining {cfg.model} on synthetic_source at {cfg.image_size} px: {cfg.train_steps} steps, "
        f"{cfg.optimizer} lr {cfg.learning_rate} weight decay {cfg.weight_decay}, {args.n_train} images", flush=True)
  t0 = time.perf_counter()
  run_dir = os.path.join(out, "run")
  trainer.pretrain(cfg, run_dir)
  entries = representation.f5_filters([(run_dir, "synthetic-source pretraining")])
  figure = representation.figure_f5(entries, os.path.join(out, "source_conv1"),
                                    title=f"{cfg.model} conv1 before and after synthetic-source pretraining")
  panel = figure["panels"][0]
  # Per-filter values only for the share above 0.4; the means and references are the figure's own.
  before, after = (representation.orientation_selectivity(entries[0][col]) for col in ("before", "after"))
  mean_after = panel["orientation_selectivity_after"]
  refs = panel["selectivity_references"]
  final = rundir.read_json(os.path.join(run_dir, "result.json"))["final"]
  print(f"source validation: {final}", flush=True)
  print(f"conv1 orientation selectivity: before {panel['orientation_selectivity_before']:.3f}, after "
        f"{mean_after:.3f} (filters above 0.4: {np.mean(before > 0.4):.0%} -> {np.mean(after > 0.4):.0%}); "
        f"references: He-normal random {refs['random']:.3f}, Gabor bank {refs.get('gabor', float('nan')):.3f}; "
        f"{time.perf_counter() - t0:.0f}s", flush=True)
  verdict = "PASS" if mean_after >= args.pass_mark else "FAIL"
  print(f"{verdict}: mean selectivity after pretraining {mean_after:.3f} vs pass mark {args.pass_mark} "
        f"(figure: {os.path.join(out, 'source_conv1.png')})", flush=True)
  return 0 if verdict == "PASS" else 1


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tasks", default="retina,cxr,source")
  p.add_argument("--sizes", default="128,224")
  p.add_argument("--workers", default="1,2", help="comma-separated worker counts to time")
  p.add_argument("--num", type=int, default=256, help="images per timing")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--preview", default=None, help="write PNG contact sheets to this folder and exit")
  p.add_argument("--learnability", action="store_true")
  p.add_argument("--baseline", action="store_true", help="global-statistics baseline AUC per --tasks and --sizes")
  p.add_argument("--baseline_num", type=int, default=2000, help="--baseline: images per split")
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--eval_every", type=int, default=100)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--n_train", type=int, default=4000)
  p.add_argument("--n_val", type=int, default=1000)
  p.add_argument("--difficulty", type=float, default=None)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--task", default="retina", choices=["retina", "cxr"], help="--learnability: which task")
  p.add_argument("--source_filters", action="store_true")
  p.add_argument("--model", default="cbr_small")
  p.add_argument("--learning_rate", type=float, default=None,
                 help="--learnability: peak learning rate (default 1e-3); --source_filters: override the default")
  p.add_argument("--width_multiplier", type=float, default=1.0, help="--learnability: model width multiplier")
  p.add_argument("--weight_decay", type=float, default=None, help="--source_filters: override the default")
  p.add_argument("--pass_mark", type=float, default=0.35, help="--source_filters: mean selectivity to pass")
  p.add_argument("--out", default=None, help="--source_filters: output folder")
  args = p.parse_args()
  if args.preview:
    preview(args.preview, args.size, args.difficulty)
  elif args.baseline:
    tasks = [t for t in args.tasks.split(",") if t != "source"]
    sizes = args.sizes.split(",") if args.sizes != p.get_default("sizes") else ["32", "48", "64", "128", "224"]
    baseline(tasks, [int(v) for v in sizes], args.baseline_num, args.seed, args.difficulty)
  elif args.learnability:
    learnability(args)
  elif args.source_filters:
    sys.exit(source_filters(args))
  else:
    speed(args.tasks.split(","), [int(s) for s in args.sizes.split(",")], [int(w) for w in args.workers.split(",")],
          args.num, args.repeats)


if __name__ == "__main__":
  main()
