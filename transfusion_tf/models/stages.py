"""Named stages: the only place that maps the paper's stage names to Keras layer names.

ResNet50: conv1, block1..block4, pool. InceptionV3: stem, mixed0..mixed10, pool. CBR: conv1..convN, pool.
A stage's output is the output of its last layer (e.g. `pool1_pool` for ResNet50 conv1, `conv4_block6_out` for
block3, the `mixed7` concatenation, `conv2_pool` for CBR conv2); `pool` is the global average pool. The head is in
no stage, so weight transfer never copies it.
"""
import re

from transfusion_tf.errors import UsageError

HEAD = "head"
_MIXED = re.compile(r"^mixed(\d+)$")


def architecture(model):
  """Returns the architecture name of a model built by `build_model` (its Keras model name)."""
  return model.name


def _resnet_stage(layer_name):
  if layer_name.startswith(("conv1_", "pool1_")):
    return "conv1"
  m = re.match(r"^conv([2-5])_", layer_name)
  if m:
    return f"block{int(m.group(1)) - 1}"
  return "pool" if layer_name == "avg_pool" else None


def _cbr_stage(layer_name):
  m = re.match(r"^(conv\d+)_", layer_name)
  if m:
    return m.group(1)
  return "pool" if layer_name == "avg_pool" else None


def _inception_assignments(model):
  # Topological order puts every layer of block K after mixed(K-1) and before mixedK, and the stem (3 conv-bn,
  # max-pool, 2 conv-bn, max-pool) before everything else. Inner layer names are auto-numbered, so count
  # max-pools instead of reading names.
  out, stage, pools = {}, "stem", 0
  for layer in model.layers:
    if layer.__class__.__name__ == "InputLayer" or layer.name == HEAD:
      continue
    if stage == "stem":
      out[layer.name] = "stem"
      if layer.__class__.__name__ == "MaxPooling2D":
        pools += 1
        if pools == 2:
          stage = "mixed0"
      continue
    if layer.__class__.__name__ == "GlobalAveragePooling2D":
      out[layer.name] = "pool"
      continue
    out[layer.name] = stage
    m = _MIXED.match(layer.name)
    if m:
      stage = f"mixed{int(m.group(1)) + 1}"
  return out


def layer_stage_map(model):
  """Returns {keras layer name: stage name} for every layer of `model` that belongs to a stage."""
  arch = architecture(model)
  if arch == "inceptionv3":
    return _inception_assignments(model)
  fn = _resnet_stage if arch == "resnet50" else _cbr_stage if arch.startswith("cbr_") else None
  if fn is None:
    raise UsageError(f"model {arch!r} has no stage mapping; build it with transfusion_tf.models.build_model")
  return {l.name: s for l in model.layers if (s := fn(l.name)) is not None}


def stage_names(model):
  """Returns the model's stage names, bottom to top, e.g. ['conv1', 'block1', ..., 'block4', 'pool']."""
  seen = []
  for stage in layer_stage_map(model).values():
    if stage not in seen:
      seen.append(stage)
  return seen


def _check_stage(model, stage):
  names = stage_names(model)
  if stage not in names:
    raise UsageError(f"stage {stage!r} does not exist in {architecture(model)}; stages are {', '.join(names)}")


def stage_layers(model, stage):
  """Returns the keras layers of `stage`, in topological order."""
  _check_stage(model, stage)
  mapping = layer_stage_map(model)
  return [l for l in model.layers if mapping.get(l.name) == stage]


def stage_output(model, stage):
  """Returns the symbolic output tensor of `stage` (the output of its last layer), for building submodels."""
  return stage_layers(model, stage)[-1].output


def layers_up_to(model, stage):
  """Returns the names of all layers in stages from the bottom up to and including `stage`.

  `stage` may also be "none" (no layer) or "all" (every stage, still never the head).
  """
  if stage == "none":
    return set()
  names = stage_names(model)
  if stage != "all":
    _check_stage(model, stage)
    names = names[:names.index(stage) + 1]
  mapping = layer_stage_map(model)
  return {layer for layer, s in mapping.items() if s in names}


def conv1_layer(model):
  """Returns the first convolution of the model (the one the paper's conv1 figures and the Gabor scheme use)."""
  for layer in model.layers:
    if layer.__class__.__name__ == "Conv2D":
      return layer
  raise UsageError(f"{architecture(model)} has no Conv2D layer")
