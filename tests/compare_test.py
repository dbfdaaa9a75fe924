"""Tests for analysis/compare.py and cli/compare.py (`transfusion-compare`): end to end on two tiny run directories."""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import warnings
import weakref
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import flagsaver

from transfusion_tf import models
from transfusion_tf.analysis import activations
from transfusion_tf.analysis import cca
from transfusion_tf.analysis import compare as compare_lib
from transfusion_tf.cli import compare
from transfusion_tf.errors import UsageError
from transfusion_tf.training import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


def make_run(run_dir, seed, cache_dir, model="cbr_tiny", image_size=SIZE):
  """A tiny run directory on the synthetic retina task: config, step0 weights and perturbed final weights."""
  kwargs = {"width_multiplier": 0.25}
  net = models.build_model(model, 5, (image_size, image_size, 3), seed=seed, **kwargs)
  rundir.save_config(run_dir, {
      "model": model, "num_outputs": 5, "image_size": image_size, "channels": 3, "model_kwargs": kwargs,
      "dataset": "synthetic_retina", "init": "random", "weights": None, "seed": seed, "preprocessing": "tf",
      "data_kwargs": {"num_train": 4, "num_val": 12, "num_test": 4, "cache_dir": cache_dir}})
  rundir.save_model_weights(net, run_dir, "step0")
  rng = np.random.default_rng(seed)
  for var in net.weights:
    if var.path.endswith("kernel"):
      w = var.numpy()
      var.assign(w + 0.3 * w.std() * rng.normal(size=w.shape).astype(w.dtype))
  rundir.save_model_weights(net, run_dir, "final")
  return run_dir


class CompareTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    warnings.simplefilter("ignore", cca.FewDatapointsWarning)
    self.tmp = self.create_tempdir().full_path
    cache = os.path.join(self.tmp, "cache")
    self.run_a = make_run(os.path.join(self.tmp, "a"), 0, cache)
    self.run_b = make_run(os.path.join(self.tmp, "b"), 1, cache)

  def test_compare_runs(self):
    out = compare_lib.compare_runs(self.run_a, self.run_b, stages=["conv1", "conv2", "pool"], num_images=10,
                                   batch_size=4, max_positions=6, min_datapoints_per_neuron=0)
    self.assertEqual(out["num_images"], 10)
    self.assertEqual(out["stages"], ["conv1", "conv2", "pool"])
    self.assertEqual(out["matrix"]["stages_a"], ["conv1", "conv2", "pool"])
    self.assertEqual(np.shape(out["matrix"]["svcca"]), (3, 3))
    self.assertEqual(out["per_stage"]["conv1"]["datapoints"], 60)
    self.assertEqual(out["per_stage"]["pool"]["mode"], "vector")
    # By default the minimum of 10 datapoints per neuron wins over max_positions: 8 positions x 10 images.
    dense = compare_lib.compare_runs(self.run_a, self.run_b, stages=["conv1"], num_images=10, batch_size=4,
                                     max_positions=6, stage_matrix=False)
    conv1 = dense["per_stage"]["conv1"]
    self.assertGreaterEqual(conv1["datapoints"], 10 * max(conv1["neurons"]))
    for r in out["per_stage"].values():
      for key in ("svcca", "pwcca", "cka"):
        self.assertBetween(r[key], 0.0, 1.0 + 1e-9)
    # A run against itself (final vs final) is identical; against its own init it is not.
    same = compare_lib.compare_runs(self.run_a, self.run_a, stages=["conv1"], num_images=6, batch_size=4,
                                    stage_matrix=False)
    self.assertAllClose(same["per_stage"]["conv1"]["svcca"], 1.0, atol=1e-6)
    self.assertNotIn("matrix", same)
    moved = compare_lib.compare_runs(self.run_a, self.run_a, which_a="step0", stages=["conv1"], num_images=6,
                                     batch_size=4, stage_matrix=False)
    self.assertLess(moved["per_stage"]["conv1"]["svcca"], 0.999)

  def test_streamed_images_give_the_held_numbers_and_are_never_all_held(self):
    # issue 24: the analyses read their images from the pipeline on every pass instead of holding them.
    config = rundir.load_config(self.run_a)
    held = list(compare_lib.eval_batches(config, 12, 2))
    streamed = compare_lib.ImageBatches(config, 12, 2)
    self.assertEqual((len(streamed), streamed.images), (6, 12))
    for got, want in zip(streamed, held):
      self.assertAllEqual(got, want)
    # The study's views: the leading images some stages need (cut at that count) and F4's strided subsets.
    self.assertEqual([b.shape[0] for b in streamed.head(5)], [2, 2, 1])
    self.assertEqual(streamed.head(5).images, 5)
    for i in range(4):
      view = streamed[i::4]
      self.assertLen(view, len(held[i::4]))
      self.assertEqual(view.images, sum(b.shape[0] for b in held[i::4]))
      for got, want in zip(view, held[i::4]):
        self.assertAllEqual(got, want)

    alive, peak, passes = [], [0], [0]
    real = compare_lib._leading_batches  # pylint: disable=protected-access

    def counted(*args):
      passes[0] += 1
      for images in real(*args):
        alive.append(weakref.ref(images))
        peak[0] = max(peak[0], sum(int(r().shape[0]) for r in alive if r() is not None))
        yield images

    model_a, _ = rundir.load_run_model(self.run_a, "final")
    model_b, _ = rundir.load_run_model(self.run_b, "final")
    stages = ["conv1", "conv2", "pool"]
    # The default minimum of datapoints per neuron needs the image count: known, so no pass just to count.
    want = activations.compare_models(model_a, model_b, stages, held, max_positions=2)
    with mock.patch.object(compare_lib, "_leading_batches", counted):
      got = activations.compare_models(model_a, model_b, stages, compare_lib.ImageBatches(config, 12, 2),
                                       max_positions=2)
    self.assertEqual(passes[0], 1)
    self.assertLessEqual(peak[0], 4)  # The batch being compared and the one before it, of 12 images.
    for s in stages:  # Bit for bit: the same images, batches and order reach the same accumulators.
      for key in ("svcca", "pwcca", "cka", "cca", "datapoints", "images", "baseline"):
        self.assertEqual(got[s][key], want[s][key], (s, key))

  def test_usage_errors(self):
    with self.assertRaisesRegex(UsageError, "is not a stage"):
      compare_lib.compare_runs(self.run_a, self.run_b, stages=["block3"], num_images=4)
    other = make_run(os.path.join(self.tmp, "small"), 2, None, model="cbr_small")
    with self.assertRaisesRegex(UsageError, "mismatched architectures"):
      compare_lib.compare_runs(self.run_a, other, num_images=4)
    bigger = make_run(os.path.join(self.tmp, "big"), 3, None, image_size=48)
    with self.assertRaisesRegex(UsageError, "image_size"):
      compare_lib.compare_runs(self.run_a, bigger, num_images=4)
    not_a_run = self.create_tempdir().full_path
    with self.assertRaisesRegex(UsageError, "not a run directory"):
      compare_lib.compare_runs(self.run_a, not_a_run, num_images=4)

  def test_missing_run_dir_exits_2_with_one_line(self):
    missing = os.path.join(self.tmp, "nope")
    err = io.StringIO()
    with flagsaver.flagsaver(run_a=self.run_a, run_b=missing, compare_out=os.path.join(self.tmp, "x.json")):
      with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as cm:
        compare.main(["compare"])
    self.assertEqual(cm.exception.code, 2)
    lines = err.getvalue().strip().splitlines()
    self.assertLen(lines, 1)
    self.assertStartsWith(lines[0], "error: --run_b=")
    self.assertIn("does not exist", lines[0])

  def test_script_end_to_end(self):
    out = os.path.join(self.tmp, "cmp", "a_vs_b.json")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    args = [sys.executable, os.path.join(ROOT, "scripts", "compare.py"), f"--run_a={self.run_a}",
            f"--run_b={self.run_b}", "--which_b=step0", "--stages=conv1,conv3", "--num_images=8",
            "--compare_batch_size=4", "--max_positions=4", f"--compare_out={out}"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(proc.returncode, 0, msg=proc.stderr[-3000:])
    with open(out) as f:
      result = json.load(f)
    self.assertEqual(result["which_b"], "step0")
    self.assertEqual(list(result["per_stage"]), ["conv1", "conv3"])
    self.assertEqual(result["matrix"]["mode"], [["positions", "avgpool"], ["avgpool", "positions"]])
    for r in result["per_stage"].values():
      self.assertEqual(r["images"], 8)
      for key in ("svcca", "pwcca", "cka", "datapoints", "neurons", "mode"):
        self.assertIn(key, r)
    self.assertTrue(os.path.getsize(os.path.join(self.tmp, "cmp", "a_vs_b.png")) > 1000)
    self.assertIn("conv1", proc.stdout)

    # A missing run directory: exit status 2 and one error line on stderr, no traceback. (TensorFlow's C++
    # start-up lines, which no Python code controls, may precede it.)
    bad = subprocess.run(args[:2] + [f"--run_a={self.run_a}", f"--run_b={self.tmp}/missing", f"--compare_out={out}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(bad.returncode, 2)
    ours = [l for l in bad.stderr.splitlines() if not re.match(r"^(WARNING: All log messages|[IWE]\d{4} )", l)]
    self.assertLen(ours, 1, msg=bad.stderr)
    self.assertStartsWith(ours[0], "error: --run_b=")
    self.assertNotIn("Traceback", bad.stderr)


if __name__ == "__main__":
  tf.test.main()
