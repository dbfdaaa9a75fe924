"""Peak memory of one SVCCA comparison at 587 px against the number of analysis images (issue 24 §3).

    python benchmarks/memory_benchmark.py                       # 500 and 2,000 images, streamed (a few minutes)
    python benchmarks/memory_benchmark.py --held_images=500     # also the old way, every image held, for contrast
    python benchmarks/memory_benchmark.py --quick               # 64 and 256 images at 96 px, a smoke run

The analyses read their images from the input pipeline on every pass (`compare.ImageBatches`) instead of holding
them all (2,000 images at 587 px were 8 GB). Each measurement runs in a fresh process that compares every stage of
two randomly initialised CBR-Tiny models (--width_multiplier) on the first N validation images of a folder of
587 px JPEGs (the real-data readers' path: decoded and resized by tf.data), as the study's F2/F3 do, and reports
its peak RSS: VmHWM from /proc/self/status at its end, and the parent's resource.getrusage(RUSAGE_CHILDREN)
ru_maxrss (the largest child so far, so it checks the first figure and then bounds the others). The parent never
imports TensorFlow, so its own size does not enter. The last line is the goal:
    peak RSS: 500 images X.XX GiB, 2000 images X.XX GiB, difference +X.X% (goal < 10%)
The folder of JPEGs is made once (--data_dir, default a folder under the system's temp folder) and reused.
"""
import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


def make_folder(folder, num_images, size, seed=0):
  """A retina_csv folder: trainLabels.csv (image, level, split) and train/<name>.jpeg, `num_images` validation
  images of size x size px (smooth random colour fields, as a fundus photo compresses) and a few train and test
  images, which the pipeline's checks need. Returns the folder; an existing complete one is reused."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  csv_path = os.path.join(folder, "trainLabels.csv")
  stamp = os.path.join(folder, f"done_{num_images}_{size}")
  if os.path.exists(stamp):
    return folder
  os.makedirs(os.path.join(folder, "train"), exist_ok=True)
  rng = np.random.default_rng(seed)
  rows = []
  splits = ["validation"] * num_images + ["train"] * 20 + ["test"] * 20
  for i, split in enumerate(splits):
    name = f"{i + 10}_left"
    low = rng.uniform(0, 255, (max(4, size // 16), max(4, size // 16), 3)).astype(np.uint8)
    Image.fromarray(low).resize((size, size), Image.BILINEAR).save(os.path.join(folder, "train", f"{name}.jpeg"),
                                                                   "JPEG", quality=90)
    rows.append((name, i % 5, split))
  with open(csv_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image", "level", "split"])
    w.writerows(rows)
  open(stamp, "w").close()
  return folder


def _vm_hwm_bytes():
  """Peak RSS of this process since exec (VmHWM), in bytes."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(args):
  """One comparison in this (fresh) process; prints its figures as one JSON line."""
  import keras  # pylint: disable=import-outside-toplevel
  from transfusion_tf import models  # pylint: disable=import-outside-toplevel
  from transfusion_tf.analysis import activations, compare  # pylint: disable=import-outside-toplevel
  config = {"dataset": "retina_csv", "image_size": args.image_size, "model": "cbr_tiny", "seed": 0, "channels": 3,
            "data_kwargs": {"data_dir": args.data_dir, "validate_images": "off"}}
  kwargs = {"width_multiplier": args.width_multiplier}
  shape = (args.image_size, args.image_size, 3)
  model_a = models.build_model("cbr_tiny", 5, shape, seed=0, **kwargs)
  model_b = models.build_model("cbr_tiny", 5, shape, seed=1, **kwargs)
  batches = compare.ImageBatches(config, args.images, args.batch_size)
  if args.held:
    batches = list(batches)  # The old way: every image in memory before the comparison starts.
  start = time.time()
  res = activations.compare_models(model_a, model_b, None, batches, max_positions=args.max_positions)
  seconds = time.time() - start
  keras.backend.clear_session()
  print(json.dumps({"images": res["conv1"]["images"], "seconds": seconds, "peak_rss": _vm_hwm_bytes(),
                    "svcca": {s: r["svcca"] for s, r in res.items()}}), flush=True)


