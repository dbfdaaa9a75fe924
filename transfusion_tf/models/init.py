"""Initialisation schemes (PAPER.md section 4, rows MV, WT, SL, GB): one entry point, `initialize`.

Schemes: `random`, `pretrained`, `meanvar`, `transfuse:<stage>`, `slim`, `gabor`. Everything not set from a
source gets the project's random init: He-normal (fan-in) kernels, zero biases, BatchNorm gamma 1 / beta 0 /
moving mean 0 / moving variance 1. All draws are seeded, so the same (model, scheme, seed) gives the same weights.
"""
import keras
import numpy as np

from transfusion_tf.errors import UsageError
from transfusion_tf.models import gabor as gabor_lib
from transfusion_tf.models import resnet, stages
from transfusion_tf.models import weights as weights_lib

# The one list of scheme names; "transfuse" takes a stage argument (transfuse:<stage>).
SCHEMES = ("random", "pretrained", "meanvar", "transfuse", "slim", "gabor")
TAKES_STAGE = ("transfuse",)
NEEDS_SOURCE = ("pretrained", "meanvar", "transfuse", "slim")  # Schemes that read source weights (--weights).
# BatchNorm under Mean-Var: the paper's "BN Identity Init" (its best) and its two alternatives.
MEANVAR_BN = ("identity", "resample", "copy")


def parse_scheme(scheme):
  """Splits 'transfuse:block2' into ('transfuse', 'block2'); other schemes give (scheme, None).

  Raises a UsageError naming the scheme for anything that is not a scheme of SCHEMES (with its stage where needed).
  """
  base, _, arg = str(scheme).partition(":")
  if base not in SCHEMES:
    shown = ", ".join(f"{s}:<stage>" if s in TAKES_STAGE else s for s in SCHEMES)
    raise UsageError(f"--init={scheme!r} is not a scheme; choose from {shown}")
  if base in TAKES_STAGE and not arg:
    raise UsageError("--init=transfuse needs a stage, e.g. --init=transfuse:conv1 (or :none, :all)")
  return base, (arg or None)


def _is_kernel(var_name):
  return var_name in ("kernel", "depthwise_kernel", "pointwise_kernel")


def _zero_gamma(layer):
  """Whether `layer` is a BatchNorm built to start with gamma 0 (resnet.build_resnet50's zero_init_residual)."""
  return isinstance(getattr(layer, "gamma_initializer", None), keras.initializers.Zeros)


def _standard_value(var, rng, zero_gamma=False):
  name = var.name.split("/")[-1]
  shape = tuple(var.shape)
  if _is_kernel(name):
    fan_in = int(np.prod(shape[:-1]))
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
  if name == "gamma" and zero_gamma:
    return np.zeros(shape)
  if name in ("gamma", "moving_variance"):
    return np.ones(shape)
  return np.zeros(shape)  # bias, beta, moving_mean


def _layer_rng(seed, index):
  return np.random.default_rng([int(seed), int(index), 7919])


def random_init(model, seed=0, only=None):
  """Re-initialises every layer of `model` (or only the layer names in `only`) with the standard random init; a
  BatchNorm built with gamma_initializer "zeros" (ResNet50's zero_init_residual) gets gamma 0."""
  for i, layer in enumerate(model.layers):
    if not layer.weights or (only is not None and layer.name not in only):
      continue
    rng = _layer_rng(seed, i)
    zero_gamma = _zero_gamma(layer)
    for var in layer.weights:
      var.assign(_standard_value(var, rng, zero_gamma).astype(var.dtype))


def copy_weights(model, arrays_by_layer):
  """Assigns {layer name: [arrays]} to the named layers of `model`, in each layer's weight order."""
  for name, arrays in arrays_by_layer.items():
    layer = model.get_layer(name)
    for var, value in zip(layer.weights, arrays):
      var.assign(np.asarray(value, dtype=var.dtype))


