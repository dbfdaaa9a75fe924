"""The study under re-runs, concurrency and kills, on a tiny study (CBR-Tiny at 16 px, a few steps): two processes on
one --out train each run once; --parallel_runs=2 gives the runs, sections and numbers of one process; adding a seed
recomputes the analyses; a re-run of a finished study writes the same report (and starts no child)."""
import dataclasses
import glob
import os
import re
import subprocess
import sys
from unittest import mock

import tensorflow as tf

from tests import quick_study
from transfusion_tf.experiments import parallel
from transfusion_tf.errors import UsageError
from transfusion_tf.training import rundir

ROOT = quick_study.ROOT
TINY = ["--dataset=synthetic_retina", "--num_train=64", "--num_val=32", "--num_test=48", "--image_size=16",
        "--batch_size=8", "--train_steps=6", "--eval_every=3", "--convergence_auc=0.6", "--study_models=cbr_tiny",
        "--width_multiplier=0.125", "--study_inits=random", "--experiments=T1,F2,F3", "--source_weights=synthetic",
        "--pretrain_steps=4", "--pretrain_num_train=64", "--analysis_images=16", "--analysis_max_positions=50"]


def command(out, *extra):
  return [sys.executable, os.path.join(ROOT, "scripts", "study.py"), *TINY, f"--out={out}", *extra]


def run(out, *extra, timeout=900):
  return subprocess.run(command(out, *extra), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def results(out):
  plan = rundir.read_json(os.path.join(out, "plan.json"))
  return {r["name"]: rundir.read_json(os.path.join(r["dir"], "result.json")) for r in plan["runs"]}


def numbers(obj, path=""):
  """{path: number} of every number in a JSON value (analysis data)."""
  if isinstance(obj, dict):
    return {k: v for key, val in obj.items() for k, v in numbers(val, f"{path}/{key}").items()}
  if isinstance(obj, list):
    return {k: v for i, val in enumerate(obj) for k, v in numbers(val, f"{path}[{i}]").items()}
  return {path: obj} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}


def headings(report):
  return [l for l in report.splitlines() if l.startswith("#")]


def stable(report):
  return [l for l in report.splitlines() if "Wall time" not in l]


