"""Input-pipeline throughput next to what training consumes.

Measures images/s of `Data.train()` (decode, resize, augmentation, preprocessing, batching) at --image_size for
  1. the synthetic cache (in-memory uint8 arrays), and
  2. a folder of JPEGs generated into a temp dir (--jpeg_size px, quality 90), read through the retina_csv reader,
and prints them beside the training consumption of CBR-Small at the same size (one forward/backward/Adam step per
batch on random data). The pipeline should run well over 3x faster than training consumes, so input never stalls.

  python benchmarks/pipeline_benchmark.py [--image_size=224 --batch_size=32 --num_jpegs=300]

Numbers are wall-clock on whatever the machine is doing; both sides run on the same cores.
"""
import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from transfusion_tf.cli import import_tensorflow_quietly  # noqa: E402  pylint: disable=g-import-not-at-top
import_tensorflow_quietly()  # TensorFlow without its C++ start-up lines

from transfusion_tf.data import pipeline  # noqa: E402
from transfusion_tf.data import records  # noqa: E402

flags.DEFINE_integer("image_size", 224, "Model input size in pixels.")
flags.DEFINE_integer("batch_size", 32, "Global batch size.")
flags.DEFINE_integer("num_synthetic", 512, "Synthetic training images (generated once into --cache_dir).")
flags.DEFINE_integer("num_jpegs", 300, "JPEG files to generate for the folder benchmark.")
flags.DEFINE_integer("jpeg_size", 512, "Side of the generated JPEGs in pixels (EyePACS btgraham-300 is ~300-600).")
flags.DEFINE_integer("batches", 20, "Timed batches per pipeline (after 3 warm-up batches).")
flags.DEFINE_integer("train_steps", 3, "Timed CBR-Small training steps (after 2 warm-up steps); 0 skips training.")
flags.DEFINE_string("cache_dir", None, "Synthetic data cache (default: the generator's).")
flags.DEFINE_float("stated_training_rate", 8.0, "CBR-Small img/s at 224 px quoted for this machine, used when the "
                   "model factory is unavailable.")
FLAGS = flags.FLAGS


def time_pipeline(data, batches):
  it = iter(data.train(0))
  for _ in range(3):
    next(it)
  t = time.perf_counter()
  n = 0
  for _ in range(batches):
    images, _, _ = next(it)
    n += int(images.shape[0])
  return n / (time.perf_counter() - t)


def write_jpegs(folder, n, size, seed=0):
  """Smooth fundus-like colour blobs on black, saved as JPEG, plus an EyePACS-style trainLabels.csv."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(folder, "train"))
  yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
  disc = (xx ** 2 + yy ** 2) < 0.22
  rows = []
  for i in range(n):
    base = rng.uniform(60, 200, size=3)
    noise = rng.normal(0, 12, size=(size // 8, size // 8, 3))
    noise = np.kron(noise, np.ones((8, 8, 1)))
    img = np.clip((base + noise) * disc[..., None], 0, 255).astype(np.uint8)
    name = f"{i // 2}_{'left' if i % 2 == 0 else 'right'}"
    Image.fromarray(img).save(os.path.join(folder, "train", f"{name}.jpeg"), "JPEG", quality=90)
    rows.append(f"{name},{i % 5}")
  with open(os.path.join(folder, "trainLabels.csv"), "w") as f:
    f.write("image,level\n" + "\n".join(rows) + "\n")


def training_rate(size, batch, steps):
  """CBR-Small training images/s at `size` px, or None when the model factory is missing."""
  try:
    from transfusion_tf.models import build_model  # pylint: disable=import-outside-toplevel
  except ImportError:
    try:
      from transfusion_tf.models.zoo import build_model  # pylint: disable=import-outside-toplevel
    except ImportError:
      return None
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  model = build_model("cbr_small", 5, (size, size, 3), seed=0)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x = tf.random.normal([batch, size, size, 3])
  y = tf.zeros([batch], tf.int32)
  for _ in range(2):
    model.train_on_batch(x, y)
  t = time.perf_counter()
  for _ in range(steps):
    model.train_on_batch(x, y)
  return steps * batch / (time.perf_counter() - t)


def main(argv):
  del argv
  size, batch = FLAGS.image_size, FLAGS.batch_size
  print(f"image_size {size}, batch {batch}, {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f}", flush=True)
  rates = {}

  t = time.perf_counter()
  data = pipeline.build_data("synthetic_retina", size, batch, "cbr_small", num_train=FLAGS.num_synthetic,
                             num_val=batch, num_test=batch, cache_dir=FLAGS.cache_dir)
  print(f"synthetic data ready in {time.perf_counter() - t:.1f} s (cached after the first run)", flush=True)
  rates["synthetic cache (arrays), augmented"] = time_pipeline(data, FLAGS.batches)

  tmp = tempfile.mkdtemp(prefix="pipeline_bench_")
  try:
    t = time.perf_counter()
    write_jpegs(tmp, FLAGS.num_jpegs, FLAGS.jpeg_size)
    print(f"wrote {FLAGS.num_jpegs} JPEGs of {FLAGS.jpeg_size} px in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    data = pipeline.build_data("retina_csv", size, batch, "cbr_small", data_dir=tmp)
    print(f"retina_csv read and checked ({sum(data.num_examples.values())} files) in "
          f"{time.perf_counter() - t:.2f} s", flush=True)
    rates[f"JPEG folder ({FLAGS.jpeg_size} px files), augmented"] = time_pipeline(data, FLAGS.batches)
    data = pipeline.build_data("retina_csv", size, batch, "cbr_small", data_dir=tmp, augment=False)
    rates[f"JPEG folder ({FLAGS.jpeg_size} px files), no augmentation"] = time_pipeline(data, FLAGS.batches)
    train = data._sources["train"]  # pylint: disable=protected-access
    rec = records.FileRecords(paths=train.paths, labels=train.labels, patient_ids=np.array(train.paths, dtype=object))
    cache = os.path.join(tmp, "cache")
    t = time.perf_counter()
    records.check_image_files(rec, level="quick")
    quick = (time.perf_counter() - t) / len(rec)
    t = time.perf_counter()
    records.check_image_files(rec, level="full", cache_dir=cache)
    full = (time.perf_counter() - t) / len(rec)
    t = time.perf_counter()
    records.check_image_files(rec, level="full", cache_dir=cache)
    cached = (time.perf_counter() - t) / len(rec)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  train = training_rate(size, batch, FLAGS.train_steps) if FLAGS.train_steps else None
  source = "measured"
  if train is None:
    train, source = FLAGS.stated_training_rate, "stated figure (models.build_model unavailable)"
  print(f"\n{'pipeline':<48}{'img/s':>9}{'x training':>12}")
  for name, rate in rates.items():
    print(f"{name:<48}{rate:>9.1f}{rate / train:>11.1f}x")
  print(f"{'CBR-Small training consumption (' + source + ')':<48}{train:>9.1f}")
  print(f"\nimage checks per file: quick {quick * 1e6:.0f} us, full (PIL decode) {full * 1e3:.2f} ms, "
        f"full from the sidecar cache {cached * 1e6:.0f} us")
  worst = min(rates.values()) / train
  print(f"slowest pipeline / training = {worst:.1f}x ({'OK' if worst > 3 else 'below'} the 3x goal)")


if __name__ == "__main__":
  app.run(main)
