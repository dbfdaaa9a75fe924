"""Embedded synthetic tasks: fundus-like retina, chest-x-ray-like cxr, and a natural-image stand-in `source`.

Real fundus, CheXpert and ImageNet data cannot be downloaded everywhere, so the default experiments run on three
procedurally generated tasks. They keep the property the paper's argument rests on: the medical label is read from
SMALL LOCAL VARIATIONS IN LARGE IMAGES (a few lesions of a few pixels), not from global colour, brightness or size.

Generative model
================

retina (labels: DR grade 0-4; referable = grade >= 2)
  Each image is a macula-centred fundus photograph on a black background: an orange-red disc whose base colour
  follows a per-patient pigmentation (light orange to dark brown-red), smooth choroidal mottling, radial vignetting,
  an optional bluish rim glare, a bright yellow optic disc with a paler cup on the nasal side (left or right by eye),
  a darker macula with a foveal pit and, in some eyes, a bright foveal reflex. A branching vessel tree grows from the
  disc: two temporal arcades (artery and vein) curving around the macula, two nasal trunks, and two generations of
  side branches, drawn as random walks in direction with three widths. Lesions follow the clinical (ICDR) scale:
    grade 0  none;
    grade 1  microaneurysms only (a few tiny dark-red dots);
    grade 2  more microaneurysms plus at least one of: dot/blot or flame haemorrhages (larger red blots), clusters of
             hard exudates (sharp yellow dots), cotton-wool spots (pale fluffy patches). A share of grade-2 eyes carry
             a single such lesion ("borderline" cases);
    grade 3  many haemorrhages in all quadrants (6-20), many microaneurysms, exudates, cotton-wool spots;
    grade 4  grade 2- or 3-like lesions plus neovascularisation (tangles of thin tortuous vessels at the disc or
             along the arcades), sometimes a large boat-shaped preretinal haemorrhage.
  Lesion sizes are set in pixels at the generated resolution: the lesion unit is lp = max(1.4, 0.0045 * size) px, a
  microaneurysm has a Gaussian radius of 0.75 lp (about 1 px up to 311 px, 2 px at 587 px), a haemorrhage 1.3-3.5 lp.
  Lesion mimics appear at every grade (since generator v3): for each of haemorrhages, exudate clusters and
  cotton-wool spots a total count is drawn independently of the grade, and whatever the eye's own lesions leave of
  it becomes one to three broad smooth patches on the same colour layer, with the lesions' peak opacity and the
  missing lesions' pixel area. So an image holds about as many lesion-coloured pixels at every grade, and only their
  scale and shape (several small sharp blobs or dot clusters vs a few broad patches) tell the grade. Further
  distractors at every grade: neutral-dark pigment dots, camera dust, and (more with age) soft yellowish drusen.
  Nuisance variation per patient (pigmentation, disc size, vessel layout) and per photograph (exposure, gamma, colour
  cast, field position and size, vignetting, camera blur, sensor noise) is large compared with the lesions' effect on
  global statistics. Measured (benchmarks/synthetic_benchmark.py --baseline, tests/synthetic_test.py): an
  L2-regularised logistic regression on per-channel global statistics (16-bin histogram, percentiles 1-99.9, mean,
  std; `global_statistics_features`, `global_baseline_auc`) reads referable DR at AUC <= 0.65 at 32-224 px; on
  generator v2, which had no mimics, it read 0.92 at 32 px, 0.90 at 48 px and 0.82 at 128 px.
  The two eyes of one patient (examples 2k and 2k+1) share the patient (pigmentation, age) and, in 75% of patients,
  the grade. Grade prevalence defaults to 45/15/20/10/10 % (EyePACS-like skew, 40% referable).

cxr (labels: (5,) int8 in {-1, 0, 1} for [Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion])
  A grayscale frontal chest film: soft-tissue body on a dark background, two lung fields (dark) with rounded apices,
  domed hemidiaphragms (the right one higher) meeting the chest wall in sharp costophrenic angles, a bright
  mediastinum with a dark trachea, vertebrae, a heart shadow to the patient's left, hila, branching vascular
  markings, posterior and anterior ribs, clavicles, breast shadows for some patients, sometimes a gastric bubble,
  a side marker and ECG electrodes. Findings:
    Cardiomegaly     cardiothoracic ratio (heart width / thorax width) >= 0.53; 0.49-0.53 is often uncertain;
                     AP films (30-60 % with difficulty) magnify the heart by 4-32 %, so size alone misleads;
    Pleural Effusion fluid at one or both bases with a meniscus rising laterally; small ones only blunt the
                     costophrenic angle;
    Consolidation    one or two fluffy local opacities, sometimes with dark air bronchograms;
    Edema            bilateral perihilar (bat-wing) haze plus short horizontal Kerley B lines at the lateral bases;
                     90 % of films without edema carry two hazes of the same strength and size placed laterally,
                     so the lungs' brightness alone no longer reads it (generator v3);
    Atelectasis      a thin plate-like linear opacity, sometimes a wedge by the heart, with volume loss (raised
                     hemidiaphragm on that side).
  Findings co-occur through latent conditions: heart failure (more likely with cardiomegaly) gives edema and
  effusion; infection gives consolidation, effusion and atelectasis; effusion gives compressive atelectasis.
  A subtle finding is often labelled uncertain (-1), and some findings-free films get a faint mimic labelled -1;
  rates are CheXpert-like (about 15/5/12/7/6 % of labels). Patients have 1-8 studies (mean about 2.2): their
  anatomy is shared, findings, positioning, inspiration and exposure differ.

source (labels: one of 32 classes; a stand-in for ImageNet in offline pretraining)
  Every image is a coloured 1/f-noise background with one pattern of random colours on it, in a soft aperture or
  filling the frame. Classes: sinusoidal gratings at 4 orientation bins x 2 spatial-frequency bands (8);
  checkerboards axis-aligned or diagonal x 2 frequencies (4); filled shapes at any rotation: triangle, square,
  pentagon, hexagon, disc, star, cross, ring (8); line drawings: concentric rings, radial spokes, cross-hatching,
  scattered segments (4); dot lattice, blob field (2); zigzag stripes, wavy stripes (2); plaid (1); oriented
  "wood-grain" noise, isotropic fine "sand" noise (2); a single straight step edge (1). Orientation, frequency and
  shape each carry some classes, and colours are random everywhere, so telling the classes apart needs oriented edge
  and grating detectors at many orientations and scales, the Gabor-like filters a conv1 learns on natural images.
  Pattern scales are relative to the image, so at 32 px the periods (about 3-5 px) meet a 7x7 conv1: pretrained
  there with `training.policy.pretrain_defaults()`, CBR-Small's conv1 grows oriented filters (orientation selectivity
  0.14 -> 0.44; benchmarks/synthetic_benchmark.py --source_filters).

Determinism: example i of (task, seed, split) comes from np.random.default_rng([seed, task id, split id, 0, i])
(patients from a separate stream), so it is the same whatever the number of examples, the chunking or the number of
worker processes.

Difficulty (0..1): lesion / finding / pattern contrast, overlap of lesion counts and sizes between grades, distractor
rate, camera blur and noise all grow with it. DEFAULT_DIFFICULTY holds the calibrated defaults.
"""
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import logging
import numpy as np
from scipy import ndimage

from transfusion_tf import files
from transfusion_tf.data.records import SPLITS
from transfusion_tf.data.tasks import CXR_PATHOLOGIES
from transfusion_tf.errors import UsageError

GENERATOR_VERSION = 3

SOURCE_CLASSES = [
    "grating_0_low", "grating_45_low", "grating_90_low", "grating_135_low",
    "grating_0_high", "grating_45_high", "grating_90_high", "grating_135_high",
    "checker_low", "checker_high", "diamond_low", "diamond_high",
    "triangle", "square", "pentagon", "hexagon", "disc", "star", "cross", "ring",
    "rings", "spokes", "crosshatch", "segments",
    "dot_lattice", "blobs", "zigzag", "wavy", "plaid", "wood_grain", "sand", "step_edge",
]
NUM_CLASSES = {"retina": 5, "cxr": len(CXR_PATHOLOGIES), "source": len(SOURCE_CLASSES)}
TASKS = tuple(NUM_CLASSES)  # The generated tasks (tasks.TASKS also names image_csv's "image", read from files).
NUM_CHANNELS = {"retina": 3, "cxr": 1, "source": 3}
RETINA_GRADE_PROBS = (0.45, 0.15, 0.20, 0.10, 0.10)
# retina (generator v3, difficulty 0.35): calibrated on the shared 2-core CPU machine with a random-init CBR-Small at
# the demo's settings (width x0.5, Adam 2e-3 with cosine decay, batch 32, left-right flips, 48 px, 3,000 training /
# 1,000 validation images), referable AUC after 75, 150, ... 600 steps: .61 .64 .72 .75 .74 .76 .78 .78 (difficulty
# 0.5: .59 .65 .70 .71 .74 .76 .75 .76). The global-statistics baseline reads .57-.59 at 32-128 px. Generator v2
# (no lesion mimics) gave 0.84 after 100 steps at 64 px, mostly from the lesions' global colour: its baseline read .90
# at 48 px. So a random-init model needs most of its budget to approach its final AUC. Reproduce with
# benchmarks/synthetic_benchmark.py --learnability. cxr, full-width CBR-Small at 64 px, Adam 1e-3 cosine, 4,000 /
# 1,000 images, uncertain labels masked (--task cxr): generator v3 mean AUC .77 .84 .87 .87 .89 .90 every 100 steps
# to 600; per finding at 600 Atelectasis .87, Cardiomegaly .93, Consolidation .77, Edema .99, Effusion .94 (v2: .75
# .79 .87 .89 .90 .91). Edema is still easy for a CNN, but from its shape: the global-statistics baseline reads it at
# .57-.58 since v3 (v2: .73-.75). (Generator version 1 gave Cardiomegaly 1.00: the heart size read the label exactly;
# AP magnification and closer ratio distributions now blur it.) The source default is set by eye.
DEFAULT_DIFFICULTY = {"retina": 0.35, "cxr": 0.4, "source": 0.3}
CACHE_ENV = "TRANSFUSION_TF_CACHE"
WORKERS_ENV = "TRANSFUSION_TF_SYNTH_WORKERS"
PROGRESS_EVERY_S = 20.0  # Generation prints a progress line at most this often, the first after this long.
_SPLIT_FLAG = {"train": "num_train", "validation": "num_val", "test": "num_test", None: "num_examples"}

_TASK_ID = {"retina": 1, "cxr": 2, "source": 3}
_SPLIT_ID = {None: 0, "train": 1, "validation": 2, "test": 3}
_PATIENT_ID_STRIDE = 10**9  # Patient ids of split k start at k * stride, so ids never repeat across splits.
_STREAM_EXAMPLE, _STREAM_PATIENT, _STREAM_COUNTS = 0, 1, 2
_CXR_BLOCK = 1024  # Patients whose study counts one RNG draws.
_TRUNCATE = 3.0  # Gaussian kernels are cut at 3 sigma.
_F = np.float32


