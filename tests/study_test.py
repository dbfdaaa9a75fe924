"""The quick study end to end: killed mid-sweep, re-run to completion, re-run again trains nothing; then every Colab
notebook runs top to bottom on it (nbclient). Both tests are methods of one class so that one pytest-xdist worker
runs them (pytest.ini: --dist loadscope) and the quick study runs once per session."""
import glob
import os
import subprocess
import tempfile

import nbformat
import tensorflow as tf
from nbclient import NotebookClient

from tests import quick_study
from transfusion_tf.training import rundir

ROOT = quick_study.ROOT


class QuickStudyTest(tf.test.TestCase):

  def test_kill_resume_and_report(self):
    res = quick_study.run_quick_study()
    out = res["out"]
    self.assertEqual(res["resume"].returncode, 0, res["resume"].stderr[-3000:])
    self.assertGreaterEqual(res["killed_after"], 2, "the study was not killed mid-sweep")
    if (os.cpu_count() or 1) >= 2:  # --parallel_runs=auto ran a child, which died with its killed parent.
      self.assertRegex(res["killed_log"], r"parallel runs: \d+ processes")
    self.assertEmpty(res["survivors"], "a --parallel_runs child outlived its killed parent")
    plan = rundir.read_json(os.path.join(out, "plan.json"))
    for run in plan["runs"]:
      self.assertTrue(os.path.exists(os.path.join(run["dir"], "result.json")), run["name"])
      steps = [p["step"] for p in rundir.read_json(os.path.join(run["dir"], "curve.json"))]
      self.assertEqual(steps, sorted(set(steps)), run["name"])
    self.assertIn("study plan:", res["resume"].stdout)
    self.assertIn("standing in for ImageNet", res["resume"].stdout)
    report = open(os.path.join(out, "report.md")).read()
    self.assertIn("synthetic source task standing in for ImageNet", report)
    self.assertIn("below 10x chance: a weak stand-in", report)  # 40 pretraining steps teach the source nothing.
    self.assertIn("## T1", report)
    self.assertIn("## Reading the results against the paper", report)
    for fig in ("f2", "f3", "f4", "f5", "mv_cbr_tiny", "wt_resnet50"):
      path = os.path.join(out, "analysis", fig + ".png")
      self.assertTrue(os.path.getsize(path) > 5000, path)
      self.assertIn(f"analysis/{fig}.png", report)
    tb_runs = os.listdir(os.path.join(out, "tb"))
    self.assertGreaterEqual(len(tb_runs), len(plan["runs"]))
    # A finished study trains nothing.
    again = res["again"]
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertNotIn("== run", again.stdout)
    self.assertNotIn("== pretraining", again.stdout)
    self.assertIn(f"({len(plan['runs'])} done)", again.stdout)
    self.assertNotEmpty(glob.glob(os.path.join(out, "table_t1.csv")))
    # The intervals issue's report: patients, run marks, adjusted verdicts with their power, the conclusive count.
    self.assertRegex(report, r"test images of \d+ patients: DeLong clustered by patient")
    self.assertIn("Marks: **still improving**", report)
    self.assertRegex(report, r"readings: \d+ of \d+ conclusive")
    self.assertIn("Holm-Bonferroni", report)
    self.assertIn("(unit: runs)", report)  # One seed: no interval, so no minimum detectable effect either.
    self.assertLess(report.index("## The answer for this task"), report.index("## T1"))
    self.assertIn("1. **Does pretraining change the final test metric?**", report)
    # Q4 reads each run's recorded cost: FLOPs per image and both measured throughputs, never "not recorded".
    q4 = next(line for line in report.splitlines() if line.startswith("4. **"))
    self.assertRegex(q4, r"[\d,]+ parameters, [\d.]+ [MG]FLOPs per image, [\d,]+ training and [\d,]+ inference img/s")
    self.assertNotIn("not recorded", q4)

  def test_pilot_plan_prints_what_each_claim_needs(self):
    out = quick_study.run_quick_study()["out"]
    plan_run = subprocess.run(quick_study.study_command(out) + ["--study_stage=plan", f"--pilot={out}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
    self.assertEqual(plan_run.returncode, 0, plan_run.stderr[-3000:])
    self.assertIn(f"Power from the pilot {out}", plan_run.stdout)
    self.assertIn("| exp | claim | pilot verdict (before Holm) | mde | seeds @ 1x test |", plan_run.stdout)
    self.assertRegex(plan_run.stdout, r"\| T1 \| cbr_tiny: test AUC transfer − random")
    bad = subprocess.run(quick_study.study_command(out) + ["--study_stage=report", f"--pilot={out}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    self.assertEqual(bad.returncode, 2)
    self.assertIn("--pilot goes with --study_stage=plan", bad.stderr)
    # Unequal seed counts: the plan says those arms are paired (Scheffé) and what equal counts would buy, before
    # anything is trained.
    fresh = os.path.join(tempfile.mkdtemp(prefix="transfusion_plan_"), "study")
    unequal = subprocess.run(quick_study.study_command(fresh) + ["--study_stage=plan", "--study_seeds=2",
                                                                 "--study_init_seeds=random=3"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
    self.assertEqual(unequal.returncode, 0, unequal.stderr[-3000:])
    self.assertRegex(unequal.stdout, r"pairing by seed.*2 vs 3 seeds \d+% \(3 vs 3: \d+%\)")
    self.assertNotIn("pairing by seed", plan_run.stdout)  # The quick study: 1 seed per arm.

  def test_notebooks_run_and_are_stripped(self):
    out = quick_study.run_quick_study()["out"]
    os.environ["TRANSFUSION_QUICK_OUT"] = out
    os.environ["TRANSFUSION_NB_WORK"] = self.create_tempdir().full_path
    paths = sorted(glob.glob(os.path.join(ROOT, "colab", "*.ipynb")))
    self.assertEqual([os.path.basename(p) for p in paths],
                     ["quickstart.ipynb", "representations.ipynb", "weight_transfusion.ipynb"])
    for path in paths:
      nb = nbformat.read(path, as_version=4)
      self.assertTrue(all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"),
                      f"{path} has outputs committed")
      self.assertIn("google.colab", nb.cells[1].source)  # First code cell installs on Colab.
      NotebookClient(nb, timeout=900, kernel_name="python3",
                     resources={"metadata": {"path": os.path.join(ROOT, "colab")}}).execute()
      images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
      self.assertNotEmpty(images, os.path.basename(path))
