"""Weight files: ImageNet files from the Keras cache, RadImageNet-style `.h5`, and files our pretraining writes.

All are read into a `SourceWeights`: an ordered list of (layer name, [arrays]) plus metadata. Our own files use the
legacy Keras HDF5 layout (a `layer_names` attribute, one group per layer with `weight_names`) because it keeps
layer names, which Keras 3's native `.weights.h5` does not; Keras' legacy loader reads it too.
"""
import dataclasses
import os
import re

import h5py
import numpy as np

from transfusion_tf.errors import UsageError

IMAGENET_FILES = {
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inceptionv3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def keras_cache_dir():
  """The folder where Keras keeps downloaded weights: $KERAS_HOME/models, else ~/.keras/models."""
  home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
  return os.path.join(home, "models")


@dataclasses.dataclass
class SourceWeights:
  """Weights of a source model: `layers` is an ordered list of (name, [np.ndarray, ...]); `attrs` has metadata
  such as `model_name`, `source` (e.g. "synthetic_source" or "imagenet") and `preprocessing`."""
  path: str
  layers: list
  attrs: dict

  def by_name(self):
    return dict(self.layers)

  @property
  def description(self):
    """A one-line statement of where these weights came from, for logs and reports."""
    src = self.attrs.get("source", "unknown")
    if src == "synthetic_source":
      return (f"{self.path}: pretrained by transfusion_tf on the embedded synthetic source task, standing in for "
              "ImageNet (real ImageNet weights were not available)")
    return f"{self.path}: {src} weights"


def resolve_weights_path(model_name, weights):
  """Maps `weights` ("imagenet" or a path) to an existing file, or raises UsageError within milliseconds.

  Never touches the network: offline the Keras download would hang on retries and end in a URL traceback.
  """
  if weights == "imagenet":
    if model_name not in IMAGENET_FILES:
      raise UsageError(
          f"no ImageNet weights exist for {model_name}; pretrain it with `transfusion-pretrain --model={model_name}`"
          " and pass --weights=PATH to the file it writes")
    path = os.path.join(keras_cache_dir(), IMAGENET_FILES[model_name])
    if not os.path.exists(path):
      raise UsageError(
          f"ImageNet weights for {model_name} not found: expected {IMAGENET_FILES[model_name]} in "
          f"{keras_cache_dir()} (this machine cannot download it). Copy the file there, or pass --weights=PATH "
          "to a local .h5 file")
    return path
  path = os.path.expanduser(str(weights))
  if not os.path.exists(path):
    raise UsageError(f"--weights file not found: {path}")
  if os.path.isdir(path):
    raise UsageError(f"--weights={path} is a folder; pass the weights file in it (e.g. {path}/pretrained.weights.h5)")
  return path


def read_weight_file(path):
  """Reads a legacy-layout Keras HDF5 weight file (weights-only or full model) into a SourceWeights."""
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    # h5py's message carries a buffer address and a time stamp; keep only its reason.
    m = re.search(r"error message = '([^']*)'", str(e)) or re.search(r"\(([^,()]*)", str(e))
    reason = m.group(1).strip() if m else type(e).__name__
    raise UsageError(f"--weights file {path} is not a readable HDF5 weights file ({reason})") from None
  with f:
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in root.attrs:
      raise UsageError(
          f"--weights file {path} has no layer names (Keras 3 native .weights.h5 layout?); write it with "
          "transfusion_tf.models.save_weight_file or transfusion-pretrain, or use a legacy Keras .h5 file")
    layers = []
    for raw in root.attrs["layer_names"]:
      name = raw.decode() if isinstance(raw, bytes) else str(raw)
      group = root[name]
      names = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
      if names:
        layers.append((name, [np.asarray(group[w]) for w in names]))
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items() if k != "layer_names"}
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}
  if "source" not in attrs and os.path.basename(path) in IMAGENET_FILES.values():
    attrs["source"] = "imagenet"
  return SourceWeights(path=path, layers=layers, attrs=attrs)


def load_source(model_name, weights):
  """Resolves and reads `weights` ("imagenet", a path, or an already loaded SourceWeights)."""
  if isinstance(weights, SourceWeights):
    return weights
  return read_weight_file(resolve_weights_path(model_name, weights))


def save_weight_file(model, path, **attrs):
  """Writes every weighted layer of `model` to `path` in the legacy Keras HDF5 layout, atomically.

  attrs: metadata strings or numbers stored on the file, e.g. source="synthetic_source", image_size=64.
  """
  tmp = f"{path}.tmp-{os.getpid()}"
  names = []
  with h5py.File(tmp, "w") as f:
    for layer in model.layers:
      if not layer.weights:
        continue
      names.append(layer.name)
      group = f.create_group(layer.name)
      wnames = [f"{layer.name}/{w.path.split('/')[-1]}:{i}" for i, w in enumerate(layer.weights)]
      group.attrs["weight_names"] = np.array([n.encode() for n in wnames])
      for n, w in zip(wnames, layer.weights):
        group.create_dataset(n, data=np.asarray(w.numpy()))
    f.attrs["layer_names"] = np.array([n.encode() for n in names])
    f.attrs["model_name"] = model.name
    for k, v in attrs.items():
      f.attrs[k] = v
  os.replace(tmp, path)
  return path


def match_layers(model, source, skip=("head",), only=None):
  """Pairs each weighted layer of `model` (except `skip`; restricted to the names in `only` when given) with its
  source arrays.

  Matches by layer name when every name is present in the source (ResNet50, CBR, our own files), else by order
  of weighted layers (InceptionV3, whose inner names are auto-numbered). Raises UsageError naming the first layer
  whose count or shapes disagree. Returns {layer name: [np.ndarray, ...]}.
  """
  targets = [l for l in model.layers if l.weights and l.name not in skip]
  src_named = source.by_name()
  if all(l.name in src_named for l in targets if only is None or l.name in only):
    pairs = [(l, l.name, src_named[l.name]) for l in targets if l.name in src_named]
  else:
    src_list = [(n, a) for n, a in source.layers if n not in skip]
    if len(src_list) != len(targets):
      missing = next(l.name for l in targets if l.name not in src_named)
      raise UsageError(
          f"--weights file {source.path} does not fit {model.name}: layer {missing!r} is not in the file, and the "
          f"file has {len(src_list)} weighted layers where the model has {len(targets)}")
    pairs = [(l, n, a) for l, (n, a) in zip(targets, src_list)]
  out = {}
  for layer, src_name, arrays in pairs:
    if only is not None and layer.name not in only:
      continue
    shapes = [tuple(w.shape) for w in layer.weights]
    src_shapes = [tuple(a.shape) for a in arrays]
    if shapes != src_shapes:
      raise UsageError(
          f"--weights file {source.path} does not fit {model.name}: layer {layer.name!r} has weight shapes "
          f"{shapes} but the file's {src_name!r} has {src_shapes}")
    out[layer.name] = arrays
  return out