# --------------------------------------------------------------------------------------------------------------------
# Drawing helpers: coordinate grids, smooth noise, Gaussian splatting.
# --------------------------------------------------------------------------------------------------------------------

_GRIDS = {}
_INTERP = {}


def _grid(size):
  """(x, y) float32 (S, S) pixel-centre coordinates in [-1, 1]; x grows to the right, y downwards."""
  if size not in _GRIDS:
    t = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(_F)
    _GRIDS[size] = (np.broadcast_to(t[None, :], (size, size)), np.broadcast_to(t[:, None], (size, size)))
  return _GRIDS[size]


def _interp(size, k):
  """(S, k) float32 matrix mapping k control values to S pixels with Gaussian bumps; rows have unit L2 norm."""
  key = (size, k)
  if key not in _INTERP:
    t = (np.arange(size) + 0.5) / size
    c = (np.arange(k) + 0.5) / k
    m = np.exp(-0.5 * ((t[:, None] - c[None, :]) * k / 0.85) ** 2)
    m /= np.sqrt((m ** 2).sum(1, keepdims=True))
    _INTERP[key] = m.astype(_F)
  return _INTERP[key]


def _matmul(a, b):
  """a @ b in row blocks small enough that OpenBLAS stays single-threaded.

  A threaded GEMM on a small product contends with other processes for the cores and was measured up to 50x slower
  on the shared 2-core machine; OpenBLAS keeps one thread when M * N * K <= 262144.
  """
  m, k = a.shape
  n = b.shape[1]
  rows = max(1, 262144 // max(1, k * n))
  if rows >= m:
    return a @ b
  out = np.empty((m, n), np.result_type(a, b))
  for i in range(0, m, rows):
    np.matmul(a[i:i + rows], b, out=out[i:i + rows])
  return out


def _smooth_noise(rng, size, k, n=None):
  """Smooth Gaussian noise with unit variance per pixel and about k blobs across; (S, S) or (n, S, S)."""
  m = _interp(size, k)
  mt = m.T
  if n is None:
    return _matmul(m, rng.standard_normal((k, k), dtype=_F) @ mt)
  c = rng.standard_normal((n, k, k), dtype=_F)
  return np.stack([_matmul(m, c[j] @ mt) for j in range(n)])


def _center_weight(sigma):
  """The central weight of ndimage's 1-D Gaussian kernel (truncate=_TRUNCATE): a unit point's peak is its square."""
  if sigma <= 0:
    return 1.0
  r = int(_TRUNCATE * sigma + 0.5)
  x = np.arange(-r, r + 1)
  return 1.0 / np.exp(-0.5 * (x / sigma) ** 2).sum()


def _soft(z, width):
  """Soft step: 0 for z << 0, 1 for z >> 0, linear over `width` around 0."""
  return np.clip(z / width + 0.5, 0.0, 1.0)


class _Canvas:
  """Collects weighted points per layer, splats them bilinearly and blurs each layer with its own Gaussian.

  Coordinates are in pixels with pixel (r, c) centred on (x=c, y=r). A point of weight w blurred with sigma s has a
  peak of w * _center_weight(s)**2, so callers set w = amplitude / _center_weight(s0)**2 for a dot of intrinsic size
  s0, and w = amplitude * step / _center_weight(s0) per point of a line sampled every `step` pixels.
  """

  def __init__(self, size, num_layers):
    self.size = size
    self.num_layers = num_layers
    self._x, self._y, self._w, self._l = [], [], [], []
    self.used = set()

  def add(self, layer, px, py, w):
    px = np.asarray(px, np.float64).ravel()
    if px.size == 0:
      return
    self._x.append(px)
    self._y.append(np.asarray(py, np.float64).ravel())
    self._w.append(np.broadcast_to(np.asarray(w, np.float64), px.shape).ravel())
    self._l.append(np.full(px.shape, layer, np.int64))
    self.used.add(layer)

  def render(self, sigmas):
    s = self.size
    out = np.zeros((self.num_layers, s, s), _F)
    if not self._x:
      return out
    px, py, w, lay = (np.concatenate(a) for a in (self._x, self._y, self._w, self._l))
    x0 = np.floor(px)
    y0 = np.floor(py)
    fx = px - x0
    fy = py - y0
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    base = lay * (s * s)
    idx, ws = [], []
    for dx, dy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
      xi = x0 + dx
      yi = y0 + dy
      ok = (xi >= 0) & (xi < s) & (yi >= 0) & (yi < s)
      idx.append((base + yi * s + xi)[ok])
      ws.append((w * ww)[ok])
    flat = np.bincount(np.concatenate(idx), np.concatenate(ws), minlength=self.num_layers * s * s)
    flat = flat.reshape(self.num_layers, s, s).astype(_F)
    for layer in self.used:
      sig = sigmas[layer]
      out[layer] = ndimage.gaussian_filter(flat[layer], sig, truncate=_TRUNCATE) if sig > 0.05 else flat[layer]
    return out


def _walks(rng, x0, y0, th0, n_steps, bias, tort, step):
  """Random walks in direction, vectorised over K walks.

  x0, y0, th0, n_steps, bias: (K,) start point (px), start angle (rad), steps, turn per step (rad).
  tort: angular noise per step (rad). Returns xs, ys, th (K, T) and a (K, T) validity mask.
  """
  k = len(x0)
  t = int(max(1, np.max(n_steps))) if k else 1
  dth = rng.normal(0.0, 1.0, (k, t)) * np.asarray(tort, np.float64).reshape(-1, 1)
  th = np.asarray(th0, np.float64)[:, None] + np.asarray(bias, np.float64)[:, None] * np.arange(t) + np.cumsum(dth, 1)
  xs = np.asarray(x0, np.float64)[:, None] + step * np.cumsum(np.cos(th), 1)
  ys = np.asarray(y0, np.float64)[:, None] + step * np.cumsum(np.sin(th), 1)
  valid = np.arange(t)[None, :] < np.asarray(n_steps)[:, None]
  return xs, ys, th, valid


def _to_px(v, size):
  """Normalised coordinate in [-1, 1] -> pixel coordinate."""
  return (np.asarray(v) + 1.0) * (size / 2.0) - 0.5


def _blob_points(rng, cx, cy, radius, sigma, elong=1.0, angle=0.0):
  """Points filling an ellipse (px) densely enough that a blur of `sigma` px merges them; returns px, py, n."""
  area = np.pi * radius * radius
  n = int(np.clip(area / (0.8 * sigma * sigma), 1, 80))
  r = radius * np.sqrt(rng.random(n))
  a = rng.random(n) * 2 * np.pi
  u = r * np.cos(a) * elong
  v = r * np.sin(a) / elong
  ca, sa = np.cos(angle), np.sin(angle)
  return cx + ca * u - sa * v, cy + sa * u + ca * v, n


def _box(center, radius, size):
  """Slices (rows, cols) of the pixels within `radius` (normalised) of `center` (normalised x, y)."""
  c0 = int(max(0, np.floor(_to_px(center[0] - radius, size))))
  c1 = int(min(size, np.ceil(_to_px(center[0] + radius, size)) + 1))
  r0 = int(max(0, np.floor(_to_px(center[1] - radius, size))))
  r1 = int(min(size, np.ceil(_to_px(center[1] + radius, size)) + 1))
  return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _quantize(img):
  return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# Retina.
# --------------------------------------------------------------------------------------------------------------------

# Canvas layers and what they hold.
_R_THICK, _R_MED, _R_THIN, _R_RED, _R_EXU, _R_CWS, _R_PIG, _R_DRU, _R_DUST, _R_NLAYERS = range(10)


def _retina_patient(rng, grade_probs):
  return {
      "pigment": rng.beta(2.0, 2.0),
      "cast": np.exp(rng.normal(0, 0.06, 3)),
      "disc_r": rng.uniform(0.10, 0.135),
      "age": rng.uniform(25, 85),
      "grade": rng.choice(5, p=grade_probs),
      "same_grade": rng.random() < 0.75,
      "reflex": rng.random(),
  }


def _retina_plan(rng, grade, d):
  """Lesion counts for one eye: (microaneurysms, haemorrhages, exudate clusters, cotton-wool spots, NV complexes,
  preretinal haemorrhages). Difficulty d adds microaneurysms to grade 1 and borderline cases to grade 2."""
  ma = hem = exu = cws = nv = prh = 0
  if grade == 1:
    ma = 1 + rng.poisson(1.5 + 2.0 * d)
  elif grade >= 2:
    severe = grade == 3 or (grade == 4 and rng.random() < 0.5)
    if not severe:
      ma = 1 + rng.poisson(3.0 + 2.0 * d)
      if rng.random() < 0.2 + 0.35 * d:  # Borderline moderate: one non-microaneurysm lesion.
        kind = rng.choice(3, p=(0.6, 0.25, 0.15))
        hem, exu, cws = int(kind == 0), int(kind == 1), int(kind == 2)
      else:
        hem = 1 + rng.poisson(3.0)
        exu = rng.poisson(1.0)
        cws = rng.poisson(0.5)
    else:
      ma = 4 + rng.poisson(8.0)
      hem = 6 + rng.poisson(6.0)
      exu = rng.poisson(2.0)
      cws = 1 + rng.poisson(1.5)
    if grade == 4:
      nv = 1 + rng.poisson(0.6)
      prh = int(rng.random() < 0.25)
  return ma, hem, exu, cws, nv, prh


def _retina_points(rng, n, fc, mac, disc, disc_r, fr, spread=0.32, p_pole=0.65, center=None):
  """n lesion positions (normalised coords) inside the fundus, mostly around the posterior pole, off the disc."""
  if n <= 0:
    return np.zeros(0), np.zeros(0)
  m = 4 * n + 8
  c = mac if center is None else center
  pole = rng.random(m) < p_pole
  x = np.where(pole, c[0] + rng.normal(0, spread, m), fc[0] + fr * 0.85 * (2 * rng.random(m) - 1))
  y = np.where(pole, c[1] + rng.normal(0, spread, m), fc[1] + fr * 0.85 * (2 * rng.random(m) - 1))
  inside = (x - fc[0]) ** 2 + (y - fc[1]) ** 2 < (0.9 * fr) ** 2
  ok = inside & ((x - disc[0]) ** 2 + (y - disc[1]) ** 2 > (1.3 * disc_r) ** 2)
  x, y = x[ok][:n], y[ok][:n]
  return x, y


def _retina_mimic_totals(rng):
  """Per-eye totals (haemorrhage-like, exudate-like, cotton-wool-like objects), lesions plus mimics; grade-free.

  Each sits at or above the lesion count of nearly every eye (severe eyes: about 6-20 haemorrhages, up to about 8
  exudate clusters or cotton-wool spots), so the total rarely depends on the grade.
  """
  return 8 + rng.poisson(8.0), 2 + rng.poisson(3.0), 2 + rng.poisson(3.0)


def _add_patch(layer, px0, py0, radius, amp, elong, angle, edge):
  """Adds a smooth elliptical patch of height `amp` in place to `layer` (S, S): centre (px0, py0) px, area
  pi * radius**2 px^2 (axes radius * elong and radius / elong, the long one at `angle` rad), edges `edge` px soft."""
  s = layer.shape[0]
  reach = radius * elong + 3 * edge + 1
  r0, r1 = int(max(0, np.floor(py0 - reach))), int(min(s, np.ceil(py0 + reach) + 1))
  c0, c1 = int(max(0, np.floor(px0 - reach))), int(min(s, np.ceil(px0 + reach) + 1))
  if r0 >= r1 or c0 >= c1:
    return
  yy, xx = np.mgrid[r0:r1, c0:c1].astype(_F)
  ca, sa = np.cos(angle), np.sin(angle)
  u = ((xx - px0) * ca + (yy - py0) * sa) / elong
  v = (-(xx - px0) * sa + (yy - py0) * ca) * elong
  dist = np.sqrt(u * u + v * v)  # In the ellipse's own units: radius at its edge (approximately, for a soft edge).
  layer[r0:r1, c0:c1] += amp * _soft(radius - dist, 2.0 * max(edge, 0.5))


def _render_retina(rng, size, d, grade, patient, eye):
  s = size
  x, y = _grid(s)
  lp = max(1.4, 0.0045 * s)  # Lesion unit (px).
  half = s / 2.0
  pig = patient["pigment"]

  # Photograph.
  fc = rng.normal(0, 0.03, 2).astype(_F)
  fr = rng.uniform(0.86, 0.98)
  exposure = rng.uniform(0.65, 1.15)
  gamma = rng.uniform(0.8, 1.25)
  cast = patient["cast"] * np.exp(rng.normal(0, 0.03, 3))
  vign = rng.uniform(0.25, 0.65)
  glare = rng.uniform(0, 0.25) if rng.random() < 0.3 else 0.0
  cam = lp * rng.uniform(0, 0.3 + 0.7 * d)  # Camera blur sigma (px).
  noise = (0.004 + 0.03 * d) * rng.uniform(0.6, 1.4)
  contrast = 1.0 - 0.55 * d

  # Anatomy.
  side = 1.0 if eye == 1 else -1.0  # Right eye: disc on the right of the image.
  mac = fc + rng.normal(0, 0.04, 2).astype(_F)
  disc = mac + np.array([side * rng.uniform(0.40, 0.48), rng.uniform(-0.08, 0.03)], _F)
  disc_r = patient["disc_r"] * rng.uniform(0.97, 1.03)

  # Background: pigmented, mottled, vignetted.
  col = np.array([0.80 - 0.30 * pig, 0.36 - 0.17 * pig, 0.15 - 0.08 * pig]) * cast
  r2 = ((x - fc[0]) ** 2 + (y - fc[1]) ** 2) / (fr * fr)
  lum = 1.0 + 0.10 * _smooth_noise(rng, s, 6) + (0.07 * (1 - pig)) * _smooth_noise(rng, s, 22)
  lum *= 1.0 - vign * r2 * np.sqrt(r2)
  dm2 = (x - mac[0]) ** 2 + (y - mac[1]) ** 2
  macula, fovea = rng.uniform(0.15, 0.35), rng.uniform(0.05, 0.15)
  lum *= 1.0 - macula * np.exp(-dm2 / (2 * 0.17 ** 2)) - fovea * np.exp(-dm2 / (2 * 0.035 ** 2))
  img = lum[..., None] * col.astype(_F)

  # Optic disc and cup.
  box = _box(disc, disc_r * 1.3, s)
  xb, yb = x[box], y[box]
  dd = np.sqrt(((xb - disc[0]) / 0.92) ** 2 + (yb - disc[1]) ** 2)
  od = _soft(disc_r - dd, 0.025)[..., None]
  cup = _soft(disc_r * rng.uniform(0.3, 0.55) - dd, 0.04)[..., None]
  dcol = (np.array([1.0, 0.78, 0.48]) * cast * rng.uniform(0.85, 1.05)).astype(_F)
  ccol = (np.array([1.0, 0.93, 0.78]) * cast).astype(_F)
  img[box] += od * (dcol + cup * (ccol - dcol) - img[box])

  canvas = _Canvas(s, _R_NLAYERS)
  step = 0.5  # px between points along a line.
  sig_v = (max(0.55, 0.0050 * s), max(0.45, 0.0035 * s), max(0.35, 0.0022 * s))
  cw = [_center_weight(v) for v in sig_v]

  # Vessel tree: trunks, branches, twigs.
  dpx, dpy = _to_px(disc[0], s), _to_px(disc[1], s)
  thm = np.arctan2(mac[1] - disc[1], mac[0] - disc[0])
  deg = np.pi / 180
  th0, bias, length, amp = [], [], [], []
  for sign in (1, -1):  # Temporal arcades (vein, artery) curving around the macula.
    for vein in (1, 0):
      a = thm + sign * side * rng.uniform(65, 85) * deg
      L = rng.uniform(1.0, 1.3) * half
      th0.append(a)
      bias.append(-sign * side * rng.uniform(95, 125) * deg / (L / step))
      length.append(L)
      amp.append(1.9 if vein else 1.3)
  for sign in (1, -1):  # Nasal trunks.
    th0.append(thm + np.pi - sign * side * rng.uniform(35, 60) * deg)
    bias.append(0.0)
    length.append(rng.uniform(0.5, 0.8) * half)
    amp.append(1.5)
  tort = 0.35 * np.sqrt(step / half)
  n_tr = len(th0)
  start = np.array(th0)
  xs, ys, th, valid = _walks(rng, dpx + disc_r * half * 0.3 * np.cos(start), dpy + disc_r * half * 0.3 * np.sin(start),
                             start, (np.array(length) / step).astype(int), np.array(bias), np.full(n_tr, tort), step)
  amp = np.array(amp)
  canvas.add(_R_THICK, xs[valid], ys[valid], (amp[:, None] * step / cw[0] * np.ones_like(xs))[valid])
  for level, (n_lo, n_hi, l_lo, l_hi, a_lvl) in enumerate(((3, 6, 0.25, 0.55, 1.3), (1, 3, 0.10, 0.28, 0.9))):
    counts = (valid.sum(1)).astype(int)
    nb = rng.integers(n_lo, n_hi + 1, len(counts))
    parent = np.repeat(np.arange(len(counts)), nb)
    if len(parent) == 0:
      break
    pos = (rng.uniform(0.12, 0.92, len(parent)) * np.maximum(counts[parent] - 1, 0)).astype(int)
    bx, by, bt = xs[parent, pos], ys[parent, pos], th[parent, pos]
    bt = bt + np.where(rng.random(len(parent)) < 0.5, -1, 1) * rng.uniform(25, 70, len(parent)) * deg
    bl = rng.uniform(l_lo, l_hi, len(parent)) * half
    xs, ys, th, valid = _walks(rng, bx, by, bt, (bl / step).astype(int), rng.normal(0, 0.002, len(parent)),
                               np.full(len(parent), tort * 1.5), step)
    layer = _R_MED if level == 0 else _R_THIN
    canvas.add(layer, xs[valid], ys[valid], a_lvl * step / cw[1 + level] * rng.uniform(0.8, 1.2))

  # Lesions.
  n_ma, n_hem, n_exu, n_cws, n_nv, n_prh = _retina_plan(rng, grade, d)
  sig_ma, sig_hem_min = 0.75 * lp, 0.8 * lp
  c_red = _center_weight(sig_ma)
  pts = lambda n, **kw: _retina_points(rng, n, fc, mac, disc, disc_r, fr, **kw)
  lx, ly = pts(n_ma)
  canvas.add(_R_RED, _to_px(lx, s), _to_px(ly, s), contrast * rng.uniform(0.8, 1.6, len(lx)) / c_red ** 2)
  hx, hy = pts(n_hem, spread=0.45, p_pole=0.5)
  for k in range(len(hx)):
    rad = lp * rng.uniform(1.6 - 0.5 * d, 3.5)
    flame = rng.random() < 0.35
    ang = np.arctan2(hy[k] - disc[1], hx[k] - disc[0]) + (0 if flame else rng.uniform(0, np.pi))
    bx, by, nb = _blob_points(rng, _to_px(hx[k], s), _to_px(hy[k], s), rad, sig_hem_min,
                              elong=rng.uniform(1.8, 2.6) if flame else rng.uniform(1.0, 1.3), angle=ang)
    canvas.add(_R_RED, bx, by, contrast * rng.uniform(1.2, 2.4) * np.pi * rad * rad / nb)
  ex_c, ey_c = pts(n_exu, spread=0.22)
  sig_ex = 0.6 * lp
  for k in range(len(ex_c)):
    nd = 2 + rng.poisson(4)
    spread = rng.uniform(0.015, 0.05)
    canvas.add(_R_EXU, _to_px(ex_c[k] + rng.normal(0, spread, nd), s), _to_px(ey_c[k] + rng.normal(0, spread, nd), s),
               contrast * rng.uniform(1.0, 3.0, nd) / _center_weight(sig_ex) ** 2)
  cx_, cy_ = pts(n_cws, center=disc * 0.6 + mac * 0.4, spread=0.3)
  sig_cws = 1.3 * lp
  for k in range(len(cx_)):
    rad = lp * rng.uniform(2.5, 5.0)
    bx, by, nb = _blob_points(rng, _to_px(cx_[k], s), _to_px(cy_[k], s), rad, sig_cws, elong=rng.uniform(1, 1.6),
                              angle=rng.uniform(0, np.pi))
    canvas.add(_R_CWS, bx, by, contrast * rng.uniform(0.6, 1.0) * np.pi * rad * rad / nb)
  for k in range(n_nv):  # Neovascularisation: tangles of thin tortuous vessels at the disc or on an arcade.
    if k == 0 and rng.random() < 0.6:
      c0 = disc + rng.normal(0, disc_r * 0.6, 2)
    else:
      c0 = np.array(pts(1, spread=0.45, p_pole=0.3)).ravel()
      if c0.size < 2:
        c0 = disc
    m = rng.integers(5, 11)
    nl = rng.uniform(0.04, 0.12, m) * half
    xs, ys, th, valid = _walks(rng, _to_px(c0[0], s) + rng.normal(0, 1.5 * lp, m),
                               _to_px(c0[1], s) + rng.normal(0, 1.5 * lp, m), rng.uniform(0, 2 * np.pi, m),
                               (nl / step).astype(int), rng.normal(0, 0.08, m), np.full(m, 0.35), step)
    canvas.add(_R_THIN, xs[valid], ys[valid], contrast * rng.uniform(0.8, 1.3) * step / cw[2])
  for _ in range(n_prh):  # Preretinal haemorrhage: a large boat-shaped blot.
    px0, py0 = pts(1, spread=0.35)
    if len(px0):
      rad = rng.uniform(0.05, 0.1) * half
      bx, by, nb = _blob_points(rng, _to_px(px0[0], s), _to_px(py0[0], s), rad, sig_hem_min * 2, elong=1.4)
      keep = by > _to_px(py0[0], s) - 0.3 * rad  # Flat upper edge (blood settles).
      canvas.add(_R_RED, bx[keep], by[keep], contrast * 2.0 * np.pi * rad * rad / nb)

  # Lesion mimics at every grade: a total count of haemorrhage-, exudate- and cotton-wool-like objects is drawn
  # independently of the grade; whatever the eye's lesions leave of it becomes 1-3 large smooth patches on the lesions'
  # own layers (so with their exact colour and peak opacity) whose area is the missing lesions' area. The number of
  # lesion-coloured pixels, and with it every global statistic, then barely depends on the grade: only the scale and
  # shape do (several small sharp blobs or dot clusters vs one broad patch). Drawn after the canvas, below.
  tot_hem, tot_exu, tot_cws = _retina_mimic_totals(rng)
  m_hem, m_exu, m_cws = max(0, tot_hem - len(hx)), max(0, tot_exu - len(ex_c)), max(0, tot_cws - len(cx_))
  area_hem = np.sum(np.pi * (lp * rng.uniform(1.6 - 0.5 * d, 3.5, m_hem)) ** 2)
  nd, spread_px = 2 + rng.poisson(4, m_exu), rng.uniform(0.015, 0.05, m_exu) * half
  area_exu = np.sum(np.minimum(nd * np.pi * (1.6 * sig_ex) ** 2, np.pi * (2 * spread_px + 1.6 * sig_ex) ** 2))
  area_cws = np.sum(np.pi * (lp * rng.uniform(2.5, 5.0, m_cws)) ** 2)
  patches = []
  for layer, m, area, amp, per, where in (
      (_R_RED, m_hem, area_hem, (1.2, 2.4), 6, dict(spread=0.45, p_pole=0.5)),
      (_R_EXU, m_exu, area_exu, (1.0, 3.0), 3, dict(spread=0.22)),
      (_R_CWS, m_cws, area_cws, (0.6, 1.0), 3, dict(center=disc * 0.6 + mac * 0.4, spread=0.3))):
    if m == 0:
      continue
    k = int(np.clip(round(m / per), 1, 3))
    share = rng.dirichlet(np.full(k, 4.0)) * area
    qx, qy = pts(k, **where)
    for j in range(len(qx)):
      patches.append((layer, _to_px(qx[j], s), _to_px(qy[j], s), np.sqrt(share[j] / np.pi),
                      contrast * rng.uniform(*amp), rng.uniform(1.0, 1.8), rng.uniform(0, np.pi)))

  # Distractors at every grade.
  n_pig = rng.poisson(1.0 + 3.0 * d)
  gx, gy = pts(n_pig, spread=0.5, p_pole=0.3)
  sig_pig = 0.9 * lp
  canvas.add(_R_PIG, _to_px(gx, s), _to_px(gy, s), rng.uniform(0.4, 1.0, len(gx)) / _center_weight(sig_pig) ** 2)
  n_dru = rng.poisson((0.3 + 1.5 * d) * (patient["age"] > 55))
  sig_dru = 1.2 * lp
  for k in range(n_dru):
    cxk, cyk = pts(1, spread=0.12)
    nd = 1 + rng.poisson(3)
    if len(cxk):
      canvas.add(_R_DRU, _to_px(cxk[0] + rng.normal(0, 0.04, nd), s), _to_px(cyk[0] + rng.normal(0, 0.04, nd), s),
                 rng.uniform(0.4, 0.9, nd) / _center_weight(sig_dru) ** 2)
  n_dust = rng.poisson(0.4)
  sig_dust = 2.5 * lp
  dx_, dy_ = pts(n_dust, spread=0.6, p_pole=0.0)
  canvas.add(_R_DUST, _to_px(dx_, s), _to_px(dy_, s), rng.uniform(0.2, 0.4, len(dx_)) / _center_weight(sig_dust) ** 2)

  sig = [sig_v[0], sig_v[1], sig_v[2], sig_ma, sig_ex, sig_cws, sig_pig, sig_dru, sig_dust]
  layers = canvas.render([np.hypot(v, cam) for v in sig])
  for layer, px0, py0, rad, amp, elong, ang in patches:
    _add_patch(layers[layer], px0, py0, rad, amp, elong, ang, np.hypot(sig[layer], cam))
    canvas.used.add(layer)
  ov = 1 - np.exp(-(layers[_R_THICK] + layers[_R_MED] + layers[_R_THIN]))
  img *= (1 - ov[..., None] * np.array([0.45, 0.75, 0.7], _F))
  if _R_RED in canvas.used:
    ored = 1 - np.exp(-layers[_R_RED])
    img *= (1 - ored[..., None] * np.array([0.55, 0.85, 0.8], _F))
  if _R_PIG in canvas.used or _R_DUST in canvas.used:
    op = 1 - np.exp(-(layers[_R_PIG] + layers[_R_DUST]))
    img *= (1 - op[..., None] * np.array([0.6, 0.62, 0.6], _F))
  bright = (exposure * (1.0 - 0.3 * pig)) ** -1  # Lesion colours hold against the photo's exposure.
  for layer, colour, gain, opacity in ((_R_DRU, (0.88, 0.72, 0.45), 1.0, 0.4), (_R_EXU, (1.0, 0.9, 0.4), 3.0, 0.95),
                                       (_R_CWS, (0.97, 0.88, 0.78), 1.5, 0.7)):
    if layer in canvas.used:
      o = (1 - np.exp(-gain * layers[layer])) * opacity
      target = (np.array(colour) * cast * min(1.0, 0.85 * bright)).astype(_F)
      img += o[..., None] * (target - img)
  # Foveal reflex (a bright dot that mimics an exudate in young eyes).
  if patient["reflex"] < 0.5 * (patient["age"] < 50):
    box = _box(mac, 4 * lp / half, s)
    img[box] += (0.25 * np.exp(-dm2[box] / (2 * (0.8 * lp / half) ** 2)))[..., None]

  # Photograph: exposure, gamma, glare, field mask, noise.
  img = np.clip(img * exposure, 0, 1) ** gamma
  if glare:
    img += (glare * r2 ** 3)[..., None] * np.array([0.5, 0.6, 0.9], _F)
  mask = _soft(fr - np.sqrt(r2) * fr, 2.0 / s * 1.5)
  img *= mask[..., None]
  img += (noise * rng.standard_normal((s, s), dtype=_F))[..., None] * (0.3 + 0.7 * mask[..., None])
  meta = {"eye": eye, "num_ma": len(lx), "num_haem": len(hx), "num_exudate_clusters": len(ex_c),
          "num_cotton_wool": len(cx_), "num_nv": n_nv}
  return _quantize(img), meta


# --------------------------------------------------------------------------------------------------------------------
# Chest x-ray.
# --------------------------------------------------------------------------------------------------------------------

# Uncertain-label rates are tuned to about 15/5/12/7/6 %.
_CXR_MIMIC = np.array([0.14, 0.0, 0.105, 0.06, 0.05])  # P(-1 with a faint mimic | absent).
_CXR_UNSURE = np.array([0.6, 0.0, 0.6, 0.5, 0.35])  # P(-1 | present and subtle).
_C_VEIN, _C_KERLEY, _C_BRONCH, _C_ECG, _C_NLAYERS = range(5)
_CXR_HAZE = 0.9  # P(an edema-sized haze elsewhere | no edema): generator v3.


def _cxr_patient(rng):
  age = rng.uniform(18, 92)
  chronic = rng.random() < 0.08 + 0.2 * (age > 60)
  return {
      "age": age,
      "sex": int(rng.random() < 0.5),  # 1 = female.
      "ctr": rng.uniform(0.47, 0.58) if chronic else float(np.clip(rng.normal(0.45, 0.045), 0.33, 0.56)),
      "hf_prone": rng.random() < (0.7 if chronic else 0.15),
      "inf_prone": rng.random() < 0.25,
      "W": rng.uniform(0.66, 0.82),
      "cx": rng.normal(0, 0.02),
      "top": rng.uniform(-0.82, -0.70),
      "dia": rng.uniform(0.38, 0.55),
      "dia_r": rng.uniform(0.02, 0.08),
      "med": rng.uniform(0.09, 0.12),
      "heart_b": rng.uniform(0.2, 0.26),
      "rib_sp": rng.uniform(0.105, 0.13),
      "rib_bend": rng.uniform(0.25, 0.4),
      "soft": rng.uniform(0.0, 1.0),
  }


def _cxr_findings(rng, patient):
  """Study findings: (present (5,) bool, severity (5,), labels (5,) int8, ctr)."""
  hf = rng.random() < (0.5 if patient["hf_prone"] else 0.05)
  inf = rng.random() < (0.45 if patient["inf_prone"] else 0.06)
  edema = rng.random() < (0.75 if hf else 0.04)
  eff = rng.random() < min(0.95, 0.08 + 0.55 * hf + 0.3 * inf)
  cons = rng.random() < 0.03 + 0.65 * inf
  atel = rng.random() < 0.07 + 0.25 * eff + 0.25 * inf
  ctr = patient["ctr"] + rng.normal(0, 0.01) + 0.015 * hf
  present = np.array([atel, ctr >= 0.51, cons, edema, eff])
  severity = rng.random(5)
  labels = present.astype(np.int8)
  subtle = present & (severity < 0.3) & (rng.random(5) < _CXR_UNSURE)
  mimic = ~present & (rng.random(5) < _CXR_MIMIC)
  labels[subtle | mimic] = -1
  severity = np.where(mimic, -1.0, severity)  # -1 marks a faint mimic.
  if 0.49 <= ctr < 0.53 and rng.random() < 0.3:
    labels[1] = -1
  elif ctr >= 0.53:
    labels[1] = 1
  else:
    labels[1] = 0 if ctr < 0.51 else 1
  return present, severity, labels, ctr


def _render_cxr(rng, size, d, patient, present, severity, ctr):
  s = size
  x0, y0 = _grid(s)
  half = s / 2.0
  px1 = 2.0 / s  # One pixel in normalised units.
  contrast = 1.0 - 0.5 * d

  # Positioning: rotation, scale, shift.
  rot = rng.normal(0, 0.03)
  sc = rng.uniform(0.95, 1.05)
  tx, ty = rng.normal(0, 0.03, 2)
  cr, sr = np.cos(rot), np.sin(rot)
  x = ((cr * x0 + sr * y0) / sc - tx).astype(_F)
  y = ((-sr * x0 + cr * y0) / sc - ty).astype(_F)

  p = patient
  W, cx, top = p["W"], p["cx"], p["top"]
  insp = rng.normal(0, 0.03)
  dia = p["dia"] + insp
  atel_side = rng.choice([-1, 1])
  eff_sides = [rng.choice([-1, 1])] if rng.random() < 0.5 else [-1, 1]
  st = lambda k: contrast * (0.12 if severity[k] < 0 else 0.3 + 0.7 * severity[k])  # Finding strength.
  active = lambda k: present[k] or severity[k] < 0

  u_signed = x - cx
  u = np.abs(u_signed)
  side_img = np.sign(u_signed)  # -1: image left = patient's right.
  tn = np.clip(u / W, 0, 1.2)

  # Domes: patient's right (image left) higher; atelectasis raises its side.
  dome_lvl = np.where(side_img < 0, dia - p["dia_r"], dia)
  if active(0):
    dome_lvl = dome_lvl - np.where(side_img == atel_side, 0.08 * st(0), 0.0)
  dome = dome_lvl + 0.3 * (tn - 0.35) ** 2

  # Lungs.
  u_ap = p["med"] + 0.4 * (W - p["med"])
  apex = top + 0.9 * ((u - u_ap) / (W - p["med"])) ** 2  # Each lung's apex is a rounded dome.
  lat = W * (0.93 + 0.07 * np.clip((y - top) / (dia - top), 0, 1))
  lung = _soft(lat - u, 1.5 * px1) * _soft(u - p["med"], 2 * px1) * _soft(dome - y, 1.5 * px1)
  lung *= _soft(y - apex, 2 * px1)
  body = _soft(W + 0.14 - u, 2 * px1) * _soft(y + 1.2, px1)

  soft_t = 0.5 + 0.1 * p["soft"]
  img = 0.04 + body * soft_t
  img -= lung * (0.38 + 0.04 * _smooth_noise(rng, s, 8))
  img += lung * 0.10 * _soft(top + 0.3 - y, 0.3)  # Soft tissue over the apices.
  if p["sex"] == 1:  # Breast shadows.
    for sgn in (-1, 1):
      bd = ((x - cx - sgn * W * 0.55) / 0.33) ** 2 + ((y - dia + 0.05) / 0.22) ** 2
      img += 0.09 * lung * _soft(1 - bd, 0.3) * _soft(y - dia + 0.3, 0.15)

  # Mediastinum: trachea, spine, heart, aortic knob, hila.
  img -= 0.12 * _soft(0.022 - np.abs(u_signed), px1 * 1.5) * _soft(-0.2 - y, 0.02) * _soft(y - top + 0.2, 0.05)
  img += 0.03 * _soft(0.06 - u, px1) * (0.6 + 0.4 * np.cos(2 * np.pi * y / 0.085)) * body
  # Heart width. AP films (a share growing with difficulty) magnify the heart, so its apparent size is a noisy
  # reading of the true cardiothoracic ratio the label comes from, as on real films.
  ap = rng.random() < 0.3 + 0.3 * d
  magnify = 1.0 + (rng.uniform(0.04, 0.12 + 0.2 * d) if ap else rng.uniform(-0.04, 0.04))
  hw = ctr * magnify * 2 * W
  hx = cx + 0.18 * hw
  hy = dia - p["heart_b"] * 0.75
  heart = _soft(1 - ((x - hx) / (hw / 2)) ** 2 - ((y - hy) / p["heart_b"]) ** 2, 0.08)
  heart = np.maximum(heart, _soft(0.025 - np.sqrt((x - cx - 0.10) ** 2 + (y + 0.28) ** 2) + 0.035, 2 * px1))  # Knob.
  img += 0.33 * heart * lung
  hil = 0.0
  for sgn in (-1, 1):
    hil = hil + np.exp(-((x - cx - sgn * (p["med"] + 0.07)) ** 2 + (y + 0.08) ** 2) / (2 * 0.05 ** 2))
  img += 0.10 * hil * lung

  # Ribs and clavicles.
  ph = (y - top + 0.06 - p["rib_bend"] * tn ** 2) / p["rib_sp"]
  rib = 1 / (1 + np.exp(-10 * (np.cos(2 * np.pi * ph) - 0.35))) * _soft(ph, 0.2) * _soft(9.5 - ph, 0.3)
  ph2 = (y - top - 0.1 + 0.22 * tn) / (p["rib_sp"] * 1.1)
  rib2 = 1 / (1 + np.exp(-10 * (np.cos(2 * np.pi * ph2) - 0.5))) * _soft(ph2, 0.3) * _soft(6 - ph2, 0.3)
  ribmask = body * _soft(u - 0.05, 0.03) * _soft(W + 0.04 - u, 2 * px1)
  img += ribmask * (0.07 * rib + 0.03 * rib2) * (0.4 + 0.6 * lung)
  clav = np.abs(y - (top + 0.06 - 0.10 * tn + 0.25 * tn ** 2))
  img += 0.12 * _soft(0.028 - clav, 2 * px1) * _soft(u - 0.04, 0.02) * _soft(0.75 * W - u, 0.05) * body

  # Gastric bubble (patient's left = image right, under the dome).
  if rng.random() < 0.6:
    gb = ((x - cx - 0.35 * W) / 0.12) ** 2 + ((y - dia - 0.18 - 0.1 * (tn ** 2)) / 0.06) ** 2
    img -= 0.15 * _soft(1 - gb, 0.3) * _soft(y - dome - 0.02, px1) * body

  # Vascular markings (canvas).
  canvas = _Canvas(s, _C_NLAYERS)
  step = 0.5
  sig_line = max(0.45, 0.003 * s)
  cw = _center_weight(sig_line)
  m = rng.integers(8, 13)
  sgn = np.where(np.arange(m) % 2 == 0, -1.0, 1.0)
  hxp = _to_px(cx + sgn * (p["med"] + 0.07), s)
  hyp = np.full(m, _to_px(-0.08, s))
  ang = np.where(sgn < 0, np.pi, 0.0) + rng.uniform(-1.2, 1.2, m)
  lens = rng.uniform(0.25, 0.5, m) * half
  xs, ys, th, valid = _walks(rng, hxp, hyp, ang, (lens / step).astype(int), np.zeros(m),
                             np.full(m, 0.35 * np.sqrt(step / half)), step)
  taper = np.clip(1 - np.arange(xs.shape[1]) / np.maximum(valid.sum(1, keepdims=True), 1), 0.2, 1)
  canvas.add(_C_VEIN, xs[valid], ys[valid], (0.7 * taper * step / cw)[valid])

  # Findings.
  if active(3):  # Edema: bat-wing haze and Kerley B lines.
    e = st(3)
    for sg in (-1, 1):
      img += 0.20 * e * lung * np.exp(-(((x - cx - sg * (p["med"] + 0.1)) / 0.22) ** 2 + ((y + 0.02) / 0.28) ** 2))
    nk = int(4 + 10 * max(e, 0))
    ksd = rng.choice([-1, 1], nk)
    kx = cx + ksd * W * rng.uniform(0.72, 0.95, nk)
    ky = dia - rng.uniform(0.02, 0.25, nk)
    klen = rng.uniform(0.02, 0.05, nk)
    for k in range(nk):
      t = np.arange(0, klen[k] * half, step)
      canvas.add(_C_KERLEY, _to_px(kx[k], s) - ksd[k] * t, np.full(t.shape, _to_px(ky[k], s)), 1.2 * e * step / cw)
  else:
    # Haze at most films without edema (overlying soft tissue, scatter, poor inspiration): the mass and strength of an
    # edema's bat-wing haze, but one-sided, apical or basal, so the lungs' mean brightness no longer reads edema;
    # only the perihilar, bilateral shape (and the Kerley lines) do.
    if rng.random() < _CXR_HAZE:
      e = contrast * (0.3 + 0.7 * rng.random())
      for _ in range(2):
        hx = cx + rng.choice([-1, 1]) * W * rng.uniform(0.45, 0.8)
        hy = rng.uniform(top + 0.15, dia - 0.05)
        img += 0.20 * e * lung * np.exp(-(((x - hx) / 0.22) ** 2 + ((y - hy) / 0.28) ** 2))
  if active(4):  # Effusion: fluid with a meniscus rising laterally.
    e = st(4)
    for sg in eff_sides:
      h = 0.04 + 0.28 * max(severity[4], 0.0) if severity[4] >= 0 else 0.03
      lat_lvl = np.where(side_img < 0, dia - p["dia_r"], dia) + 0.16
      yf = lat_lvl - h * (0.35 + 0.65 * tn ** 2)
      fluid = _soft(y - yf, 0.04) * (side_img == sg) * _soft(W + 0.02 - u, 2 * px1) * _soft(u - p["med"], 2 * px1)
      img += 0.36 * e * fluid * lung
  if active(2):  # Consolidation.
    e = st(2)
    for _ in range(1 + int(rng.random() < 0.3)):
      sg = rng.choice([-1, 1])
      ccx = cx + sg * W * rng.uniform(0.35, 0.75)
      ccy = rng.uniform(top + 0.25, dia - 0.1)
      cr_ = rng.uniform(0.08, 0.16)
      blob = np.exp(-(((x - ccx) / cr_) ** 2 + ((y - ccy) / (cr_ * rng.uniform(0.7, 1.3))) ** 2))
      blob *= np.clip(1 + 0.5 * _smooth_noise(rng, s, 14), 0, 2)
      img += 0.35 * e * np.clip(blob, 0, 1.2) * lung
      if rng.random() < 0.5:
        nb = rng.integers(2, 5)
        bx, by, _, bv = _walks(rng, np.full(nb, _to_px(ccx, s)), np.full(nb, _to_px(ccy, s)),
                               rng.uniform(0, 2 * np.pi, nb), np.full(nb, int(cr_ * half / step)), np.zeros(nb),
                               np.full(nb, 0.05), step)
        canvas.add(_C_BRONCH, bx[bv], by[bv], 0.8 * e * step / cw)
  if active(0):  # Atelectasis: plate-like line, sometimes a wedge by the heart.
    e = st(0)
    ax = cx + atel_side * W * rng.uniform(0.3, 0.6)
    ay = dia - rng.uniform(0.08, 0.25)
    a = rng.uniform(-0.35, 0.35)
    ll = rng.uniform(0.12, 0.25)
    du = (x - ax) * np.cos(a) + (y - ay) * np.sin(a)
    dv = -(x - ax) * np.sin(a) + (y - ay) * np.cos(a)
    band = _soft(0.012 + 0.006 * e - np.abs(dv), 2 * px1) * _soft(ll / 2 - np.abs(du), 0.02)
    img += 0.3 * e * band * lung
    if rng.random() < 0.3:
      wx = cx + atel_side * (p["med"] + 0.02)
      wedge = _soft(atel_side * (x - wx) * 1.0, 0.01) * _soft(0.18 - atel_side * (x - wx) - 0.7 * (dome_lvl - y), 0.02)
      img += 0.18 * e * wedge * lung * (y < dome_lvl) * (y > dome_lvl - 0.3)

  # ECG electrodes and a side marker (independent of findings).
  if rng.random() < 0.25:
    ne = rng.integers(2, 6)
    ex = rng.uniform(-0.8, 0.8, ne)
    ey = rng.uniform(-0.6, 0.7, ne)
    for k in range(ne):
      ring = np.abs(np.sqrt((x0 - ex[k]) ** 2 + (y0 - ey[k]) ** 2) - 0.03)
      img += 0.35 * _soft(0.008 + px1 - ring, px1)
  if rng.random() < 0.7:
    mx = rng.choice([-0.85, 0.75])
    my = rng.uniform(-0.9, -0.75)
    img = np.maximum(img, 0.95 * _soft(0.05 - np.abs(x0 - mx - 0.03), px1) * _soft(0.05 - np.abs(y0 - my - 0.04), px1))

  sig = [np.hypot(sig_line, 0), sig_line, sig_line, sig_line, sig_line]
  cam = rng.uniform(0, 0.4 + 0.8 * d) * max(1.0, s / 224)
  layers = canvas.render([np.hypot(v, cam) for v in sig])
  img += 0.06 * (1 - np.exp(-layers[_C_VEIN])) * lung * (1.0 + (0.6 * st(3) if active(3) else 0))
  if _C_KERLEY in canvas.used:
    img += 0.14 * (1 - np.exp(-layers[_C_KERLEY])) * lung
  if _C_BRONCH in canvas.used:
    img -= 0.10 * (1 - np.exp(-layers[_C_BRONCH])) * lung

  if cam > 0.3:
    img = ndimage.gaussian_filter(img, cam, truncate=_TRUNCATE)
  # Exposure and display.
  lo = rng.uniform(-0.05, 0.05)
  hi = rng.uniform(0.9, 1.15)
  img = np.clip((img - lo) / (hi - lo), 0, 1) ** rng.uniform(0.8, 1.25)
  img += (0.006 + 0.025 * d) * rng.uniform(0.6, 1.4) * rng.standard_normal((s, s), dtype=_F)
  return _quantize(img)[..., None]


# --------------------------------------------------------------------------------------------------------------------
# Source (natural-image stand-in).
# --------------------------------------------------------------------------------------------------------------------

def _random_colour(rng):
  """A random RGB colour with decent saturation spread."""
  h = rng.random()
  sat = rng.uniform(0.2, 1.0)
  val = rng.uniform(0.25, 1.0)
  k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
  return val * (1 - sat * np.clip(np.minimum(k, 4 - k), 0, 1))


def _two_colours(rng):
  """Two colours that differ clearly in luminance or hue."""
  for _ in range(10):
    a, b = _random_colour(rng), _random_colour(rng)
    if np.abs(a - b).sum() > 0.6:
      return a, b
  return a, 1 - a


def _polygon_radius(theta, verts_r, verts_a):
  """Radius of a star-shaped polygon along angle theta; vertices given in polar form (sorted by angle)."""
  n = len(verts_r)
  vx, vy = verts_r * np.cos(verts_a), verts_r * np.sin(verts_a)
  k = np.floor(((theta - verts_a[0]) % (2 * np.pi)) / (2 * np.pi / n)).astype(np.int64) % n
  k2 = (k + 1) % n
  ex, ey = vx[k2] - vx[k], vy[k2] - vy[k]
  dx, dy = np.cos(theta), np.sin(theta)
  num = vx[k] * ey - vy[k] * ex
  den = dx * ey - dy * ex
  return num / np.where(np.abs(den) < 1e-9, 1e-9, den)


def _pulse(v, thr, width=0.15):
  """Soft indicator of v > thr (v typically a cosine)."""
  return np.clip((v - thr) / width + 0.5, 0, 1)


def _render_source(rng, size, d, label):
  s = size
  x, y = _grid(s)
  pxn = 2.0 / s
  deg = np.pi / 180
  name = SOURCE_CLASSES[label]

  # Background: coloured 1/f-like noise.
  bgc = _random_colour(rng)
  bg = np.broadcast_to(bgc.astype(_F), (s, s, 3)).copy()
  for k, a in ((3, 0.18), (7, 0.10), (16, 0.05)):
    bg += a * np.moveaxis(_smooth_noise(rng, s, k, 3), 0, -1)

  # Aperture: full frame or a soft ellipse.
  if name in ("triangle", "square", "pentagon", "hexagon", "disc", "star", "cross", "ring"):
    alpha = None
  elif rng.random() < 0.45:
    alpha = np.ones((s, s), _F)
  else:
    ax, ay = rng.uniform(-0.35, 0.35, 2)
    rx, ry = rng.uniform(0.45, 0.9, 2)
    alpha = _soft(1 - ((x - ax) / rx) ** 2 - ((y - ay) / ry) ** 2, 0.15)

  ca, cb = _two_colours(rng)
  th = rng.uniform(0, np.pi)
  cth, sth = np.cos(th), np.sin(th)
  u = (x * cth + y * sth) * (s / 2)  # px along the pattern direction.
  v = (-x * sth + y * cth) * (s / 2)
  period = lambda band: max(2.6, s * (rng.uniform(0.035, 0.06) if band == "high" else rng.uniform(0.09, 0.16)))

  pat = None
  if name.startswith("grating"):
    _, ang, band = name.split("_")
    a = (float(ang) + rng.uniform(-10, 10)) * deg
    uu = (x * np.cos(a) + y * np.sin(a)) * (s / 2)
    pat = 0.5 + 0.5 * np.sin(2 * np.pi * uu / period(band) + rng.uniform(0, 2 * np.pi))
  elif name.startswith(("checker", "diamond")):
    band = name.split("_")[1]
    a = (0 if name.startswith("checker") else 45) * deg + rng.uniform(-8, 8) * deg
    P = period(band)
    uu = (x * np.cos(a) + y * np.sin(a)) * (s / 2) + rng.uniform(0, P)
    vv = (-x * np.sin(a) + y * np.cos(a)) * (s / 2) + rng.uniform(0, P)
    pat = 0.5 + 0.5 * np.clip(4 * np.sin(2 * np.pi * uu / P) * np.sin(2 * np.pi * vv / P), -1, 1)
  elif alpha is None:  # Shapes.
    cx_, cy_ = rng.uniform(-0.3, 0.3, 2)
    R = rng.uniform(0.3, 0.6)
    rot = rng.uniform(0, 2 * np.pi)
    dx, dy = x - cx_, y - cy_
    rho = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    nv = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}.get(name)
    if nv:
      r_edge = _polygon_radius(theta, np.full(nv, R), rot + np.arange(nv) * 2 * np.pi / nv)
    elif name == "star":
      r_edge = _polygon_radius(theta, np.tile([R, R * rng.uniform(0.38, 0.5)], 5), rot + np.arange(10) * np.pi / 5)
    elif name == "disc":
      r_edge = R * 0.85
    elif name == "ring":
      r_edge = R * 0.85
    if name == "cross":
      du = np.abs(dx * np.cos(rot) + dy * np.sin(rot))
      dv = np.abs(-dx * np.sin(rot) + dy * np.cos(rot))
      w = R * rng.uniform(0.22, 0.32)
      alpha = np.maximum(np.minimum(_soft(w - du, pxn), _soft(R - dv, pxn)),
                         np.minimum(_soft(w - dv, pxn), _soft(R - du, pxn)))
    elif name == "ring":
      alpha = _soft(r_edge - rho, pxn) * _soft(rho - r_edge * rng.uniform(0.45, 0.7), pxn)
    else:
      alpha = _soft(r_edge - rho, pxn)
    pat = np.clip(0.5 + 0.4 * (dx * rng.normal() + dy * rng.normal()) + 0.1 * _smooth_noise(rng, s, 6), 0, 1) * 0.3
  elif name == "rings":
    cx_, cy_ = rng.uniform(-0.3, 0.3, 2)
    rho = np.sqrt((x - cx_) ** 2 + (y - cy_) ** 2) * (s / 2)
    pat = _pulse(np.cos(2 * np.pi * rho / period("high" if rng.random() < 0.5 else "low")), 0.5, 0.3)
  elif name == "spokes":
    cx_, cy_ = rng.uniform(-0.3, 0.3, 2)
    pat = _pulse(np.cos(rng.integers(6, 16) * np.arctan2(y - cy_, x - cx_) + rng.uniform(0, 6.3)), 0.6, 0.25)
  elif name == "crosshatch":
    P = period("high" if rng.random() < 0.5 else "low")
    ratio = rng.uniform(0.8, 1.25)
    pat = np.maximum(_pulse(np.cos(2 * np.pi * u / P), 0.7, 0.2), _pulse(np.cos(2 * np.pi * v / P * ratio), 0.7, 0.2))
  elif name == "segments":
    canvas = _Canvas(s, 1)
    n = rng.integers(15, 40)
    cxs, cys = rng.uniform(0, s, n), rng.uniform(0, s, n)
    angs = rng.uniform(0, np.pi, n)
    lens = rng.uniform(0.08, 0.3, n) * s
    for k in range(n):
      t = np.arange(-lens[k] / 2, lens[k] / 2, 0.5)
      canvas.add(0, cxs[k] + t * np.cos(angs[k]), cys[k] + t * np.sin(angs[k]), 0.5 * 1.5 / _center_weight(0.6))
    pat = 1 - np.exp(-canvas.render([0.6])[0])
  elif name == "dot_lattice":
    P = period("low")
    pat = _pulse(np.cos(2 * np.pi * u / P) + np.cos(2 * np.pi * v / P), 1.2, 0.3)
  elif name == "blobs":
    canvas = _Canvas(s, 2)
    for layer, n, sig in ((0, rng.integers(10, 30), 0.02 * s), (1, rng.integers(3, 10), 0.05 * s)):
      canvas.add(layer, rng.uniform(0, s, n), rng.uniform(0, s, n), 3.0 / _center_weight(sig) ** 2)
    lay = canvas.render([0.02 * s, 0.05 * s])
    pat = 1 - np.exp(-(lay[0] + lay[1]))
  elif name in ("zigzag", "wavy"):
    P, P2 = period("high" if rng.random() < 0.5 else "low"), rng.uniform(0.12, 0.3) * s
    A = rng.uniform(0.3, 0.8) * P2 / 2
    w = 2 * np.abs((v / P2) % 1 - 0.5) if name == "zigzag" else 0.5 + 0.5 * np.sin(2 * np.pi * v / P2)
    pat = _pulse(np.cos(2 * np.pi * (u + A * w) / P), 0.0, 0.4)
  elif name == "plaid":
    P = period("high" if rng.random() < 0.5 else "low")
    a2 = th + rng.choice([-1, 1]) * rng.uniform(50, 70) * deg
    u2 = (x * np.cos(a2) + y * np.sin(a2)) * (s / 2)
    pat = 0.5 + 0.25 * (np.sin(2 * np.pi * u / P) + np.sin(2 * np.pi * u2 / P + rng.uniform(0, 6.3)))
  elif name in ("wood_grain", "sand"):
    acc = np.zeros((s, s), _F)
    n = 12
    for _ in range(n):
      a = th + rng.normal(0, 6 * deg) if name == "wood_grain" else rng.uniform(0, np.pi)
      P = s * rng.uniform(0.03, 0.12) if name == "wood_grain" else max(2.6, s * rng.uniform(0.025, 0.06))
      acc += np.sin(2 * np.pi * (x * np.cos(a) + y * np.sin(a)) * (s / 2) / P + rng.uniform(0, 6.3))
    pat = np.clip(0.5 + acc / np.sqrt(2 * n), 0, 1)
  elif name == "step_edge":
    off = rng.uniform(-0.3, 0.3) * s / 2
    pat = _soft(u - off, 1.0)
  else:  # pragma: no cover
    raise AssertionError(name)

  # Difficulty: pattern contrast shrinks towards the mid colour.
  c = 1.0 - 0.5 * d * rng.uniform(0.5, 1.0)
  mid = 0.5 * (ca + cb)
  fa, fb = mid + c * (ca - mid), mid + c * (cb - mid)
  fg = fa.astype(_F) + pat[..., None].astype(_F) * (fb - fa).astype(_F)
  if name in ("triangle", "square", "pentagon", "hexagon", "disc", "star", "cross", "ring"):
    fg = fa.astype(_F) * (0.7 + pat[..., None].astype(_F))
  img = bg + alpha[..., None] * (fg - bg)
  blur = rng.uniform(0, 0.3 + 0.6 * d) * max(1.0, s / 128)
  if blur > 0.3:
    img = ndimage.gaussian_filter(img, (blur, blur, 0), truncate=_TRUNCATE)
  img = img * rng.uniform(0.8, 1.15) + rng.uniform(-0.08, 0.08)
  img += (0.01 + 0.04 * d) * rng.uniform(0.5, 1.5) * rng.standard_normal((s, s), dtype=_F)[..., None]
  return _quantize(img)


