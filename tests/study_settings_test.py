"""A run counts as the study's only while its recorded settings are the study's (issue 24, cases 1, 2 and 16): on a
tiny study (CBR-Tiny at 16 px, 6 steps, trained in this process), runs trained with other settings stop the study
before it trains anything, --overwrite retrains exactly those (and is refused when there are none), and neither a
study's report nor --study_stage=report ever takes in a run retrained by another command."""
import contextlib
import dataclasses
import io
import os
import subprocess
import sys
import textwrap
import time

import tensorflow as tf

from tests import quick_study
from transfusion_tf import files
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import catalog, common, plan, study
from transfusion_tf.training import rundir, trainer

ROOT = quick_study.ROOT
RANDOM, PRETRAINED = plan.Run("cbr_tiny", "random", 0), plan.Run("cbr_tiny", "pretrained", 0)


def tiny(out, overwrite=False, **train):
  """The tiny study (T1: a random and a pretrained run, 4 steps of source pretraining) with `train` settings."""
  base = trainer.TrainConfig(dataset="synthetic_retina", image_size=16, batch_size=8, train_steps=6, eval_every=3,
                             learning_rate=0.002, convergence_auc=0.6, model_kwargs={"width_multiplier": 0.125},
                             data_kwargs={"num_train": 64, "num_val": 32, "num_test": 48})
  return plan.StudyConfig(out=out, base=dataclasses.replace(base, **train), models=("cbr_tiny",), inits=("random",),
                          experiments=("T1",), source_weights="synthetic", pretrain_steps=4, pretrain_num_train=64,
                          analysis_images=16, analysis_max_positions=50, overwrite=overwrite)


def run_study(cfg, stage="all"):
  """Runs the study in this process; returns what it printed."""
  log = io.StringIO()
  with contextlib.redirect_stdout(log):
    study.run_study(cfg, stage)
  return log.getvalue()


def recorded(cfg, run):
  """(train_steps, learning_rate) of `run`'s result.json."""
  flags = rundir.read_json(os.path.join(plan.run_dir(cfg, run), "result.json"))["flags"]
  return flags["train_steps"], flags["learning_rate"]


def read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


