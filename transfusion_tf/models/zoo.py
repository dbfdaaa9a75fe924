"""The model factory: `build_model` covers the paper's six architectures."""
import keras
import numpy as np

from transfusion_tf.errors import UsageError
from transfusion_tf.models import cbr, init, resnet

MODEL_NAMES = ("resnet50", "inceptionv3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny")
MIN_SIZE = {"resnet50": 32, "inceptionv3": 75, "cbr_larget": 16, "cbr_largew": 16, "cbr_small": 16,
            "cbr_tiny": 16}
# The paper's input resolutions: RETINA 587 px (CheXpert 224 px), InceptionV3's native 299 is not used.
PAPER_SIZE = {"resnet50": 587, "inceptionv3": 587, "cbr_larget": 587, "cbr_largew": 587, "cbr_small": 587,
              "cbr_tiny": 587}
# [unsure] counts quoted for the paper (PAPER.md section 2).
PAPER_PARAMS = {"resnet50": 23_570_408, "inceptionv3": 22_881_424, "cbr_larget": 8_532_480,
                "cbr_largew": 8_432_128, "cbr_small": 2_108_672, "cbr_tiny": 1_076_480}


def check_model_name(name):
  """Raises UsageError unless `name` is one of MODEL_NAMES."""
  if name not in MODEL_NAMES:
    raise UsageError(f"unknown --model={name!r}; choose from {', '.join(MODEL_NAMES)}")


def build_model(name, num_outputs, input_shape, weights=None, seed=0, cbr_widths=None, width_multiplier=1.0,
                cbr_bn_scale=True, slim=False, stage_multipliers=None, include_head=True, initialize_weights=True,
                bn_momentum=None, zero_init_residual=False):
  """Builds model `name` with a Dense head of `num_outputs` logits, initialised and ready to train.

  input_shape: (H, W, C); H and W must be at least MIN_SIZE[name]. weights: None (random init, seeded by `seed`),
  "imagenet" (the Keras cache file; UsageError naming it when absent) or a path to a `.h5`/`.weights.h5` file in
  the legacy Keras layout (our pretraining writes these); the head is never loaded. cbr_widths /
  width_multiplier / cbr_bn_scale shape the CBRs; width_multiplier, stage_multipliers (4 floats) and slim (blocks
  3-4 at half width) shape ResNet50. Returns a keras.Model named `name` whose output is (batch, num_outputs)
  float32 logits. initialize_weights=False leaves Keras' default initialisers (for callers that set every weight
  themselves right after, e.g. with `initialize` or from a file, or only count parameters). bn_momentum: the
  momentum of every BatchNorm's moving statistics (None: Keras' 0.99). In a run of a few hundred steps 0.99 leaves
  a fifth of the initial statistics after 150 steps, so evaluations measure how far the statistics have settled
  rather than what the network learnt; the short presets use 0.9. zero_init_residual (ResNet50 only): every
  bottleneck's last BatchNorm starts with gamma 0 (training.policy turns it on for source pretraining).
  """
  check_model_name(name)
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3:
    raise UsageError(f"input_shape must be (height, width, channels), got {input_shape}")
  if min(input_shape[:2]) < MIN_SIZE[name]:
    raise UsageError(f"--image_size={min(input_shape[:2])} is below {name}'s minimum of {MIN_SIZE[name]} px")
  if zero_init_residual and name != "resnet50":
    raise UsageError(f"--zero_init_residual applies to resnet50's residual blocks, not to --model={name}")
  if name.startswith("cbr_"):
    model = cbr.build_cbr(name, num_outputs, input_shape, widths=cbr_widths, width_multiplier=width_multiplier,
                          bn_scale=cbr_bn_scale, include_head=include_head)
  elif name == "resnet50":
    mults = resnet.SLIM_MULTIPLIERS if slim else (stage_multipliers or (1.0, 1.0, 1.0, 1.0))
    model = resnet.build_resnet50(num_outputs, input_shape, stage_multipliers=mults,
                                  width_multiplier=width_multiplier, include_head=include_head,
                                  zero_init_residual=zero_init_residual)
  else:
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=input_shape,
                                          pooling="avg")
    x = base.output
    if include_head:
      x = keras.layers.Dense(num_outputs, dtype="float32", name="head")(x)
    model = keras.Model(base.input, x, name="inceptionv3")
  if bn_momentum is not None:
    if not 0.0 <= bn_momentum < 1.0:
      raise UsageError(f"--bn_momentum={bn_momentum} must lie in [0, 1)")
    for layer in model.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = float(bn_momentum)
  if initialize_weights:
    init.initialize(model, "random" if weights is None else "pretrained", source=weights, seed=seed)
  return model


def paper_convention_count(name, cbr_widths=None):
  """Parameter count under the paper's convention: 1-channel input, conv kernels without bias, one BatchNorm
  offset per channel, no head (this reproduces the quoted CBR-LargeT and CBR-Tiny counts exactly)."""
  model = build_model(name, 1, (MIN_SIZE[name] * 2,) * 2 + (1,), cbr_widths=cbr_widths, include_head=False,
                      initialize_weights=False)
  total = 0
  for layer in model.layers:
    kind = layer.__class__.__name__
    if kind == "Conv2D":
      total += int(np.prod(layer.kernel.shape))
    elif kind == "BatchNormalization":
      total += int(layer.moving_mean.shape[0])
  return total