# --------------------------------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------------------------------

def _check(task, num_examples, image_size, seed, difficulty, split):
  if task not in TASKS:
    raise UsageError(f"unknown synthetic task {task!r}; known: {', '.join(TASKS)}")
  if int(num_examples) < 0:
    raise UsageError(f"num_examples must be >= 0, got {num_examples}")
  if int(image_size) < 16:
    raise UsageError(f"image_size must be >= 16 px, got {image_size}")
  if int(seed) < 0:
    raise UsageError(f"seed must be >= 0, got {seed}")
  if split not in _SPLIT_ID:
    raise UsageError(f"split must be one of {', '.join(SPLITS)} (or None), got {split!r}")
  d = DEFAULT_DIFFICULTY[task] if difficulty is None else float(difficulty)
  if not 0.0 <= d <= 1.0:
    raise UsageError(f"difficulty must lie in [0, 1], got {difficulty}")
  return d


def _example_rng(seed, task, split, i):
  return np.random.default_rng([int(seed), _TASK_ID[task], _SPLIT_ID[split], _STREAM_EXAMPLE, int(i)])


def _patient_rng(seed, task, split, p):
  return np.random.default_rng([int(seed), _TASK_ID[task], _SPLIT_ID[split], _STREAM_PATIENT, int(p)])


