"""One atomic writer: readers never see half a file, and a crash leaves the old file or none, never a torn one.

The bytes go to a temp file in the target's folder (same filesystem), are flushed, and the temp file is renamed over
the target with `os.replace`, which is atomic on POSIX and Windows. A failure removes the temp file.

  atomic_write(path, data)          bytes or str
  atomic_write_json(path, obj)      JSON with the keys in the order given (never sorted: readers take orders from it)
  with atomic_open(path) as f: ...  for writers that need a binary file object (np.save, matplotlib's savefig)
"""
import contextlib
import json
import os
import tempfile

import numpy as np


def _umask():
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
  """Yields a file object whose contents replace `path` when the block exits without an exception.

  mode: "wb" (default) or "w" (text, UTF-8). The temp file lives beside `path` as .tmp-<random><ext>, so a
  writer that infers the format from the name (savefig) still sees the right extension.
  """
  if mode not in ("wb", "w"):
    raise ValueError(f"atomic_open writes only, mode 'wb' or 'w', not {mode!r}")
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the usual permissions.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def atomic_write(path, data):
  """Writes `data` (bytes, or str encoded as UTF-8) to `path` atomically. Returns `path`."""
  with atomic_open(path, "wb") as f:
    f.write(data.encode("utf-8") if isinstance(data, str) else data)
  return path


def json_default(o):
  """JSON fallback for numpy scalars and arrays (as Python numbers and lists); anything else as its str."""
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


def atomic_write_json(path, obj, indent=1):
  """Writes `obj` as JSON to `path` atomically, keys in the order given (dicts keep insertion order). Returns `path`."""
  return atomic_write(path, json.dumps(obj, indent=indent, default=json_default) + "\n")
