"""CCA, SVCCA, PWCCA and linear CKA between two sets of activations, plus a streaming covariance accumulator.

Activations are arrays of shape (datapoints, neurons): row i holds every neuron's output on datapoint i. The two
sides may have different neuron counts but must share their datapoints. float32 and float64 inputs are accepted;
all arithmetic is float64. This module uses numpy and scipy only (no TensorFlow), so analyses can run anywhere.

Method. Everything is computed from the joint covariance, which costs one BLAS pass over the data:
  1. Centre each neuron, form the co-moment blocks Sxx = Xc'Xc, Syy = Yc'Yc, Sxy = Xc'Yc.
  2. Eigendecompose Sxx and Syy. Directions whose variance is below `epsilon` times the side's largest variance are
     dropped: they are dead, duplicated or linearly dependent neurons, and whitening them would divide by rounding
     noise (that is where the google/svcca reference returns NaN). Constant neurons are found exactly first (the
     mean is taken relative to the first datapoint, so they centre to exact zeros), which also covers a side where
     every neuron is dead: it keeps no direction, and the similarities are then 0.0, not NaN.
  3. Whiten in the eigenbasis, Wx = Vx diag(lx)^-1/2, and take the singular values of Wx' Sxy Wy. Those are the
     canonical correlations. SVCCA keeps only the top eigen-directions (= the top SVD directions of the centred
     data) before step 3.
The covariances can come from arrays or from a `CovarianceAccumulator` filled batch by batch (e.g. from a GPU), so the
datapoint count never has to fit in memory.

`similarity_metrics` (arrays) and `similarity_metrics_from_moments` (accumulators) compute all four similarities from
one co-moment pass and one eigendecomposition per side, optionally with a permutation baseline (the bias floor). CCA's
correlations and PWCCA's weights then come from one symmetric eigendecomposition of the smaller side's Gram matrix of
the whitened cross-covariance, and SVCCA's from the eigenvalues of its truncated block's Gram matrix: LAPACK does
these two to three times faster than the SVDs they replace. They agree with `cca`, `svcca`, `pwcca` and `linear_cka`
to about 1e-10 (SVCCA to about 1e-8 where correlations are near 0). PWCCA is only defined up to the basis LAPACK picks
where canonical correlations are exactly equal (e.g. several exactly 0); there both paths are equally valid.

Every public function raises `CcaInputError` (a `ValueError` and a `transfusion_tf.errors.UsageError`) on bad input:
NaN or inf, mismatched datapoint counts, wrong rank. It warns with `FewDatapointsWarning` when there are fewer than
10 datapoints per neuron, where CCA overfits and correlations drift towards 1 (measured on independent noise: SVCCA
0.38 at 5 datapoints per neuron, 0.12 at 50).
"""
import dataclasses
import math
import warnings

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from transfusion_tf.errors import UsageError

__all__ = ["cca", "svcca", "pwcca", "linear_cka", "similarity_metrics", "similarity_metrics_from_moments", "METRICS",
           "CovarianceAccumulator", "SvccaResult", "PwccaResult",
           "CcaInputError", "CcaUnsupportedInputError", "FewDatapointsWarning", "DEFAULT_EPSILON"]

# Relative eigenvalue cut: directions with variance below this fraction of the side's top variance are dropped.
# Rounding leaves about 1e-16 * neurons (< 1e-12) of relative variance in exactly dependent directions; real
# directions this faint cannot be whitened to more than a few digits from float64 covariances anyway.
DEFAULT_EPSILON = 1e-10
# Below this many datapoints per neuron (of the wider side) CCA's bias is large: on independent noise SVCCA reads 0.38
# at 5 per neuron and 0.12 at 50 (issue 11).
MIN_DATAPOINTS_PER_NEURON = 10
# Rows are converted to float64 and centred this many bytes at a time: the float64 copy stays this small however
# many datapoints there are, and a block this size still keeps BLAS at full speed.
_CHUNK_BYTES = 128 << 20


class CcaInputError(UsageError, ValueError):
  """Bad activations: NaN/inf, mismatched datapoint counts, wrong shape, too few datapoints to compute anything."""


class CcaUnsupportedInputError(UsageError, TypeError):
  """The function needs the raw activations, but it was given a `CovarianceAccumulator` (or the reverse)."""


class FewDatapointsWarning(UserWarning):
  """Fewer than 10 datapoints per neuron: CCA overfits and its correlations are biased towards 1."""


@dataclasses.dataclass(frozen=True)
class SvccaResult:
  """SVCCA output. `mean`: the SVCCA similarity (mean canonical correlation, 0.0 when no direction survives).

  `coefficients`: (min(kept_x, kept_y),) canonical correlations, descending. `kept_x`, `kept_y`: the SVD directions
  kept on each side.
  """
  mean: float
  coefficients: np.ndarray
  kept_x: int
  kept_y: int

  def __float__(self):
    return float(self.mean)


@dataclasses.dataclass(frozen=True)
class PwccaResult:
  """PWCCA output. `mean`: the projection-weighted mean of `coefficients` (0.0 when there is none).

  `weights`: same shape as `coefficients`, non-negative, summing to 1. `side`: 'x' or 'y', the side whose neurons
  define the weights (the one with fewer kept directions; x on a tie).
  """
  mean: float
  weights: np.ndarray
  coefficients: np.ndarray
  side: str

  def __float__(self):
    return float(self.mean)


