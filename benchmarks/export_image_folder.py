"""Writes a labelled image folder for `--dataset=image_csv` from the synthetic generator: PNGs plus labels.csv.

Used to time `flags/answer.cfg` on a folder of files (the README's "Your own data" figures) and to try the reader
without real data. The images are synthetic fundus photographs (no real patients); the labels CSV holds
`path,label,patient_id` with label = referable DR (grade >= 2), or the grade 0-4 with --grades; both eyes of a
patient share its patient_id.

  python benchmarks/export_image_folder.py --out=/tmp/folder --num_images=2000 --size=128
  transfusion-study --flagfile=flags/answer.cfg --dataset=image_csv --data_dir=/tmp/folder \\
      --labels_csv=/tmp/folder/labels.csv --out=/tmp/answer --image_size=32
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from transfusion_tf.cli import import_tensorflow_quietly  # noqa: E402  pylint: disable=g-import-not-at-top
import_tensorflow_quietly()  # TensorFlow without its C++ start-up lines

import tensorflow as tf  # noqa: E402

from transfusion_tf.data import synthetic  # noqa: E402
from transfusion_tf.data import tasks  # noqa: E402

flags.DEFINE_string("out", None, "Folder to write (created); images go to OUT/images/, the CSV to OUT/labels.csv.")
flags.DEFINE_integer("num_images", 2000, "Images to write.")
flags.DEFINE_integer("size", 128, "Side of the written images in pixels (training resizes them to --image_size).")
flags.DEFINE_boolean("grades", False, "Label = the DR grade 0-4 (5 classes) instead of referable 0/1.")
flags.DEFINE_integer("seed", 0, "Generator seed.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  os.makedirs(os.path.join(FLAGS.out, "images"), exist_ok=True)
  images, grades, meta = synthetic.generate_with_meta("retina", FLAGS.num_images, FLAGS.size, FLAGS.seed)
  rows = ["path,label,patient_id"]
  for i, (image, grade, patient) in enumerate(zip(images, grades, meta["patient_id"])):
    rel = f"images/{i:05d}.png"
    tf.io.write_file(os.path.join(FLAGS.out, rel), tf.io.encode_png(image))
    label = int(grade) if FLAGS.grades else int(grade >= tasks.REFERABLE_MIN_GRADE)
    rows.append(f"{rel},{label},p{int(patient)}")
  with open(os.path.join(FLAGS.out, "labels.csv"), "w", encoding="utf-8") as f:
    f.write("\n".join(rows) + "\n")
  print(f"wrote {len(images)} {FLAGS.size} px PNGs and {FLAGS.out}/labels.csv", flush=True)


if __name__ == "__main__":
  app.run(main)