def _cxr_patients(seed, split, stop):
  """For examples 0..stop-1: (patient index, study index within the patient). Prefix-stable in `stop`."""
  counts = []
  total = 0
  block = 0
  while total < stop:
    rng = np.random.default_rng([int(seed), _TASK_ID["cxr"], _SPLIT_ID[split], _STREAM_COUNTS, block])
    c = np.minimum(rng.geometric(0.45, _CXR_BLOCK), 8)
    counts.append(c)
    total += int(c.sum())
    block += 1
  counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
  pid = np.repeat(np.arange(len(counts)), counts)[:stop]
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, np.int64)
  study = np.arange(stop) - starts[pid] if stop else np.zeros(0, np.int64)
  return pid, study


def _generate_range(task, start, stop, size, seed, d, split, grade_probs, progress=None):
  """Examples start..stop-1 (the worker entry point). progress: None, or called with the count drawn so far."""
  n = stop - start
  progress = progress or (lambda done: None)
  ch = NUM_CHANNELS[task]
  images = np.zeros((n, size, size, ch), np.uint8)
  offset = _SPLIT_ID[split] * _PATIENT_ID_STRIDE
  meta = {}
  if task == "retina":
    labels = np.zeros(n, np.int64)
    keys = ("eye", "num_ma", "num_haem", "num_exudate_clusters", "num_cotton_wool", "num_nv")
    meta = {k: np.zeros(n, np.int32) for k in keys}
    meta["patient_id"] = np.zeros(n, np.int64)
    cache = {}
    for j, i in enumerate(range(start, stop)):
      p = i // 2
      if p not in cache:
        cache = {p: _retina_patient(_patient_rng(seed, task, split, p), grade_probs)}
      patient = cache[p]
      rng = _example_rng(seed, task, split, i)
      grade = patient["grade"] if (patient["same_grade"] or i % 2 == 0) else rng.choice(5, p=grade_probs)
      images[j], m = _render_retina(rng, size, d, int(grade), patient, i % 2)
      labels[j] = grade
      for k in keys:
        meta[k][j] = m[k]
      meta["patient_id"][j] = offset + p
      progress(j + 1)
  elif task == "cxr":
    labels = np.zeros((n, 5), np.int8)
    pid, study = _cxr_patients(seed, split, stop)
    meta = {"patient_id": (offset + pid[start:stop]).astype(np.int64), "study": study[start:stop].astype(np.int32),
            "age": np.zeros(n, np.float32), "sex": np.zeros(n, np.int8), "ctr": np.zeros(n, np.float32)}
    cache = {}
    for j, i in enumerate(range(start, stop)):
      p = int(pid[i])
      if p not in cache:
        cache = {p: _cxr_patient(_patient_rng(seed, task, split, p))}
      patient = cache[p]
      rng = _example_rng(seed, task, split, i)
      present, severity, lab, ctr = _cxr_findings(rng, patient)
      images[j] = _render_cxr(rng, size, d, patient, present, severity, ctr)
      labels[j] = lab
      meta["age"][j] = patient["age"]
      meta["sex"][j] = patient["sex"]
      meta["ctr"][j] = ctr
      progress(j + 1)
  else:
    labels = np.zeros(n, np.int64)
    for j, i in enumerate(range(start, stop)):
      rng = _example_rng(seed, task, split, i)
      labels[j] = rng.integers(NUM_CLASSES["source"])
      images[j] = _render_source(rng, size, d, int(labels[j]))
      progress(j + 1)
    meta["patient_id"] = offset + np.arange(start, stop, dtype=np.int64)
  return images, labels, meta


