"""Tests for analysis/representation.py: F2-F5 from tiny real run directories, PNG + JSON out."""
import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from transfusion_tf import models
from transfusion_tf.analysis import cca, representation
from transfusion_tf.errors import UsageError
from transfusion_tf.training import rundir

SIZE = 32


def make_run(run_dir, seed, init="random", move=0.3, model="cbr_tiny", channels=3):
  """A run directory as the trainer leaves it: config, step0 weights, and 'trained' final weights (step0 plus
  seeded noise of `move` times each kernel's spread)."""
  kwargs = {"width_multiplier": 0.25}  # CBR-Tiny at 8-16-32-64 channels: quick CCA.
  net = models.build_model(model, 2, (SIZE, SIZE, channels), seed=seed, **kwargs)
  rundir.save_config(run_dir, {"model": model, "num_outputs": 2, "image_size": SIZE, "channels": channels,
                               "model_kwargs": kwargs, "dataset": "synthetic_retina", "data_kwargs": {}, "init": init,
                               "weights": None, "seed": seed, "preprocessing": "tf"})
  rundir.save_model_weights(net, run_dir, "step0")
  rng = np.random.default_rng(seed + 100)
  for var in net.weights:
    if var.path.endswith("kernel"):
      w = var.numpy()
      var.assign(w + move * w.std() * rng.normal(size=w.shape).astype(w.dtype))
  rundir.save_model_weights(net, run_dir, "final")
  return run_dir


def _read(path):
  with open(path) as f:
    return json.load(f)


class RepresentationTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix="representation_test_")
    cls.rnd = [make_run(os.path.join(cls.root, f"rnd{i}"), i, "random", move=0.2 + 0.3 * i) for i in range(2)]
    cls.pre = [make_run(os.path.join(cls.root, f"pre{i}"), 10 + i, "pretrained", move=0.05) for i in range(2)]
    rng = np.random.default_rng(0)
    cls.batches = [rng.normal(size=(5, SIZE, SIZE, 3)).astype(np.float32) for _ in range(2)]

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    warnings.simplefilter("ignore", cca.FewDatapointsWarning)
    self.out = self.create_tempdir().full_path

  def test_top_two_stages(self):
    self.assertEqual(representation.top_two_stages("resnet50"), ("block3", "block4"))
    self.assertEqual(representation.top_two_stages("inceptionv3"), ("mixed9", "mixed10"))
    self.assertEqual(representation.top_two_stages("cbr_small"), ("conv3", "conv4"))
    self.assertEqual(representation.top_two_stages("cbr_larget"), ("conv4", "conv5"))
    self.assertEqual(representation.top_two_stages(models.build_model("cbr_larget", 2, (SIZE, SIZE, 3))),
                     ("conv4", "conv5"))
    with self.assertRaises(UsageError):
      representation.top_two_stages("vgg16")

  def test_f2(self):
    pairs = [(self.pre[0], self.rnd[0], "pretrained_vs_random"), (self.pre[1], self.rnd[1], "pretrained_vs_random"),
             (self.rnd[0], self.rnd[1], "random_vs_random")]
    data = representation.f2_similarities(pairs, iter(self.batches), max_positions=8)
    self.assertLen(data["pairs"], 3)
    self.assertEqual(data["pairs"][0]["stages"], ["conv3", "conv4"])
    for p in data["pairs"]:
      self.assertBetween(p["similarity"], 0.0, 1.0)
      self.assertAllClose(p["similarity"], np.mean([p["per_stage"][s]["svcca"] for s in p["stages"]]))
    out = representation.figure_f2(data, os.path.join(self.out, "f2"))
    self.assertTrue(os.path.getsize(os.path.join(self.out, "f2.png")) > 1000)
    saved = _read(os.path.join(self.out, "f2.json"))
    self.assertEqual(saved["figure"], "F2")
    self.assertEqual(saved["kinds"], ["pretrained_vs_random", "random_vs_random"])
    self.assertEqual(saved["summary"]["cbr_tiny"]["pretrained_vs_random"]["n"], 2)
    self.assertEqual(saved["summary"]["cbr_tiny"]["random_vs_random"]["n"], 1)
    self.assertEqual(saved["summary"]["cbr_tiny"]["random_vs_random"]["std"], 0.0)
    self.assertEqual(out["summary"], saved["summary"])
    self.assertFalse([f for f in os.listdir(self.out) if ".tmp" in f])  # Atomic writes leave no temp files.

  def test_f2_rejects_mixed_architectures(self):
    other = make_run(os.path.join(self.out, "small"), 5, model="cbr_small")
    with self.assertRaisesRegex(UsageError, "one architecture"):
      representation.f2_similarities([(self.rnd[0], other, "random_vs_random")], self.batches)

  def test_f3(self):
    data = representation.f3_similarities(self.rnd + self.pre, self.batches, max_positions=8)
    self.assertEqual([r["kind"] for r in data["runs"]], ["random", "random", "pretrained", "pretrained"])
    self.assertEqual(data["runs"][0]["stages"], ["conv1", "conv2", "conv3", "conv4"])
    # The pretrained runs moved least (noise 0.05 against 0.2 and 0.5), so they stay closest to their init.
    for s in ("conv1", "conv2"):
      self.assertGreater(data["runs"][2]["similarity"][s], data["runs"][1]["similarity"][s])
    out = representation.figure_f3(data, os.path.join(self.out, "f3"))
    saved = _read(out["json"])
    self.assertTrue(os.path.exists(out["png"]))
    m = saved["models"]["cbr_tiny"]
    self.assertEqual(m["stages"], ["conv1", "conv2", "conv3", "conv4"])
    self.assertEqual(set(m["kinds"]), {"pretrained", "random"})
    self.assertLen(m["difference"], 4)
    self.assertAllClose(m["difference"],
                        np.array(m["kinds"]["pretrained"]["mean"]) - np.array(m["kinds"]["random"]["mean"]))

  def test_slots_reuse_models_and_steps_with_the_same_numbers(self):
    from transfusion_tf.analysis import activations  # pylint: disable=import-outside-toplevel
    slots = representation.ModelSlots()
    fresh, reused = [], []
    for run in self.rnd + self.pre:
      init, final = rundir.load_run_model(run, "step0")[0], rundir.load_run_model(run, "final")[0]
      fresh.append(activations.compare_models(init, final, ["conv1", "conv4"], self.batches, max_positions=8))
      a, _ = slots.load(run, "step0", 1)
      b, _ = slots.load(run, "final", 0)
      reused.append(activations.compare_models(a, b, ["conv1", "conv4"], self.batches, max_positions=8,
                                               streams=slots.streams))
    self.assertEqual([[r[s]["svcca"] for s in r] for r in fresh], [[r[s]["svcca"] for s in r] for r in reused])
    self.assertLen(slots.models, 2)  # One model per slot for the four runs ...
    self.assertLen(slots.streams, 1)  # ... and one traced stream.
    self.assertIs(slots.load(self.pre[1], "final", 0)[0], b)  # Held already: not loaded again.
    # A weight file without one of the model's layers is refused, as a fresh build refuses it: never half-loaded.
    partial = self.create_tempdir().full_path
    shutil.copytree(self.rnd[0], partial, dirs_exist_ok=True)
    import h5py  # pylint: disable=import-outside-toplevel
    with h5py.File(rundir.weights_path(partial, "final"), "a") as f:
      f.attrs["layer_names"] = f.attrs["layer_names"][:-1]
    with self.assertRaisesRegex(UsageError, "does not fit"):
      rundir.load_run_model(partial, "final")
    with self.assertRaisesRegex(UsageError, "does not fit"):
      slots.load(partial, "final", 0)

  def test_f4(self):
    pairs = [(self.rnd[0], self.rnd[1]), (self.rnd[0], self.pre[0]), (self.rnd[1], self.pre[1]),
             (self.pre[0], self.pre[1])]
    data = representation.f4_points(pairs, self.batches, stage="conv1", max_positions=16)
    self.assertLen(data["points"], 4)
    for p in data["points"]:
      self.assertBetween(p["x"], 0.0, 1.0)
      self.assertBetween(p["y"], 0.0, 1.0)
    out = representation.figure_f4(data, os.path.join(self.out, "f4"))
    saved = _read(out["json"])
    fit = saved["models"]["cbr_tiny"]
    self.assertEqual(fit["n"], 4)
    self.assertBetween(fit["r2"], 0.0, 1.0)
    xs = [p["x"] for p in data["points"]]
    ys = [p["y"] for p in data["points"]]
    self.assertAllClose(fit["r2"], np.corrcoef(xs, ys)[0, 1] ** 2)
    self.assertTrue(os.path.exists(out["png"]))

  def test_fit_r2(self):
    x = np.linspace(0.1, 0.9, 7)
    fit = representation.fit_r2(x, 2 * x + 1)
    self.assertAllClose(fit["r2"], 1.0)
    self.assertAllClose(fit["slope"], 2.0)
    self.assertIsNone(representation.fit_r2([0.5, 0.5], [0.1, 0.2])["r2"])
    self.assertIsNone(representation.fit_r2([0.5], [0.1])["r2"])

  def test_f5(self):
    entries = representation.f5_filters([self.rnd[1], (self.pre[0], "pretrained")])
    self.assertEqual(entries[0]["before"].shape, (5, 5, 3, 8))
    out = representation.figure_f5(entries, os.path.join(self.out, "f5"))
    saved = _read(out["json"])
    self.assertEqual([p["kind"] for p in saved["panels"]], ["random", "pretrained"])
    random_move, pretrained_move = (p["mean_relative_l2_change"] for p in saved["panels"])
    self.assertGreater(random_move, pretrained_move)
    self.assertAllClose(pretrained_move, 0.05, rtol=0.5)
    for p in saved["panels"]:
      self.assertLen(p["per_filter"], 8)
      self.assertEqual(p["shape"], [5, 5, 3, 8])
      self.assertAllClose(p["orientation_selectivity_after"],
                          representation.orientation_selectivity(entries[saved["panels"].index(p)]["after"]).mean())
      self.assertLess(p["selectivity_references"]["random"], p["selectivity_references"]["gabor"])
    self.assertTrue(os.path.getsize(out["png"]) > 1000)

  def test_orientation_selectivity(self):
    k = 7
    y, x = np.mgrid[0:k, 0:k] - 3.0
    grating = np.cos(2 * np.pi * 0.2 * (x * np.cos(0.6) + y * np.sin(0.6)))
    blob = np.exp(-(x**2 + y**2) / 4.0)
    colour = np.ones((k, k))  # The same in every pixel: a colour-only filter has no spatial structure.
    kernel = np.stack([np.repeat(f[:, :, None], 3, axis=2) for f in (grating, blob, colour)], axis=-1)
    sel = representation.orientation_selectivity(kernel)
    self.assertEqual(sel.shape, (3,))
    self.assertGreater(sel[0], 0.65)  # Below 1: a 7x7 window spreads the spectrum over neighbouring angles.
    self.assertLess(sel[1], 0.05)
    self.assertAllClose(sel[2], 0.0)
    refs = representation.selectivity_references((7, 7, 3, 64))
    self.assertLess(refs["random"], 0.25)
    self.assertGreater(refs["gabor"], 0.6)
    rng = np.random.default_rng(0)
    rotated = representation.orientation_selectivity(np.rot90(kernel, axes=(0, 1)))
    self.assertAllClose(rotated, sel, atol=1e-3)  # Rotation changes the angle, not how oriented a filter is.
    self.assertLess(representation.orientation_selectivity(rng.normal(size=(7, 7, 3, 256))).mean(), 0.25)
    with self.assertRaisesRegex(ValueError, "kernel"):
      representation.orientation_selectivity(np.zeros((7, 7, 3)))

  def test_filter_grid(self):
    rng = np.random.default_rng(0)
    rgb = representation.filter_grid(rng.normal(size=(3, 3, 3, 5)))
    self.assertEqual(rgb.shape, (2 * 4 + 1, 3 * 4 + 1, 3))  # 5 filters: 3 columns, 2 rows.
    gray = representation.filter_grid(rng.normal(size=(3, 3, 1, 4)))
    self.assertEqual(gray.ndim, 2)
    self.assertAllInRange(rgb, 0.0, 1.0)
    # Each filter is normalised on its own: every tile reaches both 0 and 1.
    tile = gray[1:4, 1:4]
    self.assertAllClose([tile.min(), tile.max()], [0.0, 1.0])
    k = rng.normal(size=(3, 3, 3, 1))
    self.assertAllClose(representation.filter_grid(k, channel_order="bgr")[1:4, 1:4, ::-1],
                        representation.filter_grid(k)[1:4, 1:4])

  def test_figure_compare(self):
    result = {"per_stage": {"conv1": {"svcca": 0.5, "pwcca": 0.6, "cka": 0.7},
                            "conv2": {"svcca": 0.4, "pwcca": None, "cka": 0.2}},
              "matrix": {"stages_a": ["conv1", "conv2"], "stages_b": ["conv1", "conv2"],
                         "svcca": [[0.5, 0.3], [None, 0.4]],
                         "cells": [{"fallback": None}, {"fallback": "x"}, {}, {"few_datapoints": True}]}}
    path = representation.figure_compare(result, os.path.join(self.out, "sub", "cmp.png"))
    self.assertTrue(os.path.getsize(path) > 1000)


if __name__ == "__main__":
  tf.test.main()
