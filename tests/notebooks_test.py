"""Executes every Colab notebook top to bottom with nbclient (they reuse the session's quick study)."""
import glob
import os

import nbformat
import tensorflow as tf
from nbclient import NotebookClient

from tests import quick_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NotebooksTest(tf.test.TestCase):

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
