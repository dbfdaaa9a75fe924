"""Stage activations from one multi-output Keras submodel, streamed into covariance sums, and model comparison.

A comparison runs two models on exactly the same image batches, in the same order. For each model one submodel
`keras.Model(model.input, [stage outputs])` returns every requested stage from a single forward pass per batch
(DESIGN.md: the backbone is never nested as a layer). Activations become (datapoints, neurons) rows:

  positions  conv stages: every sampled spatial position of every image is a datapoint. Per image, k positions
             are drawn without replacement from a seeded generator keyed by (seed, batch index, grid size), so both
             models, and every stage of the same spatial size, use the SAME positions. k is `max_positions`, raised
             (up to H*W) until datapoints = images x k reach `min_datapoints_per_neuron` times the neurons of the
             widest stage compared on that grid. Two stages of different spatial size cannot share positions;
             such a pair falls back to avgpool and the result says so (`fallback`).
  avgpool    conv stages: the mean over space, one datapoint per image.
  vector     stages that are already vectors (`pool`): one datapoint per image, whatever the conv mode.

Nothing is held whole in memory. Inside a `tf.function` on the model's device the rows of each batch are cast to
float64, shifted by a per-neuron constant (the neuron's mean over the first batch, which keeps the later centring
from cancelling digits) and summed into variables: count, sum_x, x^T x per stage feature and x^T y per compared
pair. Only these neurons x neurons matrices reach numpy, once at the end, where they go to
`cca.CovarianceAccumulator.update_moments` and from there to `cca.similarity_metrics_from_moments`: CCA, SVCCA, PWCCA
and linear CKA from one eigendecomposition per side. PWCCA needs only the covariances (its weights are the canonical
variates' loadings on the neurons, read off the covariance), so it too uses every datapoint.

Permutation baseline: alongside x^T y, each pair also sums x^T y_perm, with y's rows of each batch in a fixed
seeded random order (one permutation per batch and row stream). That breaks the pairing of datapoints but leaves
every self-moment as it is, so the same metrics from it (`baseline`) are each metric's bias floor at this sample
size, at the cost of one more cross product per batch and no more eigendecompositions. Within-batch shuffling
matches a few rows with themselves (about one per batch), negligible when batches hold many datapoints.

Few datapoints: the comparisons never warn (`cca.FewDatapointsWarning` is silenced here); each result carries
`datapoints_per_neuron`, `few_datapoints` and `below_min` instead, and `few_datapoints_line` turns a set of results
into the one log line an analysis prints.

`stage_activations` keeps a bounded, seeded reservoir sample of rows instead (for notebooks and checks).
"""
import dataclasses
import logging
import warnings

import keras
import numpy as np
import tensorflow as tf

from transfusion_tf import models
from transfusion_tf.analysis import cca as cca_lib
from transfusion_tf.errors import UsageError


class _OwnStepTraces(logging.Filter):
  """Drops TensorFlow's "frequent retracing" warning about `_Stream._step_fn`.

  Each comparison builds its own step function (its own submodels and moment variables), so it must trace its own
  graph: once, and once more with the batch dimension left free if a batch differs (reduce_retracing). TensorFlow
  counts traces by code object across all instances, so an analysis of many run pairs reads as "5 out of the last 14
  calls triggered retracing" although no instance traced more than twice.
  """

  def filter(self, record):
    msg = record.getMessage()
    return not ("_Stream._step_fn" in msg and "retracing" in msg)


tf.get_logger().addFilter(_OwnStepTraces())

CONV_MODES = ("positions", "avgpool")
DEFAULT_MAX_POSITIONS = 64
DEFAULT_SAMPLE_ROWS = 20_000
# Comparisons sample positions until datapoints reach this many per neuron (issue 11: SVCCA reads 0.38 on independent
# noise at 5 per neuron, 0.12 at 50), and `few_datapoints` marks results below cca's warning threshold.
DEFAULT_MIN_DATAPOINTS_PER_NEURON = 10
DATAPOINTS_PER_NEURON = cca_lib.MIN_DATAPOINTS_PER_NEURON


def stage_submodel(model, stages):
  """Returns `keras.Model(model.input, [stage outputs])`: every stage of `stages` from one forward pass.

  model: built by `transfusion_tf.models.build_model`. stages: stage names (UsageError on an unknown one).
  """
  outputs = [models.stage_output(model, s) for s in stages]
  return keras.Model(model.input, outputs, name=f"{model.name}_stages")