class ConcurrencyTest(tf.test.TestCase):

  def test_two_processes_on_one_out_train_each_run_once(self):
    out = self.create_tempdir().full_path
    procs = [subprocess.Popen(command(out, "--study_seeds=2", "--parallel_runs=1"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=900) for p in procs]
    for p, (stdout, stderr) in zip(procs, logs):
      self.assertEqual(p.returncode, 0, stderr[-3000:])
    stdout = "".join(o for o, _ in logs)
    res = results(out)
    self.assertLen(res, 4)
    self.assertTrue(all(v is not None for v in res.values()), res.keys())
    trained = re.findall(r"^\[cbr_tiny/\w+/seed\d\] training cbr_tiny on synthetic_retina", stdout, re.M)
    self.assertLen(trained, 4, stdout[-4000:])  # Each run trained exactly once over both processes.
    for name in res:
      events = glob.glob(os.path.join(out, "tb", name.replace("/", "_"), "**", "events.out.tfevents.*"),
                         recursive=True)
      self.assertLen(events, 1, name)  # One writer: the run was not trained twice.
    pretrained = re.findall(r"^\[pretrain/cbr_tiny\] training cbr_tiny on synthetic_source", stdout, re.M)
    self.assertLen(pretrained, 1, stdout[-4000:])  # One process pretrained the source, the other waited for it.

  def test_parallel_runs_match_one_process_then_a_new_seed_recomputes_and_a_rerun_is_identical(self):
    # A kill of a --parallel_runs parent (its children die with it) and the re-run that completes the study are
    # tested on the quick study (tests/study_test.py), which runs in 2 processes.
    serial, par = (self.create_tempdir().full_path for _ in range(2))
    one = run(serial, "--study_seeds=1", "--parallel_runs=1")
    self.assertEqual(one.returncode, 0, one.stderr[-3000:])
    self.assertIn("F3 computed", one.stdout)
    two = run(par, "--study_seeds=1", "--parallel_runs=2", "--log_every_seconds=1")  # Non-semantic: same runs.
    self.assertEqual(two.returncode, 0, two.stderr[-3000:])
    self.assertIn("parallel runs: 2 processes", two.stdout)
    # The sweep's processes ran on a share of the cores each; the analyses get a fresh process with all of them,
    # and its report counts the wall time from the command's start.
    self.assertIn("== analyses and report: a fresh process", two.stdout)
    # Output a person can follow (issue 24): every line of a run names it, one header per run this process trains,
    # and no "held by" line for the runs its own children train.
    run_lines = [l for l in two.stdout.splitlines() if re.search(r"step \d+/\d+|^\S*\s*eval |^\S* ?training ", l)
                 and not l.startswith("study progress")]
    self.assertNotEmpty(run_lines)
    for line in run_lines:
      self.assertRegex(line, r"^\[(pretrain/)?[a-z0-9_]+(/[a-z0-9_:]+/seed\d+)?\] ", line)
    headers = re.findall(r"== run \d+/\d+: (\S+)", two.stdout)
    self.assertEqual(len(headers), len(set(headers)), headers)
    self.assertNotIn("is held by", two.stdout)
    # The parent's study-level line (a pipe, not a terminal: plain lines, no carriage return): runs done / total
    # and the ETA while the sweep runs (the runs its children train included), and a closing line.
    self.assertNotIn("\r", two.stdout)
    lines = re.findall(r"^study progress \(\d\d:\d\d:\d\d\): (\d+)/(\d+) runs done, source pretraining "
                       r"(\d)/1(.*)$", two.stdout, re.M)
    self.assertGreaterEqual(len(lines), 2, two.stdout[-4000:])
    self.assertEqual(lines[-1], ("2", "2", "1", ""))  # The closing line: everything done.
    self.assertTrue(any(re.search(r"; training ETA (unknown|\d\d:\d\d:\d\d, analyses after)", rest) for *_, rest in lines[:-1]), lines)
    self.assertNotIn("study progress", "".join(two.stdout.split("== analyses and report")[1:]))
    self.assertIn("report written to", two.stdout)
    # The report process shared its two analyses with a helper process; computed again in one process, they are
    # the same numbers.
    self.assertIn("analyses in 2 processes: F3 | F2", two.stdout)
    self.assertNotIn("left no analysis", two.stdout)
    shared = {e: rundir.read_json(os.path.join(par, "analysis", f"{e}.analysis.json"))["data"] for e in ("f2", "f3")}
    again = run(par, "--study_seeds=1", "--parallel_runs=1", "--study_stage=report", "--force")
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertNotIn("analyses in 2 processes", again.stdout)
    for e in ("F2", "F3"):
      self.assertIn(f"{e} computed", again.stdout)
      alone = rundir.read_json(os.path.join(par, "analysis", f"{e.lower()}.analysis.json"))["data"]
      # One thread in the helper, the default pools alone: float64 sums in another order (the demo: <= 6e-11).
      a, b = numbers(shared[e.lower()]), numbers(alone)
      self.assertEqual(sorted(a), sorted(b), e)
      self.assertAllClose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], rtol=0, atol=1e-8, msg=e)
    a, b = results(serial), results(par)
    self.assertEqual(sorted(a), sorted(b))
    for name in a:  # One intra-op thread per run in parallel, the default pool alone: see the README.
      self.assertAllClose(a[name]["selected"]["test"]["auc_referable"], b[name]["selected"]["test"]["auc_referable"],
                          atol=0.02, msg=name)
    self.assertEqual(headings(open(os.path.join(serial, "report.md")).read()),
                     headings(open(os.path.join(par, "report.md")).read()))
    # A second seed on the one-process study: its analyses are recomputed, then a re-run trains and computes nothing
    # and writes the same report.
    out = serial
    second = run(out, "--study_seeds=2", "--parallel_runs=1")
    self.assertEqual(second.returncode, 0, second.stderr[-3000:])
    for exp in ("F2", "F3"):
      self.assertIn(f"{exp} computed", second.stdout)  # The set of runs changed: recomputed, not reused.
    report = open(os.path.join(out, "report.md")).read()
    self.assertIn("cbr_tiny/random/seed1 (step 6)", report)  # The analyses' inputs list the new seed.
    f3 = rundir.read_json(os.path.join(out, "analysis", "f3.analysis.json"))
    kinds = sorted(r["kind"] for r in f3["data"]["runs"])  # 4 runs to their own init, 2 random ones to the other's.
    self.assertEqual(kinds, ["pretrained", "pretrained", "random", "random", "unrelated_init", "unrelated_init"])
    third = run(out, "--study_seeds=2", "--parallel_runs=2")
    self.assertEqual(third.returncode, 0, third.stderr[-3000:])
    self.assertNotIn("computed", third.stdout)
    self.assertNotIn("== run", third.stdout)
    self.assertNotIn("parallel runs:", third.stdout)  # Nothing left to train: no child is started.
    self.assertEqual(stable(report), stable(open(os.path.join(out, "report.md")).read()))


