"""Every flagfile in flags/ parses and plans (no data is read, nothing is trained)."""
import glob
import os

import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from transfusion_tf.cli import study as study_cli
from transfusion_tf.experiments import catalog, plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


class FlagfilesTest(tf.test.TestCase):

  def test_each_flagfile_plans(self):
    files = sorted(glob.glob(os.path.join(ROOT, "flags", "*.cfg")))
    names = {os.path.basename(f) for f in files}
    self.assertTrue({"quick.cfg", "demo.cfg", "retina_table1.cfg", "chexpert_table2.cfg",
                     "retina_small_data_table3.cfg", "representations.cfg", "transfusion.cfg", "answer.cfg",
                     "answer_gpu.cfg", "offline_paper.cfg", "converged.cfg"} <= names)
    os.environ["KERAS_HOME"] = self.create_tempdir().full_path  # No ImageNet files: "auto" falls back.
    try:
      for path in files:
        with flagsaver.flagsaver():
          FLAGS(["study", f"--flagfile={path}", f"--out={self.create_tempdir().full_path}"])
          cfg = study_cli.config_from_flags()
          runs = plan.plan_runs(cfg, catalog.experiments())
          sources = plan.source_plan(cfg, runs)
        self.assertNotEmpty(runs, path)
        self.assertTrue(all(s == "pretrain" for s in sources.values()), (path, sources))
        if path.endswith("retina_table1.cfg"):
          self.assertLen(runs, 36)  # 6 models x 2 inits x 3 seeds.
          self.assertEqual(cfg.base.image_size, 587)
        if path.endswith("demo.cfg"):
          self.assertEqual({r.model for r in runs}, {"cbr_small", "resnet50"})  # The paper's F4/F5 pair.
          self.assertLen(runs, 16)  # 2 models x (5 random, 3 pretrained): 20 minutes on the AVX2 host.
          self.assertEqual({r.seed for r in runs if r.init == "random"}, set(range(5)))  # F4 needs 5 random runs.
          self.assertEqual({r.init for r in runs}, {"random", "pretrained"})
          self.assertEqual(cfg.model_kwargs("resnet50").get("zero_init_residual"), True)
          self.assertNotIn("zero_init_residual", cfg.model_kwargs("cbr_small"))
        if path.endswith("converged.cfg"):
          # The demo's models trained to a plateau: a constant rate (a cosine run's tail is flat because its rate
          # decays), the plateau stop inside a budget the runs should not reach, speed read over the early steps.
          self.assertEqual({r.model for r in runs}, {"cbr_small", "resnet50"})
          self.assertLen(runs, 16)  # 2 models x (5 random, 3 pretrained).
          self.assertEqual(cfg.base.lr_schedule, "constant")
          self.assertIsNotNone(cfg.base.plateau_patience)
          self.assertLess(cfg.area_steps, cfg.base.train_steps)
          self.assertEqual(plan.run_config(cfg, next(r for r in runs if r.model == "resnet50"), None).learning_rate,
                           0.004)
          self.assertIn("convergence", cfg.experiments)
        if os.path.basename(path) in ("answer.cfg", "answer_gpu.cfg"):
          # A user's folder; every question of the answer section has its runs: random vs transfer for each model
          # of a range of sizes, Mean-Var, transfusion of the lowest stages, F3.
          self.assertEqual(cfg.base.dataset, "image_csv", path)
          self.assertTrue({"T2", "MV", "WT", "F3"} <= set(cfg.experiments), path)
          self.assertTrue({"cbr_tiny", "resnet50"} <= {r.model for r in runs}, path)
          inits = {r.init for r in runs}
          self.assertTrue({"random", "pretrained", "meanvar", "transfuse:conv1"} <= inits, (path, inits))
          self.assertGreaterEqual(cfg.seeds, 2, path)
          self.assertIsNone(cfg.base.convergence_auc, path)  # No known threshold on a task of one's own.
        if path.endswith("offline_paper.cfg"):
          # Every experiment, the paper's six models, the embedded retina at InceptionV3's minimum size.
          self.assertEqual(cfg.base.dataset, "synthetic_retina")
          self.assertEqual(set(cfg.experiments),
                           {"T1", "T3", "convergence", "F2", "F3", "F4", "F5", "MV", "WT", "SL", "GB"})
          self.assertEqual({r.model for r in runs}, set(PAPER_SETTINGS["retina_table1.cfg"]["models"]))
          self.assertEqual(cfg.base.image_size, 75)
          for m in cfg.models:  # F4 needs 5 random runs of its models; T1 compares them with 3 transfer runs.
            self.assertLen([r for r in runs if r.model == m and r.init == "random" and r.subset is None], 5, m)
            self.assertLen([r for r in runs if r.model == m and r.init == "pretrained" and r.subset is None], 3, m)
          inits = {r.init for r in runs}
          self.assertTrue({"meanvar", "transfuse:conv1", "transfuse:stem", "slim", "gabor_low", "gabor_high"}
                          <= inits, inits)
          self.assertEqual({r.subset for r in runs}, {None, 500})  # T3's small-data arms.
          self.assertLen(runs, 146)
          self.assertEqual(cfg.base.plateau_patience, 3)  # Runs stop at a plateau within the budget.
        if path.endswith("answer.cfg"):
          self.assertLen(runs, 16)  # 2 models x (random, pretrained, meanvar, transfused conv1) x 2 seeds.
          self.assertEqual(cfg.base.image_size, 64)
          self.assertEqual(cfg.model_kwargs("resnet50")["width_multiplier"], 0.25)
        if path.endswith("answer_gpu.cfg"):
          self.assertLen(runs, 45)  # 3 models x (random, pretrained, meanvar, 2 transfused prefixes) x 3 seeds.
          self.assertEqual(cfg.base.image_size, 224)  # The paper's CheXpert size.
          self.assertEqual({cfg.model_kwargs(m).get("width_multiplier", 1.0) for m in cfg.models}, {1.0})
    finally:
      del os.environ["KERAS_HOME"]