def _meanvar(model, source, seed, bn):
  """Mean-Var: every matched tensor (kernels, biases; BatchNorm as `bn` says) drawn iid from its source tensor's
  N(mean, std). Returns the names of the layers set from the source."""
  if bn not in MEANVAR_BN:
    raise UsageError(f"--meanvar_bn={bn!r} is not one of {', '.join(MEANVAR_BN)}")
  matched = weights_lib.match_layers(model, source)
  done = []
  for i, layer in enumerate(model.layers):
    if layer.name not in matched:
      continue
    rng = _layer_rng(seed, i + 100003)
    is_bn = layer.__class__.__name__ == "BatchNormalization"
    if is_bn and bn == "identity":
      continue  # random_init already set gamma 1, beta 0, moving mean 0, moving variance 1.
    if is_bn and bn == "copy":
      copy_weights(model, {layer.name: matched[layer.name]})
      done.append(layer.name)
      continue
    for var, src in zip(layer.weights, matched[layer.name]):
      if is_bn and var.name.split("/")[-1] in ("moving_mean", "moving_variance"):
        continue  # Statistics of the source kernels' outputs, not parameters: they stay 0 and 1.
      src = np.asarray(src, np.float64)
      var.assign(rng.normal(src.mean(), src.std(), size=src.shape).astype(var.dtype))
    done.append(layer.name)
  return sorted(done)


def _check_slim(model, source):
  if stages.architecture(model) != "resnet50":
    raise UsageError(f"--init=slim needs --model=resnet50, got {stages.architecture(model)}")
  probe = "conv4_block1_1_conv"
  src = source.by_name().get(probe)
  width = model.get_layer(probe).weights[0].shape[-1]
  if src is not None and width * 2 != src[0].shape[-1]:
    raise UsageError(
        f"--init=slim needs ResNet50 built with half-width blocks 3-4 (build_model(..., slim=True)); layer {probe} "
        f"has {width} filters and the source {src[0].shape[-1]}")


def initialize(model, scheme, source=None, seed=0, gabor_frequency="low", meanvar_bn="identity"):
  """Initialises `model` in place with `scheme` and returns a dict describing what was done.

  model: built by `build_model`. scheme: see SCHEMES. source: "imagenet", a weights path, or a SourceWeights; needed
  by pretrained, meanvar, transfuse:* and slim. seed: for every random draw. gabor_frequency: "low" or "high".
  meanvar_bn: BatchNorm under meanvar (MEANVAR_BN): "identity" (the paper's "BN Identity Init": gamma 1, beta 0,
    moving mean 0, moving variance 1), "resample" (gamma and beta drawn from their source tensors' N(mean, std);
    moving statistics 0 and 1) or "copy" (all four BatchNorm arrays copied from the source).
  Returns {"scheme", "copied_layers" (names copied bit for bit), "meanvar_layers", "source" (description)}.
  """
  base, arg = parse_scheme(scheme)
  info = {"scheme": str(scheme), "copied_layers": [], "meanvar_layers": [], "source": None}
  random_init(model, seed)
  if base in NEEDS_SOURCE:
    if source is None:
      raise UsageError(f"--init={scheme} needs source weights: pass --weights=PATH (e.g. from transfusion-pretrain) "
                       "or --weights=imagenet")
    source = weights_lib.load_source(stages.architecture(model), source)
    info["source"] = source.description
  if base == "random":
    return info
  if base == "gabor":
    conv = stages.conv1_layer(model)
    kernel = conv.weights[0]
    kernel.assign(gabor_lib.gabor_kernel(tuple(kernel.shape), gabor_frequency).astype(kernel.dtype))
    info["gabor"] = {"layer": conv.name, "frequency": gabor_frequency}
    return info
  if base == "meanvar":
    info["meanvar_layers"] = _meanvar(model, source, seed, meanvar_bn)
    return info
  if base == "slim":
    _check_slim(model, source)
    arg = resnet.STACKS[1][0]  # Pretrained through block2, as the paper's Slim.
  only = stages.layers_up_to(model, "all" if base == "pretrained" else arg)
  matched = weights_lib.match_layers(model, source, only=only)
  copy_weights(model, matched)
  info["copied_layers"] = sorted(matched)
  return info


