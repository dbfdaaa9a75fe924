"""Wall time of a study's training runs with one process against --parallel_runs=auto, side by side in one sitting.

  python benchmarks/parallel_benchmark.py [--flagfile=flags/demo.cfg] [--pretrained_from=DIR] [--work=DIR]
      [--parallel=auto]

Both arms train the same runs of the flagfile (--study_stage=train) from the same pretrained sources, into two
fresh output folders. The sources are copied from --pretrained_from (a finished study's OUT, e.g. the demo's
runs/demo) into both; without it the N = 1 arm pretrains them and the other arm gets a copy. Each arm's time is
measured from its first "== run" line (the sweep starts, the pretraining is over) to its exit; the whole command's
time is printed too. The arms run one after the other, N = 1 first, so both see the same machine. It then prints how
far the two arms' test metrics differ (one process uses TensorFlow's default thread pools, each concurrent one a
share of the cores, and the summation order follows the threads). The last line reads
`training runs: N=1 X.X min, N=auto Y.Y min (Z.ZZx; goal <= 0.7)`.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def study(flagfile, out, *extra):
  """Runs the study command; returns (seconds from the first '== run' line to exit, total seconds, stdout)."""
  cmd = [sys.executable, os.path.join(ROOT, "scripts", "study.py"), f"--flagfile={flagfile}", f"--out={out}",
         "--study_stage=train", *extra]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  t0 = time.time()
  first_run = None
  lines = []
  with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
    for line in p.stdout:
      lines.append(line)
      if first_run is None and line.startswith("== run"):
        first_run = time.time()
  if p.returncode != 0:
    sys.exit(f"error: {' '.join(cmd)} exited {p.returncode}:\n{''.join(lines[-30:])}")
  end = time.time()
  return end - (first_run or end), end - t0, "".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--flagfile", default=os.path.join(ROOT, "flags", "demo.cfg"))
  ap.add_argument("--pretrained_from", default=None, help="a study output folder whose pretrain/ to reuse")
  ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder, removed at the end)")
  ap.add_argument("--parallel", default="auto", help="the --parallel_runs of the second arm")
  args = ap.parse_args()
  work = args.work or tempfile.mkdtemp(prefix="transfusion_parallel_")
  source = os.path.join(args.pretrained_from, "pretrain") if args.pretrained_from else None
  if source and not os.path.isdir(source):
    sys.exit(f"error: --pretrained_from={args.pretrained_from} has no pretrain/ folder")
  arms = {}
  for label, n in (("N=1", "1"), (f"N={args.parallel}", args.parallel)):
    out = os.path.join(work, label.replace("=", "_"))
    shutil.rmtree(out, ignore_errors=True)
    if source:
      shutil.copytree(source, os.path.join(out, "pretrain"))
    runs, total, log = study(args.flagfile, out, f"--parallel_runs={n}")
    source = source or os.path.join(out, "pretrain")
    arms[label] = runs
    procs = next((l.strip() for l in log.splitlines() if l.startswith("parallel runs:")), "1 process")
    print(f"{label}: training runs {runs / 60:.1f} min, whole command {total / 60:.1f} min ({procs})", flush=True)
  # How far the two thread settings move the numbers (each setting is deterministic on its own).
  outs = [os.path.join(work, label.replace("=", "_")) for label in arms]
  diffs = []
  for path in sorted(glob.glob(os.path.join(outs[0], "runs", "*", "*", "*", "result.json"))):
    rel = os.path.relpath(path, outs[0])
    a, b = (json.load(open(os.path.join(o, rel))) for o in outs)
    metric = a["primary_metric"]
    diffs.append((abs(a["selected"]["test"][metric] - b["selected"]["test"][metric]), rel.split(os.sep)[1:4]))
  if diffs:
    worst = max(diffs)
    print(f"test {metric} N=1 vs N={args.parallel}: {sum(d == 0 for d, _ in diffs)} of {len(diffs)} runs identical, "
          f"largest difference {worst[0]:.4f} ({'/'.join(worst[1])}), mean {sum(d for d, _ in diffs) / len(diffs):.4f}")
  if not args.work:
    shutil.rmtree(work, ignore_errors=True)
  (one, t1), (other, t2) = arms.items()
  print(f"training runs: {one} {t1 / 60:.1f} min, {other} {t2 / 60:.1f} min ({t2 / t1:.2f}x; goal <= 0.7)")


if __name__ == "__main__":
  main()
