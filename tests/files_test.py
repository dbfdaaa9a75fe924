"""Tests for transfusion_tf/files.py: the one atomic writer."""
import json
import os

from matplotlib.figure import Figure
import numpy as np
import pytest

from transfusion_tf import files


def test_json_keeps_key_order_and_numpy(tmp_path):
  path = tmp_path / "r.json"
  obj = {"conv1": 1, "block1": np.float32(0.5), "mixed10": np.arange(2), "mixed2": None}
  files.atomic_write_json(str(path), obj)
  back = json.loads(path.read_text())
  assert list(back) == ["conv1", "block1", "mixed10", "mixed2"]  # Never sorted: readers take stage orders from it.
  assert back["block1"] == 0.5 and back["mixed10"] == [0, 1]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
  path = tmp_path / "a.txt"
  files.atomic_write(str(path), "old")
  with pytest.raises(RuntimeError):
    with files.atomic_open(str(path)) as f:
      f.write(b"half")
      raise RuntimeError("writer died")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["a.txt"]


def test_file_object_writers(tmp_path):
  npy, png = tmp_path / "x.npy", tmp_path / "f.png"
  with files.atomic_open(str(npy)) as f:
    np.save(f, np.arange(3))
  np.testing.assert_array_equal(np.load(npy), np.arange(3))
  fig = Figure(figsize=(1, 1))
  fig.add_subplot().plot([0, 1])
  with files.atomic_open(str(png)) as f:
    fig.savefig(f, format="png")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(tmp_path)) == ["f.png", "x.npy"]
  with pytest.raises(ValueError):
    with files.atomic_open(str(npy), "ab"):
      pass


def test_written_files_get_the_usual_permissions(tmp_path):
  # mkstemp makes private (0600) files; results must stay readable like any file the user writes.
  path = tmp_path / "r.json"
  files.atomic_write_json(str(path), {"a": 1})
  mask = os.umask(0o022)
  os.umask(mask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
