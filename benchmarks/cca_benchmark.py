"""Speed and memory of transfusion_tf.analysis.cca.

    python benchmarks/cca_benchmark.py            # 512+512 x 10k and 2048+2048 x 20k, 10M-point stream
    python benchmarks/cca_benchmark.py --quick    # small sizes, seconds
    python benchmarks/cca_benchmark.py --all_metrics_only   # only svcca alone vs all four metrics at 2048+2048

The last line compares `similarity_metrics` (CCA, SVCCA, PWCCA and linear CKA from one co-moment pass and one
eigendecomposition per side) with `svcca` alone on the same arrays, best of --repeats each, run alternately:
    all metrics: X.XXx svcca alone at 2048+2048 (goal <= 1.3)

For each size it prints the best-of-N seconds of `cca` and `svcca`, the "floor" (float64 centring plus the three
covariance products X'X, Y'Y, X'Y with BLAS: the least any covariance-based method must do) and the ratio to it, and,
unless --no_reference, a reference-style timing for comparison: our own re-implementation of the google/svcca approach
(SVD of the centred data, then CCA via the inverse square root of the covariance), labelled as such. Then it streams
--stream_points datapoints of 256 + 256 neurons through a CovarianceAccumulator in a child process and reports the peak
memory that streaming added (peak RSS, reset when streaming starts, minus the resident size before it) and the
tracemalloc peak of numpy buffers.
"""
import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from transfusion_tf.analysis import cca as cca_lib  # pylint: disable=wrong-import-position


def _activations(n, p, q, seed, dtype=np.float32):
  """Paired activations sharing a quarter of their dimensions, with neuron-specific means and scales.

  Each neuron gets as much private noise as shared signal, so keeping 99% of the variance keeps nearly every
  dimension: the slow case for SVCCA.
  """
  rng = np.random.default_rng(seed)
  shared = max(1, min(p, q) // 4)
  z = rng.standard_normal((n, shared), dtype=np.float32) / np.float32(np.sqrt(shared))
  x = z @ rng.standard_normal((shared, p), dtype=np.float32)
  x += rng.standard_normal((n, p), dtype=np.float32)
  x *= rng.uniform(0.5, 2.0, p).astype(np.float32)
  x += rng.uniform(-1.0, 1.0, p).astype(np.float32)
  y = z @ rng.standard_normal((shared, q), dtype=np.float32)
  y += rng.standard_normal((n, q), dtype=np.float32)
  return x.astype(dtype, copy=False), y.astype(dtype, copy=False)


def floor(x, y):
  """Centre in float64 and form the three covariance products: the work every covariance-based method shares."""
  xc = x - x.mean(axis=0, dtype=np.float64)
  yc = y - y.mean(axis=0, dtype=np.float64)
  return xc.T @ xc, yc.T @ yc, xc.T @ yc


def _reference_style_cca(a, b):
  """Reference-style CCA, re-implemented for timing: np.cov of the stacked activations, pseudo-inverse, matrix square
  root by eigh, full SVD. a: (n, p), b: (n, q)."""
  p = a.shape[1]
  cov = np.cov(a.T, b.T)
  cxx, cxy, cyy = cov[:p, :p], cov[:p, p:], cov[p:, p:]

  def inv_sqrt(c):
    vals, vecs = np.linalg.eigh(np.linalg.pinv(c))
    return (vecs * np.sqrt(np.abs(vals))) @ vecs.T

  return np.linalg.svd(inv_sqrt(cxx) @ cxy @ inv_sqrt(cyy))[1]


def _reference_style_svcca(x, y, keep_variance=0.99):
  """Reference-style SVCCA, re-implemented for timing: SVD of each side's centred data, keep the top directions that
  explain `keep_variance`, then `_reference_style_cca` on the reduced activations."""
  reduced = []
  for a in (x, y):
    u, s, _ = np.linalg.svd(a - a.mean(axis=0, dtype=np.float64), full_matrices=False)
    k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), keep_variance) + 1)
    reduced.append(u[:, :k] * s[:k])
  return float(np.mean(_reference_style_cca(*reduced)))


def _best_of(fn, repeats):
  best = float("inf")
  for _ in range(repeats):
    gc.collect()
    start = time.perf_counter()
    fn()  # The result is dropped at once, so runs do not stack their memory.
    best = min(best, time.perf_counter() - start)
  return best