class StudySettingsTest(tf.test.TestCase):

  def test_other_settings_stop_the_study_and_overwrite_retrains_them(self):
    out = self.create_tempdir().full_path
    run_study(tiny(out))
    first = {r: read(os.path.join(plan.run_dir(tiny(out), r), "result.json")) for r in (RANDOM, PRETRAINED)}
    new = tiny(out, train_steps=8, learning_rate=0.01)
    # Case 1: the finished 6-step runs are not the 8-step study's. It stops before training or writing anything
    # (before: "2 training runs (2 done)", nothing trained, a report saying 8 steps over 6-step runs).
    refused = (r"--out=.*: cbr_tiny/random/seed0 was trained with other settings than this study's "
               r"\(learning_rate, train_steps differ\), and 1 more run; pass --overwrite to retrain them")
    with self.assertRaisesRegex(UsageError, refused):
      run_study(new)
    for r, text in first.items():
      self.assertEqual(read(os.path.join(plan.run_dir(new, r), "result.json")), text, r.name)
    self.assertIn("6 steps", read(os.path.join(out, "report.md")))
    # Case 16: an unfinished run with other settings is named the same way (before: the trainer's "pass
    # --overwrite", which the study then ignored).
    os.remove(os.path.join(plan.run_dir(new, RANDOM), "result.json"))
    with self.assertRaisesRegex(UsageError, refused):
      run_study(new)
    # --overwrite retrains both, through the trainer's --overwrite (the old run waits in DIR.previous until the
    # new one's first checkpoint), and the report is the new settings'.
    log = run_study(dataclasses.replace(new, overwrite=True))
    self.assertIn("(0 done, 2 with other settings to retrain (--overwrite))", log)
    self.assertEqual(log.count("== run"), 2, log)
    for r in (RANDOM, PRETRAINED):
      self.assertEqual(recorded(new, r), (8, 0.01), r.name)
      self.assertFalse(os.path.exists(plan.run_dir(new, r) + ".previous"), r.name)
    self.assertIn("8 steps", read(os.path.join(out, "report.md")))
    # Nothing left to overwrite: --overwrite is refused; without it, nothing is trained.
    with self.assertRaisesRegex(UsageError, r"--overwrite: no run in --out=.* was trained with other settings than "
                                r"this study's, so it would retrain nothing; drop it"):
      run_study(dataclasses.replace(new, overwrite=True))
    log = run_study(new)
    self.assertIn("2 training runs (2 done)", log)
    self.assertNotIn("== run", log)

  def test_a_run_retrained_by_another_command_never_enters_the_report(self):
    out = self.create_tempdir().full_path
    cfg = tiny(out)
    run_study(cfg, "train")
    kept = read(os.path.join(plan.run_dir(cfg, PRETRAINED), "result.json"))
    # Case 2: `transfusion-train ... --train_steps=10 --overwrite` retrains one of the study's finished runs.
    # Before, --study_stage=report took it in: a report saying 6 steps over a 10-step run.
    trainer.train(dataclasses.replace(plan.run_config(cfg, RANDOM, None), train_steps=10),
                  plan.run_dir(cfg, RANDOM), overwrite=True)
    refused = (r"--out=.*: cbr_tiny/random/seed0 was trained with other settings than this study's "
                       r"\(train_steps differ\), so no report is written: re-run the study with --overwrite")
    with self.assertRaisesRegex(UsageError, refused):
      run_study(cfg, "report")
    self.assertFalse(os.path.exists(os.path.join(out, "report.md")))
    with self.assertRaisesRegex(UsageError, "--overwrite retrains runs, and --study_stage=report trains none"):
      run_study(dataclasses.replace(cfg, overwrite=True), "report")
    with self.assertRaisesRegex(UsageError, r"cbr_tiny/random/seed0 was trained with other settings than this "
                                r"study's \(train_steps differ\); pass --overwrite to retrain it"):
      run_study(cfg)
    # --overwrite retrains that run only: the pretrained one, finished with the study's settings, is kept.
    log = run_study(dataclasses.replace(cfg, overwrite=True))
    self.assertEqual(log.count("== run"), 1, log)
    self.assertIn("== run 1/2: cbr_tiny/random/seed0", log)
    self.assertEqual(recorded(cfg, RANDOM)[0], 6)
    self.assertEqual(read(os.path.join(plan.run_dir(cfg, PRETRAINED), "result.json")), kept)
    self.assertIn("6 steps", read(os.path.join(out, "report.md")))
    # A run retrained while the report is being made (after its context was read) stops it too.
    runs = plan.plan_runs(cfg, catalog.experiments())
    ctx = common.load_context(cfg, runs)
    study.check_unchanged(ctx)
    path = os.path.join(plan.run_dir(cfg, RANDOM), "result.json")
    result = rundir.read_json(path)
    files.atomic_write_json(path, dict(result, seconds=result["seconds"] + 1))
    with self.assertRaisesRegex(UsageError, r"cbr_tiny/random/seed0 changed while this report was being made"):
      study.check_unchanged(ctx)

  def test_a_run_another_study_finishes_with_other_settings_stops_the_waiting_study(self):
    # Case 2: study A (other settings) holds a run that study B, started later, reaches. B skips it, waits, and
    # finds it finished with A's settings. Before, B took it into its report. Here A is a process that holds the
    # pretrained run's lock and, once B has finished its random run, leaves a finished run with 400 steps there.
    out = self.create_tempdir().full_path
    cfg = tiny(out)
    other = dataclasses.replace(plan.run_config(cfg, PRETRAINED, plan.pretrained_path(cfg, "cbr_tiny")),
                                train_steps=400).to_dict()
    other_path = os.path.join(self.create_tempdir().full_path, "other.json")
    files.atomic_write_json(other_path, other)
    ready = other_path + ".held"
    script = textwrap.dedent("""
        import json, os, shutil, sys, time
        from transfusion_tf import files
        from transfusion_tf.training import locks
        src, dst, other, ready = sys.argv[1:]
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with locks.hold(dst) as lock:
          assert lock is not None
          open(ready, "w").close()
          deadline = time.time() + 600
          while not os.path.exists(os.path.join(src, "result.json")) and time.time() < deadline:
            time.sleep(0.1)
          shutil.copytree(src, dst, dirs_exist_ok=True)
          flags = json.load(open(other))
          for name, key in (("config.json", "train"), ("result.json", "flags")):
            record = json.load(open(os.path.join(dst, name)))
            files.atomic_write_json(os.path.join(dst, name), dict(record, **{key: flags}))
    """)
    holder = subprocess.Popen([sys.executable, "-c", script, plan.run_dir(cfg, RANDOM),
                               plan.run_dir(cfg, PRETRAINED), other_path, ready], cwd=ROOT)
    try:
      while not os.path.exists(ready):
        self.assertIsNone(holder.poll(), "the holder died")
        time.sleep(0.1)
      with self.assertRaisesRegex(UsageError, r"cbr_tiny/pretrained/seed0 was trained with other settings than "
                                  r"this study's \(train_steps differ\); pass --overwrite"):
        run_study(cfg)
    finally:
      self.assertEqual(holder.wait(timeout=60), 0)
    self.assertEqual(recorded(cfg, RANDOM)[0], 6)
    self.assertFalse(os.path.exists(os.path.join(out, "report.md")))

  def test_the_command_line_passes_overwrite_and_refuses_it_when_it_would_do_nothing(self):
    # Case 16: `transfusion-study --overwrite` was accepted and ignored. On a new --out there is nothing to retrain:
    # one line, exit 2, nothing written.
    out = os.path.join(self.create_tempdir().full_path, "study")
    args = ["--dataset=synthetic_retina", "--num_train=64", "--num_val=32", "--num_test=48", "--image_size=16",
            "--batch_size=8", "--train_steps=6", "--study_models=cbr_tiny", "--width_multiplier=0.125",
            "--study_inits=random", "--experiments=T1", "--source_weights=synthetic", "--parallel_runs=1"]
    res = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "study.py"), *args, f"--out={out}",
                          "--overwrite"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    self.assertEqual(res.returncode, 2, res.stderr[-3000:])
    self.assertEqual(res.stderr.strip().splitlines(),
                     [f"error: --overwrite: no run in --out={out} was trained with other settings than this study's, "
                      "so it would retrain nothing; drop it (--force redoes every run)"])
    self.assertFalse(os.path.exists(out))