def check_conv_mode(conv_mode):
  """Raises UsageError unless `conv_mode` is one of CONV_MODES; returns it."""
  if conv_mode not in CONV_MODES:
    raise UsageError(f"conv_mode {conv_mode!r} is not one of {', '.join(CONV_MODES)}")
  return conv_mode


def batch_images(batch):
  """The images of one batch element: an array or tensor, or the first item of an (images, labels, ...) tuple."""
  if isinstance(batch, dict):
    batch = batch["image"] if "image" in batch else batch["images"]
  elif isinstance(batch, (tuple, list)):
    batch = batch[0]
  return tf.convert_to_tensor(batch, tf.float32)


def reiterable(batches):
  """Returns `batches` as something that can be iterated more than once (a one-shot iterator becomes a list).

  `batches` may be a list, a tf.data.Dataset, any re-iterable, or a zero-argument callable returning an iterable.
  """
  if callable(batches) and not hasattr(batches, "__iter__"):
    return _CallableBatches(batches)
  if iter(batches) is batches:
    return [b for b in batches]
  return batches


class _CallableBatches:

  def __init__(self, fn):
    self._fn = fn

  def __iter__(self):
    return iter(self._fn())


def sample_positions(num_images, height, width, max_positions, seed, batch_index):
  """Flat row indices into the (num_images * height * width) positions of one batch, the same for every model.

  Per image, min(max_positions, H*W) positions without replacement (all of them, in order, when max_positions is
  None or 0 or at least H*W). The draw depends only on (seed, batch_index, height, width, num_images).
  Returns an int64 array of length num_images * k, image-major.
  """
  hw = int(height) * int(width)
  base = np.arange(num_images, dtype=np.int64)[:, None] * hw
  if not max_positions or max_positions >= hw:
    return (base + np.arange(hw, dtype=np.int64)[None, :]).reshape(-1)
  rng = np.random.default_rng([int(seed), int(batch_index), int(height), int(width), 104729])
  # The k smallest of iid uniforms per image: a uniform k-subset without replacement.
  picks = np.argpartition(rng.random((num_images, hw)), int(max_positions) - 1, axis=1)[:, :int(max_positions)]
  return (base + np.sort(picks, axis=1)).reshape(-1)


def batch_moments(x, y):
  """Raw moments of one batch, in TensorFlow float64: (n, sum_x, sum_y, x^T x, y^T y, x^T y).

  x: (n, p) and y: (n, q) rows of the same datapoints. These are what `CovarianceAccumulator.update_moments`
  takes; summing them over batches and centring once at the end gives the covariances.
  """
  x = tf.cast(x, tf.float64)
  y = tf.cast(y, tf.float64)
  n = tf.cast(tf.shape(x)[0], tf.float64)
  return (n, tf.reduce_sum(x, 0), tf.reduce_sum(y, 0), tf.matmul(x, x, transpose_a=True),
          tf.matmul(y, y, transpose_a=True), tf.matmul(x, y, transpose_a=True))


@dataclasses.dataclass
class _Feature:
  side: int          # 0: model a, 1: model b.
  stage: str
  kind: str          # positions | avgpool | vector
  grid: tuple        # (H, W) of the stage output, or None for vectors.
  neurons: int

  @property
  def stream(self):
    return f"p{self.grid[0]}x{self.grid[1]}" if self.kind == "positions" else "image"


@dataclasses.dataclass
class _Pair:
  stage_a: str
  stage_b: str
  feature_a: int
  feature_b: int
  mode: str
  fallback: str


def _stage_shapes(model, stages):
  shapes = []
  for s in stages:
    shape = tuple(models.stage_output(model, s).shape)
    if len(shape) not in (2, 4):
      raise UsageError(f"stage {s!r} of {model.name} has output rank {len(shape)}; expected 2 or 4")
    if len(shape) == 4 and (shape[1] is None or shape[2] is None):
      raise UsageError(f"stage {s!r} of {model.name} has no static spatial size; build the model with a fixed "
                       "image size")
    shapes.append(shape)
  return shapes


