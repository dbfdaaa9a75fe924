"""ResNet50 (v1) with configurable stage widths, layer-for-layer compatible with keras.applications.ResNet50.

At the default widths the layer names, order and weight shapes equal keras.applications' (a test checks this), so
ImageNet `*_notop.h5` files load by name. The Slim ResNet of the paper is this model with blocks 3-4 at half width.
"""
import keras

# Paper stage name -> keras.applications stack prefix, base filters and block count.
STACKS = (("block1", "conv2", 64, 3), ("block2", "conv3", 128, 4), ("block3", "conv4", 256, 6),
          ("block4", "conv5", 512, 3))
SLIM_MULTIPLIERS = (1.0, 1.0, 0.5, 0.5)
_BN_EPS = 1.001e-5


def _bottleneck(x, filters, stride, conv_shortcut, name, zero_gamma=False):
  if conv_shortcut:
    shortcut = keras.layers.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
    shortcut = keras.layers.BatchNormalization(epsilon=_BN_EPS, name=name + "_0_bn")(shortcut)
  else:
    shortcut = x
  x = keras.layers.Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
  x = keras.layers.BatchNormalization(epsilon=_BN_EPS, name=name + "_1_bn")(x)
  x = keras.layers.Activation("relu", name=name + "_1_relu")(x)
  x = keras.layers.Conv2D(filters, 3, padding="same", name=name + "_2_conv")(x)
  x = keras.layers.BatchNormalization(epsilon=_BN_EPS, name=name + "_2_bn")(x)
  x = keras.layers.Activation("relu", name=name + "_2_relu")(x)
  x = keras.layers.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
  x = keras.layers.BatchNormalization(epsilon=_BN_EPS, gamma_initializer="zeros" if zero_gamma else "ones",
                                      name=name + "_3_bn")(x)
  x = keras.layers.Add(name=name + "_add")([shortcut, x])
  return keras.layers.Activation("relu", name=name + "_out")(x)


def build_resnet50(num_outputs, input_shape, stage_multipliers=(1.0, 1.0, 1.0, 1.0), width_multiplier=1.0,
                   include_head=True, zero_init_residual=False):
  """Builds ResNet50 v1 with per-stage width multipliers (block1..block4) and a global `width_multiplier`.

  input_shape: (H, W, C), H and W >= 32. Output: (batch, num_outputs) float32 logits from a Dense `head` on
  global average pooling (`avg_pool`). conv1 is scaled by `width_multiplier` only. zero_init_residual: the last
  BatchNorm of every bottleneck (`*_3_bn`) starts with gamma 0, so each block starts as its shortcut (Goyal et al.
  2017, "Accurate, Large Minibatch SGD"); `init.random_init` keeps these zeros. Weight files load the same either way.
  """
  inputs = keras.Input(shape=tuple(input_shape), name="image")
  x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
  x = keras.layers.Conv2D(max(1, int(round(64 * width_multiplier))), 7, strides=2, name="conv1_conv")(x)
  x = keras.layers.BatchNormalization(epsilon=_BN_EPS, name="conv1_bn")(x)
  x = keras.layers.Activation("relu", name="conv1_relu")(x)
  x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
  x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
  for (_, prefix, filters, blocks), mult in zip(STACKS, stage_multipliers):
    width = max(1, int(round(filters * mult * width_multiplier)))
    stride = 1 if prefix == "conv2" else 2
    x = _bottleneck(x, width, stride, True, f"{prefix}_block1", zero_init_residual)
    for b in range(2, blocks + 1):
      x = _bottleneck(x, width, 1, False, f"{prefix}_block{b}", zero_init_residual)
  x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  if include_head:
    x = keras.layers.Dense(num_outputs, dtype="float32", name="head")(x)
  return keras.Model(inputs, x, name="resnet50")