class RecordedSettingsTest(tf.test.TestCase):

  def test_the_comparison_is_transfusion_trains(self):
    out = self.create_tempdir().full_path
    cfg = tiny(out)
    sources = {"cbr_tiny": "pretrain"}
    planned = plan.run_config(cfg, PRETRAINED, plan.pretrained_path(cfg, "cbr_tiny")).to_dict()
    self.assertEqual(plan.recorded_differences(cfg, PRETRAINED, sources, planned), [])
    # Settings that do not change what is trained do not count; those that do are named.
    self.assertEqual(plan.recorded_differences(cfg, PRETRAINED, sources, dict(planned, jit=True, strategy="one")), [])
    self.assertEqual(plan.recorded_differences(cfg, PRETRAINED, sources, dict(planned, seed=3, batch_size=4)),
                     ["batch_size", "seed"])
    # The study's own source, spelled another way or recorded before the study folder was moved.
    for weights in (os.path.join(out, ".", "pretrain", "cbr_tiny", "pretrained.weights.h5"),
                    "/elsewhere/old_study/pretrain/cbr_tiny/pretrained.weights.h5"):
      self.assertEqual(plan.recorded_differences(cfg, PRETRAINED, sources, dict(planned, weights=weights)), [],
                       weights)
    self.assertEqual(plan.recorded_differences(cfg, PRETRAINED, sources, dict(planned, weights="/x/other.h5")),
                     ["weights"])
    # Unfinished, the trainer would not resume a run whose source path moved: it counts as other settings.
    self.assertEqual(plan.recorded_differences(cfg, PRETRAINED, sources, dict(planned, weights=weights),
                                               finished=False), ["weights"])
    # A run folder: config.json (from the start) and result.json (at the end) both count.
    run_dir = plan.run_dir(cfg, PRETRAINED)
    self.assertEqual(plan.run_differences(cfg, PRETRAINED, sources), [])
    os.makedirs(run_dir)
    files.atomic_write_json(os.path.join(run_dir, "config.json"), {"train": planned})
    files.atomic_write_json(os.path.join(run_dir, "result.json"), {"flags": dict(planned, train_steps=9)})
    self.assertEqual(plan.run_differences(cfg, PRETRAINED, sources), ["train_steps"])
    self.assertFalse(plan.done_as_planned(cfg, PRETRAINED, sources))
    self.assertEqual(trainer.config_differences(run_dir, plan.run_config(cfg, PRETRAINED,
                                                                         plan.pretrained_path(cfg, "cbr_tiny"))),
                     ["train_steps"])


if __name__ == "__main__":
  tf.test.main()
