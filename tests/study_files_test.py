"""A study's own files, damaged, deleted or moved (issue 24, cases 5, 8, 11 and 12): a damaged result.json makes its
run unfinished and is re-scored from the run's checkpoints, analyses store paths relative to the study (a copied
study links its own figures), a deleted figure is drawn again, a damaged analysis cache is computed again, and a
damaged plan.json is one line. Hand-made runs (tests/experiments_test.py) except one tiny real run."""
import contextlib
import dataclasses
import io
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from tests import experiments_test
from transfusion_tf import files
from transfusion_tf.analysis import representation as rep
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import common, plan, registry, study
from transfusion_tf.training import rundir, trainer


def printed(fn, *args):
  """(fn(*args), what it printed)."""
  log = io.StringIO()
  with contextlib.redirect_stdout(log):
    out = fn(*args)
  return out, log.getvalue()


def write(path, text):
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


class FakeAnalysis:
  """An analysis that draws a figure (a few bytes) and records the run folders it read, counting its calls."""

  def __init__(self):
    self.calls = 0

  def __call__(self, ctx, used):
    self.calls += 1
    png = os.path.join(ctx.adir, "fx.png")
    write(png, "png")
    return {"figure": "FX", "png": png, "json": os.path.join(ctx.adir, "fx.json"),
            "runs": [{"run": ctx.results[r].dir, "value": 0.5 + 0.01 * k} for k, r in enumerate(used)]}


def fake_experiment(analysis):
  """T1 with `analysis` (T1 is selected in every study of make_study)."""
  return registry.Experiment(id="T1", title="fake", analysis=analysis,
                             analysis_runs=lambda ctx: ctx.finished(inits=("random",)))


class AnalysisFilesTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.cfg, self.runs, _ = experiments_test.make_study(self, seeds=1, experiments=("T1",))
    self.fake = FakeAnalysis()
    self.exp = fake_experiment(self.fake)
    self.cache = os.path.join(self.cfg.out, "analysis", "t1.analysis.json")

  def analyse(self, cfg=None):
    """(the analysis data, what run_analyses printed) on a fresh context of `cfg` (default: the study's)."""
    ctx = common.load_context(cfg or self.cfg, self.runs)
    _, log = printed(study.run_analyses, ctx, [self.exp])
    return ctx.analyses["T1"], log

  def test_the_cache_holds_paths_relative_to_the_study_and_a_copy_links_its_own_figures(self):
    self.analyse()
    with open(self.cache, encoding="utf-8") as f:
      stored = json.load(f)["data"]
    self.assertEqual(stored["png"], os.path.join("analysis", "fx.png"))
    self.assertTrue(all(not os.path.isabs(r["run"]) for r in stored["runs"]))
    copy = self.cfg.out + "_copy"
    shutil.copytree(self.cfg.out, copy)
    shutil.rmtree(self.cfg.out)  # The old folder is gone: nothing may point there.
    cfg = dataclasses.replace(self.cfg, out=copy)
    data, log = self.analyse(cfg)
    self.assertEqual(self.fake.calls, 1, log)  # Reused: the copy's runs are the same runs.
    self.assertEqual(data["png"], os.path.join(copy, "analysis", "fx.png"))
    self.assertTrue(all(r["run"].startswith(copy + os.sep) for r in data["runs"]))
    ctx = common.load_context(cfg, self.runs)
    self.assertEqual(common.figure_link(ctx, "FX", data["png"]), "![FX](analysis/fx.png)")

  def test_a_deleted_figure_is_drawn_again(self):
    data, _ = self.analyse()
    os.remove(data["png"])
    data, log = self.analyse()
    self.assertEqual(self.fake.calls, 2)
    self.assertIn("fx.png is missing; computing T1 again", log)
    self.assertTrue(os.path.exists(data["png"]))
    _, log = self.analyse()
    self.assertEqual(self.fake.calls, 2, log)  # And then reused.

  def test_a_damaged_cache_is_computed_again_with_one_line(self):
    self.analyse()
    with open(self.cache, encoding="utf-8") as f:
      good = f.read()
    edited = good.replace("0.5", "0.9", 1)  # Valid JSON, wrong numbers: only the checksum tells.
    self.assertNotEqual(edited, good)
    for text, why in (("{not json", "not valid JSON"), ("", "not valid JSON"), ("[]", "it holds no analysis"),
                      ('{"manifest": 1}', "it holds no analysis"),
                      (edited, "its checksum does not match its contents")):
      calls = self.fake.calls
      write(self.cache, text)
      data, log = self.analyse()
      self.assertEqual(self.fake.calls, calls + 1, text)
      lines = [line for line in log.splitlines() if "damaged" in line]
      self.assertLen(lines, 1, log)
      self.assertIn(f"t1.analysis.json is damaged: {why}; computing it again", lines[0])
      self.assertEqual(data["runs"][0]["value"], 0.5)
    _, log = self.analyse()
    self.assertEqual(self.fake.calls, 6, log)  # Rebuilt: reused from then on.

  def test_the_analyses_data_reads_back_as_written(self):
    """F2-F5's data shapes (hand-made, tests/experiments_test.py), with numpy numbers and a NaN, through the cache."""
    cfg, runs = self.cfg, self.runs
    analyses = experiments_test.fake_analyses(cfg, runs)
    analyses["F4"]["points"] = [{"run_a": plan.run_dir(cfg, runs[0]), "run_b": plan.run_dir(cfg, runs[1]),
                                 "x": np.float32(0.25), "y": float("nan"), "init": {"svcca": np.float64(0.5)}}]
    os.makedirs(os.path.join(cfg.out, "analysis"))
    for key, data in analyses.items():
      path = os.path.join(cfg.out, "analysis", f"{key.lower()}.analysis.json")
      study.write_cached_analysis(path, cfg.out, {"version": 1, "runs": []}, data)
      cached, problem = study.read_cached_analysis(path, cfg.out)
      self.assertIsNone(problem, key)
      expected = json.loads(json.dumps(data, default=files.json_default))
      self.assertEqual(json.dumps(cached["data"], sort_keys=True), json.dumps(expected, sort_keys=True), key)

  def test_figure_json_files_name_their_figure_relative_to_themselves(self):
    out = os.path.join(self.create_tempdir().full_path, "f9")
    data = {"figure": "F9", "png": out + ".png", "json": out + ".json", "x": 1}
    self.assertEqual(rep.portable(data), dict(data, png="f9.png", json="f9.json"))