@dataclasses.dataclass
class _Moments:
  """Centred co-moments (sums, not yet divided by n-1) of a pair of activation sets."""
  n: int
  mean_x: np.ndarray  # (p,)
  mean_y: np.ndarray  # (q,)
  sxx: np.ndarray  # (p, p)
  syy: np.ndarray  # (q, q)
  sxy: np.ndarray  # (p, q)
  # Per-neuron rounding floor of the diagonal: a neuron whose variance sum is at or below it is constant. It is 0
  # when the moments came from data (constant neurons then centre to exact zeros), positive after raw-sum updates.
  floor_x: np.ndarray
  floor_y: np.ndarray


# ---------------------------------------------------------------------------------------------------------------------
# Input checks and co-moments from data.


def _as_activations(a, name):
  a = np.asarray(a)
  if a.ndim != 2:
    raise CcaInputError(f"{name} must be a 2-D array of shape (datapoints, neurons); got shape {a.shape}.")
  if a.dtype.kind not in "fiub":
    raise CcaInputError(f"{name} must hold real numbers; got dtype {a.dtype}.")
  if a.shape[1] == 0:
    raise CcaInputError(f"{name} has no neurons (shape {a.shape}).")
  return a


def _check_pair(x, y, min_rows=1):
  x = _as_activations(x, "x")
  y = _as_activations(y, "y")
  if x.shape[0] != y.shape[0]:
    raise CcaInputError(f"x has shape {x.shape} and y has shape {y.shape}: both need the same number of datapoints "
                        "(rows), paired row by row.")
  if x.shape[0] < min_rows:
    raise CcaInputError(f"Need at least {min_rows} datapoints; x has shape {x.shape} and y has shape {y.shape}.")
  return x, y


def _raise_non_finite(a, name):
  bad = np.count_nonzero(~np.isfinite(a))
  if bad:
    raise CcaInputError(f"{name} holds {bad} NaN or inf value(s) (shape {a.shape}); remove or replace them first.")
  raise CcaInputError(f"{name} (shape {a.shape}) is too large in magnitude: its sums overflow float64.")


def _shifted_mean(a, rows, name):
  """Column means of `a` (float64), computed as shift + mean(a - shift) with the first row as shift.

  The shift makes a constant neuron's mean exact, so it centres to exact zeros and is recognised as dead.
  """
  shift = a[0].astype(np.float64)
  total = np.zeros(a.shape[1])
  for start in range(0, a.shape[0], rows):
    total += np.subtract(a[start:start + rows], shift, dtype=np.float64).sum(axis=0)
  # A NaN or inf anywhere makes the sum non-finite, so this one check stands in for a scan of the whole input.
  if not (np.isfinite(total).all() and np.isfinite(shift).all()):
    _raise_non_finite(a, name)
  return shift + total / a.shape[0]