def _time_size(n, p, q, args):
  x, y = _activations(n, p, q, seed=args.seed)
  print(f"\n{p} + {q} neurons x {n:,} datapoints ({x.dtype} input), best of {args.repeats}:", flush=True)
  t_floor = _best_of(lambda: floor(x, y), args.repeats)
  t_cca = _best_of(lambda: cca_lib.cca(x, y), args.repeats)
  t_svcca = _best_of(lambda: cca_lib.svcca(x, y), args.repeats)
  r = cca_lib.svcca(x, y)
  print(f"  floor (centre + X'X, Y'Y, X'Y)  {t_floor:8.2f} s")
  print(f"  cca                             {t_cca:8.2f} s   {t_cca / t_floor:4.2f}x floor")
  print(f"  svcca (keep 99% variance)       {t_svcca:8.2f} s   {t_svcca / t_floor:4.2f}x floor   "
        f"kept {r.kept_x} + {r.kept_y} dims, similarity {r.mean:.4f}", flush=True)
  row = {"n": n, "p": p, "q": q, "floor_s": t_floor, "cca_s": t_cca, "svcca_s": t_svcca,
         "kept": [r.kept_x, r.kept_y], "svcca": r.mean}
  if not args.no_reference:
    t_ref_cca = _best_of(lambda: _reference_style_cca(x, y), args.reference_repeats)
    t_ref = _best_of(lambda: _reference_style_svcca(x, y), args.reference_repeats)
    ref_mean = _reference_style_svcca(x, y) if args.check_reference else None
    print(f"  reference-style cca (inverse sqrt of covariance, our re-implementation)        {t_ref_cca:8.2f} s   "
          f"ours {t_ref_cca / t_cca:4.2f}x faster")
    print(f"  reference-style svcca (SVD of data, then CCA as above, our re-implementation)  {t_ref:8.2f} s   "
          f"ours {t_ref / t_svcca:4.2f}x faster" + (f"   similarity {ref_mean:.4f}" if ref_mean is not None else ""),
          flush=True)
    row.update(reference_style_cca_s=t_ref_cca, reference_style_svcca_s=t_ref)
  return row


def _all_metrics(args):
  """svcca alone against similarity_metrics (all four metrics) on the same arrays; prints the goal line last."""
  n, p = (4_000, 256) if args.quick else (20_000, 2048)
  x, y = _activations(n, p, p, seed=args.seed)
  print(f"\nAll four metrics from one decomposition, {p} + {p} neurons x {n:,} datapoints ({x.dtype} input), "
        f"best of {args.repeats}, run alternately:", flush=True)
  t_sv = t_all = float("inf")
  for _ in range(args.repeats):  # Alternating keeps a burst of other load from favouring one side.
    t_sv = min(t_sv, _best_of(lambda: cca_lib.svcca(x, y), 1))
    t_all = min(t_all, _best_of(lambda: cca_lib.similarity_metrics(x, y), 1))
  r = cca_lib.similarity_metrics(x, y)
  print(f"  svcca alone                                    {t_sv:8.2f} s")
  print(f"  similarity_metrics (cca, svcca, pwcca, cka)    {t_all:8.2f} s   svcca {r['svcca']:.4f} pwcca "
        f"{r['pwcca']:.4f} cca {r['cca']:.4f} cka {r['cka']:.4f}", flush=True)
  row = {"n": n, "p": p, "svcca_s": t_sv, "all_metrics_s": t_all, "ratio": t_all / t_sv}
  if not args.all_metrics_only:
    t_base = _best_of(lambda: cca_lib.similarity_metrics(x, y, baseline=True), 1)
    print(f"  similarity_metrics with permutation baseline   {t_base:8.2f} s   {t_base / t_sv:4.2f}x svcca alone")
    separate = {name: _best_of(lambda f=f: f(x, y), 1) for name, f in
                (("cca", cca_lib.cca), ("pwcca", cca_lib.pwcca), ("linear_cka", cca_lib.linear_cka))}
    t_sep = t_sv + sum(separate.values())
    print("  four separate calls (svcca + " + " + ".join(f"{k} {v:.2f} s" for k, v in separate.items()) +
          f")  {t_sep:8.2f} s   {t_sep / t_sv:4.2f}x svcca alone", flush=True)
    row.update(baseline_s=t_base, separate_s=t_sep, separate=separate)
  print(f"all metrics: {t_all / t_sv:.2f}x svcca alone at {p}+{p} (goal <= 1.3)", flush=True)
  return row


