"""Tests for benchmarks/real_photos_folder.py, run as a user runs it (a subprocess) on a stand-in for scikit-learn's
load_digits, so the suite needs no scikit-learn: the labels of 'all' and of a digit pair, the PNGs' pixels, and the
one-line errors. About 90 s on a busy 2-core CPU (five TensorFlow imports)."""
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "real_photos_folder.py")

# 12 images: digit i % 10, image i has ink count (i % 17) in its top-left pixel and 16 in its bottom-right.
FAKE_SKLEARN = '''
import types
import numpy as np
def load_digits():
  images = np.zeros((12, 8, 8))
  for i in range(12):
    images[i, 0, 0] = i % 17
    images[i, 7, 7] = 16
  return types.SimpleNamespace(images=images, target=np.arange(12) % 10)
'''


def _run(tmp, *args):
  fake = os.path.join(tmp, "fake")
  os.makedirs(os.path.join(fake, "sklearn"), exist_ok=True)
  open(os.path.join(fake, "sklearn", "__init__.py"), "w").close()
  with open(os.path.join(fake, "sklearn", "datasets.py"), "w") as f:
    f.write(FAKE_SKLEARN)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([fake, ROOT]))
  return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=300)


class RealPhotosFolderTest(tf.test.TestCase):

  def test_pair_and_all(self):
    tmp = self.create_tempdir().full_path
    out = os.path.join(tmp, "pair")
    done = _run(tmp, f"--out={out}", "--digits=1,0", "--size=16")
    self.assertEqual(done.returncode, 0, done.stderr)
    with open(os.path.join(out, "labels.csv"), encoding="utf-8") as f:
      rows = f.read().splitlines()
    # Images 0, 1, 10, 11 are digits 0, 1, 0, 1; digit 1 is label 0 (listed first); each image its own patient.
    self.assertEqual(rows, ["path,label,patient_id", "images/0000.png,1,d0", "images/0001.png,0,d1",
                            "images/0010.png,1,d10", "images/0011.png,0,d11"])
    png = tf.io.decode_png(tf.io.read_file(os.path.join(out, "images/0010.png"))).numpy()
    self.assertEqual(png.shape, (16, 16, 1))
    self.assertAllEqual(png[:2, :2, 0], np.full((2, 2), round(10 * 255 / 16)))  # Ink 10 of 16, replicated 2x2.
    self.assertAllEqual(png[14:, 14:, 0], np.full((2, 2), 255))
    self.assertEqual(int(png[4, 4, 0]), 0)
    out_all = os.path.join(tmp, "all")
    self.assertEqual(_run(tmp, f"--out={out_all}").returncode, 0)
    with open(os.path.join(out_all, "labels.csv"), encoding="utf-8") as f:
      labels = [int(r.split(",")[1]) for r in f.read().splitlines()[1:]]
    self.assertEqual(labels, [i % 10 for i in range(12)])
    self.assertLen(os.listdir(os.path.join(out_all, "images")), 12)

  def test_bad_flags_stop_with_one_error_line(self):
    tmp = self.create_tempdir().full_path
    for args, flag in ((["--digits=3,3"], "--digits="), (["--digits=3,12"], "--digits="), (["--size=12"], "--size=")):
      done = _run(tmp, f"--out={os.path.join(tmp, 'x')}", *args)
      self.assertEqual(done.returncode, 2, args)
      self.assertStartsWith(done.stderr.strip().splitlines()[-1], f"error: {flag}")
      self.assertFalse(os.path.exists(os.path.join(tmp, "x")))