def _comoments(x, y, row_norms=False):
  """Two passes over (x, y) in row chunks: means, then centred co-moments. Optionally the centred rows' squared norms.

  Returns (_Moments, dx, dy) with dx, dy of shape (n,) or None.
  """
  n, p = x.shape
  q = y.shape[1]
  same = x is y
  rows = max(1, _CHUNK_BYTES // (8 * (p + (0 if same else q))))
  mean_x = _shifted_mean(x, rows, "x")
  mean_y = mean_x if same else _shifted_mean(y, rows, "y")
  sxx = syy = sxy = None
  dx = np.empty(n) if row_norms else None
  dy = (dx if same else np.empty(n)) if row_norms else None
  for start in range(0, n, rows):
    stop = min(n, start + rows)
    xc = np.subtract(x[start:stop], mean_x, dtype=np.float64)
    yc = xc if same else np.subtract(y[start:stop], mean_y, dtype=np.float64)
    # xc.T @ xc (same buffer) lets numpy call syrk: half the flops of a general product.
    cxx = xc.T @ xc
    cyy = cxx if same else yc.T @ yc
    cxy = cxx if same else xc.T @ yc
    if sxx is None:
      sxx, syy, sxy = cxx, cyy, cxy
    else:
      sxx += cxx
      if not same:
        syy += cyy
        sxy += cxy
    if row_norms:
      np.einsum("ij,ij->i", xc, xc, out=dx[start:stop])
      if not same:
        np.einsum("ij,ij->i", yc, yc, out=dy[start:stop])
  if same:  # Give each block its own buffer so that later in-place edits of one leave the others alone.
    syy, sxy = sxx.copy(), sxx.copy()
  for name, block in (("x", sxx), ("y", syy)):
    if not np.isfinite(np.diagonal(block)).all():
      raise CcaInputError(f"{name} is too large in magnitude: its co-moments overflow float64.")
  zeros = np.zeros
  return _Moments(n, mean_x, mean_y, sxx, syy, sxy, zeros(p), zeros(q)), dx, dy


def _warn_if_few(n, p, q, stacklevel):
  if n < MIN_DATAPOINTS_PER_NEURON * max(p, q):
    need = MIN_DATAPOINTS_PER_NEURON * max(p, q)
    warnings.warn(
        FewDatapointsWarning(f"{n} datapoints for {p} + {q} neurons: CCA needs at least {MIN_DATAPOINTS_PER_NEURON} "
                             f"datapoints per neuron ({need} here) or its correlations are biased towards 1. Add "
                             "datapoints or pool over space."),
        stacklevel=stacklevel)


def _moments(x, y, fn_name, row_norms=False):
  """Co-moments from arrays or from a finished accumulator; checks inputs and warns on few datapoints."""
  if isinstance(x, CovarianceAccumulator):
    if y is not None:
      raise CcaUnsupportedInputError(f"{fn_name}: pass either a CovarianceAccumulator alone or two arrays x, y.")
    if row_norms:
      raise CcaUnsupportedInputError(f"{fn_name} needs the raw activations here, not a CovarianceAccumulator.")
    x._require(2)
    mom = x._snapshot()
    dx = dy = None
  else:
    if y is None:
      raise CcaUnsupportedInputError(f"{fn_name}: y is missing; it may only be left out when x is a "
                                     "CovarianceAccumulator.")
    x, y = _check_pair(x, y, min_rows=2)
    mom, dx, dy = _comoments(x, y, row_norms=row_norms)
  _warn_if_few(mom.n, mom.sxx.shape[0], mom.syy.shape[0], stacklevel=4)
  return mom, dx, dy


def _drop_dead(mom):
  """Zeroes the rows and columns of constant neurons; returns the boolean masks of live neurons."""
  live_x = np.diagonal(mom.sxx) > mom.floor_x
  live_y = np.diagonal(mom.syy) > mom.floor_y
  for live, blocks in ((live_x, ((mom.sxx, 0), (mom.sxx, 1), (mom.sxy, 0))),
                       (live_y, ((mom.syy, 0), (mom.syy, 1), (mom.sxy, 1)))):
    if not live.all():
      for block, axis in blocks:
        if axis == 0:
          block[~live, :] = 0.0
        else:
          block[:, ~live] = 0.0
  return live_x, live_y


# ---------------------------------------------------------------------------------------------------------------------
# Linear algebra on the co-moments.


def _principal(s, epsilon, top_k=None, with_null=False):
  """Eigen-directions of a co-moment block with variance above epsilon * the largest, in descending order.

  Args:
    s: (p, p) symmetric positive semi-definite.
    epsilon: relative eigenvalue cut.
    top_k: compute only the top k directions (cheaper when k is much smaller than p).
    with_null: also return the directions that were dropped.
  Returns:
    vecs (p, k), vals (k,) and, with `with_null`, null (p, p - k).
  """
  p = s.shape[0]
  if top_k is not None and top_k < p and not with_null:
    # evr computes only the requested eigenpairs; evd cannot, but is faster for the full set.
    vals, vecs = scipy.linalg.eigh(s, driver="evr", subset_by_index=(p - top_k, p - 1), check_finite=False)
  else:
    vals, vecs = scipy.linalg.eigh(s, driver="evd", check_finite=False)
  top = vals[-1] if vals.size else 0.0
  keep = vals > epsilon * top if top > 0 else np.zeros(vals.shape, bool)
  order = np.flatnonzero(keep)[::-1]
  if top_k is not None:
    order = order[:top_k]
  if with_null:
    return vecs[:, order], vals[order], vecs[:, np.flatnonzero(~keep)[::-1]]
  return vecs[:, order], vals[order]


def _whitened_cross(sxy, vx, lx, vy, ly):
  """(kx, ky) cross-covariance of the whitened eigen-coordinates; its singular values are the canonical correlations.

  sxy: (p, q) cross co-moment; vx (p, kx), lx (kx,), vy (q, ky), ly (ky,): the kept eigenpairs of each side.
  """
  m = vx.T @ sxy @ vy if vx.shape[1] <= vy.shape[1] else vx.T @ (sxy @ vy)
  m /= np.sqrt(lx)[:, None]
  m /= np.sqrt(ly)[None, :]
  return m


def _cholesky_factor(s, epsilon):
  """Lower Cholesky factor of a co-moment block, or None unless it is clearly better conditioned than 1/epsilon.

  Then the eigen path would keep every direction, so both whiten the same space, and a Cholesky factorisation with
  two triangular solves costs a fraction of an eigendecomposition. The LAPACK estimate is of the 1-norm condition
  number, which can differ from the 2-norm one that epsilon cuts on by the dimension (and the estimate by a small
  factor), hence the margin.
  """
  need = 100.0 * s.shape[0] * epsilon
  if need >= 1.0:
    return None
  factor, info = scipy.linalg.lapack.dpotrf(s, lower=1, clean=1)
  if info != 0:
    return None
  rcond, info = scipy.linalg.lapack.dpocon(factor, np.abs(s).sum(axis=0).max(), uplo="L")
  return factor if info == 0 and rcond > need else None


def _correlations(m):
  if m.size == 0:
    return np.zeros(0)
  # Whitening is exact only up to rounding, so singular values can overshoot 1 by a few ulps.
  return np.clip(scipy.linalg.svd(m, compute_uv=False, check_finite=False), 0.0, 1.0)


def _check_epsilon(epsilon):
  if not 0.0 <= epsilon < 1.0:
    raise CcaInputError(f"epsilon is a relative eigenvalue cut in [0, 1); got {epsilon}.")


# ---------------------------------------------------------------------------------------------------------------------
# Public API.


def cca(x, y=None, epsilon=DEFAULT_EPSILON):
  """Canonical correlations between two sets of activations.

  Args:
    x: (n, p) activations, or a finished `CovarianceAccumulator` (then leave `y` out).
    y: (n, q) activations on the same n datapoints.
    epsilon: directions of x (or y) whose variance is below `epsilon` times that side's largest variance are dropped
      before whitening. This handles dead, duplicated and linearly dependent neurons. (The reference's epsilon is a
      ridge added to the covariance instead; this one does not bias the kept directions.)
  Returns:
    (min(kx, ky),) float64 canonical correlations in [0, 1], descending; kx, ky are the directions kept on each side
    (p and q for full-rank activations). Empty if a side has no variance at all.
  """
  _check_epsilon(epsilon)
  mom, _, _ = _moments(x, y, "cca")
  _drop_dead(mom)
  cx, cy = _cholesky_factor(mom.sxx, epsilon), _cholesky_factor(mom.syy, epsilon)
  if cx is None:
    vx, lx = _principal(mom.sxx, epsilon)
    m = vx.T @ mom.sxy
    m /= np.sqrt(lx)[:, None]
  else:
    m = scipy.linalg.solve_triangular(cx, mom.sxy, lower=True, check_finite=False)
  if cy is None:
    vy, ly = _principal(mom.syy, epsilon)
    m = m @ vy
    m /= np.sqrt(ly)[None, :]
  else:
    m = scipy.linalg.solve_triangular(cy, m.T, lower=True, check_finite=False).T
  return _correlations(m)


def _n_explaining(vals, keep_variance):
  if vals.size == 0:
    return 0
  frac = np.cumsum(vals) / vals.sum()
  # The tolerance keeps keep_variance=1.0 from depending on the last few ulps of the cumulative sum.
  return int(min(vals.size, np.searchsorted(frac, keep_variance - 1e-12) + 1))


def _svcca_dims(keep_variance, keep_dims):
  """Checks SVCCA's truncation arguments; returns (dims for x, dims for y), each an int or None (by variance)."""
  if keep_dims is None:
    if not 0.0 < keep_variance <= 1.0:
      raise CcaInputError(f"keep_variance must be in (0, 1]; got {keep_variance}.")
    return (None, None)
  dims = tuple(keep_dims) if isinstance(keep_dims, (tuple, list)) else (keep_dims, keep_dims)
  if len(dims) != 2 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims):
    raise CcaInputError(f"keep_dims must be a positive int or a pair of them; got {keep_dims!r}.")
  return dims


