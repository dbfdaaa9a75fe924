"""Synthetic Gabor filter banks for the paper's GB experiment (a hand-made conv1)."""
import numpy as np

# Spatial frequencies in cycles per pixel. "low" spans wavelengths of 5-10 px, "high" of 2.5-4 px: on a 7x7 kernel
# the first are coarse blobs and bars, the second fine edges, the two sets the paper compares.
FREQUENCIES = {"low": (0.10, 0.20), "high": (0.25, 0.40)}


def gabor_orientations(num_filters):
  """Orientations in radians, spread evenly over [0, pi): filter j gets pi * j / num_filters."""
  return np.pi * np.arange(num_filters) / num_filters


def gabor_bank(size, num_filters, frequency="low"):
  """Returns a (size, size, num_filters) float64 bank of zero-mean, unit-norm grayscale Gabor filters.

  Filter j has orientation `gabor_orientations(num_filters)[j]` (the direction along which the grating varies,
  measured from the +x/column axis towards +y/row), a frequency cycled through the chosen set, and phase 0 or
  pi/2 alternately, so the bank holds even and odd (edge) detectors.
  """
  if frequency not in FREQUENCIES:
    raise ValueError(f"gabor frequency must be one of {sorted(FREQUENCIES)}, got {frequency!r}")
  lo, hi = FREQUENCIES[frequency]
  half = (size - 1) / 2.0
  y, x = np.mgrid[0:size, 0:size].astype(np.float64) - half
  bank = np.empty((size, size, num_filters))
  for j, theta in enumerate(gabor_orientations(num_filters)):
    # Frequencies cycle with a stride coprime to most bank sizes so neighbouring orientations differ in scale too.
    f = lo + (hi - lo) * (((j * 5) % 4) / 3.0)
    sigma = min(0.56 / f, size / 2.0)  # ~1 octave bandwidth, kept inside the kernel.
    xr = x * np.cos(theta) + y * np.sin(theta)
    g = np.exp(-(x**2 + y**2) / (2 * sigma**2)) * np.cos(2 * np.pi * f * xr + (j % 2) * np.pi / 2)
    g -= g.mean()
    bank[..., j] = g / (np.linalg.norm(g) + 1e-12)
  return bank


def filter_orientation(f):
  """Estimates the orientation (radians in [0, pi)) of a 2-D filter (size, size) from its spectral peak."""
  n = max(64, 4 * f.shape[0])  # Zero-padding refines the frequency grid.
  spec = np.abs(np.fft.fft2(f - f.mean(), s=(n, n)))
  spec[0, 0] = 0
  ky, kx = np.unravel_index(np.argmax(spec), spec.shape)
  ky = ky - n if ky > n // 2 else ky
  kx = kx - n if kx > n // 2 else kx
  return float(np.mod(np.arctan2(ky, kx), np.pi))


def gabor_kernel(kernel_shape, frequency="low"):
  """Returns a conv kernel of `kernel_shape` (k, k, in_channels, filters) filled with a Gabor bank.

  Each grayscale filter is copied to every input channel, and the whole kernel is scaled to the He-normal
  variance 2 / fan_in, so only the structure differs from random init, not the scale.
  """
  k, k2, cin, cout = kernel_shape
  assert k == k2, "square kernels only"
  bank = gabor_bank(k, cout, frequency)  # (k, k, cout)
  kernel = np.repeat(bank[:, :, None, :], cin, axis=2)
  target_std = np.sqrt(2.0 / (k * k * cin))
  return (kernel * (target_std / kernel.std())).astype(np.float32)
