"""Source learnability: does a model learn the synthetic source task (the study's ImageNet stand-in) clearly?

  python benchmarks/source_benchmark.py --model resnet50 --width_multiplier 0.25 --size 64 --steps 2000
  python benchmarks/source_benchmark.py --model cbr_small --width_multiplier 0.5 --size 32 --steps 2000

Pretrains the model with the package's own `trainer.pretrain` (the recipe of `transfusion-pretrain` and the study:
AdamW, decoupled weight decay on BatchNorm-followed conv kernels, cosine decay; training.policy.pretrain_defaults() unless
overridden) on synthetic_source, then prints the validation curve (top-1, top-5 per eval, wall seconds), the final
top-1 and top-5 against the target (top-1 at least --target_factor times chance, 10x by default: 31% for the 32
source classes), and the mean orientation selectivity of the exported conv1 filters against a He-normal random
kernel and the Gabor bank of the same shape. Exits 1 when the target is missed. Wall time depends on the machine
and its load; the script prints both.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from transfusion_tf.cli import import_tensorflow_quietly  # noqa: E402  pylint: disable=g-import-not-at-top
import_tensorflow_quietly()  # TensorFlow without its C++ start-up lines


def _default_size(model):
  """The per-model pretraining size of the training policy."""
  from transfusion_tf.training import policy  # pylint: disable=g-import-not-at-top
  return policy.pretrain_image_size(model)


def _model_kwargs(args):
  """The model kwargs of the study's pretraining: the width, the policy's per-model kwargs (ResNet50 starts its
  residual blocks as shortcuts unless --standard_init), and --bn_momentum when given."""
  from transfusion_tf.training import policy  # pylint: disable=g-import-not-at-top
  kw = {"width_multiplier": args.width_multiplier}
  if not args.standard_init:
    kw.update(policy.pretrain_model_kwargs(args.model))
  if args.bn_momentum is not None:
    kw["bn_momentum"] = args.bn_momentum
  return kw


def run(args):
  """Pretrains args.model on synthetic_source; prints the curve, accuracy vs the target and conv1 selectivity.

  Returns the exit code: 0 when final top-1 >= target_factor x chance, else 1.
  """
  from transfusion_tf import models  # pylint: disable=g-import-not-at-top
  from transfusion_tf.analysis import representation  # pylint: disable=g-import-not-at-top
  from transfusion_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  from transfusion_tf.training import policy, rundir, trainer  # pylint: disable=g-import-not-at-top
  size = args.size or _default_size(args.model)
  cfg = trainer.TrainConfig(**dict(
      policy.pretrain_defaults(), model=args.model, dataset="synthetic_source", image_size=size,
      train_steps=args.steps, eval_every=args.eval_every or max(1, args.steps // 8), batch_size=args.batch_size,
      seed=args.seed, model_kwargs=_model_kwargs(args), learning_rate=policy.pretrain_learning_rate(args.model),
      data_kwargs={"num_train": args.n_train, "num_val": args.n_val, "num_test": 64}))
  for name in ("learning_rate", "weight_decay", "warmup_steps"):
    if getattr(args, name) is not None:
      setattr(cfg, name, getattr(args, name))
  out = args.out or os.path.join("/tmp", f"transfusion_source_{args.model}_{size}px")
  run_dir = os.path.join(out, "run")
  chance = 1.0 / synthetic.NUM_CLASSES["source"]
  if args.target_factor is None:
    args.target_factor = policy.SOURCE_TARGET_FACTOR
  target = args.target_factor * chance
  print(f"pretraining {cfg.model} ({cfg.model_kwargs}) on synthetic_source at {size} px: "
        f"{cfg.train_steps} steps, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.learning_rate} "
        f"({cfg.lr_schedule}, warm-up {cfg.warmup_steps}) weight decay {cfg.weight_decay}, {args.n_train} training "
        f"images; cpu_count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
  t0 = time.perf_counter()
  export = trainer.pretrain(cfg, run_dir, overwrite=True)
  wall = time.perf_counter() - t0
  curve = rundir.read_json(os.path.join(run_dir, "curve.json"), [])
  print(f"{'step':>6s} {'top-1':>7s} {'top-5':>7s} {'seconds':>8s}")
  for p in curve:
    print(f"{p['step']:6d} {p['accuracy']:7.3f} {p.get('top5_accuracy', float('nan')):7.3f} {p['seconds']:8.0f}")
  final = curve[-1]
  # conv1: the first 4-D kernel in the file's layer order (InceptionV3's layer names depend on what the process
  # built before, so not by name).
  kernel = next(a[0] for _, a in models.read_weight_file(export).layers if a and a[0].ndim == 4)
  sel = float(representation.orientation_selectivity(kernel).mean())
  refs = representation.selectivity_references(kernel.shape)
  print(f"conv1 orientation selectivity {sel:.3f} (He-normal random {refs['random']:.3f}, Gabor bank "
        f"{refs.get('gabor', float('nan')):.3f})")
  verdict = "PASS" if final["accuracy"] >= target else "FAIL"
  print(f"{verdict}: {cfg.model} x{args.width_multiplier} at {size} px, {cfg.train_steps} steps: top-1 "
        f"{final['accuracy']:.3f}, top-5 {final.get('top5_accuracy', float('nan')):.3f} vs target top-1 >= "
        f"{target:.3f} ({args.target_factor:g}x chance {chance:.3f}); {wall:.0f} s wall", flush=True)
  return 0 if verdict == "PASS" else 1


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="resnet50")
  p.add_argument("--width_multiplier", type=float, default=0.25)
  p.add_argument("--size", type=int, default=None, help="pixels (default: the policy's pretraining size)")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--eval_every", type=int, default=None, help="default: steps / 8")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--learning_rate", type=float, default=None,
                 help="default: policy.pretrain_learning_rate (per model)")
  p.add_argument("--weight_decay", type=float, default=None, help="default: policy.pretrain_defaults()")
  p.add_argument("--warmup_steps", type=int, default=None)
  p.add_argument("--bn_momentum", type=float, default=None,
                 help="BatchNorm momentum (default Keras' 0.99; the demo's flagfile sets 0.9)")
  p.add_argument("--standard_init", action="store_true",
                 help="train from the study's standard random init (no policy model kwargs such as ResNet50's "
                      "zero_init_residual)")
  p.add_argument("--n_train", type=int, default=3000, help="training images (the demo pretrains on 3000)")
  p.add_argument("--n_val", type=int, default=500)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--target_factor", type=float, default=None,
                 help="target top-1 as a multiple of chance (default: policy.SOURCE_TARGET_FACTOR, 10)")
  p.add_argument("--out", default=None, help="output folder (default under /tmp)")
  sys.exit(run(p.parse_args()))


if __name__ == "__main__":
  main()