def measure(args, images, held=False):
  """Runs one comparison of `images` images in a fresh process; returns its figures (dict)."""
  cmd = [sys.executable, os.path.abspath(__file__), "--_child", f"--images={images}", f"--data_dir={args.data_dir}",
         f"--image_size={args.image_size}", f"--batch_size={args.batch_size}",
         f"--width_multiplier={args.width_multiplier}", f"--max_positions={args.max_positions}"]
  if held:
    cmd.append("--held")
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode:
    sys.exit(f"the child for {images} images failed:\n{out.stderr[-3000:]}")
  res = json.loads(out.stdout.strip().splitlines()[-1])
  res["children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB.
  return res


def _gib(b):
  return b / 2 ** 30


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--counts", default="500,2000", help="analysis image counts to measure, comma-separated")
  parser.add_argument("--image_size", type=int, default=587, help="input side in px (the real-data flagfiles')")
  parser.add_argument("--batch_size", type=int, default=32, help="images per batch (the study's)")
  parser.add_argument("--width_multiplier", type=float, default=0.25, help="CBR-Tiny width (small: minutes on 2 "
                      "cores)")
  parser.add_argument("--max_positions", type=int, default=64, help="positions per image of a conv stage")
  parser.add_argument("--held_images", type=int, default=0, help="also measure the old way (all images held) at "
                      "this count (0: not)")
  parser.add_argument("--data_dir", default=None, help="the folder of JPEGs (made once; default under the temp "
                      "folder)")
  parser.add_argument("--quick", action="store_true", help="64 and 256 images at 96 px")
  parser.add_argument("--json", help="also write the figures to this file")
  parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--held", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:  # pylint: disable=protected-access
    child(args)
    return
  if args.quick:
    args.counts, args.image_size = "64,256", 96
  counts = [int(c) for c in args.counts.split(",")]
  args.data_dir = args.data_dir or os.path.join(tempfile.gettempdir(), f"transfusion_memory_{args.image_size}px")
  t = time.time()
  make_folder(args.data_dir, max(counts + [args.held_images]), args.image_size)
  print(f"{max(counts + [args.held_images])} validation JPEGs at {args.image_size} px in {args.data_dir} "
        f"({time.time() - t:.0f} s to make or check)", flush=True)
  print(f"One comparison of every stage of two CBR-Tiny (width x{args.width_multiplier}) at {args.image_size} px, "
        f"batches of {args.batch_size}, each in a fresh process:", flush=True)
  rows = {}
  for n in counts:
    r = measure(args, n)
    rows[n] = r
    print(f"  {r['images']:>5} images streamed: peak RSS {_gib(r['peak_rss']):5.2f} GiB (RUSAGE_CHILDREN max so far "
          f"{_gib(r['children_maxrss']):5.2f} GiB), {r['seconds']:.0f} s, conv1 SVCCA {r['svcca']['conv1']:.4f}",
          flush=True)
  held = None
  if args.held_images:
    held = measure(args, args.held_images, held=True)
    print(f"  {held['images']:>5} images held (the old way): peak RSS {_gib(held['peak_rss']):5.2f} GiB, "
          f"{held['seconds']:.0f} s", flush=True)
  lo, hi = rows[counts[0]]["peak_rss"], rows[counts[-1]]["peak_rss"]
  diff = 100.0 * (hi - lo) / lo
  print(f"peak RSS: {counts[0]} images {_gib(lo):.2f} GiB, {counts[-1]} images {_gib(hi):.2f} GiB, difference "
        f"{diff:+.1f}% (goal < 10%)", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"rows": {str(k): v for k, v in rows.items()}, "held": held, "difference_percent": diff}, f, indent=1)


if __name__ == "__main__":
  main()
