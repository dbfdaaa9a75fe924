"""Input preprocessing that follows the model and its weights (PAPER.md section 2).

ResNet50 weights from ImageNet expect `caffe` mode, InceptionV3 `tf` mode. The CBRs and any model trained from
scratch or pretrained by this package use the model's default mode, so a weights file written by our own
pretraining is read the way it was trained.
"""
import numpy as np

from transfusion_tf.errors import UsageError

MODES = ("caffe", "tf", "torch", "unit")

# Model name -> the mode its ImageNet weights were trained with (and the default for every other source).
DEFAULT_MODE = {
    "resnet50": "caffe",
    "inceptionv3": "tf",
    "cbr_larget": "tf",
    "cbr_largew": "tf",
    "cbr_small": "tf",
    "cbr_tiny": "tf",
}

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def preprocessing_mode(model_name, weights=None, override=None):
  """Returns the preprocessing mode (one of MODES) for `model_name` loaded from `weights`.

  `weights` is None, "imagenet" or a file path; all three give the model's default mode, because our own
  pretraining trains with that same mode. `override` (e.g. from a flag) wins when given, for weight files trained
  elsewhere with another convention.
  """
  if override:
    if override not in MODES:
      raise UsageError(f"--preprocessing={override!r} is not one of {', '.join(MODES)}")
    return override
  base = model_name.split(":")[0]
  if base not in DEFAULT_MODE:
    raise UsageError(f"unknown model {model_name!r}; known: {', '.join(sorted(DEFAULT_MODE))}")
  return DEFAULT_MODE[base]


def preprocess(images, mode):
  """Maps RGB (or grayscale) pixels in [0, 255] to the model's input range.

  images: float32 tensor or array (..., H, W, C) with C in {1, 3}, values 0..255.
  mode: `caffe` (RGB->BGR, subtract ImageNet mean), `tf` (scale to [-1, 1]), `torch` (ImageNet mean/std on [0, 1])
  or `unit` (scale to [0, 1]). Works on numpy arrays and TensorFlow tensors alike; returns the same kind.
  """
  if mode == "tf":
    return images / 127.5 - 1.0
  if mode == "unit":
    return images / 255.0
  channels = images.shape[-1]
  if mode == "caffe":
    if channels == 3:
      if isinstance(images, np.ndarray):
        images = images[..., ::-1]
      else:
        import tensorflow as tf  # A negative-stride slice of a tensor takes TF's slow element-wise path (4x slower).
        images = tf.reverse(images, axis=[-1])
      return images - np.asarray(_CAFFE_MEAN_BGR, np.float32)
    return images - np.float32(np.mean(_CAFFE_MEAN_BGR))
  if mode == "torch":
    mean = np.asarray(_TORCH_MEAN, np.float32) if channels == 3 else np.float32(np.mean(_TORCH_MEAN))
    std = np.asarray(_TORCH_STD, np.float32) if channels == 3 else np.float32(np.mean(_TORCH_STD))
    return (images / 255.0 - mean) / std
  raise UsageError(f"unknown preprocessing mode {mode!r}; known: {', '.join(MODES)}")