def svcca(x, y=None, keep_variance=0.99, keep_dims=None, epsilon=DEFAULT_EPSILON):
  """SVCCA: keep the top SVD directions of each side, then CCA between them (Raghu et al. 2017).

  Args:
    x: (n, p) activations, or a finished `CovarianceAccumulator` (then leave `y` out).
    y: (n, q) activations on the same n datapoints.
    keep_variance: on each side keep the fewest top directions that explain at least this fraction of the variance
      (0.99 is the SVCCA paper's choice). Ignored when `keep_dims` is given.
    keep_dims: an int, or a pair (for x, for y): keep that many top directions instead. Fewer are kept when a side's
      rank is lower; `kept_x`/`kept_y` report what was kept.
    epsilon: relative eigenvalue cut, as in `cca`.
  Returns:
    SvccaResult with `.mean` (the SVCCA similarity), `.coefficients` (min(kept_x, kept_y),), `.kept_x`, `.kept_y`.
  """
  _check_epsilon(epsilon)
  dims = _svcca_dims(keep_variance, keep_dims)
  mom, _, _ = _moments(x, y, "svcca")
  _drop_dead(mom)
  sides = []
  for s, k in ((mom.sxx, dims[0]), (mom.syy, dims[1])):
    if k is None:
      vecs, vals = _principal(s, epsilon)
      k = _n_explaining(vals, keep_variance)
      sides.append((vecs[:, :k], vals[:k]))
    else:
      sides.append(_principal(s, epsilon, top_k=int(k)))
  (vx, lx), (vy, ly) = sides
  rho = _correlations(_whitened_cross(mom.sxy, vx, lx, vy, ly))
  return SvccaResult(float(rho.mean()) if rho.size else 0.0, rho, int(lx.size), int(ly.size))


def pwcca(x, y=None, reference_compatible=False, epsilon=DEFAULT_EPSILON):
  """Projection-weighted CCA (Morcos et al. 2018): canonical correlations weighted by how much of the neurons they hold.

  The weights come from the side with fewer kept directions (x on a tie): weight_i is proportional to
  sum_j |<h_i, z_j>|, with h_i the i-th canonical variate (unit norm: whitened, so the h_i are orthonormal) and z_j
  the centred activations of neuron j. This needs only the covariances, so a `CovarianceAccumulator` works.

  `reference_compatible=True` reproduces google/svcca's `compute_pwcca` instead, for comparison with older numbers:
  it rotates the *unwhitened* centred neurons by the singular vectors, adds back each neuron's mean, orthonormalises
  with QR and projects the raw activations. It chooses the side by neuron count (dead neurons excluded). Its IndexError
  when x has more neurons than y is fixed (it read x's activations for y). Like the reference it works on the raw
  activations, so it needs arrays, not an accumulator (CcaUnsupportedInputError, a TypeError). Its result depends on
  LAPACK's singular-vector signs because of the added means; we call the same numpy SVD on the same matrix.

  Args:
    x: (n, p) activations, or a finished `CovarianceAccumulator` (then leave `y` out).
    y: (n, q) activations on the same n datapoints.
    reference_compatible: use the reference's weighting (see above).
    epsilon: relative eigenvalue cut, as in `cca`.
  Returns:
    PwccaResult with `.mean` (the PWCCA similarity), `.weights`, `.coefficients` and `.side`.
  """
  _check_epsilon(epsilon)
  if reference_compatible:
    if isinstance(x, CovarianceAccumulator):
      raise CcaUnsupportedInputError("pwcca(reference_compatible=True) projects the raw activations as the reference "
                                     "does, so it needs arrays x, y, not a CovarianceAccumulator.")
    return _pwcca_reference(x, y, epsilon)
  mom, _, _ = _moments(x, y, "pwcca")
  _drop_dead(mom)
  vx, lx = _principal(mom.sxx, epsilon)
  vy, ly = _principal(mom.syy, epsilon)
  m = _whitened_cross(mom.sxy, vx, lx, vy, ly)
  r = min(m.shape)
  if r == 0:
    return PwccaResult(0.0, np.zeros(0), np.zeros(0), "x" if vx.shape[1] <= vy.shape[1] else "y")
  u, s, vt = scipy.linalg.svd(m, full_matrices=False, check_finite=False)
  rho = np.clip(s, 0.0, 1.0)
  if vx.shape[1] <= vy.shape[1]:
    side, vecs, vals, rot = "x", vx, lx, u
  else:
    side, vecs, vals, rot = "y", vy, ly, vt.T
  # <h_i, z_j> = (S a_i)_j with a_i = V diag(l)^-1/2 rot_i the canonical weights, and S a_i = V diag(l)^1/2 rot_i.
  loadings = (vecs * np.sqrt(vals)) @ rot[:, :r]
  weights = np.abs(loadings).sum(axis=0)
  weights /= weights.sum()
  # Weights sum to 1 only up to rounding.
  return PwccaResult(float(np.clip(weights @ rho, 0.0, 1.0)), weights, rho, side)