def conv_bn_pairs(model):
  """(Conv2D, BatchNormalization) layer pairs of `model` where the BatchNorm reads the conv's output directly."""
  import keras  # pylint: disable=g-import-not-at-top
  pairs = []
  for layer in model.layers:
    if not isinstance(layer, keras.layers.BatchNormalization):
      continue
    history = getattr(layer.input, "_keras_history", None)
    producer = history[0] if history else None
    if isinstance(producer, keras.layers.Conv2D):
      pairs.append((producer, layer))
  return pairs


def he_std(kernel_shape):
  """The He-normal (fan-in) std of a kernel of `kernel_shape` (kh, kw, in, out) or (in, out): sqrt(2 / fan_in)."""
  return float(np.sqrt(2.0 / np.prod(kernel_shape[:-1])))


def kernel_scale_profile(model):
  """{conv layer name: std(kernel) / He-normal std} over the BatchNorm-followed convs of `model`, in layer order.

  In a BatchNorm network this ratio sets no function, only the layer's effective learning rate (an Adam step
  moves a kernel by about lr per entry, so its relative change goes as 1 / std): it is what Mean-Var transfers.
  """
  return {conv.name: float(np.std(conv.kernel.numpy())) / he_std(tuple(conv.kernel.shape))
          for conv, _ in conv_bn_pairs(model)}


def normalize_conv_scale(model, per_layer=False):
  """Rescales the BatchNorm-followed conv kernels of `model` by ONE global factor, keeping the function.

  Weight decay on such kernels (the source-pretraining default) shrinks them without changing what the network
  computes, but a transferred kernel far smaller than at init would then be fine-tuned with a much larger effective
  learning rate than a random one (Adam's steps do not shrink with the weights), which is not the comparison the
  paper makes. The global factor c = exp(mean_l log(he_l / std_l)) over the conv layers l brings the geometric mean
  of std_l / he_l back to 1 and keeps each layer's ratio to the others: the source's kernel-scale profile (what
  Mean-Var transfers) survives the export. per_layer=True gives each layer its own c_l = he_l / std_l (every kernel
  at exactly the He-normal std: the profile is erased; kept for comparison). Each kernel and conv bias is multiplied
  by its c and its BatchNorm's moving mean and variance by c and c^2, so inference outputs change only through
  BatchNorm's epsilon and training-mode outputs not at all. Returns {conv layer name: c} (one value repeated unless
  per_layer).
  """
  pairs = [(conv, bn) for conv, bn in conv_bn_pairs(model) if np.std(conv.kernel.numpy()) > 0]
  if not pairs:
    return {}
  factors = np.array([he_std(tuple(conv.kernel.shape)) / float(np.std(conv.kernel.numpy())) for conv, _ in pairs])
  if not per_layer:
    factors = np.full(len(pairs), np.exp(np.mean(np.log(factors))))
  scales = {}
  for (conv, bn), c in zip(pairs, factors):
    conv.kernel.assign(np.asarray(conv.kernel.numpy()) * c)
    if conv.use_bias:  # The whole conv output scales by c, so BatchNorm's statistics below stay exact.
      conv.bias.assign(np.asarray(conv.bias.numpy()) * c)
    bn.moving_mean.assign(np.asarray(bn.moving_mean.numpy()) * c)
    bn.moving_variance.assign(np.asarray(bn.moving_variance.numpy()) * c * c)
    scales[conv.name] = float(c)
  return scales


def check_scheme(scheme):
  """Validates an init scheme name (e.g. a study's --study_inits item) without a model: returns it unchanged, or
  raises a UsageError naming it. The stage of transfuse:<stage> is checked against the model when it is built."""
  parse_scheme(scheme)
  return scheme