class _Planner:
  """Decides, per compared pair, how each side becomes rows, and de-duplicates the features."""

  def __init__(self):
    self.features = []
    self._index = {}

  def feature(self, side, stage, kind, shape):
    key = (side, stage, kind)
    if key not in self._index:
      grid = (int(shape[1]), int(shape[2])) if len(shape) == 4 else None
      self._index[key] = len(self.features)
      self.features.append(_Feature(side, stage, kind, grid, int(shape[-1])))
    return self._index[key]

  def pair(self, stage_a, shape_a, stage_b, shape_b, conv_mode):
    fallback = None
    if len(shape_a) == 2 and len(shape_b) == 2:
      kind_a = kind_b = mode = "vector"
    elif len(shape_a) == 2 or len(shape_b) == 2:
      mode = "avgpool"
      kind_a = "vector" if len(shape_a) == 2 else "avgpool"
      kind_b = "vector" if len(shape_b) == 2 else "avgpool"
      if conv_mode == "positions":
        fallback = "one side is a vector stage: the conv side is average-pooled"
    elif conv_mode == "avgpool":
      kind_a = kind_b = mode = "avgpool"
    elif tuple(shape_a[1:3]) != tuple(shape_b[1:3]):
      kind_a = kind_b = mode = "avgpool"
      fallback = (f"spatial sizes differ ({shape_a[1]}x{shape_a[2]} vs {shape_b[1]}x{shape_b[2]}): "
                  "positions cannot be shared, average-pooled instead")
    else:
      kind_a = kind_b = mode = "positions"
    return _Pair(stage_a, stage_b, self.feature(0, stage_a, kind_a, shape_a),
                 self.feature(1, stage_b, kind_b, shape_b), mode, fallback)


class _Reservoir:
  """Seeded reservoir sampling of row indices for one row stream; every feature of the stream keeps the same rows."""

  def __init__(self, capacity, seed, name):
    self.capacity = int(capacity)
    self.seen = 0
    self._rng = np.random.default_rng([int(seed), sum(map(ord, name)), len(name), 15485863])

  def plan(self, rows):
    """Returns (batch-local row indices to keep, reservoir slots they go to) for the next `rows` rows."""
    idx = np.arange(self.seen, self.seen + rows, dtype=np.int64)
    self.seen += rows
    if self.capacity <= 0:
      return np.zeros(0, np.int64), np.zeros(0, np.int64)
    slots = np.where(idx < self.capacity, idx, self._rng.integers(0, idx + 1))
    keep = np.nonzero(slots < self.capacity)[0]
    kept_slots = slots[keep]
    # Several rows of one batch may land on the same slot: the last one wins, as in the sequential algorithm.
    _, first_rev = np.unique(kept_slots[::-1], return_index=True)
    last = np.sort(len(kept_slots) - 1 - first_rev)
    return keep[last], kept_slots[last]