def _pwcca_reference(x, y, epsilon):
  if y is None:
    raise CcaUnsupportedInputError("pwcca: y is missing.")
  x, y = _check_pair(x, y, min_rows=2)
  mom, _, _ = _comoments(x, y)
  _warn_if_few(mom.n, x.shape[1], y.shape[1], stacklevel=4)
  live_x, live_y = _drop_dead(mom)
  if not (live_x.any() and live_y.any()):
    return PwccaResult(0.0, np.zeros(0), np.zeros(0), "x" if live_x.sum() <= live_y.sum() else "y")
  sxx, syy = mom.sxx[np.ix_(live_x, live_x)], mom.syy[np.ix_(live_y, live_y)]
  sxy = mom.sxy[np.ix_(live_x, live_y)]

  def inv_sqrt(s):  # Symmetric (neuron-basis) inverse square root, as the reference whitens; pseudo-inverse on nulls.
    vecs, vals = _principal(s, epsilon)
    return (vecs / np.sqrt(vals)) @ vecs.T

  u, s, vt = np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy))
  if live_x.sum() <= live_y.sum():
    side, acts, live, mean, rot = "x", x, live_x, mom.mean_x, u.T
  else:
    side, acts, live, mean, rot = "y", y, live_y, mom.mean_y, vt
  raw = np.asarray(acts[:, live], dtype=np.float64)  # (n, k) raw activations of the chosen side's live neurons.
  mean = mean[live]
  dirns = (raw - mean) @ rot.T + mean  # (n, k): the reference's rotated directions, mean added back per row index.
  basis = np.linalg.qr(dirns, mode="reduced")[0]
  weights = np.abs(basis.T @ raw).sum(axis=1)
  weights /= weights.sum()
  rho = np.clip(s, 0.0, 1.0)
  # Weights sum to 1 only up to rounding.
  return PwccaResult(float(np.clip(weights @ rho, 0.0, 1.0)), weights, rho, side)


def _squared_norm(a, scale):
  a = a * scale
  return float(np.vdot(a, a))


def linear_cka(x, y=None, debiased=False):
  """Linear centred kernel alignment (Kornblith et al. 2019), in feature space.

  CKA = ||Sxy||_F^2 / (||Sxx||_F ||Syy||_F) from the centred co-moments, so a `CovarianceAccumulator` works.
  `debiased=True` uses the unbiased HSIC estimator (Song et al. 2012), which also needs each datapoint's squared norm;
  that is not in the covariances, so it needs arrays (CcaUnsupportedInputError, a TypeError, for an accumulator) and
  at least 4 datapoints. Debiased CKA can be slightly negative.

  Args:
    x: (n, p) activations, or a finished `CovarianceAccumulator` (then leave `y` out).
    y: (n, q) activations on the same n datapoints.
    debiased: use the unbiased HSIC estimator.
  Returns:
    float in [0, 1] (debiased: at most 1); 0.0 when a side has no variance.
  """
  mom, dx, dy = _moments(x, y, "linear_cka(debiased=True)" if debiased else "linear_cka", row_norms=debiased)
  _drop_dead(mom)
  # Dividing every co-moment by the traces keeps the squares below overflow for any input; CKA is scale-invariant.
  sx, sy = np.trace(mom.sxx), np.trace(mom.syy)
  if not (sx > 0 and sy > 0):
    return 0.0
  hxy, hxx, hyy = (_squared_norm(s, 1.0 / (math.sqrt(a) * math.sqrt(b)))
                   for s, a, b in ((mom.sxy, sx, sy), (mom.sxx, sx, sx), (mom.syy, sy, sy)))
  if debiased:
    n = mom.n
    if n < 4:
      raise CcaInputError(f"linear_cka(debiased=True) needs at least 4 datapoints; got {n}.")
    # Unbiased HSIC times n(n-3), which cancels in the ratio, from the centred Gram matrices with zeroed diagonals:
    # ||Sxy||^2 - n/(n-2) dx.dy + tr(Sxx) tr(Syy) / ((n-1)(n-2)), dx the centred rows' squared norms.
    dx, dy = dx / sx, dy / sy
    hxy += 1.0 / ((n - 1) * (n - 2)) - n / (n - 2) * (dx @ dy)
    hxx += 1.0 / ((n - 1) * (n - 2)) - n / (n - 2) * (dx @ dx)
    hyy += 1.0 / ((n - 1) * (n - 2)) - n / (n - 2) * (dy @ dy)
  denom = hxx * hyy
  if not denom > 0:
    return 0.0
  return float(min(1.0, hxy / math.sqrt(denom)))


# ---------------------------------------------------------------------------------------------------------------------
# Every metric from one decomposition.

METRICS = ("cca", "svcca", "pwcca", "cka")