def _num_workers(requested, n, size):
  if requested is None:
    env = os.environ.get(WORKERS_ENV)
    if env:
      requested = int(env)
    else:
      work = n * size * size
      # A worker process costs about half a CPU-second to start; the retina renders about 0.6 M pixels a second
      # (5,000 images at 48 px in 20 s on a 2-core AVX2 EPYC), so a job of about 5 s gets a second one.
      requested = min(2, os.cpu_count() or 1) if work >= 3_000_000 else 1
  return max(1, int(requested))


def generate_with_meta(task, num_examples, image_size, seed, difficulty=None, split=None, num_workers=None,
                       grade_probs=None):
  """Generates `num_examples` examples of a synthetic task.

  Args:
    task: "retina", "cxr" or "source".
    num_examples: N.
    image_size: S (square images), any size >= 16.
    seed: int >= 0.
    difficulty: float in [0, 1]; None takes DEFAULT_DIFFICULTY[task].
    split: None, "train", "validation" or "test": each split is its own stream of examples and patients.
    num_workers: processes; None picks 1 for small jobs and up to 2 for big ones (env TRANSFUSION_TF_SYNTH_WORKERS).
      The result does not depend on it.
    grade_probs: retina only, the 5 grade probabilities (default RETINA_GRADE_PROBS).

  Returns:
    images: uint8 (N, S, S, 3) or (N, S, S, 1) for cxr.
    labels: retina int64 grades (N,); cxr int8 (N, 5) in {-1, 0, 1} in CXR_PATHOLOGIES order; source int64 (N,).
    meta: dict of (N,) arrays; always `patient_id` (int64, unique across splits). Retina adds `eye` and lesion
      counts; cxr adds `study`, `age`, `sex` (1 = female) and `ctr` (cardiothoracic ratio).
  """
  d = _check(task, num_examples, image_size, seed, difficulty, split)
  n, size = int(num_examples), int(image_size)
  if grade_probs is None:
    grade_probs = RETINA_GRADE_PROBS
  grade_probs = np.asarray(grade_probs, np.float64)
  if grade_probs.shape != (5,) or (grade_probs < 0).any() or abs(grade_probs.sum() - 1) > 1e-6:
    raise UsageError(f"grade_probs must be 5 probabilities summing to 1, got {grade_probs.tolist()}")
  workers = _num_workers(num_workers, n, size)
  if workers > 1 and n < 8 * workers:
    workers = 1
  check_memory(task, split, n, size, workers)
  if workers == 1:
    return _generate_range(task, 0, n, size, seed, d, split, grade_probs,
                           progress=_Progress(f"synthetic {task} {split or 'examples'}", n, n))
  return _generate_parallel(task, n, size, seed, d, split, grade_probs, workers)


