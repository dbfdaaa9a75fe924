"""Every flagfile in flags/ parses and plans (no data is read, nothing is trained)."""
import glob
import os
import subprocess
import sys

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FlagfilesTest(tf.test.TestCase):

  def test_each_flagfile_plans(self):
    files = sorted(glob.glob(os.path.join(ROOT, "flags", "*.cfg")))
    names = {os.path.basename(f) for f in files}
    self.assertTrue({"quick.cfg", "demo.cfg", "retina_table1.cfg", "chexpert_table2.cfg",
                     "retina_small_data_table3.cfg", "representations.cfg", "transfusion.cfg"} <= names)
    out = self.create_tempdir().full_path
    keras_home = self.create_tempdir().full_path  # No ImageNet files: "auto" must fall back to pretraining.
    for path in files:
      proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "study.py"), f"--flagfile={path}",
                             f"--out={out}/{os.path.basename(path)}", "--study_stage=plan"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, KERAS_HOME=keras_home))
      self.assertEqual(proc.returncode, 0, f"{path}: {proc.stderr[-2000:]}")
      self.assertIn("study plan:", proc.stdout)
      if "table1" in path:
        self.assertIn("study plan: 36 training runs", proc.stdout)  # 6 models x 2 inits x 3 seeds.