def _cca_and_pwcca(m, vx, lx, vy, ly):
  """Mean canonical correlation and PWCCA from the whitened cross-covariance m (kx, ky), without an SVD.

  The smaller side's Gram matrix (m m' for x, m' m for y; x on a tie, as `pwcca`) has the squared canonical
  correlations as eigenvalues and the canonical rotations as eigenvectors. A symmetric eigendecomposition with vectors
  costs about half of an SVD's singular values alone. The correlations are read as norms ||m' u_i|| (or ||m v_i||),
  accurate to rounding in absolute terms, where sqrt(eigenvalue) would lose digits for small correlations.
  Returns (cca mean, pwcca mean), both 0.0 when a side kept no direction.
  """
  if min(m.shape) == 0:
    return 0.0, 0.0
  if m.shape[0] <= m.shape[1]:
    vecs, vals, gram, other = vx, lx, m @ m.T, m.T
  else:
    vecs, vals, gram, other = vy, ly, m.T @ m, m
  rot = scipy.linalg.eigh(gram, driver="evd", check_finite=False, overwrite_a=True)[1]
  rho = np.clip(np.linalg.norm(other @ rot, axis=0), 0.0, 1.0)
  # As in `pwcca`: neuron loadings of the canonical variates, V diag(l)^1/2 rot.
  weights = np.abs((vecs * np.sqrt(vals)) @ rot).sum(axis=0)
  weights /= weights.sum()
  return float(rho.mean()), float(np.clip(weights @ rho, 0.0, 1.0))


def _mean_singular_value(m):
  """Mean singular value of m (k1, k2), clipped to [0, 1]: 0.0 when m is empty.

  From the eigenvalues of the smaller Gram matrix, which LAPACK finds about four times faster than an SVD finds the
  singular values. A singular value s comes out as sqrt(s^2 + rounding), so it is exact to about 1e-16 / s, and to
  at worst about 1e-8 where s is near 0; the mean is as accurate.
  """
  if min(m.shape) == 0:
    return 0.0
  m = np.ascontiguousarray(m)
  gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
  lam = scipy.linalg.eigh(gram, eigvals_only=True, driver="evd", check_finite=False, overwrite_a=True)
  return float(np.sqrt(np.clip(lam, 0.0, 1.0)).mean())


def _all_metrics(mom, dims, keep_variance, epsilon, crosses):
  """Every metric from one eigendecomposition per side, for the data's cross-moment and each baseline cross-moment.

  mom: the data's _Moments (edited in place). crosses: extra (p, q) cross co-moments over the same datapoints (the
  permutation baselines). Returns (svcca_dims [kx, ky], [metric dict for mom.sxy, then one per extra cross]).
  """
  live_x, live_y = _drop_dead(mom)
  for sxy in crosses:  # The baselines share the data's dead neurons.
    sxy[~live_x, :] = 0.0
    sxy[:, ~live_y] = 0.0
  vx, lx = _principal(mom.sxx, epsilon)
  vy, ly = _principal(mom.syy, epsilon)
  kx = _n_explaining(lx, keep_variance) if dims[0] is None else min(int(dims[0]), lx.size)
  ky = _n_explaining(ly, keep_variance) if dims[1] is None else min(int(dims[1]), ly.size)
  # CKA as in `linear_cka`: co-moments scaled by the traces, which keeps the squares below overflow.
  sx, sy = float(np.trace(mom.sxx)), float(np.trace(mom.syy))
  has_variance = sx > 0 and sy > 0
  if has_variance:
    hxx, hyy = _squared_norm(mom.sxx, 1.0 / sx), _squared_norm(mom.syy, 1.0 / sy)
  out = []
  for sxy in [mom.sxy] + list(crosses):
    m = _whitened_cross(sxy, vx, lx, vy, ly)
    cca_mean, pw = _cca_and_pwcca(m, vx, lx, vy, ly)
    if kx == lx.size and ky == ly.size:
      sv = cca_mean  # SVCCA kept every direction: it is CCA.
    else:
      sv = _mean_singular_value(m[:kx, :ky])
    cka = 0.0
    if has_variance and hxx * hyy > 0:
      cka = float(min(1.0, _squared_norm(sxy, 1.0 / (math.sqrt(sx) * math.sqrt(sy))) / math.sqrt(hxx * hyy)))
    out.append({"cca": cca_mean, "svcca": sv, "pwcca": pw, "cka": cka})
  return [int(kx), int(ky)], out


def _metrics_result(mom, dims, keep_variance, epsilon, crosses):
  n, p, q = mom.n, mom.sxx.shape[0], mom.syy.shape[0]
  kept, metrics = _all_metrics(mom, dims, keep_variance, epsilon, crosses)
  out = dict(metrics[0], svcca_dims=kept, datapoints=int(n), neurons=[int(p), int(q)],
             datapoints_per_neuron=float(n / max(p, q)), few_datapoints=bool(n < MIN_DATAPOINTS_PER_NEURON * max(p, q)))
  if crosses:
    out["baseline"] = metrics[1]
  return out


