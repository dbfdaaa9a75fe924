"""The report from hand-made run results: every table and curve figure, and readings that follow the numbers."""
import os

import numpy as np
import tensorflow as tf

from transfusion_tf.data import tasks
from transfusion_tf.experiments import report, study
from transfusion_tf.training import rundir, trainer


def fake_run(path, metrics, steps_to_threshold, curve_values):
  os.makedirs(path, exist_ok=True)
  curve = [dict({k: v for k, v in metrics.items()}, step=s, seconds=float(s), auc_mean=a)
           for s, a in zip((0, 50, 100), curve_values)]
  rundir.atomic_write_json(os.path.join(path, "curve.json"), curve)
  rundir.atomic_write_json(os.path.join(path, "result.json"), {
      "final": dict(metrics, step=100), "best": dict(metrics, step=100), "steps_to_threshold": steps_to_threshold,
      "seconds": 10.0, "source_weights": None, "device": "CPU: test"})


class ReportTest(tf.test.TestCase):

  def test_all_sections_from_fake_runs(self):
    out = self.create_tempdir().full_path
    base = trainer.TrainConfig(dataset="synthetic_cxr", image_size=32, train_steps=100, eval_every=50,
                               convergence_auc=0.8, model_kwargs={"width_multiplier": 0.125})
    cfg = study.StudyConfig(out=out, base=base, models=("resnet50", "cbr_small"), seeds=2,
                            experiments=("T2", "T3", "MV", "WT", "SL", "GB"), small_data_subset=100,
                            wt_stages=("none", "conv1", "block1"), source_weights=os.path.join(out, "src.h5"))
    open(cfg.source_weights, "w").close()
    runs = study.plan_runs(cfg)
    inits = {r.init for r in runs}
    self.assertTrue({"slim", "gabor_low", "gabor_high", "meanvar", "transfuse:conv1", "transfuse:block1"} <= inits)
    self.assertTrue(any(r.subset == 100 for r in runs))
    # Transfer is 2 points better with little data and equal otherwise; meanvar sits between random and transfer.
    steps = {"random": 100, "meanvar": 50, "pretrained": 0, "slim": 0, "gabor_low": 50, "gabor_high": 100,
             "transfuse:conv1": 50, "transfuse:block1": 0}
    for r in runs:
      auc = 0.80 + (0.02 if r.init == "pretrained" and r.subset else 0.0) + 0.001 * r.seed
      metrics = {f"auc_{tasks.metric_key(p)}": auc for p in tasks.CXR_PATHOLOGIES}
      metrics["auc_mean"] = auc
      s = steps.get(r.init, 100)
      fake_run(study.run_dir(cfg, r), metrics, s, [0.5, 0.8 if s <= 50 else 0.7, auc])
    refs = {"random": 0.15, "gabor": 0.70}
    f5 = {"png": os.path.join(out, "analysis", "f5.png"), "panels": [
        dict(model="cbr_small", kind="random", mean_relative_l2_change=0.9, orientation_selectivity_before=0.15,
             orientation_selectivity_after=0.18, selectivity_references=refs),
        dict(model="cbr_small", kind="pretrained", mean_relative_l2_change=0.3, orientation_selectivity_before=0.41,
             orientation_selectivity_after=0.35, selectivity_references=refs),
        dict(model="resnet50", kind="pretrained", mean_relative_l2_change=0.01, orientation_selectivity_before=0.2,
             orientation_selectivity_after=0.2, selectivity_references=refs)]}
    path = report.write_report(cfg, runs, {"F5": f5}, wall_seconds=60)
    text = open(path).read()
    self.assertIn("cbr_small pretrained 0.41 -> 0.35", text)
    f5_readings = [l for l in text.splitlines() if l.startswith("- F5")]
    self.assertTrue(any(l.startswith("- F5: **holds**") and "cbr_small pretrained" in l for l in f5_readings),
                    f5_readings)
    self.assertTrue(any("does not hold" in l and "resnet50 pretrained" in l for l in f5_readings), f5_readings)
    f5["panels"][2]["selectivity_references"] = {"random": 0.18, "gabor": 0.61}  # Another kernel shape.
    text = open(report.write_report(cfg, runs, {"F5": f5}, wall_seconds=60)).read()
    self.assertIn("resnet50 pretrained 0.20 -> 0.20 (He-normal random 0.18, Gabor bank 0.61)", text)
    self.assertIn("cbr_small pretrained 0.41 -> 0.35 (He-normal random 0.15, Gabor bank 0.70)", text)
    for heading in ("## T2", "## T3", "## Convergence: steps to threshold", "### SL: resnet50", "### GB: cbr_small",
                    "### WT: resnet50 steps", "### MV: cbr_small"):
      self.assertIn(heading, text)
    self.assertIn("| resnet50 | Atelectasis | 80.05 ± 0.07 | 80.05 ± 0.07 | 79.52 | 79.76 |", text)
    readings = [l for l in text.splitlines() if l.startswith("- ")]
    self.assertTrue(any(l.startswith("- T3: **holds**") and "resnet50" in l for l in readings), readings)
    self.assertTrue(any(l.startswith("- MV: **holds**") for l in readings), readings)
    self.assertTrue(any(l.startswith("- SL: **holds**") for l in readings), readings)
    self.assertTrue(any(l.startswith("- GB: **holds**") for l in readings), readings)
    self.assertTrue(any(l.startswith("- T2: **holds**") for l in readings), readings)
    for name in ("table_t2.csv", "table_t3.csv", "table_convergence.csv", "analysis/sl.png", "analysis/gb_cbr_small.png",
                 "analysis/wt_steps_resnet50.png"):
      self.assertTrue(os.path.exists(os.path.join(out, name)), name)
    wt = rundir.read_json(os.path.join(out, "analysis", "wt_steps_resnet50.json"))
    self.assertEqual(sorted({p["stages"] for p in wt["points"]}), [0, 1, 2, 3])
    self.assertTrue(np.isfinite([p["steps"] for p in wt["points"]]).all())
