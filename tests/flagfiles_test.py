"""Every flagfile in flags/ parses and plans (no data is read, nothing is trained)."""
import glob
import os

import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from transfusion_tf.cli import study as study_cli
from transfusion_tf.experiments import study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


class FlagfilesTest(tf.test.TestCase):

  def test_each_flagfile_plans(self):
    files = sorted(glob.glob(os.path.join(ROOT, "flags", "*.cfg")))
    names = {os.path.basename(f) for f in files}
    self.assertTrue({"quick.cfg", "demo.cfg", "retina_table1.cfg", "chexpert_table2.cfg",
                     "retina_small_data_table3.cfg", "representations.cfg", "transfusion.cfg"} <= names)
    os.environ["KERAS_HOME"] = self.create_tempdir().full_path  # No ImageNet files: "auto" falls back.
    try:
      for path in files:
        with flagsaver.flagsaver():
          FLAGS(["study", f"--flagfile={path}", f"--out={self.create_tempdir().full_path}"])
          cfg = study_cli.config_from_flags()
          runs = study.plan_runs(cfg)
          sources = study.source_plan(cfg, runs)
        self.assertNotEmpty(runs, path)
        self.assertTrue(all(s == "pretrain" for s in sources.values()), (path, sources))
        if path.endswith("retina_table1.cfg"):
          self.assertLen(runs, 36)  # 6 models x 2 inits x 3 seeds.
          self.assertEqual(cfg.base.image_size, 587)
        if path.endswith("demo.cfg"):
          self.assertEqual({r.model for r in runs}, {"cbr_tiny", "cbr_small", "resnet50"})
          self.assertEqual({r.seed for r in runs}, {0, 1})
    finally:
      del os.environ["KERAS_HOME"]
