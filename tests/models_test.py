"""Tests for transfusion_tf.models: architectures, stages, weight files, preprocessing, the parameter table."""
import os
import time

import keras
import numpy as np
import tensorflow as tf

from transfusion_tf import models
from transfusion_tf.cli import models as models_cli
from transfusion_tf.errors import UsageError
from transfusion_tf.models import cbr
from transfusion_tf.models import cost as cost_lib


class BuildTest(tf.test.TestCase):

  def test_all_models_build_small_and_give_logits(self):
    for name in models.MODEL_NAMES:
      size = max(models.MIN_SIZE[name], 32)
      model = models.build_model(name, 3, (size, size, 3))
      out = model(np.zeros((2, size, size, 3), np.float32), training=False)
      self.assertEqual(tuple(out.shape), (2, 3), name)
      self.assertEqual(out.dtype, tf.float32)
      self.assertEqual(model.name, name)

  def test_all_models_build_at_paper_resolution(self):
    for name in models.MODEL_NAMES:
      s = models.zoo.PAPER_SIZE[name]
      model = models.build_model(name, 5, (s, s, 3))
      self.assertEqual(tuple(model.output.shape), (None, 5), name)

  def test_cbr_follows_paper_table(self):
    for name, spec in cbr.CBR_SPECS.items():
      model = models.build_model(name, 5, (64, 64, 3))
      convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
      self.assertEqual([c.filters for c in convs], list(spec.widths))
      self.assertTrue(all(c.kernel_size == (spec.kernel, spec.kernel) for c in convs))
      self.assertTrue(all(not c.use_bias and c.strides == (1, 1) and c.padding == "same" for c in convs))
      pools = [any(l.name == f"conv{i}_pool" for l in model.layers) for i in range(1, len(convs) + 1)]
      self.assertEqual(pools, list(spec.pools), name)
      names = [l.name for l in model.layers]
      for i in range(1, len(convs) + 1):  # conv -> BN -> ReLU order
        j = names.index(f"conv{i}_conv")
        self.assertEqual(names[j + 1:j + 3], [f"conv{i}_bn", f"conv{i}_relu"])
      self.assertEqual(names[-2:], ["avg_pool", "head"])

  def test_cbr_widths_and_multiplier(self):
    model = models.build_model("cbr_tiny", 2, (32, 32, 3), cbr_widths=(8, 16, 24, 32), width_multiplier=0.5)
    convs = [l.filters for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    self.assertEqual(convs, [4, 8, 12, 16])
    with self.assertRaisesRegex(UsageError, "needs 4 values"):
      models.build_model("cbr_tiny", 2, (32, 32, 3), cbr_widths=(8, 16))

  def test_paper_convention_counts(self):
    self.assertEqual(models.paper_convention_count("cbr_larget"), 8_532_480)
    self.assertEqual(models.paper_convention_count("cbr_tiny"), 1_076_480)

  def test_resnet_matches_keras_applications(self):
    ours = models.build_model("resnet50", 5, (64, 64, 3))
    ref = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg")
    ours_w = [(l.name, [tuple(w.shape) for w in l.weights]) for l in ours.layers if l.name != "head"]
    ref_w = [(l.name, [tuple(w.shape) for w in l.weights]) for l in ref.layers]
    self.assertEqual(ours_w[1:], ref_w[1:])  # Input layers are named differently.

  def test_bad_inputs(self):
    with self.assertRaisesRegex(UsageError, "unknown --model='vgg'"):
      models.build_model("vgg", 2, (64, 64, 3))
    with self.assertRaisesRegex(UsageError, "below inceptionv3's minimum of 75"):
      models.build_model("inceptionv3", 2, (64, 64, 3))
    with self.assertRaisesRegex(UsageError, "bn_momentum=1.0"):
      models.build_model("cbr_tiny", 2, (32, 32, 3), bn_momentum=1.0)

  def test_bn_momentum_reaches_every_batchnorm(self):
    for name in ("cbr_tiny", "resnet50"):
      model = models.build_model(name, 2, (32, 32, 3), width_multiplier=0.125, bn_momentum=0.9)
      bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
      self.assertNotEmpty(bns)
      self.assertEqual({l.momentum for l in bns}, {0.9}, name)
    default = models.build_model("cbr_tiny", 2, (32, 32, 3))
    self.assertEqual({l.momentum for l in default.layers if isinstance(l, keras.layers.BatchNormalization)}, {0.99})

  def test_zero_init_residual_starts_blocks_as_shortcuts(self):
    kw = dict(width_multiplier=0.125, seed=3)
    zero = models.build_model("resnet50", 2, (32, 32, 3), zero_init_residual=True, **kw)
    plain = models.build_model("resnet50", 2, (32, 32, 3), **kw)
    last = [l.name for l in zero.layers if l.name.endswith("_3_bn")]
    self.assertLen(last, 16)  # One per bottleneck: 3 + 4 + 6 + 3.
    for layer in zero.layers:
      gamma = layer.get_weights()[0] if layer.name.endswith("_bn") else None
      if gamma is not None:
        self.assertEqual(float(np.abs(gamma).max()) == 0.0, layer.name in last, layer.name)
    # Everything else is the standard seeded init, and re-initialising keeps the zeros.
    for a, b in zip(zero.layers, plain.layers):
      if a.weights and a.name not in last:
        for wa, wb in zip(a.get_weights(), b.get_weights()):
          self.assertAllEqual(wa, wb)
    models.initialize(zero, "random", seed=5)
    self.assertEqual(float(np.abs(zero.get_layer(last[0]).gamma.numpy()).max()), 0.0)
    # A block that starts as its shortcut passes its input through: block2's output equals its shortcut branch.
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    sub = keras.Model(zero.input, [zero.get_layer("conv2_block2_add").output, zero.get_layer("conv2_block1_out").output])
    added, before = sub(x, training=False)
    self.assertAllClose(added, before, atol=1e-5)
    with self.assertRaisesRegex(UsageError, "zero_init_residual applies to resnet50"):
      models.build_model("cbr_tiny", 2, (32, 32, 3), zero_init_residual=True)


class StageTest(tf.test.TestCase):

  def test_stage_names(self):
    self.assertEqual(models.stage_names(models.build_model("resnet50", 2, (32, 32, 3))),
                     ["conv1", "block1", "block2", "block3", "block4", "pool"])
    self.assertEqual(models.stage_names(models.build_model("cbr_larget", 2, (32, 32, 3))),
                     ["conv1", "conv2", "conv3", "conv4", "conv5", "pool"])
    inc = models.build_model("inceptionv3", 2, (75, 75, 3))
    self.assertEqual(models.stage_names(inc), ["stem"] + [f"mixed{i}" for i in range(11)] + ["pool"])

  def test_stage_outputs_and_layers(self):
    model = models.build_model("resnet50", 2, (64, 64, 3))
    self.assertEqual(models.stage_layers(model, "block3")[-1].name, "conv4_block6_out")
    self.assertEqual(tuple(models.stage_output(model, "conv1").shape), (None, 16, 16, 64))
    self.assertEqual(tuple(models.stage_output(model, "block4").shape)[-1], 2048)
    inc = models.build_model("inceptionv3", 2, (75, 75, 3))
    self.assertEqual(models.stage_layers(inc, "mixed7")[-1].name, "mixed7")
    self.assertEqual(models.stage_layers(inc, "stem")[-1].__class__.__name__, "MaxPooling2D")
    # Every weighted layer but the head belongs to exactly one stage.
    mapping = models.stages.layer_stage_map(inc)
    self.assertTrue(all(l.name in mapping for l in inc.layers if l.weights and l.name != "head"))
    small = models.build_model("cbr_small", 2, (64, 64, 3))
    sub = keras.Model(small.input, [models.stage_output(small, s) for s in ("conv1", "conv4", "pool")])
    outs = sub(np.zeros((1, 64, 64, 3), np.float32))
    self.assertEqual([tuple(o.shape) for o in outs], [(1, 32, 32, 32), (1, 4, 4, 256), (1, 256)])
    with self.assertRaisesRegex(UsageError, "stage 'block9' does not exist"):
      models.stage_layers(model, "block9")


class WeightsTest(tf.test.TestCase):

  def test_imagenet_offline_error_is_fast_and_names_file(self):
    home = self.create_tempdir().full_path
    os.environ["KERAS_HOME"] = home
    try:
      start = time.time()
      with self.assertRaises(UsageError) as ctx:
        models.build_model("resnet50", 2, (32, 32, 3), weights="imagenet")
      msg = str(ctx.exception)
      self.assertLess(time.time() - start, 30)
      self.assertIn("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", msg)
      self.assertIn(os.path.join(home, "models"), msg)
      self.assertIn("--weights=PATH", msg)
      with self.assertRaisesRegex(UsageError, "no ImageNet weights exist for cbr_small"):
        models.build_model("cbr_small", 2, (32, 32, 3), weights="imagenet")
    finally:
      del os.environ["KERAS_HOME"]

  def test_imagenet_file_from_cache_loads(self):
    # A stand-in notop file in the Keras cache layout, written the way keras.applications' files are laid out.
    home = self.create_tempdir().full_path
    os.makedirs(os.path.join(home, "models"))
    src = models.build_model("resnet50", 7, (32, 32, 3), seed=3, include_head=False)
    models.save_weight_file(src, os.path.join(home, "models", models.IMAGENET_FILES["resnet50"]))
    os.environ["KERAS_HOME"] = home
    try:
      model = models.build_model("resnet50", 2, (48, 48, 3), weights="imagenet")
    finally:
      del os.environ["KERAS_HOME"]
    self.assertAllEqual(model.get_layer("conv3_block2_2_conv").kernel,
                        src.get_layer("conv3_block2_2_conv").kernel)

  def test_weights_path_round_trip_skips_head(self):
    path = os.path.join(self.create_tempdir().full_path, "src.weights.h5")
    src = models.build_model("cbr_tiny", 10, (32, 32, 3), seed=1)
    models.save_weight_file(src, path, source="synthetic_source")
    model = models.build_model("cbr_tiny", 2, (64, 64, 3), weights=path, seed=2)
    for layer in model.layers:
      if layer.weights and layer.name != "head":
        for a, b in zip(layer.weights, src.get_layer(layer.name).weights):
          self.assertAllEqual(a, b)
    self.assertIn("standing in for ImageNet", models.read_weight_file(path).description)

  def test_wrong_architecture_names_layer(self):
    path = os.path.join(self.create_tempdir().full_path, "tiny.weights.h5")
    models.save_weight_file(models.build_model("cbr_tiny", 2, (32, 32, 3)), path)
    with self.assertRaisesRegex(UsageError, "layer 'conv1_conv' has weight shapes"):
      models.build_model("cbr_small", 2, (32, 32, 3), weights=path)
    with self.assertRaisesRegex(UsageError, "not found"):
      models.build_model("cbr_small", 2, (32, 32, 3), weights=path + ".missing")


class PreprocessingTest(tf.test.TestCase):

  def test_modes_follow_model(self):
    self.assertEqual(models.preprocessing_mode("resnet50", "imagenet"), "caffe")
    self.assertEqual(models.preprocessing_mode("inceptionv3", "imagenet"), "tf")
    self.assertEqual(models.preprocessing_mode("cbr_small", None, override="unit"), "unit")
    img = np.full((1, 2, 2, 3), 255.0, np.float32)
    img[..., 0] = 0.0  # R = 0
    self.assertAllClose(models.preprocess(img, "tf")[0, 0, 0], [-1.0, 1.0, 1.0])
    caffe = models.preprocess(tf.constant(img), "caffe")[0, 0, 0]
    self.assertAllClose(caffe, [255 - 103.939, 255 - 116.779, 0 - 123.68])  # BGR order
    with self.assertRaisesRegex(UsageError, "--preprocessing='bgr'"):
      models.preprocessing_mode("resnet50", None, override="bgr")


class ParamTableTest(tf.test.TestCase):

  def test_table_prints_paper_convention(self):
    rows = models_cli.param_table(["cbr_larget", "cbr_tiny"], 64, 5)
    text = models_cli.format_table(rows, 64, 5)
    self.assertIn("8,532,480", text)
    self.assertIn("1,076,480", text)
    self.assertEqual(rows[0][2], rows[0][3])


def _profiler_flops(model, size):
  """FLOPs of `model`'s multiplying ops (convolutions and matmuls) as TensorFlow's profiler counts them on the traced
  inference graph for one (size, size, 3) image: per op, 2 x its multiply-accumulates."""
  fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
      tf.TensorSpec([1, size, size, 3], tf.float32))
  opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  root = tf.compat.v1.profiler.profile(graph=fn.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="scope",
                                       options=opts)
  total, stack = 0, [root]
  while stack:
    node = stack.pop()
    if node.name.rsplit("/", 1)[-1] in ("convolution", "MatMul", "depthwise"):
      total += node.float_ops
    stack += list(node.children)
  return total


