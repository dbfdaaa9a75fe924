"""transfusion_tf/files.py: the one atomic writer."""
import json
import os
import stat

import tensorflow as tf

from transfusion_tf import files


class FilesTest(tf.test.TestCase):

  def test_json_keeps_key_order_and_usual_permissions(self):
    path = os.path.join(self.create_tempdir().full_path, "a.json")
    files.atomic_write_json(path, {"z": 1, "conv1": 2, "block4": 3})
    self.assertEqual(list(json.load(open(path))), ["z", "conv1", "block4"])
    mask = os.umask(0o022)
    os.umask(mask)
    self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o666 & ~mask)

  def test_failure_leaves_the_old_file_and_no_temp(self):
    folder = self.create_tempdir().full_path
    path = os.path.join(folder, "r.txt")
    files.atomic_write(path, "old")
    with self.assertRaises(RuntimeError):
      with files.atomic_open(path, "w") as f:
        f.write("half")
        raise RuntimeError("killed")
    self.assertEqual(open(path).read(), "old")
    self.assertEqual(os.listdir(folder), ["r.txt"])
