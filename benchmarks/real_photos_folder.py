"""Writes a labelled image folder for `--dataset=image_csv` from real images that nobody here made.

The images are scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`): 1,797 scans of digits
written by people on NIST forms, reduced to 8x8 blocks of 0-16 ink counts. Source: the test part of the UCI
"Optical Recognition of Handwritten Digits" data set (E. Alpaydin and C. Kaynak, 1998; UCI Machine Learning
Repository, https://doi.org/10.24432/C50P49), licence CC BY 4.0, shipped inside the scikit-learn wheel (BSD-3-Clause),
so nothing is downloaded at use time. It needs scikit-learn, which is NOT a dependency of this project:

  pip install scikit-learn

The source has no writer ids, so each image is its own patient (patient_id = its index). Each PNG is 8-bit grayscale
at the native 8x8 (ink count * 255 / 16, rounded), or upscaled by pixel replication with --size; training resizes it
to --image_size. The CSV holds `path,label,patient_id`.

--digits picks the task: `all` (default) is the 10-class task, label = the digit; two digits `a,b` make a binary task
on those images only, label 0 = a and 1 = b.

  python benchmarks/real_photos_folder.py --out=/tmp/digits38 --digits=3,8
  transfusion-study --flagfile=flags/answer.cfg --dataset=image_csv --data_dir=/tmp/digits38 \\
      --labels_csv=/tmp/digits38/labels.csv --out=/tmp/answer_digits38 --image_size=32
"""
import os
import sys

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from transfusion_tf.cli import import_tensorflow_quietly  # noqa: E402  pylint: disable=g-import-not-at-top
import_tensorflow_quietly()  # TensorFlow without its C++ start-up lines

import tensorflow as tf  # noqa: E402

flags.DEFINE_string("out", None, "Folder to write (created); images go to OUT/images/, the CSV to OUT/labels.csv.")
flags.DEFINE_string("digits", "all", "'all': 10 classes, label = digit; 'a,b' (two digits 0-9): binary, 0 = a, 1 = b.")
flags.DEFINE_integer("size", 8, "Side of the written PNGs in pixels, a multiple of 8 (pixel replication of the 8x8).")
FLAGS = flags.FLAGS


def parse_digits(spec):
  """'all' -> None (10 classes); 'a,b' -> (a, b), two different digits 0-9; else ValueError naming --digits."""
  if spec.strip() == "all":
    return None
  parts = [p.strip() for p in spec.split(",")]
  if len(parts) != 2 or not all(p.isdigit() and len(p) == 1 for p in parts) or parts[0] == parts[1]:
    raise ValueError(f"--digits={spec!r}: give 'all' or two different digits 0-9 as 'a,b'")
  return int(parts[0]), int(parts[1])


def digit_folder_rows(images, targets, pair, size):
  """The PNG arrays and CSV rows of the folder.

  images: [N, 8, 8] ink counts 0-16; targets: [N] digits 0-9; pair: None or (a, b); size: output side, multiple of 8.
  Returns (pngs, rows): pngs a list of [size, size, 1] uint8 arrays, rows the CSV lines `path,label,patient_id`
  (header first), patient_id = the image's index in the source.
  """
  if size < 8 or size % 8:
    raise ValueError(f"--size={size}: give a multiple of 8 (the source images are 8x8)")
  pngs, rows = [], ["path,label,patient_id"]
  for i, (image, digit) in enumerate(zip(images, targets)):
    digit = int(digit)
    if pair is not None and digit not in pair:
      continue
    label = digit if pair is None else pair.index(digit)
    pixels = np.rint(np.asarray(image, np.float64) * (255.0 / 16.0)).astype(np.uint8)
    pixels = np.kron(pixels, np.ones((size // 8, size // 8), np.uint8))[..., None]
    pngs.append(pixels)
    rows.append(f"images/{i:04d}.png,{label},d{i}")
  return pngs, rows


def main(argv):
  del argv
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  try:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("error: scikit-learn is not installed; run `pip install scikit-learn` (the images ship in its wheel)",
          file=sys.stderr)
    sys.exit(2)
  try:
    data = load_digits()
    pngs, rows = digit_folder_rows(data.images, data.target, parse_digits(FLAGS.digits), FLAGS.size)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  os.makedirs(os.path.join(FLAGS.out, "images"), exist_ok=True)
  for pixels, row in zip(pngs, rows[1:]):
    tf.io.write_file(os.path.join(FLAGS.out, row.split(",")[0]), tf.io.encode_png(pixels))
  with open(os.path.join(FLAGS.out, "labels.csv"), "w", encoding="utf-8") as f:
    f.write("\n".join(rows) + "\n")
  print(f"wrote {len(pngs)} {FLAGS.size} px PNGs (digits {FLAGS.digits}) and {FLAGS.out}/labels.csv", flush=True)


if __name__ == "__main__":
  app.run(main)