def _permuted_cross(x, y, mean_x, mean_y, perm):
  """(p, q) centred cross co-moment of x's rows with y's rows in the order `perm`, in row chunks like `_comoments`."""
  rows = max(1, _CHUNK_BYTES // (8 * (x.shape[1] + y.shape[1])))
  total = None
  for start in range(0, x.shape[0], rows):
    xc = np.subtract(x[start:start + rows], mean_x, dtype=np.float64)
    yc = np.subtract(y[perm[start:start + rows]], mean_y, dtype=np.float64)
    if total is None:
      total = xc.T @ yc
    else:
      total += xc.T @ yc
  return total


def similarity_metrics(x, y=None, keep_variance=0.99, keep_dims=None, epsilon=DEFAULT_EPSILON, baseline=False,
                       seed=0):
  """CCA, SVCCA, PWCCA and linear CKA together, from one co-moment pass and one eigendecomposition per side.

  The results equal `cca(x, y).mean()`, `svcca(...).mean`, `pwcca(x, y).mean` and `linear_cka(x, y)` to rounding,
  at a fraction of their summed cost (benchmarks/cca_benchmark.py --all_metrics_only).

  Args:
    x: (n, p) activations, or a finished `CovarianceAccumulator` (then leave `y` out; for a baseline from moments use
      `similarity_metrics_from_moments`).
    y: (n, q) activations on the same n datapoints.
    keep_variance, keep_dims: SVCCA's truncation, as in `svcca`.
    epsilon: relative eigenvalue cut, as in `cca`.
    baseline: also compute every metric with y's rows shuffled by a seeded permutation, which breaks the pairing of
      datapoints: the bias floor of each metric at this sample size. Costs one more cross product (no more
      eigendecompositions of the covariances).
    seed: the permutation's seed.
  Returns:
    dict: cca (mean canonical correlation), svcca, pwcca, cka (floats in [0, 1]); svcca_dims [kept x, kept y];
    datapoints n; neurons [p, q]; datapoints_per_neuron n / max(p, q); few_datapoints (fewer than
    MIN_DATAPOINTS_PER_NEURON per neuron, also warned as FewDatapointsWarning); with `baseline`, baseline
    {cca, svcca, pwcca, cka} of the shuffled pairing.
  """
  _check_epsilon(epsilon)
  dims = _svcca_dims(keep_variance, keep_dims)
  if baseline and isinstance(x, CovarianceAccumulator):
    raise CcaUnsupportedInputError("similarity_metrics(baseline=True) shuffles the raw rows, so it needs arrays x, y; "
                                   "from moments use similarity_metrics_from_moments(acc, baseline=shuffled_acc).")
  mom, _, _ = _moments(x, y, "similarity_metrics")
  crosses = []
  if baseline:
    x, y = np.asarray(x), np.asarray(y)
    perm = np.random.default_rng(int(seed)).permutation(mom.n)
    crosses.append(_permuted_cross(x, y, mom.mean_x, mom.mean_y, perm))
  return _metrics_result(mom, dims, keep_variance, epsilon, crosses)


def similarity_metrics_from_moments(accumulator, baseline=None, keep_variance=0.99, keep_dims=None,
                                    epsilon=DEFAULT_EPSILON):
  """`similarity_metrics` from accumulated moments, with an optional permutation baseline.

  Args:
    accumulator: a finished `CovarianceAccumulator` of paired (x, y) activations.
    baseline: None, or a `CovarianceAccumulator` over the same datapoints with y's rows shuffled (e.g. by a seeded
      permutation within each batch, fine when batches hold many datapoints). Only its cross-moment is read: its
      self-moments are the accumulator's, so no further eigendecomposition is needed.
    keep_variance, keep_dims, epsilon: as in `similarity_metrics`.
  Returns:
    the dict of `similarity_metrics`, with `baseline` {cca, svcca, pwcca, cka} when a baseline was given.
  """
  if not isinstance(accumulator, CovarianceAccumulator):
    raise CcaUnsupportedInputError("similarity_metrics_from_moments expects a CovarianceAccumulator; got "
                                   f"{type(accumulator).__name__} (for arrays use similarity_metrics).")
  _check_epsilon(epsilon)
  dims = _svcca_dims(keep_variance, keep_dims)
  mom, _, _ = _moments(accumulator, None, "similarity_metrics_from_moments")
  crosses = []
  if baseline is not None:
    if not isinstance(baseline, CovarianceAccumulator):
      raise CcaUnsupportedInputError("similarity_metrics_from_moments: baseline must be a CovarianceAccumulator; got "
                                     f"{type(baseline).__name__}.")
    base = baseline._require(2)
    if base.n != mom.n or base.sxy.shape != mom.sxy.shape:
      raise CcaInputError(f"baseline holds {base.n} datapoints of {base.sxy.shape} neurons; the accumulator holds "
                          f"{mom.n} of {mom.sxy.shape}: the baseline must shuffle the same datapoints.")
    crosses.append(np.array(base.sxy))
  return _metrics_result(mom, dims, keep_variance, epsilon, crosses)


# ---------------------------------------------------------------------------------------------------------------------
# Streaming.


class CovarianceAccumulator:
  """Joint means and covariance of paired activations, accumulated batch by batch in O((p + q)^2) memory.

  Batches are centred on their own means and merged with the pairwise update of Chan, Golub and LeVeque (1979):
  co-moments add, plus a rank-one correction from the difference of the means. Nothing sums raw squares, so a large
  mean does not eat the variance's digits.

      acc = CovarianceAccumulator()
      for xb, yb in batches:          # (b, p), (b, q) per batch
        acc.update(xb, yb)
      svcca(acc).mean

  Shards accumulated apart (other processes, other GPUs) combine with `merge`. Moments summed elsewhere, e.g. by
  TensorFlow on a GPU, go in through `update_moments`.
  """

  def __init__(self):
    self._mom = None

  @property
  def count(self):
    """Number of datapoints accumulated."""
    return 0 if self._mom is None else self._mom.n

  @property
  def means(self):
    """(mean_x (p,), mean_y (q,)) float64 copies."""
    mom = self._require(1)
    return mom.mean_x.copy(), mom.mean_y.copy()

  @property
  def covariances(self):
    """(cov_xx (p, p), cov_yy (q, q), cov_xy (p, q)): sample covariances (divided by count - 1), float64 copies."""
    mom = self._require(2)
    return mom.sxx / (mom.n - 1), mom.syy / (mom.n - 1), mom.sxy / (mom.n - 1)

  def update(self, x, y):
    """Adds a batch: x (b, p) and y (b, q) activations on the same b datapoints. Returns self."""
    x, y = _check_pair(x, y)
    self._check_dims(x.shape[1], y.shape[1])
    self._merge(_comoments(x, y)[0])
    return self

  def update_moments(self, n, sum_x, sum_y, xtx, yty, xty):
    """Adds one batch given by its raw (uncentred) sums, computed elsewhere. Returns self.

    Args:
      n: datapoints in the batch.
      sum_x, sum_y: (p,), (q,) column sums.
      xtx, yty, xty: (p, p) X'X, (q, q) Y'Y and (p, q) X'Y of the uncentred batch.
    The batch is centred (X'X - sum_x sum_x' / n) before the stable merge. That subtraction loses digits when a
    neuron's mean is large against its spread within the batch, in proportion to the precision of the sums: give
    float64 sums, or sums of batches shifted by a rough mean, when that matters. Constant neurons are recognised to
    within that rounding (a per-neuron floor estimated from the sums' dtype).
    """
    n = int(n)
    if n < 1:
      raise CcaInputError(f"update_moments: n must be at least 1; got {n}.")
    arrays = {"sum_x": sum_x, "sum_y": sum_y, "xtx": xtx, "yty": yty, "xty": xty}
    eps = 0.0
    for key, value in arrays.items():
      value = np.asarray(value)
      if value.dtype.kind not in "fiu":
        raise CcaInputError(f"update_moments: {key} must hold real numbers; got dtype {value.dtype}.")
      eps = max(eps, float(np.finfo(value.dtype).eps) if value.dtype.kind == "f" else 0.0)
      arrays[key] = np.array(value, dtype=np.float64)  # Own copy: the caller's arrays stay untouched.
      if not np.isfinite(arrays[key]).all():
        _raise_non_finite(arrays[key], f"update_moments: {key}")
    sum_x, sum_y, xtx, yty, xty = arrays.values()
    p, q = sum_x.size, sum_y.size
    shapes = {"sum_x": (p,), "sum_y": (q,), "xtx": (p, p), "yty": (q, q), "xty": (p, q)}
    for key, want in shapes.items():
      if arrays[key].shape != want:
        raise CcaInputError(f"update_moments: {key} has shape {arrays[key].shape}; expected {want} from "
                            f"sum_x {sum_x.shape} and sum_y {sum_y.shape}.")
    self._check_dims(p, q)
    mean_x, mean_y = sum_x / n, sum_y / n
    # A constant neuron's centred square sum is the difference of two equal numbers, so it can be off by a few units
    # of the sums' last digit, more for float32 sums reduced in a tree of depth log2(n). Below this floor it is dead.
    slack = 4.0 * eps * (math.log2(n) + 2.0)
    floor_x = slack * (np.abs(np.diagonal(xtx)) + np.abs(sum_x * mean_x))
    floor_y = slack * (np.abs(np.diagonal(yty)) + np.abs(sum_y * mean_y))
    xtx -= np.outer(sum_x, mean_x)
    yty -= np.outer(sum_y, mean_y)
    xty -= np.outer(sum_x, mean_y)
    # Keep the blocks exactly symmetric whatever order the caller's reductions ran in.
    xtx += xtx.T
    xtx *= 0.5
    yty += yty.T
    yty *= 0.5
    self._merge(_Moments(n, mean_x, mean_y, xtx, yty, xty, floor_x, floor_y))
    return self

  def merge(self, other):
    """Adds everything `other` (a CovarianceAccumulator over the same neurons) has accumulated. Returns self."""
    if not isinstance(other, CovarianceAccumulator):
      raise CcaUnsupportedInputError(f"merge expects a CovarianceAccumulator; got {type(other).__name__}.")
    if other._mom is not None:
      self._check_dims(other._mom.sxx.shape[0], other._mom.syy.shape[0])
      self._merge(other._snapshot())
    return self

  def _check_dims(self, p, q):
    if self._mom is not None and (p, q) != (self._mom.sxx.shape[0], self._mom.syy.shape[0]):
      raise CcaInputError(f"This accumulator holds {self._mom.sxx.shape[0]} x-neurons and {self._mom.syy.shape[0]} "
                          f"y-neurons; the new moments have {p} and {q}.")

  def _require(self, n):
    if self.count < n:
      raise CcaInputError(f"The accumulator holds {self.count} datapoint(s); this needs at least {n}.")
    return self._mom

  def _snapshot(self):
    """A deep copy of the moments, which the analysis functions may then edit in place."""
    mom = self._require(1)
    return _Moments(**{f.name: (np.array(getattr(mom, f.name)) if f.name != "n" else mom.n)
                       for f in dataclasses.fields(_Moments)})

  def _merge(self, b):
    """Chan et al.'s pairwise merge of centred co-moments; takes ownership of b's arrays."""
    a = self._mom
    if a is None:
      self._mom = b
      return
    n = a.n + b.n
    dx = b.mean_x - a.mean_x
    dy = b.mean_y - a.mean_y
    f = a.n * b.n / n
    a.sxx += b.sxx
    a.sxx += f * np.outer(dx, dx)
    a.syy += b.syy
    a.syy += f * np.outer(dy, dy)
    a.sxy += b.sxy
    a.sxy += f * np.outer(dx, dy)
    a.mean_x += dx * (b.n / n)
    a.mean_y += dy * (b.n / n)
    a.floor_x += b.floor_x
    a.floor_y += b.floor_y
    a.n = n