class CostTest(tf.test.TestCase):
  """models/cost.py: multiply-accumulates per image against hand counts, TensorFlow's profiler and the published
  ResNet50 figure."""

  def test_hand_counted_layers(self):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp)          # 8x8 positions x (3x3x3x8) = 13,824
    x = keras.layers.Conv2D(8, 1, groups=4, use_bias=False)(x)             # 8x8 x (1x1x2x8) = 1,024
    x = keras.layers.DepthwiseConv2D(3, padding="valid")(x)                # 6x6 x (3x3x8x1) = 2,592
    x = keras.layers.BatchNormalization()(x)                               # Not counted.
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(4)(x)                                         # 288 x 4 = 1,152
    model = keras.Model(inp, out)
    cost = cost_lib.model_cost(model)
    self.assertEqual(cost["macs_per_image"], 13_824 + 1_024 + 2_592 + 1_152)
    self.assertEqual(cost["flops_per_image"], 2 * cost["macs_per_image"])
    self.assertEqual(cost["params"], model.count_params())
    self.assertEqual(cost["image_size"], [16, 16])
    with self.assertRaisesRegex(ValueError, "unknown dimension"):
      cost_lib.macs_per_image(keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)]))

  def test_our_models_match_tensorflows_profiler(self):
    # The profiler's per-op count of the traced graph (2 x MACs per conv or matmul) is the model's own count.
    for name, size, kw in (("cbr_tiny", 32, {}), ("resnet50", 32, {"width_multiplier": 0.25}),
                           ("inceptionv3", 75, {})):
      model = models.build_model(name, 3, (size, size, 3), initialize_weights=False, **kw)
      self.assertEqual(cost_lib.model_cost(model)["flops_per_image"], _profiler_flops(model, size), name)
      keras.backend.clear_session()

  def test_resnet50_at_224_against_the_published_count(self):
    # He et al. 2016, Table 1: ResNet-50 "3.8 x 10^9 FLOPs", which are multiply-adds. The Keras model (1000-way head)
    # counts 3.858e9 MACs; the bar is 3% of the published figure (torchvision's 4.1 G is ResNet-50 v1.5, which strides
    # in the 3x3 convs rather than the 1x1 ones: a different network).
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    cost = cost_lib.model_cost(model)
    self.assertEqual(cost["macs_per_image"], 3_857_973_248)
    self.assertAllClose(cost["macs_per_image"], 3.8e9, rtol=0.03)
    self.assertEqual(cost["params"], 25_636_712)
    # Our ResNet50 at full width is the same network with another head (models_test.test_resnet_matches_...).
    ours = models.build_model("resnet50", 1000, (224, 224, 3), initialize_weights=False)
    self.assertEqual(cost_lib.macs_per_image(ours), cost["macs_per_image"])
    keras.backend.clear_session()