def available_memory():
  """Bytes a new allocation can get without swapping: MemAvailable of /proc/meminfo, else the free physical pages
  (os.sysconf); None where neither is known."""
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def memory_needed(task, n, size, workers=1):
  """Peak bytes of generating n images of `task` at `size` px: the images, twice with workers (the parts are
  joined into a new array), plus about 64 bytes a label and its meta."""
  images = int(n) * int(size) ** 2 * NUM_CHANNELS[task]
  return images * (2 if workers > 1 else 1) + 64 * int(n)


def _gib(b):
  return f"{b / 2 ** 30:.1f} GiB" if b >= 2 ** 30 else f"{b / 2 ** 20:.0f} MiB"


def check_memory(task, split, n, size, workers=1):
  """A UsageError naming the split's flag, the bytes needed and the bytes available when generating would not fit
  in memory (numpy would fail part-way with a MemoryError traceback, or the machine would swap)."""
  need, have = memory_needed(task, n, size, workers), available_memory()
  if have is not None and need > have:
    raise UsageError(f"--{_SPLIT_FLAG.get(split, 'num_examples')}={int(n)}: generating {int(n)} synthetic {task} "
                     f"images at {int(size)} px needs {_gib(need)} of memory ({need} bytes), {_gib(have)} available; "
                     f"ask for fewer images or a smaller --image_size")


