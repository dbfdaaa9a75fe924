"""Tests for analysis/activations.py: one forward pass per batch, shared images and positions, TF moments."""
import warnings

import numpy as np
import tensorflow as tf

from transfusion_tf import models
from transfusion_tf.analysis import activations, cca
from transfusion_tf.errors import UsageError

SIZE = 32


def _batches(num=3, batch=4, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(batch, SIZE, SIZE, 3)).astype(np.float32) for _ in range(num)]


class _CountingSubmodel:
  """Wraps a stage submodel and logs every call's input (run with tf.config.run_functions_eagerly)."""

  def __init__(self, sub, log):
    self.sub, self.log = sub, log

  def __call__(self, x, training=False):
    self.log.append(np.array(x))
    return self.sub(x, training=training)


class ActivationsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    half = {"width_multiplier": 0.5}  # CBR-Tiny at 16-32-64-128 channels: quick CCA.
    cls.a = models.build_model("cbr_tiny", 3, (SIZE, SIZE, 3), seed=0, **half)
    cls.b = models.build_model("cbr_tiny", 3, (SIZE, SIZE, 3), seed=1, **half)
    cls.a_twin = models.build_model("cbr_tiny", 3, (SIZE, SIZE, 3), seed=0, **half)  # Same weights, new object.

  def setUp(self):
    super().setUp()
    warnings.simplefilter("ignore", cca.FewDatapointsWarning)

  def test_batch_moments_equal_numpy(self):
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(40, 6)).astype(np.float32)
    y = rng.normal(-1.0, 0.5, size=(40, 4)).astype(np.float32)
    n, sx, sy, xtx, yty, xty = (np.asarray(v) for v in activations.batch_moments(x, y))
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    self.assertEqual(n, 40)
    self.assertAllClose(sx, x64.sum(0))
    self.assertAllClose(sy, y64.sum(0))
    self.assertAllClose(xtx, x64.T @ x64)
    self.assertAllClose(yty, y64.T @ y64)
    self.assertAllClose(xty, x64.T @ y64)

  def test_streamed_covariances_equal_numpy(self):
    batches = _batches()
    stages = ["conv2", "pool"]
    pairs = [("conv2", "conv2"), ("pool", "pool"), ("conv2", "pool")]
    res = activations.compare_pairs(self.a, self.b, pairs, batches, conv_mode="positions", max_positions=0,
                                    return_accumulators=True)
    sub_a = activations.stage_submodel(self.a, stages)
    sub_b = activations.stage_submodel(self.b, stages)
    acts_a = [np.asarray(t) for t in sub_a(np.concatenate(batches), training=False)]
    acts_b = [np.asarray(t) for t in sub_b(np.concatenate(batches), training=False)]
    flat = lambda t: t.reshape(-1, t.shape[-1]).astype(np.float64)  # noqa: E731  (all positions, image-major)
    pooled = lambda t: t.mean(axis=(1, 2)).astype(np.float64)  # noqa: E731
    expected = [(flat(acts_a[0]), flat(acts_b[0])), (acts_a[1].astype(np.float64), acts_b[1].astype(np.float64)),
                (pooled(acts_a[0]), acts_b[1].astype(np.float64))]
    for r, (x, y) in zip(res, expected):
      cxx, cyy, cxy = r["accumulator"].covariances
      full = np.cov(np.concatenate([x, y], axis=1), rowvar=False)
      p = x.shape[1]
      self.assertEqual(r["datapoints"], x.shape[0])
      self.assertAllClose(cxx, full[:p, :p], rtol=1e-4, atol=1e-6)
      self.assertAllClose(cyy, full[p:, p:], rtol=1e-4, atol=1e-6)
      self.assertAllClose(cxy, full[:p, p:], rtol=1e-4, atol=1e-6)
      self.assertAllClose(r["svcca"], cca.svcca(x, y).mean, atol=1e-6)
      self.assertAllClose(r["cka"], cca.linear_cka(x, y), atol=1e-6)
    self.assertEqual([r["mode"] for r in res], ["positions", "vector", "avgpool"])

  def test_one_forward_pass_per_batch_and_same_images_in_same_order(self):
    batches = _batches(num=3)
    logs = []
    original = activations.stage_submodel

    def counting(model, stages):
      logs.append([])
      return _CountingSubmodel(original(model, stages), logs[-1])

    activations.stage_submodel = counting
    tf.config.run_functions_eagerly(True)
    try:
      res = activations.compare_models(self.a, self.b, ["conv1", "conv3", "pool"], batches, max_positions=4)
      self.assertLen(logs, 2)  # One submodel per model, for all stages.
      for log in logs:
        self.assertLen(log, len(batches))  # One forward pass per batch, not one per stage.
        for seen, batch in zip(log, batches):
          self.assertAllEqual(seen, batch)
      self.assertEqual(set(res), {"conv1", "conv3", "pool"})
      # A model against itself (any stages): one submodel, one forward pass per batch serves both sides.
      del logs[:]
      activations.similarity_matrix(self.a, self.a, ["conv1"], ["conv2", "pool"], batches)
      self.assertLen(logs, 1)
      self.assertLen(logs[0], len(batches))
    finally:
      tf.config.run_functions_eagerly(False)
      activations.stage_submodel = original

  def test_identical_models_give_one_in_both_modes(self):
    batches = _batches()
    for mode in ("positions", "avgpool"):
      res = activations.compare_models(self.a, self.a_twin, ["conv1", "conv2", "pool"], batches, conv_mode=mode,
                                       max_positions=5, seed=3)
      for stage, r in res.items():
        for metric in ("svcca", "pwcca", "cka"):
          self.assertAllClose(r[metric], 1.0, atol=1e-6, msg=f"{mode} {stage} {metric}")

  def test_positions_are_shared_and_seeded(self):
    p1 = activations.sample_positions(4, 16, 16, 5, seed=0, batch_index=0)
    self.assertAllEqual(p1, activations.sample_positions(4, 16, 16, 5, seed=0, batch_index=0))
    self.assertNotAllEqual(p1, activations.sample_positions(4, 16, 16, 5, seed=1, batch_index=0))
    self.assertNotAllEqual(p1, activations.sample_positions(4, 16, 16, 5, seed=0, batch_index=1))
    self.assertLen(p1, 20)
    for i in range(4):  # Per image: 5 distinct positions inside that image.
      own = p1[i * 5:(i + 1) * 5]
      self.assertLen(set(own.tolist()), 5)
      self.assertTrue(np.all((own >= i * 256) & (own < (i + 1) * 256)))
    self.assertAllEqual(activations.sample_positions(2, 3, 3, 0, 0, 0), np.arange(18))
    # Rows of the twin are read at the same positions: the sampled rows are equal, not just similar.
    rows_a = activations.stage_activations(self.a, ["conv1"], _batches(), max_positions=5, seed=7)
    rows_b = activations.stage_activations(self.a_twin, ["conv1"], _batches(), max_positions=5, seed=7)
    self.assertAllClose(rows_a["conv1"]["rows"], rows_b["conv1"]["rows"])

  def test_modes_datapoints_and_neurons_recorded(self):
    batches = _batches(num=2, batch=4)
    pos = activations.compare_models(self.a, self.b, ["conv1", "conv4", "pool"], batches, max_positions=10,
                                     min_datapoints_per_neuron=0)
    self.assertEqual(pos["conv1"]["mode"], "positions")
    self.assertEqual(pos["conv1"]["datapoints"], 8 * 10)
    self.assertEqual(pos["conv1"]["positions_per_image"], 10)
    self.assertEqual(pos["conv1"]["neurons"], [16, 16])
    self.assertEqual(pos["conv4"]["grid"], [[2, 2], [2, 2]])
    self.assertEqual(pos["conv4"]["datapoints"], 8 * 4)  # Capped by the 2x2 grid.
    self.assertEqual(pos["pool"]["mode"], "vector")
    self.assertEqual(pos["pool"]["datapoints"], 8)
    avg = activations.compare_models(self.a, self.b, ["conv1"], batches, conv_mode="avgpool")
    self.assertEqual(avg["conv1"]["mode"], "avgpool")
    self.assertEqual(avg["conv1"]["requested_mode"], "avgpool")
    self.assertEqual(avg["conv1"]["datapoints"], 8)
    self.assertIsNone(avg["conv1"]["positions_per_image"])
    for r in list(pos.values()) + list(avg.values()):
      for key in ("svcca", "pwcca", "cka", "cca", "baseline", "datapoints", "neurons", "mode", "few_datapoints",
                  "below_min", "datapoints_per_neuron", "svcca_dims", "fallback"):
        self.assertIn(key, r)

  def test_different_spatial_sizes_fall_back_to_avgpool(self):
    (r,) = activations.compare_pairs(self.a, self.b, [("conv1", "conv2")], _batches(num=1), max_positions=4)
    self.assertEqual(r["mode"], "avgpool")
    self.assertEqual(r["requested_mode"], "positions")
    self.assertIn("spatial sizes differ", r["fallback"])
    self.assertEqual(r["datapoints"], 4)
    matrix = activations.similarity_matrix(self.a, self.b, ["conv1", "conv2"], ["conv1", "conv2"],
                                           _batches(num=1), max_positions=4)
    self.assertEqual(matrix["mode"], [["positions", "avgpool"], ["avgpool", "positions"]])
    self.assertEqual(np.shape(matrix["svcca"]), (2, 2))

  def test_few_datapoints_are_recorded_not_warned(self):
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # Any FewDatapointsWarning would fail here.
      res = activations.compare_models(self.a, self.b, ["conv1", "conv4"], _batches(num=1), max_positions=1,
                                       min_datapoints_per_neuron=0)
    r = res["conv4"]  # 4 images x 1 position for 128 neurons.
    self.assertEqual((r["datapoints"], r["positions_per_image"]), (4, 1))
    self.assertAllClose(r["datapoints_per_neuron"], 4 / 128)
    self.assertTrue(r["few_datapoints"])
    self.assertFalse(r["below_min"])  # No minimum was asked for.
    line = activations.few_datapoints_line([res, res], what="F2 comparisons")
    self.assertIn("4 of 4 F2 comparisons", line)
    self.assertIn("conv4 0.0", line)
    self.assertIn("conv1 0.2", line)  # 4 datapoints for 16 neurons.
    self.assertIsNone(activations.few_datapoints_line([r for r in res.values() if r["stage_a"] == "pool"]))
    # Results nested in a figure's data, keyed by stage and without stage names, are found too.
    lite = {"pairs": [{"stages": ["conv4"], "per_stage": {"conv4": {k: r[k] for k in ("few_datapoints", "below_min",
                                                                                      "datapoints_per_neuron")}}}]}
    self.assertIn("1 of 1 F3 runs have fewer than 10 datapoints per neuron", activations.few_datapoints_line(
        lite, what="F3 runs"))
    self.assertIn("conv4 0.0", activations.few_datapoints_line(lite))
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      with self.assertRaises(cca.FewDatapointsWarning):  # A direct call still warns.
        rng = np.random.default_rng(0)
        cca.svcca(rng.normal(size=(10, 2)), rng.normal(size=(10, 3)))  # 10 datapoints for 3 neurons.

  def test_min_datapoints_per_neuron_raises_positions(self):
    batches = _batches(num=2, batch=4)  # 8 images.
    res = activations.compare_models(self.a, self.b, ["conv1", "conv2", "conv4", "pool"], batches, max_positions=10)
    # conv1: 16 neurons need 160 datapoints, 20 positions per image; conv2: 32 neurons, 40 per image.
    self.assertEqual((res["conv1"]["positions_per_image"], res["conv1"]["datapoints"]), (20, 160))
    self.assertEqual((res["conv2"]["positions_per_image"], res["conv2"]["datapoints"]), (40, 320))
    for s in ("conv1", "conv2"):
      self.assertFalse(res[s]["below_min"])
      self.assertAllClose(res[s]["datapoints_per_neuron"], 10.0)
    # conv4: every position of a 2x2 grid is not enough for 128 neurons: computed anyway, and marked.
    self.assertEqual((res["conv4"]["positions_per_image"], res["conv4"]["datapoints"]), (4, 32))
    self.assertTrue(res["conv4"]["below_min"])
    self.assertTrue(res["pool"]["below_min"])  # One datapoint per image.
    self.assertIsNotNone(res["conv4"]["svcca"])
    # A one-shot iterator is counted and still compared on every image; the cap is kept where it is enough.
    it = activations.compare_models(self.a, self.b, ["conv1"], iter(batches), max_positions=30)
    self.assertEqual((it["conv1"]["positions_per_image"], it["conv1"]["images"]), (30, 8))
    with self.assertRaisesRegex(UsageError, "min_datapoints_per_neuron"):
      activations.compare_models(self.a, self.b, ["conv1"], batches, min_datapoints_per_neuron=-1)

  def test_groups_share_one_step_and_equal_separate_comparisons(self):
    groups = [_batches(num=2, seed=1), _batches(num=3, seed=2), _batches(num=1, batch=3, seed=3)]
    stages = ["conv1", "conv2", "conv4"]
    together = activations.compare_models_on_groups(self.a, self.b, stages, groups, max_positions=10)
    self.assertLen(together, 3)
    for group, got in zip(groups, together):  # Moments zeroed between groups: each as if compared alone.
      alone = activations.compare_models(self.a, self.b, stages, group, max_positions=10)
      for s in stages:
        for key in ("datapoints", "images", "positions_per_image", "below_min"):
          self.assertEqual(got[s][key], alone[s][key], (s, key))
        for key in ("svcca", "pwcca", "cka", "cca"):
          self.assertAllClose(got[s][key], alone[s][key], atol=1e-9, msg=(s, key))
          self.assertAllClose(got[s]["baseline"][key], alone[s]["baseline"][key], atol=1e-9, msg=(s, key))
    self.assertNotAllClose(together[0]["conv2"]["svcca"], together[1]["conv2"]["svcca"])

  def test_permutation_baseline(self):
    # Twin models at every position of conv1 (16 neurons, 12 x 256 datapoints): similarity 1, baseline near 0.
    res = activations.compare_models(self.a, self.a_twin, ["conv1"], _batches(), max_positions=0)
    r = res["conv1"]
    self.assertEqual(set(r["baseline"]), {"svcca", "pwcca", "cca", "cka"})
    for metric in ("svcca", "pwcca", "cca", "cka"):
      self.assertAllClose(r[metric], 1.0, atol=1e-6)
      self.assertLess(r["baseline"][metric], 0.5, msg=metric)
    # The baseline shares the self-moments; only the cross-moment differs.
    (r,) = activations.compare_pairs(self.a, self.b, [("conv2", "conv2")], _batches(), return_accumulators=True)
    data, base = r["accumulator"].covariances, r["baseline_accumulator"].covariances
    self.assertAllClose(data[0], base[0])
    self.assertAllClose(data[1], base[1])
    self.assertGreater(np.abs(data[2] - base[2]).max(), 1e-3 * np.abs(data[2]).max())
    self.assertLess(r["baseline"]["cka"], r["cka"])

  def test_usage_errors(self):
    with self.assertRaisesRegex(UsageError, "does not exist"):
      activations.compare_models(self.a, self.b, ["block9"], _batches(num=1))
    with self.assertRaisesRegex(UsageError, "conv_mode"):
      activations.compare_models(self.a, self.b, ["conv1"], _batches(num=1), conv_mode="flatten")
    small = models.build_model("cbr_tiny", 3, (16, 16, 3))
    with self.assertRaisesRegex(UsageError, "different inputs"):
      activations.compare_models(self.a, small, ["conv1"], _batches(num=1))
    with self.assertRaisesRegex(UsageError, "empty"):
      activations.compare_models(self.a, self.b, ["conv1"], [])

  def test_accepts_tuples_tf_data_and_reiterables(self):
    images = np.concatenate(_batches(num=2))
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(3)
    res = activations.compare_models(self.a, self.b, ["pool"], ds)
    self.assertEqual(res["pool"]["images"], len(images))
    once = activations.reiterable(iter(_batches(num=2)))
    self.assertLen(list(once), 2)
    self.assertLen(list(once), 2)


if __name__ == "__main__":
  tf.test.main()