# PAPER.md: RETINA at 587 px with referable-AUC threshold 0.91 (section 4), CheXpert at 224 px (section 1), 3
# repetitions (section 3), T3's 5,000 images, and the models each table or figure uses (section 4).
PAPER_SETTINGS = {
    "retina_table1.cfg": {"image_size": 587, "seeds": 3, "threshold": 0.91, "models": set(
        ("resnet50", "inceptionv3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny")), "experiments": {"T1"}},
    "chexpert_table2.cfg": {"image_size": 224, "seeds": 3, "models": set(
        ("resnet50", "inceptionv3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny")), "experiments": {"T2"}},
    "retina_small_data_table3.cfg": {"image_size": 587, "seeds": 3, "threshold": 0.91, "subset": 5000,
                                     "models": {"resnet50", "cbr_larget", "cbr_largew"}, "experiments": {"T3"}},
    "representations.cfg": {"image_size": 587, "seeds": 3, "threshold": 0.91, "models_include": {
        "resnet50", "cbr_small"}, "experiments": {"F2", "F3", "F4", "F5"}},
    "transfusion.cfg": {"image_size": 587, "seeds": 3, "threshold": 0.91, "models_include": {"resnet50"},
                        "experiments": {"MV", "WT", "SL", "GB"}},
}


class PaperSettingsTest(tf.test.TestCase):

  def test_real_data_flagfiles_match_the_paper(self):
    configs = {}
    for name, want in PAPER_SETTINGS.items():
      with flagsaver.flagsaver():
        FLAGS(["study", f"--flagfile={os.path.join(ROOT, 'flags', name)}", "--out=/nonexistent"])
        cfg = study_cli.config_from_flags()
      configs[name] = cfg
      self.assertEqual(cfg.base.image_size, want["image_size"], name)
      self.assertEqual(cfg.seeds, want["seeds"], name)
      if "threshold" in want:
        self.assertEqual(cfg.base.convergence_auc, want["threshold"], name)
      if "subset" in want:
        self.assertEqual(cfg.small_data_subset, want["subset"], name)
      if "models" in want:
        self.assertEqual(set(cfg.models), want["models"], name)
      self.assertTrue(want.get("models_include", set()) <= set(cfg.models), name)
      self.assertTrue(want["experiments"] <= set(cfg.experiments), name)
      # The transfer source is the same in every table: no flagfile sets its own pretraining size.
      self.assertIsNone(cfg.pretrain_image_size, name)
    # T3's full-data runs are T1's: same size, budget, optimiser and schedule.
    t1, t3 = configs["retina_table1.cfg"].base, configs["retina_small_data_table3.cfg"].base
    for key in ("image_size", "train_steps", "optimizer", "learning_rate", "lr_schedule", "batch_size"):
      self.assertEqual(getattr(t1, key), getattr(t3, key), key)