class _Progress:
  """Called with this process's count drawn: prints `<what>: done/total images (p%), ETA` at most every
  PROGRESS_EVERY_S seconds, so a large split says how far it is (small ones stay quiet). `mine` of the `total` are
  drawn here; worker processes draw the rest at the same pace, so done = count * total / mine."""

  def __init__(self, what, total, mine):
    self.what, self.total, self.mine = what, int(total), max(1, int(mine))
    self.start = self.last = time.monotonic()

  def __call__(self, count):
    now = time.monotonic()
    if now - self.last < PROGRESS_EVERY_S or count >= self.mine:
      return
    self.last = now
    done = min(self.total, count * self.total // self.mine)
    eta = (now - self.start) * (self.mine - count) / count
    print(f"generating {self.what}: {done}/{self.total} images ({100 * done // self.total}%), ETA "
          f"{int(eta // 60)}m{int(eta % 60):02d}s", flush=True)


def _generate_parallel(task, n, size, seed, d, split, grade_probs, workers):
  """Splits 0..n-1 into contiguous ranges: this process draws the first, `python -m` worker processes the others.

  Plain subprocesses (not multiprocessing) keep this safe in notebooks, in scripts without a __main__ guard and in
  processes that already run TensorFlow threads. A worker that fails has its range redrawn here, so the result is
  the same in every case.
  """
  bounds = [(n * k // workers, n * (k + 1) // workers) for k in range(workers)]
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
  env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  with tempfile.TemporaryDirectory(prefix="transfusion_synth_") as tmp:
    procs = []
    for k, (a, b) in enumerate(bounds[1:]):
      out = os.path.join(tmp, f"part{k}.npz")
      spec = json.dumps({"task": task, "start": a, "stop": b, "size": size, "seed": int(seed), "difficulty": d,
                         "split": split, "grade_probs": [float(g) for g in grade_probs], "out": out})
      try:
        proc = subprocess.Popen([sys.executable, "-m", "transfusion_tf.data.synthetic", "--worker", spec], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
      except OSError:
        proc = None
      procs.append((proc, a, b, out))
    progress = _Progress(f"synthetic {task} {split or 'examples'}", n, bounds[0][1] - bounds[0][0])
    parts = [_generate_range(task, bounds[0][0], bounds[0][1], size, seed, d, split, grade_probs, progress)]
    for proc, a, b, out in procs:
      part = None
      if proc is not None:
        proc.communicate()
        if proc.returncode == 0 and os.path.exists(out):
          with np.load(out) as z:
            part = (z["images"], z["labels"], {k[5:]: z[k] for k in z.files if k.startswith("meta_")})
      if part is None:
        part = _generate_range(task, a, b, size, seed, d, split, grade_probs)
      parts.append(part)
  images = np.concatenate([p[0] for p in parts])
  labels = np.concatenate([p[1] for p in parts])
  meta = {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]}
  return images, labels, meta


def _worker_main(spec):
  spec = json.loads(spec)
  images, labels, meta = _generate_range(spec["task"], spec["start"], spec["stop"], spec["size"], spec["seed"],
                                         spec["difficulty"], spec["split"], np.asarray(spec["grade_probs"]))
  tmp = spec["out"] + ".tmp.npz"
  np.savez(tmp, images=images, labels=labels, **{"meta_" + k: v for k, v in meta.items()})
  os.replace(tmp, spec["out"])


def generate(task, num_examples, image_size, seed, difficulty=None, **kw):
  """(images, labels) of a synthetic task; see `generate_with_meta` for the arguments and the shapes."""
  images, labels, _ = generate_with_meta(task, num_examples, image_size, seed, difficulty=difficulty, **kw)
  return images, labels


def default_cache_dir():
  return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "transfusion_tf", "synthetic")


def cache_key(task, split, num_examples, image_size, seed, difficulty=None):
  """The file stem a cached dataset is stored under."""
  d = DEFAULT_DIFFICULTY[task] if difficulty is None else float(difficulty)
  return f"{task}_{split}_n{int(num_examples)}_s{int(image_size)}_seed{int(seed)}_d{d:.4f}_v{GENERATOR_VERSION}"


def _atomic_save(path, writer):
  with files.atomic_open(path) as f:
    writer(f)


def _sha256(path):
  """Hex sha256 of a file's bytes, read in 4 MiB chunks (about 20 ms for 3,000 images at 48 px)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def _cache_damage(img_path, lab_path, sum_path):
  """None when both cache files match the sha256 recorded beside them, else why not (one phrase)."""
  try:
    with open(sum_path, encoding="utf-8") as f:
      sums = json.load(f)
  except FileNotFoundError:
    return f"it has no checksum file {os.path.basename(sum_path)} (an older version wrote it, or its write stopped)"
  except (OSError, ValueError) as e:
    return f"its checksum file {os.path.basename(sum_path)} cannot be read ({type(e).__name__})"
  if not isinstance(sums, dict):
    return f"its checksum file {os.path.basename(sum_path)} is damaged"
  for key, path in (("images", img_path), ("labels", lab_path)):
    try:
      actual = _sha256(path)
    except OSError as e:
      return f"{os.path.basename(path)} cannot be read ({e.strerror or e})"
    if sums.get(key) != actual:
      return f"{os.path.basename(path)} does not match its recorded sha256 (damaged on disk)"
  return None


def load_or_generate(task, split, num_examples, image_size, seed, cache_dir=None, difficulty=None, mmap=False,
                     num_workers=None):
  """Returns (images, labels, meta) for a split, generating them once and caching them on disk.

  Splits draw from separate streams (and cxr/retina patients get split-specific ids), so train, validation and test
  share no example and no patient. The cache lives in `cache_dir`, else $TRANSFUSION_TF_CACHE, else
  ~/.cache/transfusion_tf/synthetic: `<key>.images.npy` (mmap-able with mmap=True), `<key>.labels.npz` and
  `<key>.sha256.json` (the sha256 of both), each written to a temporary file first and renamed, the checksums last.
  Every load checks both files against their checksums; an entry that fails (damaged bytes of the right size, a
  truncated file, or an entry from before checksums, which is never trusted blindly) is generated again, with one
  warning that says why.
  """
  if split not in SPLITS:
    raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
  _check(task, num_examples, image_size, seed, difficulty, split)
  cache_dir = cache_dir or default_cache_dir()
  os.makedirs(cache_dir, exist_ok=True)
  stem = os.path.join(cache_dir, cache_key(task, split, num_examples, image_size, seed, difficulty))
  img_path, lab_path, sum_path = stem + ".images.npy", stem + ".labels.npz", stem + ".sha256.json"
  if os.path.exists(lab_path) and os.path.exists(img_path):
    damage = _cache_damage(img_path, lab_path, sum_path)
    if damage is None:
      try:
        images = np.load(img_path, mmap_mode="r" if mmap else None)
        with np.load(lab_path) as z:
          labels = z["labels"]
          meta = {k[5:]: z[k] for k in z.files if k.startswith("meta_")}
        if len(images) == len(labels) == int(num_examples):
          return images, labels, meta
        damage = f"it holds {len(images)} images and {len(labels)} labels, not {int(num_examples)}"
      except (OSError, ValueError, KeyError) as e:
        damage = f"it cannot be read ({type(e).__name__})"
    logging.warning("synthetic cache %s: %s; generating the %s %s split again", stem, damage, task, split)
  images, labels, meta = generate_with_meta(task, num_examples, image_size, seed, difficulty=difficulty, split=split,
                                            num_workers=num_workers)
  with contextlib.suppress(FileNotFoundError):
    os.remove(sum_path)  # The old checksums must never vouch for the new files, even for a moment.
  _atomic_save(img_path, lambda f: np.save(f, images))
  _atomic_save(lab_path, lambda f: np.savez(f, labels=labels, **{"meta_" + k: v for k, v in meta.items()}))
  files.atomic_write_json(sum_path, {"images": _sha256(img_path), "labels": _sha256(lab_path)}, indent=None)
  if mmap:
    images = np.load(img_path, mmap_mode="r")
  return images, labels, meta


# --------------------------------------------------------------------------------------------------------------------
# Global-statistics baseline: what a classifier reads without looking at any local structure.
# --------------------------------------------------------------------------------------------------------------------

GLOBAL_PERCENTILES = (1, 5, 25, 50, 75, 95, 99, 99.9)
GLOBAL_HIST_BINS = 16


def global_statistics_features(images):
  """Per-channel global intensity statistics of uint8 images: the features of the global-statistics baseline.

  Args:
    images: (N, S, S, C) uint8 (any S, any C).

  Returns:
    (N, C * (GLOBAL_HIST_BINS + len(GLOBAL_PERCENTILES) + 2)) float64: per channel a GLOBAL_HIST_BINS-bin histogram
    over 0..255 (fraction of pixels per bin), the GLOBAL_PERCENTILES percentiles, the mean and the std (all in
    intensity units / 255). Spatial layout is discarded entirely.
  """
  images = np.asarray(images)
  n, c = images.shape[0], images.shape[-1]
  flat = images.reshape(n, -1, c)
  feats = []
  for ch in range(c):
    v = flat[:, :, ch]
    bins = (v.astype(np.int64) * GLOBAL_HIST_BINS) // 256 + GLOBAL_HIST_BINS * np.arange(n)[:, None]
    hist = np.bincount(bins.ravel(), minlength=n * GLOBAL_HIST_BINS).reshape(n, GLOBAL_HIST_BINS) / v.shape[1]
    vf = v.astype(np.float64) / 255.0
    feats += [hist, np.percentile(vf, GLOBAL_PERCENTILES, axis=1).T, vf.mean(1, keepdims=True),
              vf.std(1, keepdims=True)]
  return np.concatenate(feats, axis=1)


def _fit_logistic(x, y, l2):
  """L2-regularised logistic regression (intercept not penalised) by L-BFGS; returns (F + 1,) weights."""
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  from scipy.special import expit, log_expit  # pylint: disable=g-import-not-at-top
  z = np.c_[x, np.ones(len(x))]
  sign = 2.0 * y - 1.0
  n = len(x)

  def f(w):
    m = sign * (z @ w)
    loss = -log_expit(m).sum() / n + 0.5 * l2 * (w[:-1] @ w[:-1])
    g = -(z.T @ (sign * expit(-m))) / n
    g[:-1] += l2 * w[:-1]
    return loss, g

  return optimize.minimize(f, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x


def _rank_auc(labels, scores):
  from scipy.stats import rankdata  # pylint: disable=g-import-not-at-top
  labels = np.asarray(labels).astype(bool)
  npos, nneg = labels.sum(), (~labels).sum()
  if npos == 0 or nneg == 0:
    return float("nan")
  return float((rankdata(scores)[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def global_baseline_auc(train_features, train_labels, test_features, test_labels, l2_grid=(1e-3, 1e-2, 1e-1, 1.0)):
  """AUC of an L2-regularised logistic regression on global statistics, fit on one split and scored on another.

  Features are standardised with the training split's moments. The L2 strength is chosen from `l2_grid` by 3-fold
  cross-validated AUC on the training split (contiguous folds), then refit on the whole training split.

  Args:
    train_features, test_features: (N, F) float, e.g. from global_statistics_features.
    train_labels, test_labels: (N,) binary (bool or 0/1).

  Returns:
    (test AUC, chosen l2) as floats.
  """
  xtr, xte = np.asarray(train_features, np.float64), np.asarray(test_features, np.float64)
  ytr, yte = np.asarray(train_labels).astype(np.float64), np.asarray(test_labels).astype(bool)
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
  xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
  folds = np.array_split(np.arange(len(xtr)), 3)
  best = (-1.0, l2_grid[0])
  for l2 in l2_grid:
    scores = []
    for k in range(3):
      tr = np.concatenate([folds[j] for j in range(3) if j != k])
      w = _fit_logistic(xtr[tr], ytr[tr], l2)
      scores.append(_rank_auc(ytr[folds[k]], np.c_[xtr[folds[k]], np.ones(len(folds[k]))] @ w))
    best = max(best, (float(np.nanmean(scores)), l2))
  w = _fit_logistic(xtr, ytr, best[1])
  return _rank_auc(yte, np.c_[xte, np.ones(len(xte))] @ w), float(best[1])


def referable(grades):
  """Referable DR (grade >= 2) as int8."""
  return (np.asarray(grades) >= 2).astype(np.int8)


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker_main(sys.argv[2])
  else:
    print("usage: python -m transfusion_tf.data.synthetic --worker JSON (internal)", file=sys.stderr)
    sys.exit(2)