class _Stream:
  """Runs two models over the same batches and accumulates the moments of every planned feature and pair."""

  def __init__(self, model_a, model_b, stages_a, stages_b, planner, pairs, max_positions, seed, sample_rows):
    self.stages = (list(stages_a), list(stages_b))
    if model_b is None or model_b is model_a:  # One model: one forward pass serves both sides.
      union = list(dict.fromkeys(self.stages[0] + self.stages[1]))
      self.sub = (stage_submodel(model_a, union),)
      self.stages = (union, union)
    else:
      self.sub = (stage_submodel(model_a, stages_a), stage_submodel(model_b, stages_b))
    self.features = planner.features
    self.pairs = pairs
    self.max_positions = max_positions  # An int or None for every grid, or {(H, W): int or None}.
    self.seed = seed
    self.grids = sorted({f.grid for f in self.features if f.kind == "positions"})
    self.streams = sorted({f.stream for f in self.features})
    self.reservoirs = {s: _Reservoir(sample_rows, seed, s) for s in self.streams}
    self.samples = [None] * len(self.features)
    self.count = {s: 0 for s in self.streams}
    self.images = 0
    self.batches = 0
    f64 = tf.float64
    self.v_shift = [tf.Variable(tf.zeros([f.neurons], f64), trainable=False) for f in self.features]
    self.v_sum = [tf.Variable(tf.zeros([f.neurons], f64), trainable=False) for f in self.features]
    self.v_xtx = [tf.Variable(tf.zeros([f.neurons, f.neurons], f64), trainable=False) for f in self.features]
    self.v_xty = [tf.Variable(tf.zeros([self.features[p.feature_a].neurons, self.features[p.feature_b].neurons],
                                       f64), trainable=False) for p in pairs]
    # x^T y with y's rows shuffled within each batch: the permutation baseline's only moment of its own.
    self.v_xty_perm = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.v_xty]
    self._step = tf.function(self._step_fn, reduce_retracing=True)

  def reset(self, max_positions):
    """Zeroes every moment, count and sample, as if freshly built with `max_positions`; keeps the traced step."""
    self.max_positions = max_positions
    self.reservoirs = {s: _Reservoir(r.capacity, self.seed, s) for s, r in self.reservoirs.items()}
    self.samples = [None] * len(self.features)
    self.count = {s: 0 for s in self.streams}
    self.images = 0
    self.batches = 0
    for v in self.v_shift + self.v_sum + self.v_xtx + self.v_xty + self.v_xty_perm:
      v.assign(tf.zeros_like(v))

  def _rows(self, feature, act, positions):
    if feature.kind == "positions":
      rows = tf.gather(tf.reshape(act, [-1, feature.neurons]), positions[f"p{feature.grid[0]}x{feature.grid[1]}"])
    elif feature.kind == "avgpool":
      rows = tf.reduce_mean(act, axis=[1, 2])
    else:
      rows = act
    return tf.cast(rows, tf.float64)

  def positions_per_image(self, grid):
    """Positions sampled per image on `grid` (H, W): None or 0 means all of them."""
    k = self.max_positions.get(tuple(grid)) if isinstance(self.max_positions, dict) else self.max_positions
    return min(int(k), grid[0] * grid[1]) if k else grid[0] * grid[1]

  def _step_fn(self, images, positions, keep, perms, first):
    outs = []
    for sub in self.sub:  # One forward pass per model per batch, all stages at once.
      o = sub(images, training=False)
      outs.append(list(o) if isinstance(o, (list, tuple)) else [o])
    rows, kept = [], []
    for i, f in enumerate(self.features):
      r = self._rows(f, outs[min(f.side, len(outs) - 1)][self.stages[f.side].index(f.stage)], positions)
      kept.append(tf.gather(r, keep[f.stream]))
      # The first batch sets the shift (a tensor flag, so the function is traced once for every batch).
      self.v_shift[i].assign(tf.where(first, tf.reduce_mean(r, 0), self.v_shift[i]))
      r = r - self.v_shift[i]
      self.v_sum[i].assign_add(tf.reduce_sum(r, 0))
      self.v_xtx[i].assign_add(tf.matmul(r, r, transpose_a=True))
      rows.append(r)
    for j, p in enumerate(self.pairs):
      a, b = rows[p.feature_a], rows[p.feature_b]
      self.v_xty[j].assign_add(tf.matmul(a, b, transpose_a=True))
      self.v_xty_perm[j].assign_add(tf.matmul(a, tf.gather(b, perms[self.features[p.feature_a].stream]),
                                              transpose_a=True))
    return kept

  def run(self, batches):
    for batch in batches:
      images = batch_images(batch)
      n = int(images.shape[0])
      if n == 0:
        continue
      positions = {f"p{h}x{w}": tf.constant(sample_positions(n, h, w, self.positions_per_image((h, w)), self.seed,
                                                              self.batches))
                   for h, w in self.grids}
      plans, keep, perms = {}, {}, {}
      for s in self.streams:
        m = n if s == "image" else len(positions[s])
        self.count[s] += m
        plans[s] = self.reservoirs[s].plan(m)
        keep[s] = tf.constant(plans[s][0])
        if self.pairs:
          rng = np.random.default_rng([int(self.seed), self.batches, sum(map(ord, s)), len(s), 7919])
          perms[s] = tf.constant(rng.permutation(m))
      kept = self._step(images, positions, keep, perms, tf.constant(self.batches == 0))
      for i, f in enumerate(self.features):
        _, slots = plans[f.stream]
        if not len(slots):
          continue
        if self.samples[i] is None:
          self.samples[i] = np.zeros((self.reservoirs[f.stream].capacity, f.neurons), np.float64)
        self.samples[i][slots] = kept[i].numpy()
      self.images += n
      self.batches += 1
    if not self.images:
      raise UsageError("no images to compare: the batch iterable was empty")

  def accumulator(self, j, baseline=False):
    """A CovarianceAccumulator holding pair j's totals (the only transfer of moments to numpy).

    Its covariances are those of the data; its means are relative to the per-neuron shift (see the module
    docstring), which no similarity measure depends on. With `baseline`, the cross-moment is that of the rows of
    y shuffled within each batch (the permutation baseline); the self-moments are the same.
    """
    p = self.pairs[j]
    fa = self.features[p.feature_a]
    acc = cca_lib.CovarianceAccumulator()
    xty = (self.v_xty_perm if baseline else self.v_xty)[j].numpy()
    acc.update_moments(self.count[fa.stream], self.v_sum[p.feature_a].numpy(), self.v_sum[p.feature_b].numpy(),
                       self.v_xtx[p.feature_a].numpy(), self.v_xtx[p.feature_b].numpy(), xty)
    return acc

  def feature_sample(self, i):
    """Rows of feature i's bounded reservoir sample, or None when nothing was kept."""
    f = self.features[i]
    rows = min(self.reservoirs[f.stream].seen, self.reservoirs[f.stream].capacity)
    return None if self.samples[i] is None else self.samples[i][:rows]

  def sample(self, j):
    """(x, y) rows of pair j's bounded reservoir sample (same datapoints on both sides)."""
    p = self.pairs[j]
    return self.feature_sample(p.feature_a), self.feature_sample(p.feature_b)