def _rss_bytes():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss():
  """Restarts the kernel's peak-RSS count (Linux >= 4.0); False where that is not possible."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _peak_rss_bytes():
  """VmHWM, the peak RSS since exec or the last reset. (ru_maxrss is no use in a child: Linux carries the parent's
  peak over fork and exec, so it would report the 2048-neuron timings' memory.)"""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB.


def _stream_child(points, neurons, batch):
  """Runs in a fresh process, so that the timings' large arrays neither count towards nor fragment its memory."""
  pool = [_activations(batch, neurons, neurons, seed=i) for i in range(4)]  # Recycled: the stream's source.
  acc = cca_lib.CovarianceAccumulator()
  acc.update(*pool[0])  # First touch of BLAS buffers and the accumulator itself counts towards the peak below.
  acc = cca_lib.CovarianceAccumulator()
  gc.collect()
  rss_before = _rss_bytes()
  reset = _reset_peak_rss()
  tracemalloc.start()
  start = time.perf_counter()
  done = 0
  while done < points:
    x, y = pool[(done // batch) % len(pool)]
    take = min(batch, points - done)
    acc.update(x[:take], y[:take])
    done += take
  seconds = time.perf_counter() - start
  traced_peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  peak = _peak_rss_bytes()
  start = time.perf_counter()
  r = cca_lib.svcca(acc)
  analyse = time.perf_counter() - start
  print(json.dumps({"points": acc.count, "seconds": seconds, "rss_before": rss_before, "peak_rss": peak,
                    "added": max(0, peak - rss_before), "peak_reset": reset, "traced_peak": traced_peak,
                    "svcca_s": analyse, "svcca": r.mean}))


def _stream(args):
  print(f"\nStreaming {args.stream_points:,} datapoints x {args.stream_neurons} + {args.stream_neurons} neurons in "
        f"batches of {args.stream_batch:,} through CovarianceAccumulator (child process):", flush=True)
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_stream_child", "--stream_points",
                        str(args.stream_points), "--stream_neurons", str(args.stream_neurons), "--stream_batch",
                        str(args.stream_batch)], check=True, capture_output=True, text=True).stdout
  res = json.loads(out.strip().splitlines()[-1])
  mib = 1 << 20
  print(f"  {res['seconds']:.1f} s ({res['points'] / res['seconds']:,.0f} datapoints/s), then svcca from the "
        f"accumulator in {res['svcca_s']:.2f} s (similarity {res['svcca']:.4f})")
  since = "streaming began" if res["peak_reset"] else "the child started"
  print(f"  peak memory added while streaming: {res['added'] / mib:.0f} MiB (peak RSS since {since} "
        f"{res['peak_rss'] / mib:.0f} MiB - resident before {res['rss_before'] / mib:.0f} MiB); tracemalloc peak of "
        f"numpy buffers {res['traced_peak'] / mib:.0f} MiB", flush=True)
  return res


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="small sizes and a short stream (a smoke run)")
  parser.add_argument("--repeats", type=int, default=2, help="timed runs per method; the best is reported")
  parser.add_argument("--reference_repeats", type=int, default=1, help="timed runs of the reference-style methods")
  parser.add_argument("--no_reference", action="store_true", help="skip the reference-style timings")
  parser.add_argument("--check_reference", action="store_true", help="also print the reference-style similarity")
  parser.add_argument("--stream_points", type=int, default=None, help="datapoints to stream (default 10,000,000)")
  parser.add_argument("--stream_neurons", type=int, default=256, help="neurons per side in the stream")
  parser.add_argument("--stream_batch", type=int, default=8192, help="datapoints per accumulator update")
  parser.add_argument("--skip_timings", action="store_true", help="only the streaming memory measurement")
  parser.add_argument("--all_metrics_only", action="store_true",
                      help="only the comparison of all four metrics with svcca alone (the goal line)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", help="also write the figures to this file")
  parser.add_argument("--_stream_child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.stream_points is None:
    args.stream_points = 200_000 if args.quick else 10_000_000
  if args._stream_child:  # pylint: disable=protected-access
    _stream_child(args.stream_points, args.stream_neurons, args.stream_batch)
    return

  # 20k datapoints for 2048 neurons are just under cca's 10-per-neuron warning; this measures time, not similarity.
  warnings.simplefilter("ignore", cca_lib.FewDatapointsWarning)
  sizes = [(2_000, 128, 128), (4_000, 256, 256)] if args.quick else [(10_000, 512, 512), (20_000, 2048, 2048)]
  threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
  print(f"cca benchmark: {os.cpu_count()} CPU core(s), numpy {np.__version__}, OPENBLAS_NUM_THREADS={threads}. On a "
        "shared machine the timings can be inflated by other load (multithreaded BLAS suffers most: try "
        "OPENBLAS_NUM_THREADS=1 there); ratios from the same run are the more reliable figures.")
  if args.all_metrics_only:
    rows, stream = [], None
  else:
    rows = [] if args.skip_timings else [_time_size(n, p, q, args) for n, p, q in sizes]
    stream = _stream(args) if args.stream_points > 0 else None
  all_metrics = None if args.skip_timings else _all_metrics(args)  # Last: its final line is the goal line.
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"sizes": rows, "stream": stream, "all_metrics": all_metrics}, f, indent=2)


if __name__ == "__main__":
  main()
