"""Tests for transfusion_tf.models.init: each scheme does what it claims, not only runs."""
import os

import numpy as np
import tensorflow as tf

from transfusion_tf import models
from transfusion_tf.errors import UsageError
from transfusion_tf.models import gabor
from transfusion_tf.models import init as init_lib


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

  def _profiled_source(self):
    """A CBR-Small source whose conv kernels have a known std / He-normal ratio per layer and non-standard BN."""
    src = models.build_model("cbr_small", 10, (32, 32, 3), seed=21)
    factors = {"conv1_conv": 0.4, "conv2_conv": 2.5, "conv3_conv": 0.7, "conv4_conv": 1.8}
    rng = np.random.default_rng(1)
    for name, f in factors.items():
      k = np.array(src.get_layer(name).kernel)
      k = k / k.std() * f * init_lib.he_std(k.shape)
      src.get_layer(name).kernel.assign((k + 0.1 * k.std()).astype(np.float32))  # A mean of 0.1 std as well.
      bn = src.get_layer(name.replace("_conv", "_bn"))
      n = bn.gamma.shape[0]
      for var, value in ((bn.gamma, rng.uniform(0.2, 1.5, n)), (bn.beta, rng.normal(0.3, 0.2, n)),
                         (bn.moving_mean, rng.normal(1.0, 0.5, n)), (bn.moving_variance, rng.uniform(2.0, 5.0, n))):
        var.assign(value.astype(np.float32))
    path = os.path.join(self.create_tempdir().full_path, "profiled.weights.h5")
    models.save_weight_file(src, path, source="synthetic_source")
    return path, _weights(src), factors

  def test_meanvar_carries_the_source_moments_and_profile(self):
    path, src, factors = self._profiled_source()
    model = models.build_model("cbr_small", 3, (32, 32, 3))
    info = models.initialize(model, "meanvar", source=path, seed=3)
    self.assertIn("conv2_conv", info["meanvar_layers"])
    self.assertNotIn("conv2_bn", info["meanvar_layers"])
    self.assertNotIn("head", info["meanvar_layers"])
    profile = init_lib.kernel_scale_profile(model)
    for name, factor in factors.items():
      got, want = np.array(model.get_layer(name).kernel), src[name][0]
      self.assertAllClose(got.mean(), want.mean(), atol=4 * want.std() / np.sqrt(want.size))
      self.assertAllClose(got.std(), want.std(), rtol=0.05 if want.size < 10000 else 0.02)
      self.assertGreater(np.abs(got - want).mean(), 0.5 * want.std())  # Drawn, not copied.
      # The source's std / He ratio, not He's 1: the profile is what MV carries.
      self.assertAllClose(profile[name], factor * np.sqrt(1.01), rtol=0.05)
    self.assertGreater(max(profile.values()) / min(profile.values()), 4.0)
    for i in range(1, 5):  # BN Identity Init by default.
      bn = model.get_layer(f"conv{i}_bn")
      for var, value in ((bn.gamma, 1.0), (bn.beta, 0.0), (bn.moving_mean, 0.0), (bn.moving_variance, 1.0)):
        self.assertAllEqual(var, np.full(var.shape, value, np.float32))

  def test_meanvar_bn_resample_and_copy(self):
    path, src, _ = self._profiled_source()
    copied = models.build_model("cbr_small", 3, (32, 32, 3))
    models.initialize(copied, "meanvar", source=path, seed=3, meanvar_bn="copy")
    resampled = models.build_model("cbr_small", 3, (32, 32, 3))
    info = models.initialize(resampled, "meanvar", source=path, seed=3, meanvar_bn="resample")
    self.assertIn("conv2_bn", info["meanvar_layers"])
    identity = models.build_model("cbr_small", 3, (32, 32, 3))
    models.initialize(identity, "meanvar", source=path, seed=3)
    # The kernels do not depend on the BatchNorm choice.
    self.assertAllEqual(copied.get_layer("conv3_conv").kernel, identity.get_layer("conv3_conv").kernel)
    for i in range(1, 5):
      name = f"conv{i}_bn"
      for var, want in zip(copied.get_layer(name).weights, src[name]):
        self.assertAllEqual(var, want)
      gamma, beta, mean, var = (np.array(w) for w in resampled.get_layer(name).weights)
      for got, want in ((gamma, src[name][0]), (beta, src[name][1])):
        self.assertAllClose(got.mean(), want.mean(), atol=4 * want.std() / np.sqrt(want.size))
        self.assertAllClose(got.std(), want.std(), rtol=0.5)
        self.assertFalse(np.any(got == want))
      self.assertAllEqual(mean, np.zeros_like(mean))  # Statistics of the source's kernels are not carried.
      self.assertAllEqual(var, np.ones_like(var))
    with self.assertRaisesRegex(UsageError, "--meanvar_bn='yes' is not one of"):
      models.initialize(identity, "meanvar", source=path, meanvar_bn="yes")

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

  def test_normalize_conv_scale_keeps_the_function_and_the_profile(self):
    model = models.build_model("cbr_tiny", 5, (32, 32, 3), width_multiplier=0.25)
    pairs = init_lib.conv_bn_pairs(model)
    self.assertEqual([(c.name, b.name) for c, b in pairs], [(f"conv{i}_conv", f"conv{i}_bn") for i in range(1, 5)])
    rng = np.random.default_rng(0)
    for (conv, bn), f in zip(pairs, (0.1, 0.3, 0.2, 0.4)):  # Decayed-then-trained: small kernels, own statistics.
      conv.kernel.assign(conv.kernel.numpy() * f)
      bn.moving_mean.assign(rng.normal(0, 0.2, bn.moving_mean.shape))
      bn.moving_variance.assign(rng.uniform(2.0, 4.0, bn.moving_variance.shape))
    x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
    infer = model(x, training=False).numpy()
    before = init_lib.kernel_scale_profile(model)
    scales = init_lib.normalize_conv_scale(model)
    infer_after = model(x, training=False).numpy()
    after = init_lib.kernel_scale_profile(model)
    # Training-mode calls update the moving statistics, so they come after every inference-mode call.
    self.assertLen(set(scales.values()), 1)  # One global factor...
    self.assertGreater(scales["conv1_conv"], 2.0)
    self.assertAllClose(np.exp(np.mean(np.log(list(after.values())))), 1.0, rtol=1e-5)  # ...overall at He's scale,
    for name in before:  # ...every layer's ratio to the others as trained.
      self.assertAllClose(after[name] / after["conv1_conv"], before[name] / before["conv1_conv"], rtol=1e-5)
    self.assertGreater(max(after.values()) / min(after.values()), 2.0)
    self.assertAllClose(infer_after, infer, rtol=1e-3, atol=1e-3)
    train_after = model(x, training=True).numpy()
    for conv, _ in pairs:  # Batch statistics make a kernel's scale irrelevant (up to epsilon) in training mode.
      conv.kernel.assign(conv.kernel.numpy() * 2.0)
    self.assertAllClose(model(x, training=True).numpy(), train_after, rtol=2e-3, atol=2e-3)
    per_layer = init_lib.normalize_conv_scale(model, per_layer=True)
    self.assertLen(set(per_layer.values()), 4)
    self.assertAllClose(list(init_lib.kernel_scale_profile(model).values()), np.ones(4), rtol=1e-5)
    # ResNet50: every conv feeds a BatchNorm, and its conv biases are rescaled with the kernels.
    resnet = models.build_model("resnet50", 5, (32, 32, 3), width_multiplier=0.125)
    convs = [l for l in resnet.layers if l.__class__.__name__ == "Conv2D"]
    self.assertLen(init_lib.conv_bn_pairs(resnet), len(convs))
    for conv, bn in init_lib.conv_bn_pairs(resnet):
      conv.kernel.assign(conv.kernel.numpy() * 0.2)
      conv.bias.assign(rng.normal(0, 0.05, conv.bias.shape).astype(np.float32))
    infer = resnet(x, training=False).numpy()
    init_lib.normalize_conv_scale(resnet)
    self.assertAllClose(resnet(x, training=False).numpy(), infer, rtol=1e-3, atol=1e-3)

  def test_errors(self):
    model = models.build_model("cbr_tiny", 3, (32, 32, 3))
    with self.assertRaisesRegex(UsageError, "--init=meanvar needs source weights"):
      models.initialize(model, "meanvar")
    with self.assertRaisesRegex(UsageError, "is not a scheme"):
      models.initialize(model, "xavier")
    with self.assertRaisesRegex(UsageError, "stage 'block2' does not exist"):
      models.initialize(model, "transfuse:block2", source=self.paths["cbr_small"])