def _nan_to_none(v):
  v = float(v)
  return None if not np.isfinite(v) else v


def count_images(batches):
  """Number of images in `batches` (a re-iterable, see `reiterable`): its `images` attribute where it knows it
  (`compare.ImageBatches`, which would otherwise read every image from its pipeline once more just to count
  them), else counted by one pass without any model."""
  known = getattr(batches, "images", None)
  if known is not None:
    return int(known)
  return sum(int(batch_images(b).shape[0]) for b in batches)


def _positions_plan(planned, features, max_positions, min_datapoints_per_neuron, batches):
  """Positions per image for each grid of positions-mode pairs, and the batches to iterate (re-iterable if counted).

  Each grid gets max(max_positions, ceil(min_datapoints_per_neuron x widest neurons / images)) positions, at most
  H*W; max_positions None or 0 means all of them. Counting the images needs a first pass over `batches`.
  """
  need = {}
  for p in planned:
    if p.mode == "positions":
      fa, fb = features[p.feature_a], features[p.feature_b]
      need[fa.grid] = max(need.get(fa.grid, 0), fa.neurons, fb.neurons)
  plan = {grid: max_positions for grid in need}
  short = {g: n for g, n in need.items() if max_positions and max_positions < g[0] * g[1]}
  if not (min_datapoints_per_neuron and short):
    return plan, batches
  batches = reiterable(batches)
  images = count_images(batches)
  for grid, neurons in short.items():
    want = -(-int(np.ceil(min_datapoints_per_neuron * neurons)) // max(images, 1))
    plan[grid] = min(grid[0] * grid[1], max(int(max_positions), want))
  return plan, batches


def compare_pairs(model_a, model_b, pairs, batches, conv_mode="positions", max_positions=DEFAULT_MAX_POSITIONS,
                  seed=0, keep_variance=0.99, keep_dims=None, return_accumulators=False,
                  min_datapoints_per_neuron=DEFAULT_MIN_DATAPOINTS_PER_NEURON):
  """Compares stage `a` of model_a with stage `b` of model_b for every (a, b) in `pairs`, in one pass.

  model_a, model_b: built by `models.build_model`, with the same input shape (model_b may be model_a).
  pairs: [(stage_a, stage_b), ...]. batches: iterable of image batches (arrays or tensors (B, H, W, C), already
  preprocessed for the models; or (images, labels, ...) tuples as `Data.eval` yields). Both models see every batch,
  in the same order, in the same step. Iterated once, or twice when positions have to be counted for the minimum
  below (a one-shot iterator is then held as a list).
  conv_mode: "positions" or "avgpool" (see the module docstring). max_positions: positions per image (None or 0:
  all). min_datapoints_per_neuron: in positions mode, more positions per image are sampled (up to all H*W) until
  datapoints >= this many times the neurons of the wider side; this minimum wins over max_positions, unless it is
  0. Where even every position of every image is not enough (and in avgpool and vector modes, one datapoint per
  image), the pair is computed anyway and marked `below_min`. seed: position sampling and the baseline's
  permutations. keep_variance / keep_dims: SVCCA's truncation (see `cca.svcca`).

  Never warns with `cca.FewDatapointsWarning`: the results carry the counts instead (see `few_datapoints_line`).
  Returns a list, in the order of `pairs`, of dicts:
    stage_a, stage_b; mode ("positions" | "avgpool" | "vector"), requested_mode (conv_mode), fallback (why the
    requested mode was not used, or None); svcca (mean SVCCA correlation), svcca_dims ([kept a, kept b]), pwcca,
    cka (linear CKA), cca (mean canonical correlation), all over every datapoint; baseline ({svcca, pwcca, cca,
    cka}: the same metrics with b's datapoints shuffled within each batch, the bias floor); datapoints, neurons
    ([a, b]), datapoints_per_neuron (datapoints / max(neurons)), images, positions_per_image (positions mode, else
    None), grid ([[H, W], [H, W]] of conv stages, else None), few_datapoints (fewer than
    cca.MIN_DATAPOINTS_PER_NEURON = 10 per neuron), below_min (fewer than min_datapoints_per_neuron per neuron;
    never when that is 0), min_datapoints_per_neuron.
  With return_accumulators, each dict also holds "accumulator", the pair's `cca.CovarianceAccumulator` (its
  covariances are the data's; its means are shifted, see `_Stream.accumulator`), and "baseline_accumulator".
  """
  return compare_pairs_on_groups(model_a, model_b, pairs, [batches], conv_mode=conv_mode, max_positions=max_positions,
                                 seed=seed, keep_variance=keep_variance, keep_dims=keep_dims,
                                 return_accumulators=return_accumulators,
                                 min_datapoints_per_neuron=min_datapoints_per_neuron)[0]


def compare_pairs_on_groups(model_a, model_b, pairs, groups, conv_mode="positions",
                            max_positions=DEFAULT_MAX_POSITIONS, seed=0, keep_variance=0.99, keep_dims=None,
                            return_accumulators=False, min_datapoints_per_neuron=DEFAULT_MIN_DATAPOINTS_PER_NEURON,
                            streams=None):
  """`compare_pairs` on each group of batches separately: a list, one `compare_pairs` result per group, each equal
  to what `compare_pairs(..., batches=group)` returns.

  One set of submodels and one traced step serve every group (the moments are zeroed between groups), so k groups
  cost one trace instead of k: F4's subsets of images. streams: a dict the caller keeps across calls whose models
  are the same objects with other weights loaded (representation.ModelSlots): the traced step of an earlier call
  on the same two models, stages, mode and seed is reused the same way (the step reads the weights as variables).
  """
  check_conv_mode(conv_mode)
  if not min_datapoints_per_neuron >= 0:
    raise UsageError(f"min_datapoints_per_neuron must be 0 or more; got {min_datapoints_per_neuron}")
  in_a, in_b = tuple(model_a.input.shape[1:]), tuple(model_b.input.shape[1:])
  if in_a != in_b:
    raise UsageError(f"the two models take different inputs ({in_a} vs {in_b}); they must see the same images")
  pairs = [(str(a), str(b)) for a, b in pairs]
  if not pairs:
    raise UsageError("no stages to compare")
  stages_a = list(dict.fromkeys(a for a, _ in pairs))
  stages_b = list(dict.fromkeys(b for _, b in pairs))
  shapes_a = dict(zip(stages_a, _stage_shapes(model_a, stages_a)))
  shapes_b = dict(zip(stages_b, _stage_shapes(model_b, stages_b)))
  planner = _Planner()
  planned = [planner.pair(a, shapes_a[a], b, shapes_b[b], conv_mode) for a, b in pairs]
  key = (id(model_a), id(model_b), tuple(pairs), conv_mode, int(seed))
  held = (streams or {}).get(key)
  # The held stream's submodels keep both models alive, so their ids cannot have been reused by other objects.
  stream = held[2] if held is not None and held[0] is model_a and held[1] is model_b else None
  out = []
  for batches in groups:
    positions, batches = _positions_plan(planned, planner.features, max_positions, min_datapoints_per_neuron,
                                         batches)
    if stream is None:
      stream = _Stream(model_a, model_b, stages_a, stages_b, planner, planned, positions, seed, 0)
      if streams is not None:
        streams[key] = (model_a, model_b, stream)
    else:
      stream.reset(positions)
    stream.run(batches)
    out.append([_pair_result(stream, j, p, conv_mode, keep_variance, keep_dims, return_accumulators,
                             min_datapoints_per_neuron) for j, p in enumerate(planned)])
  return out


def _pair_result(stream, j, p, conv_mode, keep_variance, keep_dims, return_accumulators, min_datapoints_per_neuron):
  fa, fb = stream.features[p.feature_a], stream.features[p.feature_b]
  datapoints = stream.count[fa.stream]
  neurons = [fa.neurons, fb.neurons]
  acc, base = stream.accumulator(j), stream.accumulator(j, baseline=True)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", cca_lib.FewDatapointsWarning)  # The result says it (few_datapoints, below_min).
    m = cca_lib.similarity_metrics_from_moments(acc, baseline=base, keep_variance=keep_variance, keep_dims=keep_dims)
  per_neuron = datapoints / max(neurons)
  out = {
      "stage_a": p.stage_a, "stage_b": p.stage_b, "mode": p.mode, "requested_mode": conv_mode,
      "fallback": p.fallback, "datapoints": int(datapoints), "neurons": neurons, "images": int(stream.images),
      "datapoints_per_neuron": float(per_neuron),
      "few_datapoints": bool(datapoints < DATAPOINTS_PER_NEURON * max(neurons)),
      "below_min": bool(datapoints < min_datapoints_per_neuron * max(neurons)),
      "min_datapoints_per_neuron": min_datapoints_per_neuron,
      "grid": [list(fa.grid), list(fb.grid)] if fa.grid and fb.grid else None,
      "positions_per_image": stream.positions_per_image(fa.grid) if p.mode == "positions" else None,
      "svcca": _nan_to_none(m["svcca"]), "svcca_dims": m["svcca_dims"],
      "pwcca": _nan_to_none(m["pwcca"]), "cka": _nan_to_none(m["cka"]), "cca": _nan_to_none(m["cca"]),
      "baseline": {k: _nan_to_none(m["baseline"][k]) for k in cca_lib.METRICS},
  }
  if return_accumulators:
    out["accumulator"], out["baseline_accumulator"] = acc, base
  return out


def _named_results(results, key=None):
  """[(stage name, result)] for every comparison result found in nested dicts and lists (other values ignored)."""
  if isinstance(results, dict) and "datapoints_per_neuron" in results:
    a, b = results.get("stage_a", key), results.get("stage_b", key)
    return [(str(a) if a == b else f"{a}/{b}", results)]
  if isinstance(results, dict):
    return [named for k, v in results.items() for named in _named_results(v, k)]
  if isinstance(results, (list, tuple)):
    return [named for r in results for named in _named_results(r, key)]
  return []


def few_datapoints_line(results, what="comparisons"):
  """One log line naming the stages whose comparisons are below the minimum datapoints per neuron, or None.

  results: `compare_pairs` dicts, found anywhere in nested lists and dicts: a list of them, `compare_models`'s
  {stage: dict}, or a whole figure's data with "per_stage" dicts (a result needs `datapoints_per_neuron`; it is named
  by its stage_a/stage_b, else by its key). A stage is named once, with its lowest datapoints per neuron; a result
  counts when it is `below_min` or `few_datapoints`. what: the noun the line counts, e.g. "F2 comparisons".
  """
  named = _named_results(results)
  low = {}
  for name, r in named:
    if r.get("below_min") or r.get("few_datapoints"):
      low[name] = min(low.get(name, np.inf), r["datapoints_per_neuron"])
  if not low:
    return None
  need = max([r.get("min_datapoints_per_neuron") or 0 for _, r in named] + [DATAPOINTS_PER_NEURON])
  count = sum(bool(r.get("below_min") or r.get("few_datapoints")) for _, r in named)
  stages = ", ".join(f"{name} {v:.1f}" for name, v in low.items())
  return (f"{count} of {len(named)} {what} have fewer than {need:g} datapoints per neuron (stage: datapoints per "
          f"neuron, lowest: {stages}); CCA biases them towards 1, compare with their permutation baseline")


def compare_models(model_a, model_b, stages, batches, conv_mode="positions", max_positions=DEFAULT_MAX_POSITIONS,
                   seed=0, keep_variance=0.99, keep_dims=None,
                   min_datapoints_per_neuron=DEFAULT_MIN_DATAPOINTS_PER_NEURON, streams=None):
  """Compares each stage of model_a with the same stage of model_b on the same images, in one pass.

  stages: stage names present in both models (None: all stages of model_a). See `compare_pairs` for the other
  arguments (min_datapoints_per_neuron wins over max_positions unless it is 0). Returns {stage: result dict} in
  stage order; each result holds svcca, pwcca, cka, cca, baseline, datapoints, datapoints_per_neuron, neurons,
  mode, requested_mode, fallback, few_datapoints and below_min (see `compare_pairs`). streams: see
  `compare_pairs_on_groups`.
  """
  return compare_models_on_groups(model_a, model_b, stages, [batches], conv_mode=conv_mode,
                                  max_positions=max_positions, seed=seed, keep_variance=keep_variance,
                                  keep_dims=keep_dims, min_datapoints_per_neuron=min_datapoints_per_neuron,
                                  streams=streams)[0]


def compare_models_on_groups(model_a, model_b, stages, groups, conv_mode="positions",
                             max_positions=DEFAULT_MAX_POSITIONS, seed=0, keep_variance=0.99, keep_dims=None,
                             min_datapoints_per_neuron=DEFAULT_MIN_DATAPOINTS_PER_NEURON, streams=None):
  """`compare_models` on each group of batches separately, with one traced step for all groups (see
  `compare_pairs_on_groups`, also for `streams`). Returns a list, one {stage: result dict} per group."""
  stages = list(stages) if stages else models.stage_names(model_a)
  per_group = compare_pairs_on_groups(model_a, model_b, [(s, s) for s in stages], groups, conv_mode=conv_mode,
                                      max_positions=max_positions, seed=seed, keep_variance=keep_variance,
                                      keep_dims=keep_dims, min_datapoints_per_neuron=min_datapoints_per_neuron,
                                      streams=streams)
  return [{s: r for s, r in zip(stages, results)} for results in per_group]


def similarity_matrix(model_a, model_b, stages_a, stages_b, batches, conv_mode="positions",
                      max_positions=DEFAULT_MAX_POSITIONS, seed=0, keep_variance=0.99, keep_dims=None,
                      min_datapoints_per_neuron=DEFAULT_MIN_DATAPOINTS_PER_NEURON):
  """Every stage of model_a against every stage of model_b, in one pass over `batches`.

  Pairs of equal spatial size share positions in positions mode; the others are average-pooled (each cell records
  its mode and fallback). min_datapoints_per_neuron: as in `compare_pairs` (wins over max_positions unless 0).
  Returns {"stages_a", "stages_b", "svcca" / "pwcca" / "cka" / "cca" / "mode" / "below_min": len(stages_a) x
  len(stages_b) nested lists (None where undefined), "cells": the `compare_pairs` dicts, row-major (each with its
  baseline)}.
  """
  stages_a = list(stages_a) if stages_a else models.stage_names(model_a)
  stages_b = list(stages_b) if stages_b else models.stage_names(model_b)
  pairs = [(a, b) for a in stages_a for b in stages_b]
  cells = compare_pairs(model_a, model_b, pairs, batches, conv_mode=conv_mode, max_positions=max_positions,
                        seed=seed, keep_variance=keep_variance, keep_dims=keep_dims,
                        min_datapoints_per_neuron=min_datapoints_per_neuron)
  nb = len(stages_b)
  grid = {k: [[cells[i * nb + j][k] for j in range(nb)] for i in range(len(stages_a))]
          for k in ("svcca", "pwcca", "cka", "cca", "mode", "below_min")}
  return dict(stages_a=stages_a, stages_b=stages_b, cells=cells, **grid)


def stage_activations(model, stages, batches, conv_mode="positions", max_positions=DEFAULT_MAX_POSITIONS, seed=0,
                      max_rows=DEFAULT_SAMPLE_ROWS):
  """(datapoints, neurons) float64 arrays of each stage of one model, for notebooks and checks.

  Uses the same single-pass submodel and the same position sampling as the comparisons, and keeps a seeded
  reservoir of at most `max_rows` rows per stage. Returns {stage: {"rows": array, "datapoints": rows seen,
  "mode": ..., "neurons": int}}.
  """
  check_conv_mode(conv_mode)
  stages = list(stages) if stages else models.stage_names(model)
  shapes = dict(zip(stages, _stage_shapes(model, stages)))
  planner = _Planner()
  kinds = {s: "vector" if len(shapes[s]) == 2 else conv_mode for s in stages}
  index = {s: planner.feature(0, s, kinds[s], shapes[s]) for s in stages}
  stream = _Stream(model, None, stages, stages, planner, [], max_positions, seed, max_rows)
  stream.run(batches)
  out = {}
  for s in stages:
    f = stream.features[index[s]]
    out[s] = {"rows": stream.feature_sample(index[s]), "datapoints": int(stream.count[f.stream]),
              "mode": kinds[s], "neurons": f.neurons}
  return out
