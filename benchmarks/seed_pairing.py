"""Does a shared seed pair the arms? Measures whether transfer − random is more precise paired by seed.

  python benchmarks/seed_pairing.py [--out=DIR] [--seeds=10] [--model=cbr_tiny] [extra study flags ...]

A seed fixes a run's data order and augmentation (a pure function of (seed, example index), see
transfusion_tf/training/trainer.py), so the random-init and transfer runs of one seed see the same batches in the
same order. If that made their test AUCs move together, the difference of paired runs would vary less than the
difference of arm means taken as independent, and the study's pairing by seed (stats.uses_pairing, chosen for
exactness) would also be narrower. This script trains `--seeds`
seeds of each arm with the study command (--study_stage=train; the same command resumes a killed run), then reads
each run's selected test AUC (result.json) and prints, per model:
  - r, the correlation over seeds of the two arms' test AUCs, with its 95% CI (Fisher z, n − 3 df);
  - the standard error of the mean difference unpaired (s_t²/n + s_r²/n) and paired (s_d²/n), their ratio, and a
    95% bootstrap CI of the ratio over seeds (10,000 resamples of whole seeds);
  - the verdict: pairing helps only if the ratio's CI lies below 1.
The test-set noise that all runs share (one test set) moves every run alike and so adds nothing to r; each run's own
test noise is independent across runs and is part of what pairing would have to beat.
The last line reads `pairing: r = X.XX [lo, hi], paired/unpaired SE X.XX [lo, hi] (MODEL, N seeds)`.
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULTS = ["--dataset=synthetic_retina", "--num_train=3000", "--num_val=1000", "--num_test=2000",
            "--image_size=32", "--batch_size=32", "--train_steps=300", "--eval_every=50", "--bn_momentum=0.9",
            "--learning_rate=0.002", "--convergence_auc=0.65", "--width_multiplier=0.5",
            "--study_inits=random,pretrained", "--experiments=T1", "--source_weights=auto",
            "--pretrain_steps=400", "--pretrain_image_size=32", "--pretrain_num_train=3000"]


def read_runs(out):
  """[(model, init, seed, test primary AUC)] of the finished runs under `out`."""
  rows = []
  for path in sorted(glob.glob(os.path.join(out, "**", "result.json"), recursive=True)):
    run_dir = os.path.dirname(path)
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
      continue
    with open(path, encoding="utf-8") as f:
      result = json.load(f)
    with open(cfg_path, encoding="utf-8") as f:
      cfg = json.load(f)
    sel = result.get("selected") or {}
    value = (sel.get("test") or {}).get(result.get("primary_metric"))
    if value is not None and cfg.get("init") in ("random", "pretrained"):
      rows.append((cfg["model"], cfg["init"], int(cfg["seed"]), float(value)))
  return rows


def pairing(t, r, n_boot=10000, seed=0):
  """t, r: (n,) test AUCs of the transfer and random runs of seeds 0..n-1. Returns a dict: r with its Fisher-z 95%
  CI, the unpaired and paired SEs of the mean difference (AUC units) and their ratio with a seed-bootstrap 95% CI."""
  t, r = np.asarray(t, float), np.asarray(r, float)
  n = len(t)
  corr = float(np.corrcoef(t, r)[0, 1])
  half = 1.96 / math.sqrt(n - 3) if n > 3 else math.inf
  z = math.atanh(max(-0.999999, min(0.999999, corr)))
  ci = (math.tanh(z - half), math.tanh(z + half))

  def ses(tt, rr):
    unpaired = math.sqrt(np.var(tt, ddof=1) / n + np.var(rr, ddof=1) / n)
    paired = math.sqrt(np.var(tt - rr, ddof=1) / n)
    return unpaired, paired

  unpaired, paired = ses(t, r)
  rng = np.random.default_rng(seed)
  ratios = []
  for _ in range(n_boot):
    idx = rng.integers(0, n, n)
    u, p = ses(t[idx], r[idx])
    if u > 0:
      ratios.append(p / u)
  lo, hi = np.percentile(ratios, [2.5, 97.5])
  return {"n": n, "r": corr, "r_ci": ci, "se_unpaired": unpaired, "se_paired": paired,
          "ratio": paired / unpaired, "ratio_ci": (float(lo), float(hi))}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="/tmp/seed_pairing")
  parser.add_argument("--seeds", type=int, default=10)
  parser.add_argument("--model", default="cbr_tiny")
  parser.add_argument("--no_train", action="store_true", help="read a finished --out only")
  args, extra = parser.parse_known_args()
  if args.seeds < 4:
    parser.error(f"--seeds={args.seeds}: the correlation's CI needs at least 4 seeds")
  if not args.no_train:
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "study.py"), *DEFAULTS, f"--study_models={args.model}",
           f"--study_seeds={args.seeds}", f"--out={args.out}", "--study_stage=train", *extra]
    subprocess.run(cmd, cwd=ROOT, check=True)
  rows = read_runs(args.out)
  last = None
  for model in sorted({m for m, *_ in rows}):
    by = {(i, s): v for m, i, s, v in rows if m == model}
    seeds = sorted(s for (i, s) in by if i == "random" and ("pretrained", s) in by)
    if len(seeds) < 4:
      print(f"{model}: {len(seeds)} seeds with both arms; need 4")
      continue
    t = [by[("pretrained", s)] for s in seeds]
    r = [by[("random", s)] for s in seeds]
    p = pairing(t, r)
    print(f"{model}: {p['n']} seeds; test AUC random {np.mean(r) * 100:.1f} ± {np.std(r, ddof=1) * 100:.1f}, "
          f"transfer {np.mean(t) * 100:.1f} ± {np.std(t, ddof=1) * 100:.1f} (mean ± SD, AUC points)")
    print(f"  r = {p['r']:+.2f} [{p['r_ci'][0]:+.2f}, {p['r_ci'][1]:+.2f}]; SE of the mean difference unpaired "
          f"{p['se_unpaired'] * 100:.2f} pt, paired {p['se_paired'] * 100:.2f} pt, ratio {p['ratio']:.2f} "
          f"[{p['ratio_ci'][0]:.2f}, {p['ratio_ci'][1]:.2f}]")
    helps = p["ratio_ci"][1] < 1.0
    print("  pairing by seed " + ("makes the difference more precise" if helps else
                                  "is not shown to help (the ratio's CI reaches 1): it buys no precision "
                                  "here (the study pairs unequal or 2-seed arms for exactness only)"))
    last = (model, p)
  if last is None:
    sys.exit("no model has 4 seeds with both arms under " + args.out)
  model, p = last
  print(f"pairing: r = {p['r']:+.2f} [{p['r_ci'][0]:+.2f}, {p['r_ci'][1]:+.2f}], paired/unpaired SE "
        f"{p['ratio']:.2f} [{p['ratio_ci'][0]:.2f}, {p['ratio_ci'][1]:.2f}] ({model}, {p['n']} seeds)")


if __name__ == "__main__":
  main()
