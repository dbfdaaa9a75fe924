"""Tests for transfusion_tf.models.init: each scheme does what it claims, not only runs."""
import os

import numpy as np
import tensorflow as tf

from transfusion_tf import models
from transfusion_tf.errors import UsageError
from transfusion_tf.models import gabor


def _weights(model):
  return {l.name: [np.array(w) for w in l.weights] for l in model.layers if l.weights}


class InitTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tf.compat.v1.test.get_temp_dir()
    # Source models stand in for ImageNet weights: trained-looking (non-standard) values via a shifted random init.
    cls.paths = {}
    for name, shape in (("cbr_small", (32, 32, 3)), ("resnet50", (32, 32, 3))):
      src = models.build_model(name, 10, shape, seed=11, width_multiplier=0.25 if name == "resnet50" else 1.0)
      rng = np.random.default_rng(0)
      for layer in src.layers:
        for w in layer.weights:  # Give every tensor its own distinctive mean and spread.
          w.assign((np.array(w) * rng.uniform(0.5, 2.0) + rng.normal(0, 0.1)).astype(np.float32))
      path = os.path.join(cls.dir, f"{name}.weights.h5")
      models.save_weight_file(src, path, source="synthetic_source")
      cls.paths[name] = path
      setattr(cls, f"src_{name}", _weights(src))

  def test_random_is_seeded_he_normal(self):
    a = models.build_model("cbr_small", 5, (32, 32, 3), seed=4)
    b = models.build_model("cbr_small", 5, (32, 32, 3), seed=4)
    c = models.build_model("cbr_small", 5, (32, 32, 3), seed=5)
    self.assertAllEqual(a.get_layer("conv3_conv").kernel, b.get_layer("conv3_conv").kernel)
    self.assertNotAllClose(a.get_layer("conv3_conv").kernel, c.get_layer("conv3_conv").kernel)
    k = np.array(a.get_layer("conv3_conv").kernel)
    self.assertAllClose(k.std(), np.sqrt(2.0 / (7 * 7 * 64)), rtol=0.02)
    bn = a.get_layer("conv2_bn")
    self.assertAllEqual(bn.gamma, np.ones(64))
    self.assertAllEqual(bn.moving_variance, np.ones(64))

  def test_pretrained_copies_all_but_head(self):
    model = models.build_model("cbr_small", 3, (64, 64, 3), seed=1)
    info = models.initialize(model, "pretrained", source=self.paths["cbr_small"])
    for name, arrays in _weights(model).items():
      if name == "head":
        self.assertNotEqual(arrays[0].shape, self.src_cbr_small["head"][0].shape)
        continue
      for a, b in zip(arrays, self.src_cbr_small[name]):
        self.assertAllEqual(a, b)
    self.assertIn("standing in for ImageNet", info["source"])

  def test_meanvar_matches_moments(self):
    model = models.build_model("cbr_small", 3, (32, 32, 3))
    info = models.initialize(model, "meanvar", source=self.paths["cbr_small"], seed=3)
    self.assertIn("conv2_conv", info["meanvar_layers"])
    for name in ("conv2_conv", "conv3_conv", "conv4_conv"):
      got, src = np.array(model.get_layer(name).kernel), self.src_cbr_small[name][0]
      self.assertAllClose(got.mean(), src.mean(), atol=3 * src.std() / np.sqrt(src.size))
      self.assertAllClose(got.std(), src.std(), rtol=0.03)
      self.assertGreater(np.abs(got - src).mean(), 0.5 * src.std())  # Drawn, not copied.
    # BatchNorm keeps its standard init unless asked.
    self.assertAllEqual(model.get_layer("conv2_bn").gamma, np.ones(64))
    models.initialize(model, "meanvar", source=self.paths["cbr_small"], seed=3, meanvar_bn=True)
    gamma, src_gamma = np.array(model.get_layer("conv2_bn").gamma), self.src_cbr_small["conv2_bn"][0]
    self.assertAllClose(gamma.mean(), src_gamma.mean(), atol=4 * src_gamma.std() / 8)

  def test_transfuse_copies_up_to_stage_and_differs_above(self):
    for stage, copied, fresh in (("conv1", ["conv1_conv", "conv1_bn"], ["conv2_conv", "conv4_bn"]),
                                 ("conv3", ["conv1_conv", "conv3_conv", "conv3_bn"], ["conv4_conv", "conv4_bn"])):
      model = models.build_model("cbr_small", 3, (32, 32, 3), seed=9)
      models.initialize(model, f"transfuse:{stage}", source=self.paths["cbr_small"], seed=9)
      for name in copied:
        for a, b in zip(model.get_layer(name).weights, self.src_cbr_small[name]):
          self.assertAllEqual(a, b)
      for name in fresh:
        self.assertNotAllClose(model.get_layer(name).weights[0], self.src_cbr_small[name][0])
    model = models.build_model("cbr_small", 3, (32, 32, 3))
    info = models.initialize(model, "transfuse:none", source=self.paths["cbr_small"])
    self.assertEqual(info["copied_layers"], [])

  def test_transfuse_resnet_block(self):
    model = models.build_model("resnet50", 3, (32, 32, 3), width_multiplier=0.25)
    info = models.initialize(model, "transfuse:block1", source=self.paths["resnet50"])
    self.assertIn("conv2_block3_3_bn", info["copied_layers"])
    self.assertNotIn("conv3_block1_1_conv", info["copied_layers"])
    self.assertAllEqual(model.get_layer("conv2_block3_3_conv").kernel, self.src_resnet50["conv2_block3_3_conv"][0])
    self.assertNotAllClose(model.get_layer("conv3_block1_1_conv").kernel,
                           self.src_resnet50["conv3_block1_1_conv"][0])

  def test_transfuse_inception_matches_by_order(self):
    # Inner InceptionV3 names are auto-numbered and differ between two builds in one process.
    src = models.build_model("inceptionv3", 4, (75, 75, 3), seed=2)
    path = os.path.join(self.dir, "inc.weights.h5")
    models.save_weight_file(src, path)
    model = models.build_model("inceptionv3", 2, (75, 75, 3), seed=3)
    info = models.initialize(model, "transfuse:mixed0", source=path)
    stem = models.stage_layers(model, "stem")[0]
    src_stem = models.stage_layers(src, "stem")[0]
    self.assertNotEqual(stem.name, src_stem.name)
    self.assertAllEqual(stem.weights[0], src_stem.weights[0])
    m1, src_m1 = models.stage_layers(model, "mixed1"), models.stage_layers(src, "mixed1")
    w = next(l for l in m1 if l.weights)
    self.assertNotAllClose(w.weights[0], next(l for l in src_m1 if l.weights).weights[0])
    self.assertNotIn(w.name, info["copied_layers"])

  def test_slim(self):
    full = self.src_resnet50
    model = models.build_model("resnet50", 3, (32, 32, 3), slim=True, width_multiplier=0.25)
    models.initialize(model, "slim", source=self.paths["resnet50"])
    for name in ("conv4_block1_1_conv", "conv5_block3_2_conv"):
      self.assertEqual(model.get_layer(name).kernel.shape[-1] * 2, full[name][0].shape[-1])
    for name in ("conv1_conv", "conv2_block1_0_conv", "conv3_block4_3_bn"):
      self.assertAllEqual(model.get_layer(name).weights[0], full[name][0])
    wide = models.build_model("resnet50", 3, (32, 32, 3), width_multiplier=0.25)
    with self.assertRaisesRegex(UsageError, "half-width"):
      models.initialize(wide, "slim", source=self.paths["resnet50"])

  def test_gabor(self):
    bank = gabor.gabor_bank(21, 8, "high")
    wanted = gabor.gabor_orientations(8)
    got = np.array([gabor.filter_orientation(bank[..., j]) for j in range(8)])
    diff = np.abs(np.angle(np.exp(2j * (got - wanted)))) / 2  # Orientation error modulo pi.
    self.assertLess(diff.max(), np.deg2rad(6))
    model = models.build_model("cbr_small", 3, (32, 32, 3), seed=0)
    ref = np.array(model.get_layer("conv2_conv").kernel)
    info = models.initialize(model, "gabor", seed=0, gabor_frequency="low")
    self.assertEqual(info["gabor"]["layer"], "conv1_conv")
    k = np.array(model.get_layer("conv1_conv").kernel)
    self.assertAllEqual(k[:, :, 0, :], k[:, :, 2, :])  # Grayscale copied to RGB.
    self.assertAllClose(k.std(), np.sqrt(2.0 / (7 * 7 * 3)), rtol=1e-4)
    got = np.array([gabor.filter_orientation(k[:, :, 0, j]) for j in range(k.shape[-1])])
    diff = np.abs(np.angle(np.exp(2j * (got - gabor.gabor_orientations(32))))) / 2
    self.assertLess(np.median(diff), np.deg2rad(15))  # 7x7 low-frequency filters resolve orientation coarsely.
    self.assertAllEqual(model.get_layer("conv2_conv").kernel, ref)  # The rest stays the seeded random init.

  def test_normalize_conv_scale_keeps_the_function(self):
    from transfusion_tf.models import init as init_lib  # pylint: disable=g-import-not-at-top
    model = models.build_model("cbr_tiny", 5, (32, 32, 3), width_multiplier=0.25)
    pairs = init_lib.conv_bn_pairs(model)
    self.assertEqual([(c.name, b.name) for c, b in pairs], [(f"conv{i}_conv", f"conv{i}_bn") for i in range(1, 5)])
    rng = np.random.default_rng(0)
    for conv, bn in pairs:  # A decayed-then-trained state: small kernels, statistics that match them.
      conv.kernel.assign(conv.kernel.numpy() * 0.2)
      bn.moving_mean.assign(rng.normal(0, 0.2, bn.moving_mean.shape))
      bn.moving_variance.assign(rng.uniform(2.0, 4.0, bn.moving_variance.shape))
    x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
    infer = model(x, training=False).numpy()
    scales = init_lib.normalize_conv_scale(model)
    infer_after = model(x, training=False).numpy()
    # Training-mode calls update the moving statistics, so they come after every inference-mode call.
    self.assertLen(scales, 4)
    for conv, _ in pairs:
      k = conv.kernel.numpy()
      self.assertAllClose(k.std(), np.sqrt(2.0 / np.prod(k.shape[:-1])), rtol=1e-5)
      self.assertGreater(scales[conv.name], 2.0)
    self.assertAllClose(infer_after, infer, rtol=1e-3, atol=1e-3)
    train_after = model(x, training=True).numpy()
    for conv, _ in pairs:  # Batch statistics make a kernel's scale irrelevant (up to epsilon) in training mode.
      conv.kernel.assign(conv.kernel.numpy() * 2.0)
    self.assertAllClose(model(x, training=True).numpy(), train_after, rtol=2e-3, atol=2e-3)
    resnet = models.build_model("resnet50", 5, (32, 32, 3), width_multiplier=0.125)
    convs = [l for l in resnet.layers if l.__class__.__name__ == "Conv2D"]
    self.assertLen(init_lib.conv_bn_pairs(resnet), len(convs))  # Every ResNet50 conv feeds a BatchNorm.

  def test_errors(self):
    model = models.build_model("cbr_tiny", 3, (32, 32, 3))
    with self.assertRaisesRegex(UsageError, "--init=meanvar needs source weights"):
      models.initialize(model, "meanvar")
    with self.assertRaisesRegex(UsageError, "is not a scheme"):
      models.initialize(model, "xavier")
    with self.assertRaisesRegex(UsageError, "stage 'block2' does not exist"):
      models.initialize(model, "transfuse:block2", source=self.paths["cbr_small"])