class DamagedResultTest(tf.test.TestCase):

  def test_a_damaged_result_makes_the_run_unfinished_and_names_the_file(self):
    cfg, runs, _ = experiments_test.make_study(self, seeds=1, experiments=("T1",))
    sources = plan.source_plan(cfg, runs)
    run = runs[0]
    path = os.path.join(plan.run_dir(cfg, run), "result.json")
    self.assertTrue(plan.is_done(plan.run_dir(cfg, run)))
    for text, why in (("", "not valid JSON"), ("{trunc", "not valid JSON"), ("[]", "it holds no selected checkpoint"),
                      ("{}", "it holds no selected checkpoint")):
      write(path, text)
      self.assertFalse(plan.is_done(plan.run_dir(cfg, run)), text)
      self.assertFalse(plan.done_as_planned(cfg, run, sources), text)
      self.assertEqual(plan.run_differences(cfg, run, sources), [], text)  # Unfinished, not other settings.
      self.assertEqual(study.check_runs(cfg, runs, sources), {})
      self.assertIn(f"{path} is damaged: {why}", plan.result_problem(plan.run_dir(cfg, run)))

  def test_read_json_names_a_damaged_file_in_one_usage_error(self):
    path = os.path.join(self.create_tempdir().full_path, "x.json")
    write(path, '{"a": ')
    with self.assertRaisesRegex(UsageError, f"^{path} is damaged: not valid JSON"):
      rundir.read_json(path)
    with self.assertRaises(ValueError):  # Callers that recover catch it as before.
      rundir.read_json(path)
    self.assertEqual(rundir.read_json(path + ".absent", "default"), "default")

  def test_the_rerun_rescores_the_run_from_its_checkpoints(self):
    """A tiny real run: its result.json emptied, the study sets it aside (one line) and the trainer, resuming from
    the last checkpoint, trains no step and writes the same result again."""
    d = os.path.join(self.create_tempdir().full_path, "run")
    cfg = trainer.TrainConfig(dataset="synthetic_retina", model="cbr_tiny", image_size=16, batch_size=8,
                              train_steps=4, eval_every=2, learning_rate=0.002,
                              model_kwargs={"width_multiplier": 0.125},
                              data_kwargs={"num_train": 32, "num_val": 16, "num_test": 24})
    first, _ = printed(trainer.train, cfg, d)
    write(os.path.join(d, "result.json"), "")
    # transfusion-train alone: the run counts as unfinished, resumes and scores its selection again (one warning).
    alone, log = printed(trainer.train, cfg, d)
    self.assertRegex(log, r"result.json is damaged: not valid JSON \(.*\): the run counts as unfinished and resumes")
    self.assertEqual(alone["selected"]["step"], first["selected"]["step"])
    write(os.path.join(d, "result.json"), "")
    _, log = printed(study.set_aside_damaged_result, plan.Run("cbr_tiny", "random", 0), d)
    self.assertLen(log.strip().splitlines(), 1)
    self.assertIn(f"{d}/result.json is damaged", log)
    self.assertIn("cbr_tiny/random/seed0 counts as unfinished", log)
    self.assertTrue(os.path.exists(os.path.join(d, "result.json.damaged")))
    self.assertFalse(plan.is_done(d))
    again, log = printed(trainer.train, cfg, d)
    self.assertIn("resuming", log)
    self.assertNotIn("step 3", log)
    self.assertTrue(plan.is_done(d))
    self.assertEqual(again["selected"]["test"], first["selected"]["test"])
    self.assertEqual(again["selected"]["step"], first["selected"]["step"])


class DamagedPlanTest(tf.test.TestCase):

  def test_a_damaged_plan_is_one_line_naming_it(self):
    cfg, _, _ = experiments_test.make_study(self, seeds=1, experiments=("T1",))
    path = os.path.join(cfg.out, "plan.json")
    for text in ("{not json", "", "[]"):
      write(path, text)
      with self.assertRaisesRegex(UsageError, f"^{path} is damaged: .*re-run the study with --study_stage=all"):
        study.run_study(cfg, "report")
    os.remove(path)
    with self.assertRaisesRegex(UsageError, "holds no study"):
      study.run_study(cfg, "report")


if __name__ == "__main__":
  tf.test.main()
