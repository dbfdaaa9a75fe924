"""The cost of a model: parameters and the arithmetic of one forward pass, counted from the Keras layers' shapes.

`macs_per_image` counts multiply-accumulates (one multiply and one add = 1 MAC) of the convolution and dense layers
for one image, the convention of the published counts (ResNet50 at 224 px: "3.8-4.1 G FLOPs", which are MACs).
`flops_per_image` is 2 x that, the convention of TensorFlow's profiler (a Conv2D's FLOPs there are 2 x its MACs,
plus one add per output for a bias). BatchNorm, activations, pooling, residual adds and biases are left out: a few
per cent of a conv network's arithmetic (ResNet50 at 224 px: conv biases 0.6% of its FLOPs, all of them about 2%).

Why from the layer shapes and not from a traced graph: it is exact, takes milliseconds for any input size, and
needs no TF1 profiler (tests/models_test.py checks it against the profiler's Conv2D count and the published
ResNet50 figure).
"""
import numpy as np


def _prod(dims, what):
  dims = tuple(dims)
  if any(d is None for d in dims):
    raise ValueError(f"{what} has an unknown dimension {dims}: build the model at a fixed input size")
  return int(np.prod(dims, dtype=np.int64)) if dims else 1


def _layer_macs(layer):
  """MACs of one layer for one example (0 for a layer without weights that multiply)."""
  kind = layer.__class__.__name__
  if kind in ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "Dense"):
    # Every output position applies the whole kernel once: (kh, kw, cin / groups, cout) per position for a conv,
    # (kh, kw, cin, multiplier) for a depthwise conv, (in, out) per leading position for a Dense.
    return _prod(layer.output.shape[1:-1], layer.name) * _prod(layer.kernel.shape, layer.name)
  if kind in ("SeparableConv1D", "SeparableConv2D"):
    # The depthwise part works at the output's spatial size (the pointwise 1x1 keeps it).
    positions = _prod(layer.output.shape[1:-1], layer.name)
    return positions * (_prod(layer.depthwise_kernel.shape, layer.name) + _prod(layer.pointwise_kernel.shape,
                                                                                 layer.name))
  if kind in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
    return _prod(layer.input.shape[1:-1], layer.name) * _prod(layer.kernel.shape, layer.name)
  if hasattr(layer, "layers"):  # A nested model: its own layers carry their shapes.
    return sum(_layer_macs(sub) for sub in layer.layers)
  if kind in ("EinsumDense", "MultiHeadAttention", "LSTM", "GRU", "SimpleRNN"):
    raise ValueError(f"layer {layer.name}: {kind} is not counted (convolutions and dense layers only)")
  return 0


def macs_per_image(model):
  """Multiply-accumulates of one forward pass of `model` on one image (int; conv and dense layers, see the module
  docstring). `model`: a built functional keras.Model with a fixed input size, e.g. build_model(..., (S, S, 3)); the
  count is for that S. Raises ValueError when a layer's spatial size is unknown."""
  return sum(_layer_macs(layer) for layer in model.layers)


def model_cost(model):
  """{"params": int, "macs_per_image": int, "flops_per_image": int (2 x MACs), "image_size": [H, W]} of a built
  functional keras.Model at its fixed input size (see macs_per_image)."""
  macs = macs_per_image(model)
  return {"params": int(model.count_params()), "macs_per_image": int(macs), "flops_per_image": int(2 * macs),
          "image_size": [int(d) for d in model.input_shape[1:3]]}
