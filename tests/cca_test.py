"""Tests for transfusion_tf.analysis.cca: known answers, invariances, streaming, degenerate input, PWCCA and CKA."""
import subprocess
import sys
import warnings

import numpy as np
import scipy.linalg
import scipy.stats
import tensorflow as tf

from transfusion_tf.analysis import cca as cca_lib
from transfusion_tf.errors import UsageError


def _correlated(n, p, q, shared, seed=0, offset=0.0):
  """(n, p), (n, q) activations sharing `shared` latent dimensions, with distinct means and scales per neuron."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, shared))
  x = z @ rng.standard_normal((shared, p)) + rng.standard_normal((n, p))
  y = z @ rng.standard_normal((shared, q)) + 0.7 * rng.standard_normal((n, q))
  x = x * rng.uniform(0.2, 5.0, p) + offset + rng.uniform(-3, 3, p)
  y = y * rng.uniform(0.2, 5.0, q) + offset + rng.uniform(-3, 3, q)
  return x, y


def _qr_cca(x, y):
  """Textbook CCA, independent of the module: orthonormal bases of the centred data, then singular values."""
  qx = np.linalg.qr(x - x.mean(0))[0]
  qy = np.linalg.qr(y - y.mean(0))[0]
  return np.linalg.svd(qx.T @ qy, compute_uv=False)


def _with_correlations(rhos, n, extra_x=0, extra_y=0, seed=0, mix_x=True):
  """Latents whose *sample* canonical correlations are exactly `rhos`, mixed by random invertible maps.

  With mix_x=False, x is the latents themselves: orthonormal neurons, each its own canonical direction.
  """
  rng = np.random.default_rng(seed)
  k = len(rhos)
  raw = rng.standard_normal((n, 2 * k + extra_x + extra_y))
  # Orthonormal centred columns: exact sample whitening, so the sample correlations are exactly the chosen ones.
  basis = np.linalg.qr(raw - raw.mean(0))[0] * np.sqrt(n - 1)
  z, e = basis[:, :k], basis[:, k:2 * k]
  w = z * rhos + e * np.sqrt(1 - np.square(rhos))
  # Extra dimensions, orthogonal to all latents, carry no correlation.
  zx = np.hstack([z, basis[:, 2 * k:2 * k + extra_x]])
  wy = np.hstack([w, basis[:, 2 * k + extra_x:]])
  x = zx @ rng.standard_normal((zx.shape[1], zx.shape[1])) + 1.5 if mix_x else zx
  y = wy @ rng.standard_normal((wy.shape[1], wy.shape[1])) - 2.0
  return x, y


def _reference_style_pwcca(x, y):
  """Written from google/svcca's description: symmetric whitening, numpy SVD, unwhitened rotated neurons plus their
  means, QR, projection of the raw activations. The side is chosen by neuron count; for y it uses y (the fix)."""

  def inv_sqrt(c):
    vals, vecs = np.linalg.eigh(np.linalg.pinv(c))
    return vecs @ np.diag(np.sqrt(vals)) @ vecs.T

  p = x.shape[1]
  cov = np.cov(x.T, y.T)
  cxx, cxy, cyy = cov[:p, :p], cov[:p, p:], cov[p:, p:]
  u, s, vt = np.linalg.svd(inv_sqrt(cxx) @ cxy @ inv_sqrt(cyy))
  acts, rot = (x, u.T) if x.shape[1] <= y.shape[1] else (y, vt)
  mean = acts.mean(0)
  dirns = rot @ (acts - mean).T + mean[:, None]
  basis = np.linalg.qr(dirns.T)[0]
  weights = np.abs(basis.T @ acts).sum(axis=1)
  weights /= weights.sum()
  return np.sum(weights * s)


class CcaTest(tf.test.TestCase):

  def test_identical_inputs_give_one(self):
    x, _ = _correlated(400, 6, 3, 2)
    self.assertAllClose(cca_lib.cca(x, x), np.ones(6), atol=1e-10)
    self.assertAllClose(cca_lib.svcca(x, x).mean, 1.0, atol=1e-10)
    self.assertAllClose(cca_lib.pwcca(x, x).mean, 1.0, atol=1e-10)
    self.assertAllClose(cca_lib.linear_cka(x, x), 1.0, atol=1e-12)
    self.assertAllClose(cca_lib.linear_cka(x, x, debiased=True), 1.0, atol=1e-12)

  def test_matches_qr_cca(self):
    for seed, (p, q) in enumerate(((8, 6), (5, 9), (7, 7))):
      x, y = _correlated(600, p, q, 4, seed=seed, offset=50.0)
      got = cca_lib.cca(x, y)
      self.assertEqual(got.shape, (min(p, q),))
      self.assertAllClose(got, _qr_cca(x, y), rtol=0, atol=1e-8)
      self.assertTrue(np.all(np.diff(got) <= 0) and got.min() >= 0 and got.max() <= 1)

  def test_cholesky_and_eigen_paths_agree(self):
    # Well-conditioned sides take a Cholesky shortcut; a large epsilon forces the eigendecomposition path instead.
    rng = np.random.default_rng(12)
    x = rng.standard_normal((700, 6))
    y = x[:, :4] @ rng.standard_normal((4, 5)) + rng.standard_normal((700, 5))
    self.assertIsNotNone(cca_lib._cholesky_factor(np.cov(x.T), cca_lib.DEFAULT_EPSILON))
    self.assertIsNone(cca_lib._cholesky_factor(np.cov(x.T), 0.01))
    self.assertAllClose(cca_lib.cca(x, y, epsilon=0.01), cca_lib.cca(x, y), atol=1e-12)
    self.assertAllClose(cca_lib.cca(x, y, epsilon=0.01), _qr_cca(x, y), atol=1e-12)

  def test_float32_input_is_computed_in_float64(self):
    x, y = _correlated(500, 6, 5, 3)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    self.assertEqual(cca_lib.cca(x32, y32).dtype, np.float64)
    self.assertAllClose(cca_lib.cca(x32, y32), _qr_cca(x32.astype(np.float64), y32.astype(np.float64)), atol=1e-8)

  def test_cca_invariant_to_invertible_maps(self):
    x, y = _correlated(500, 6, 5, 3, seed=1)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    b = rng.standard_normal((5, 5)) + 3 * np.eye(5)
    base = cca_lib.cca(x, y)
    self.assertAllClose(cca_lib.cca(x @ a + 7.0, y), base, atol=1e-9)
    self.assertAllClose(cca_lib.cca(x, y @ b - 3.0), base, atol=1e-9)
    self.assertAllClose(cca_lib.cca(y @ b, x @ a), base, atol=1e-9)  # Symmetric in its arguments too.

  def test_known_correlations_exact(self):
    rhos = np.array([0.95, 0.7, 0.4, 0.1])
    x, y = _with_correlations(rhos, 2000, extra_x=2, extra_y=1)
    got = cca_lib.cca(x, y)
    self.assertAllClose(got, np.r_[rhos, 0.0], atol=1e-9)
    self.assertAllClose(cca_lib.svcca(x, y, keep_variance=1.0).mean, np.mean(np.r_[rhos, 0.0]), atol=1e-9)

  def test_known_correlations_statistical(self):
    # Population canonical correlations from independent latents; a large sample recovers them.
    rng = np.random.default_rng(3)
    n, rhos = 200_000, np.array([0.9, 0.5, 0.2])
    z = rng.standard_normal((n, 3))
    w = z * rhos + rng.standard_normal((n, 3)) * np.sqrt(1 - rhos**2)
    x = z @ rng.standard_normal((3, 3))
    y = w @ rng.standard_normal((3, 3))
    self.assertAllClose(cca_lib.cca(x, y), rhos, atol=0.01)

  def test_cka_invariances(self):
    x, y = _correlated(300, 7, 5, 3, seed=2)
    q = scipy.linalg.qr(np.random.default_rng(2).standard_normal((7, 7)))[0]
    for debiased in (False, True):
      base = cca_lib.linear_cka(x, y, debiased=debiased)
      self.assertAllClose(cca_lib.linear_cka(x @ q, y, debiased=debiased), base, atol=1e-12)
      self.assertAllClose(cca_lib.linear_cka(3.5 * x + 1.0, 0.1 * y, debiased=debiased), base, atol=1e-12)
      self.assertAllClose(cca_lib.linear_cka(y, x, debiased=debiased), base, atol=1e-12)
    # Not invariant to a general invertible map (unlike CCA): that is what distinguishes it.
    skew = np.diag(np.r_[10.0, np.ones(6)])
    self.assertNotAllClose(cca_lib.linear_cka(x @ skew, y), cca_lib.linear_cka(x, y))

  def test_cka_matches_gram_definition(self):
    x, y = _correlated(60, 6, 4, 2, seed=4)
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
      return np.trace(a @ h @ b @ h)

    self.assertAllClose(cca_lib.linear_cka(x, y), hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)), atol=1e-12)

    def hsic_unbiased(a, b):  # Song et al. (2012), on centred features.
      a, b = h @ a @ h, h @ b @ h
      np.fill_diagonal(a, 0)
      np.fill_diagonal(b, 0)
      one = np.ones(n)
      return (np.trace(a @ b) + (one @ a @ one) * (one @ b @ one) / ((n - 1) * (n - 2)) -
              2.0 / (n - 2) * (one @ a @ b @ one)) / (n * (n - 3))

    want = hsic_unbiased(k, l) / np.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l))
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", cca_lib.FewDatapointsWarning)
      self.assertAllClose(cca_lib.linear_cka(x, y, debiased=True), want, atol=1e-12)

  def test_svcca_keep_dims_and_variance(self):
    x, y = _correlated(800, 10, 8, 4, seed=5)
    r = cca_lib.svcca(x, y, keep_dims=3)
    self.assertEqual((r.kept_x, r.kept_y, r.coefficients.shape), (3, 3, (3,)))
    r = cca_lib.svcca(x, y, keep_dims=(5, 2))
    self.assertEqual((r.kept_x, r.kept_y, r.coefficients.shape), (5, 2, (2,)))
    self.assertAllClose(r.mean, r.coefficients.mean())
    self.assertAllClose(float(r), r.mean)
    # keep_dims means the top SVD directions of the centred data: check against that construction.
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    uy, sy, _ = np.linalg.svd(y - y.mean(0), full_matrices=False)
    self.assertAllClose(r.coefficients, _qr_cca(u[:, :5] * s[:5], uy[:, :2] * sy[:2]), atol=1e-8)
    # keep_variance: the fewest directions explaining the fraction, by the data's singular values.
    for frac in (0.5, 0.9, 0.99):
      r = cca_lib.svcca(x, y, keep_variance=frac)
      want_x = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), frac) + 1)
      want_y = int(np.searchsorted(np.cumsum(sy**2) / np.sum(sy**2), frac) + 1)
      self.assertEqual((r.kept_x, r.kept_y), (want_x, want_y))
      self.assertAllClose(r.coefficients, _qr_cca(u[:, :want_x], uy[:, :want_y]), atol=1e-8)
    r = cca_lib.svcca(x, y, keep_variance=1.0)
    self.assertEqual((r.kept_x, r.kept_y), (10, 8))
    self.assertAllClose(r.coefficients, cca_lib.cca(x, y), atol=1e-12)
    # A fixed count larger than the rank keeps the rank.
    r = cca_lib.svcca(np.c_[x[:, :3], x[:, :3] @ np.ones((3, 4))], y, keep_dims=6)
    self.assertEqual(r.kept_x, 3)
    with self.assertRaises(ValueError):
      cca_lib.svcca(x, y, keep_dims=0)
    with self.assertRaises(ValueError):
      cca_lib.svcca(x, y, keep_variance=1.5)

  def test_streaming_equals_batch(self):
    x, y = _correlated(1000, 7, 5, 3, seed=6, offset=1e4)
    bounds = [0, 1, 130, 400, 401, 650, 820, 1000]  # Uneven batches, one of a single datapoint.
    a, b = cca_lib.CovarianceAccumulator(), cca_lib.CovarianceAccumulator()
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
      xb, yb = x[lo:hi], y[lo:hi]
      if i < 3:
        a.update(xb.astype(np.float32) if i == 0 else xb, yb)
      elif i < 5:  # Raw sums, as TensorFlow would compute them on a GPU.
        b.update_moments(hi - lo, xb.sum(0), yb.sum(0), xb.T @ xb, yb.T @ yb, xb.T @ yb)
      else:
        b.update(xb, yb)
    self.assertIs(a.merge(b), a)
    xf = np.r_[x[:1].astype(np.float32).astype(np.float64), x[1:]]
    self.assertEqual(a.count, 1000)
    mx, my = a.means
    self.assertAllClose(mx, xf.mean(0), rtol=1e-13)
    self.assertAllClose(my, y.mean(0), rtol=1e-13)
    full = np.cov(xf.T, y.T)
    cxx, cyy, cxy = a.covariances
    self.assertAllClose(cxx, full[:7, :7], rtol=1e-7, atol=1e-7)
    self.assertAllClose(cyy, full[7:, 7:], rtol=1e-7, atol=1e-7)
    self.assertAllClose(cxy, full[:7, 7:], rtol=1e-7, atol=1e-7)
    self.assertAllClose(cca_lib.cca(a), cca_lib.cca(xf, y), atol=1e-8)
    self.assertAllClose(cca_lib.svcca(a).coefficients, cca_lib.svcca(xf, y).coefficients, atol=1e-8)
    self.assertAllClose(cca_lib.pwcca(a).mean, cca_lib.pwcca(xf, y).mean, atol=1e-8)
    self.assertAllClose(cca_lib.linear_cka(a), cca_lib.linear_cka(xf, y), atol=1e-10)

  def test_streaming_is_stable_under_a_large_mean(self):
    # Naive sums of squares lose every digit here (mean^2 / var = 1e16); the pairwise merge keeps them.
    rng = np.random.default_rng(7)
    x = 1e8 + rng.standard_normal((4000, 3))
    y = -1e8 + rng.standard_normal((4000, 2)) + x[:, :2] - 1e8
    acc = cca_lib.CovarianceAccumulator()
    for lo in range(0, 4000, 250):
      acc.update(x[lo:lo + 250], y[lo:lo + 250])
    full = np.cov((x - x.mean(0)).T, (y - y.mean(0)).T)
    self.assertAllClose(acc.covariances[0], full[:3, :3], rtol=1e-6, atol=1e-6)
    self.assertAllClose(acc.covariances[2], full[:3, 3:], rtol=1e-6, atol=1e-6)

  def test_accumulator_errors(self):
    acc = cca_lib.CovarianceAccumulator()
    self.assertEqual(acc.count, 0)
    with self.assertRaises(ValueError):
      cca_lib.cca(acc)
    acc.update(np.ones((3, 2)), np.ones((3, 4)))
    with self.assertRaisesRegex(ValueError, "4 y-neurons"):
      acc.update(np.ones((3, 2)), np.ones((3, 5)))
    with self.assertRaisesRegex(ValueError, "xty"):
      acc.update_moments(3, np.ones(2), np.ones(4), np.ones((2, 2)), np.ones((4, 4)), np.ones((4, 2)))
    with self.assertRaisesRegex(ValueError, "NaN or inf"):
      acc.update_moments(3, np.ones(2), np.ones(4), np.full((2, 2), np.nan), np.ones((4, 4)), np.ones((2, 4)))
    with self.assertRaises(TypeError):
      cca_lib.cca(acc, np.ones((3, 4)))

  def test_degenerate_inputs_are_finite(self):
    x, y = _correlated(600, 5, 4, 3, seed=8)
    base = cca_lib.cca(x, y)
    n = x.shape[0]
    cases = {
        "duplicated": np.c_[x, x[:, :3]],
        "dead": np.c_[np.zeros(n), x, np.full(n, 3.7, np.float32), np.full(n, 1e6)],
        "dependent": np.c_[x, x @ np.random.default_rng(8).standard_normal((5, 3))],
    }
    for name, xx in cases.items():
      with self.subTest(name):
        got = cca_lib.cca(xx, y)
        self.assertAllClose(got, base, atol=1e-8)  # The redundant neurons add nothing.
        self.assertAllClose(cca_lib.svcca(xx, y, keep_variance=1.0).coefficients, base, atol=1e-8)
        for value in (cca_lib.svcca(xx, y).mean, cca_lib.pwcca(xx, y).mean,
                      cca_lib.pwcca(xx, y, reference_compatible=True).mean, cca_lib.linear_cka(xx, y),
                      cca_lib.linear_cka(xx, y, debiased=True), cca_lib.cca(xx, xx).sum()):
          self.assertTrue(np.isfinite(value), f"{name}: {value}")
    # Rank-deficient: 8 neurons spanning 3 dimensions; only 3 correlations exist.
    rng = np.random.default_rng(9)
    low = rng.standard_normal((600, 3)) @ rng.standard_normal((3, 8))
    got = cca_lib.cca(low, y)
    self.assertEqual(got.shape, (3,))
    self.assertAllClose(got, _qr_cca(low[:, :3], y), atol=1e-8)
    # A side without any variance: nothing to correlate, and still no NaN.
    dead = np.full((600, 3), 2.5, np.float32)
    self.assertEqual(cca_lib.cca(dead, y).shape, (0,))
    self.assertEqual(cca_lib.svcca(dead, y).mean, 0.0)
    self.assertEqual(cca_lib.pwcca(dead, y).mean, 0.0)
    self.assertEqual(cca_lib.pwcca(dead, y, reference_compatible=True).mean, 0.0)
    self.assertEqual(cca_lib.linear_cka(dead, y), 0.0)

  def test_dead_neurons_from_raw_float32_sums(self):
    # Raw float32 sums of a constant neuron leave rounding noise after centring; it must not count as a direction.
    x, y = _correlated(2000, 4, 3, 2, seed=10)
    x = np.c_[x, np.full(2000, 1234.5678)].astype(np.float32)  # Not exact in binary: its float32 sums round.
    acc = cca_lib.CovarianceAccumulator()
    for lo in range(0, 2000, 500):
      xb, yb = x[lo:lo + 500], y[lo:lo + 500].astype(np.float32)
      acc.update_moments(500, xb.sum(0), yb.sum(0), xb.T @ xb, yb.T @ yb, xb.T @ yb)
    self.assertEqual(cca_lib.svcca(acc, keep_variance=1.0).kept_x, 4)

  def test_bad_inputs_raise(self):
    x, y = _correlated(100, 4, 3, 2)
    for bad in (np.nan, np.inf, -np.inf):
      xb = x.copy()
      xb[17, 2] = bad
      for fn in (cca_lib.cca, cca_lib.svcca, cca_lib.pwcca, cca_lib.linear_cka):
        with self.assertRaisesRegex(ValueError, "NaN or inf"):
          fn(xb, y)
        with self.assertRaisesRegex(ValueError, "NaN or inf"):
          fn(y, xb)
      with self.assertRaisesRegex(ValueError, "NaN or inf"):
        cca_lib.CovarianceAccumulator().update(xb, y)
    with self.assertRaises(UsageError):  # Scripts print our one error type on one line.
      cca_lib.cca(x, np.full_like(y, np.nan))
    with self.assertRaisesRegex(ValueError, r"\(100, 4\).*\(90, 3\)"):
      cca_lib.cca(x, y[:90])
    with self.assertRaisesRegex(ValueError, r"\(100, 4\).*\(90, 3\)"):
      cca_lib.CovarianceAccumulator().update(x, y[:90])
    with self.assertRaisesRegex(ValueError, "2-D"):
      cca_lib.cca(x[:, 0], y)
    with self.assertRaises(TypeError):
      cca_lib.cca(x)

  def test_few_datapoints_warn(self):
    x, y = _correlated(30, 8, 3, 2)
    with self.assertWarns(cca_lib.FewDatapointsWarning):
      cca_lib.cca(x, y)
    acc = cca_lib.CovarianceAccumulator().update(x, y)
    with self.assertWarns(cca_lib.FewDatapointsWarning):
      cca_lib.svcca(acc)
    with self.assertWarns(cca_lib.FewDatapointsWarning):
      cca_lib.cca(*_correlated(79, 8, 3, 2))  # Below 10 per neuron (issue 11: 5 per neuron is not enough).
    with self.assertWarns(cca_lib.FewDatapointsWarning):
      cca_lib.similarity_metrics(x, y)
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      cca_lib.cca(*_correlated(80, 8, 3, 2))  # 10 per neuron is enough.
      self.assertFalse(cca_lib.similarity_metrics(*_correlated(80, 8, 3, 2))["few_datapoints"])

  def test_similarity_metrics_equal_the_separate_functions(self):
    x, y = _correlated(3000, 40, 25, 10, seed=11)
    x = np.c_[x, np.full(3000, 2.5), x[:, :3] @ np.ones((3, 2))]  # A dead neuron and two dependent ones.
    acc = cca_lib.CovarianceAccumulator()
    for start in range(0, 3000, 700):
      acc.update(x[start:start + 700], y[start:start + 700])
    for a, b, kwargs in ((x, y, {}), (y, x, {}), (x, y, {"keep_variance": 0.9}), (x, y, {"keep_dims": (7, 30)}),
                         (x, y, {"keep_variance": 1.0})):
      r = cca_lib.similarity_metrics(a, b, **kwargs)
      sv = cca_lib.svcca(a, b, **kwargs)
      self.assertAllClose(r["cca"], cca_lib.cca(a, b).mean(), atol=1e-10)
      self.assertAllClose(r["svcca"], sv.mean, atol=1e-10)
      self.assertEqual(r["svcca_dims"], [sv.kept_x, sv.kept_y])
      self.assertAllClose(r["pwcca"], cca_lib.pwcca(a, b).mean, atol=1e-10)
      self.assertAllClose(r["cka"], cca_lib.linear_cka(a, b), atol=1e-10)
      self.assertEqual((r["datapoints"], r["neurons"]), (3000, [a.shape[1], b.shape[1]]))
      self.assertAllClose(r["datapoints_per_neuron"], 3000 / max(a.shape[1], b.shape[1]))
      self.assertNotIn("baseline", r)
    r = cca_lib.similarity_metrics(x, y)
    from_moments = cca_lib.similarity_metrics_from_moments(acc)
    self.assertEqual(cca_lib.similarity_metrics(acc), from_moments)
    for metric in cca_lib.METRICS:
      self.assertAllClose(from_moments[metric], r[metric], atol=1e-10)
    self.assertEqual(from_moments["svcca_dims"], r["svcca_dims"])
    # No variance on one side: zeros, as the separate functions give.
    zero = cca_lib.similarity_metrics(np.ones((250, 3)), y[:250], baseline=True)
    self.assertEqual([zero[m] for m in cca_lib.METRICS] + [zero["baseline"][m] for m in cca_lib.METRICS], [0.0] * 8)

  def test_permutation_baseline(self):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4000, 20)) * rng.uniform(0.5, 3.0, 20) + 1.0
    # Independent activations: every similarity is only its bias, so it sits near its baseline.
    r = cca_lib.similarity_metrics(x, rng.standard_normal((4000, 15)), baseline=True, seed=1)
    for metric in cca_lib.METRICS:
      self.assertLess(abs(r[metric] - r["baseline"][metric]), 0.05, msg=metric)
      self.assertLess(r[metric], 0.2, msg=metric)
    # A rotation of x: similarity 1 (CKA is rotation-invariant too), baseline far below.
    y = x @ scipy.stats.ortho_group.rvs(20, random_state=3)
    r = cca_lib.similarity_metrics(x, y, baseline=True, seed=1)
    for metric in cca_lib.METRICS:
      self.assertAllClose(r[metric], 1.0, atol=1e-8, msg=metric)
      self.assertLess(r["baseline"][metric], 0.2, msg=metric)
    # The same seed gives the same baseline; the separate functions on the shuffled rows give it too.
    self.assertEqual(cca_lib.similarity_metrics(x, y, baseline=True, seed=1)["baseline"], r["baseline"])
    perm = np.random.default_rng(1).permutation(4000)
    shuffled = cca_lib.similarity_metrics(x, y[perm])
    for metric in cca_lib.METRICS:
      self.assertAllClose(r["baseline"][metric], shuffled[metric], atol=1e-10)
    # From moments: a baseline accumulator with y shuffled within each batch of 1000 datapoints.
    acc, base, order = cca_lib.CovarianceAccumulator(), cca_lib.CovarianceAccumulator(), []
    for start in range(0, 4000, 1000):
      within = start + np.random.default_rng(start).permutation(1000)
      acc.update(x[start:start + 1000], y[start:start + 1000])
      base.update(x[start:start + 1000], y[within])
      order.append(within)
    streamed = cca_lib.similarity_metrics_from_moments(acc, baseline=base)
    want = cca_lib.similarity_metrics(x, y[np.concatenate(order)])
    for metric in cca_lib.METRICS:
      self.assertAllClose(streamed["baseline"][metric], want[metric], atol=1e-10)
      self.assertAllClose(streamed[metric], r[metric], atol=1e-10)
    with self.assertRaises(TypeError):
      cca_lib.similarity_metrics(acc, baseline=True)
    with self.assertRaises(TypeError):
      cca_lib.similarity_metrics_from_moments(x)
    with self.assertRaisesRegex(ValueError, "same datapoints"):
      cca_lib.similarity_metrics_from_moments(acc, baseline=cca_lib.CovarianceAccumulator().update(x[:10], y[:10]))

  def test_pwcca_equal_weights_give_mean(self):
    # Orthonormal x whose canonical directions are its own axes: every neuron loads on one variate with the same
    # weight, so projection weighting reduces to the plain mean.
    rhos = np.array([0.9, 0.6, 0.3])
    x, y = _with_correlations(rhos, 1000, mix_x=False)
    r = cca_lib.pwcca(x, y)
    self.assertAllClose(r.weights, np.full(3, 1 / 3), atol=1e-9)
    self.assertAllClose(r.mean, rhos.mean(), atol=1e-9)

  def test_pwcca_matches_direct_projection(self):
    for p, q in ((4, 7), (7, 4)):  # Weights come from the side with fewer directions, whichever it is.
      x, y = _correlated(900, p, q, 3, seed=p, offset=20.0)
      xc, yc = x - x.mean(0), y - y.mean(0)
      qx, qy = np.linalg.qr(xc)[0], np.linalg.qr(yc)[0]
      u, s, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
      h, z = (qx @ u, xc) if p <= q else (qy @ vt.T, yc)  # Unit-norm canonical variates of that side.
      weights = np.abs(h.T @ z).sum(axis=1)
      weights /= weights.sum()
      r = cca_lib.pwcca(x, y)
      self.assertEqual(r.side, "x" if p <= q else "y")
      self.assertAllClose(r.weights, weights, atol=1e-9)
      self.assertAllClose(r.mean, weights @ s, atol=1e-9)
      self.assertBetween(r.mean, 0.0, 1.0)
      self.assertAllClose(np.sum(r.weights), 1.0)

  def test_pwcca_reference_compatible(self):
    for p, q in ((4, 7), (7, 4)):  # (7, 4) raised IndexError in the reference.
      x, y = _correlated(900, p, q, 3, seed=11 + p, offset=2.0)
      r = cca_lib.pwcca(x, y, reference_compatible=True)
      self.assertEqual(r.side, "x" if p <= q else "y")
      self.assertEqual(r.weights.shape, (min(p, q),))
      self.assertAllClose(r.mean, _reference_style_pwcca(x, y), atol=1e-9)
      self.assertNotAllClose(r.mean, cca_lib.pwcca(x, y).mean)  # The two weightings really differ.
    acc = cca_lib.CovarianceAccumulator().update(x, y)
    with self.assertRaisesRegex(TypeError, "raw activations"):
      cca_lib.pwcca(acc, reference_compatible=True)

  def test_debiased_cka_needs_data(self):
    x, y = _correlated(100, 4, 3, 2)
    acc = cca_lib.CovarianceAccumulator().update(x, y)
    with self.assertRaises(TypeError):
      cca_lib.linear_cka(acc, debiased=True)
    self.assertAllClose(cca_lib.linear_cka(acc), cca_lib.linear_cka(x, y), atol=1e-12)

  def test_no_tensorflow_import(self):
    code = "import sys, transfusion_tf.analysis.cca; sys.exit('tensorflow' in sys.modules)"
    self.assertEqual(subprocess.run([sys.executable, "-c", code], check=False).returncode, 0)


if __name__ == "__main__":
  tf.test.main()