class ShardTest(tf.test.TestCase):

  def test_array_shard_from_the_environment(self):
    self.assertEqual(parallel.array_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4",
                                           "SLURM_ARRAY_TASK_MIN": "0"}), (3, 4))
    self.assertEqual(parallel.array_shard({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2",
                                           "SLURM_ARRAY_TASK_MIN": "1"}), (1, 2))
    self.assertEqual(parallel.array_shard({"SGE_TASK_ID": "5", "SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "8",
                                           "SGE_TASK_STEPSIZE": "1"}), (4, 8))
    with self.assertRaisesRegex(UsageError, "found no job array"):
      parallel.array_shard({})
    with self.assertRaisesRegex(UsageError, "outside"):
      parallel.array_shard({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"})

  def test_started_time_is_the_parents_in_a_report_process(self):
    self.assertEqual(parallel.started_time(5.0), 5.0)
    os.environ[parallel.STARTED_ENV] = "12.5"
    try:
      self.assertEqual(parallel.started_time(99.0), 12.5)
    finally:
      del os.environ[parallel.STARTED_ENV]

  def test_resolve(self):
    self.assertEqual(parallel.resolve("auto", 0, 2), (2, 1))
    self.assertEqual(parallel.resolve("auto", 0, 16), (8, 2))
    self.assertEqual(parallel.resolve("auto", 4, 16), (4, None))
    self.assertEqual(parallel.resolve("1", 0, 16), (1, None))
    self.assertEqual(parallel.resolve("3", 0, 12), (3, 4))
    for bad in ("0", "-2", "two"):
      with self.assertRaisesRegex(UsageError, "parallel_runs"):
        parallel.resolve(bad, 0, 2)


class AnalysisShareTest(tf.test.TestCase):

  def test_analyses_are_shared_by_cost_and_every_one_once(self):
    from transfusion_tf.experiments import study  # pylint: disable=import-outside-toplevel
    groups = study.share_analyses(["F2", "F3", "F4", "F5", "MV"], 2)
    self.assertLen(groups, 2)
    self.assertEqual(sorted(sum(groups, [])), ["F2", "F3", "F4", "F5", "MV"])
    self.assertLen({"F3", "F4"} & set(groups[0]), 1)  # The two costliest go to different processes.
    cost = [sum(study.ANALYSIS_COST.get(i, 0.5) for i in g) for g in groups]
    self.assertLessEqual(abs(cost[0] - cost[1]), 1.0)
    self.assertEqual(study.share_analyses(["F5"], 4), [["F5"]])  # No empty helper groups.
    self.assertEqual(study.share_analyses([], 2), [[]])
    self.assertEqual(study.share_analyses(["F2", "F3"], 1), [["F3", "F2"]])
    self.assertEqual(study.share_analyses(["F2", "F3"], 2), [["F3"], ["F2"]])

  def test_workers_follow_the_sweep_and_gpus_get_one(self):
    with mock.patch.dict(os.environ, {parallel.ANALYSIS_WORKERS_ENV: "2"}):
      self.assertEqual(parallel.analysis_workers("1", 2), 2)  # The report process: the sweep's processes.
      self.assertEqual(parallel.analysis_workers("auto", 2, gpus=1), 1)
    with mock.patch.dict(os.environ, {parallel.ANALYSIS_WORKERS_ENV: ""}):
      self.assertEqual(parallel.analysis_workers("auto", 2), 2)
      self.assertEqual(parallel.analysis_workers("1", 2), 1)
      self.assertEqual(parallel.analysis_workers("auto", 8), 4)
    with mock.patch.dict(os.environ, {parallel.ANALYSES_ENV: "F4,F5"}):
      self.assertEqual(parallel.analysis_helper_ids(), ["F4", "F5"])
    with mock.patch.dict(os.environ, {}, clear=False):
      os.environ.pop(parallel.ANALYSES_ENV, None)
      self.assertIsNone(parallel.analysis_helper_ids())


class _FakeAnalysis:
  """An experiment whose analysis counts its calls (run_analyses reads only these attributes)."""

  def __init__(self, exp_id):
    self.id, self.calls = exp_id, 0

  def selected(self, chosen):
    return True

  def analysis_runs(self, ctx):
    return list(ctx.results)[:2]

  def analysis(self, ctx, used):
    self.calls += 1
    return {"id": self.id, "count": len(used)}


class SharedAnalysesReadBackTest(tf.test.TestCase):
  """The report process's side of shared analyses, with helper processes stood in for: what a helper wrote is read
  back; what a dead helper left (nothing, or an older cache entry that --force must not let through) is computed."""

  def setUp(self):
    super().setUp()
    from tests import experiments_test  # pylint: disable=import-outside-toplevel
    _, _, self.ctx = experiments_test.make_study(self, seeds=1, experiments=("T1",))
    os.makedirs(self.ctx.adir, exist_ok=True)

  def _run(self, exps, helper_writes):
    from transfusion_tf.experiments import study  # pylint: disable=import-outside-toplevel

    def spawn(argv, groups, threads):
      self.assertEqual(threads, max(1, (os.cpu_count() or 1) // (len(groups) + 1)))
      if helper_writes:  # What the helper's run_analyses would leave: its analyses in the cache.
        for g in groups:
          for e in exps:
            if e.id in g:
              used = e.analysis_runs(self.ctx)
              study.write_cached_analysis(os.path.join(self.ctx.adir, f"{e.id.lower()}.analysis.json"),
                                          self.ctx.cfg.out, study.analysis_manifest(self.ctx, used),
                                          {"id": e.id, "count": len(used), "by": "helper"})
      return [subprocess.Popen([sys.executable, "-c", "pass"])]
    with mock.patch.object(parallel, "spawn_analyses", spawn):
      return study.run_analyses(self.ctx, exps, workers=2, argv=["study"])

  def test_a_helpers_analysis_is_read_back_and_a_dead_helpers_is_computed(self):
    exps = [_FakeAnalysis("F3"), _FakeAnalysis("F4")]
    self._run(exps, helper_writes=True)
    self.assertEqual(sorted(e.calls for e in exps), [0, 1])  # One computed here, one read back.
    helped = next(e for e in exps if e.calls == 0)
    self.assertEqual(self.ctx.analyses[helped.id]["by"], "helper")
    # --force with a helper that wrote nothing: the older entry (same manifest) is not taken; computed here.
    self.ctx.cfg = dataclasses.replace(self.ctx.cfg, force=True)
    exps = [_FakeAnalysis("F3"), _FakeAnalysis("F4")]
    self._run(exps, helper_writes=False)
    self.assertEqual([e.calls for e in exps], [1, 1])
    self.assertNotIn("by", self.ctx.analyses[helped.id])
