"""What the dataset readers share: file records, up-front image checks, patient splits and codes, subsets, TFDS loading.

No TensorFlow at import time: the synthetic generator's worker processes import this module for SPLITS.

Bad images. Files are checked before any tf.data op runs (`check_image_files`): existence, readability, a known
image header and, for JPEG and PNG, the end marker that a truncated download lacks. `validate_images="full"` also
decodes every file once with PIL (threads) and caches the verdicts in a JSON sidecar keyed by size and mtime.
`on_bad_image="fail"` raises a UsageError naming the first bad file; "skip" drops them with one counted warning.
Bad CSV rows go through `report_bad_rows` with the same two policies.
"""
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import os
import re

from absl import logging
import numpy as np

from transfusion_tf import files
from transfusion_tf.errors import UsageError

SPLITS = ("train", "validation", "test")
# What a CSV's split column may hold (lower-cased) -> the split it names.
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "test": "test"}
ON_BAD_IMAGE = ("fail", "skip")
VALIDATE_LEVELS = ("quick", "full", "off")
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "transfusion_tf")


# ---------------------------------------------------------------------------------------------------------------
# File records, labels CSVs and up-front checks.


@dataclasses.dataclass
class FileRecords:
  """An indexable image-folder split: one row per image.

  paths: (N,) str absolute paths. labels: (N,) int grades / class ids, or (N, 5) int8 raw CheXpert labels in
  {-1, 0, 1}. patient_ids: (N,) str. rows: (N,) int line numbers in `origin` (the CSV), for messages.
  formats: (N,) str image formats found by `check_image_files` ("" until checked). extra: more (N,) arrays,
  e.g. "split" or "view". has_patients: False where patient_ids are only image ids (APTOS: each image is its own
  patient), so the test scoring treats every image as its own cluster and says the data has no patient ids.
  """
  paths: np.ndarray
  labels: np.ndarray
  patient_ids: np.ndarray
  origin: str = ""
  rows: np.ndarray = None
  formats: np.ndarray = None
  extra: dict = dataclasses.field(default_factory=dict)
  has_patients: bool = True

  def __post_init__(self):
    n = len(self.paths)
    if self.rows is None:
      self.rows = np.arange(n)
    if self.formats is None:
      self.formats = np.full(n, "", dtype=object)

  def __len__(self):
    return len(self.paths)

  def take(self, indices):
    """The records at `indices` (an int array or a boolean mask), as a new FileRecords."""
    idx = np.asarray(indices)
    return FileRecords(paths=self.paths[idx], labels=self.labels[idx], patient_ids=self.patient_ids[idx],
                       origin=self.origin, rows=self.rows[idx], formats=self.formats[idx],
                       extra={k: v[idx] for k, v in self.extra.items()}, has_patients=self.has_patients)


def locate_csv(data_dir, labels_csv, names):
  """The labels CSV of a folder dataset: `labels_csv` as given (relative to the cwd, then to data_dir; missing is a
  UsageError), else the first of `names` in data_dir, else the only CSV there. Returns (absolute path or None, the
  sorted CSV file names in data_dir) so that each reader words its own "none found" line."""
  if labels_csv:
    for candidate in (labels_csv, os.path.join(data_dir or "", labels_csv)):
      if os.path.isfile(candidate):
        return os.path.abspath(candidate), []
    raise UsageError(f"--labels_csv={labels_csv} not found (also looked in --data_dir={data_dir})")
  found = sorted(f for f in os.listdir(data_dir) if f.lower().endswith(".csv"))
  for name in names:
    if os.path.isfile(os.path.join(data_dir, name)):
      return os.path.abspath(os.path.join(data_dir, name)), found
  if len(found) == 1:
    return os.path.abspath(os.path.join(data_dir, found[0])), found
  return None, found


def read_csv_rows(csv_path, what="labels CSV"):
  """Reads a CSV written as UTF-8 (a byte-order mark is allowed): (fieldnames, [(line number, row dict), ...]).

  A file in another encoding (Latin-1, UTF-16, ...) raises a UsageError naming the file, the encoding expected
  and the first bad byte, instead of guessing: a wrong guess would silently change image ids and labels.
  """
  try:
    with open(csv_path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise UsageError(f"{what} {csv_path} cannot be read: {e.strerror or e}") from None
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise UsageError(f"{what} {csv_path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); save it as "
                     f"UTF-8, e.g. iconv -f latin1 -t utf-8 OLD.csv > NEW.csv") from None
  reader = csv.DictReader(io.StringIO(text, newline=""))
  fieldnames = reader.fieldnames
  rows = [(reader.line_num, row) for row in reader]
  return fieldnames, rows


def check_choice(value, choices, flag):
  if value not in choices:
    raise UsageError(f"--{flag}={value!r} is not one of {', '.join(choices)}")
  return value


def report_bad_rows(bad_rows, total, csv_path, on_bad_image):
  """CSV rows with bad values: raise a UsageError naming the first (on_bad_image="fail"), or log a counted warning.

  bad_rows: messages like "<csv> row 7: label 9 is not a 0-4 grade"; total: rows read from `csv_path`.
  """
  if not bad_rows:
    return
  if on_bad_image == "fail":
    more = f" ({len(bad_rows) - 1} more bad rows)" if len(bad_rows) > 1 else ""
    raise UsageError(f"{bad_rows[0]}{more}; fix the CSV or pass --on_bad_image=skip")
  logging.warning("skipped %d of %d rows of %s with bad values (first: %s)", len(bad_rows), total, csv_path,
                  bad_rows[0])


def sniff_format(head):
  """Image format from the first bytes of a file: "jpeg", "png", "gif", "bmp", "tiff", "webp" or None."""
  if head.startswith(b"\xff\xd8\xff"):
    return "jpeg"
  if head.startswith(b"\x89PNG\r\n\x1a\n"):
    return "png"
  if head[:6] in (b"GIF87a", b"GIF89a"):
    return "gif"
  if head.startswith(b"BM"):
    return "bmp"
  if head[:4] in (b"II*\x00", b"MM\x00*"):
    return "tiff"
  if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
    return "webp"
  return None


def _quick_check(path):
  """(format or None, reason or "") from the header and, for JPEG/PNG, the end marker. Reads two small chunks."""
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      if size == 0:
        return None, "empty file"
      head = f.read(16)
      fmt = sniff_format(head)
      if fmt is None:
        return None, "not a PNG/JPEG/TIFF/BMP/GIF/WebP image (unrecognised header bytes)"
      if fmt in ("jpeg", "png"):
        f.seek(max(0, size - 1024))
        tail = f.read()
        if fmt == "jpeg" and b"\xff\xd9" not in tail:
          return fmt, "truncated JPEG (no end-of-image marker)"
        if fmt == "png" and b"IEND" not in tail:
          return fmt, "truncated PNG (no IEND chunk)"
      return fmt, ""
  except FileNotFoundError:
    return None, "file not found"
  except IsADirectoryError:
    return None, "is a directory, not an image file"
  except OSError as e:
    return None, f"unreadable ({e.strerror or e})"


def _full_check(path):
  """_quick_check, then a complete decode with PIL (JPEG at 1/8 scale: same entropy decoding, less IDCT)."""
  fmt, reason = _quick_check(path)
  if reason:
    return fmt, reason
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as im:
      im.verify()
    with Image.open(path) as im:
      if im.format == "JPEG":
        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
      im.load()
  except Exception as e:  # pylint: disable=broad-except
    return fmt, f"cannot be decoded ({type(e).__name__}: {e})"
  return fmt, ""


def _sidecar_path(cache_dir, paths):
  digest = hashlib.sha1("\n".join(map(str, paths[:1000])).encode() + str(len(paths)).encode()).hexdigest()[:16]
  return os.path.join(cache_dir or DEFAULT_CACHE_DIR, "image_checks", f"{digest}.json")


def check_image_files(records, on_bad_image="fail", level="quick", cache_dir=None, what="image"):
  """Checks every file of `records` (FileRecords) once, before tf.data sees it. Returns the kept records.

  level: "quick" (exists, readable, known header, JPEG/PNG end marker; ~20 us a file), "full" (also decode every
  file with PIL in a thread pool; verdicts are cached in a JSON sidecar under cache_dir keyed by file size and
  mtime, so only new or changed files are decoded again) or "off" (existence only).
  on_bad_image: "fail" raises a UsageError naming the first bad file, its CSV row and the count of bad files;
  "skip" drops them and logs one warning with the count.
  """
  check_choice(on_bad_image, ON_BAD_IMAGE, "on_bad_image")
  check_choice(level, VALIDATE_LEVELS, "validate_images")
  paths = [str(p) for p in records.paths]
  n = len(paths)
  results = [None] * n
  if level == "off":
    for i, p in enumerate(paths):
      results[i] = (None, "") if os.path.isfile(p) else (None, "file not found")
  else:
    check = _quick_check if level == "quick" else _full_check
    cached, sidecar = {}, None
    if level == "full":
      sidecar = _sidecar_path(cache_dir, paths)
      try:
        with open(sidecar, encoding="utf-8") as f:
          cached = json.load(f)
      except (OSError, ValueError):
        cached = {}
    todo = []
    stats = [None] * n
    for i, p in enumerate(paths):
      if level == "full":
        try:
          st = os.stat(p)
          stats[i] = [st.st_size, st.st_mtime_ns]
        except OSError:
          stats[i] = None
        hit = cached.get(p)
        if hit is not None and stats[i] is not None and hit[:2] == stats[i]:
          results[i] = (hit[2] or None, hit[3])
          continue
      todo.append(i)
    workers = min(32, 4 * (os.cpu_count() or 1)) if level == "quick" else (os.cpu_count() or 1)
    if len(todo) > 64:
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for i, res in zip(todo, pool.map(check, [paths[i] for i in todo], chunksize=64)):
          results[i] = res
    else:
      for i in todo:
        results[i] = check(paths[i])
    if sidecar and todo:
      for i in todo:
        if stats[i] is not None:
          cached[paths[i]] = stats[i] + [results[i][0] or "", results[i][1]]
      try:
        os.makedirs(os.path.dirname(sidecar), exist_ok=True)
        files.atomic_write_json(sidecar, cached, indent=None)
      except OSError as e:
        logging.warning("could not write the image-check cache %s: %s", sidecar, e)
  bad = [i for i in range(n) if results[i][1]]
  formats = np.array([r[0] or "" for r in results], dtype=object)
  records.formats = formats
  if not bad:
    return records
  first = bad[0]
  where = f" (row {records.rows[first]} of {records.origin})" if records.origin else ""
  if on_bad_image == "fail":
    more = f"; {len(bad) - 1} more bad {what} files" if len(bad) > 1 else ""
    raise UsageError(f"{what} file {paths[first]}{where}: {results[first][1]}{more}. Replace or remove it, or "
                     f"pass --on_bad_image=skip to leave bad files out")
  logging.warning("skipped %d of %d %s files that are missing or unreadable (first: %s%s: %s)", len(bad), n, what,
                  paths[first], where, results[first][1])
  keep = np.ones(n, bool)
  keep[bad] = False
  return records.take(keep)


# ---------------------------------------------------------------------------------------------------------------
# Splits and subsets.


def _strata(labels):
  labels = np.asarray(labels)
  if labels.ndim == 1:
    _, inverse = np.unique(labels, return_inverse=True)
  else:
    _, inverse = np.unique(labels.reshape(len(labels), -1), axis=0, return_inverse=True)
  return np.asarray(inverse).reshape(-1)


def subset_indices(labels, n, seed):
  """A seeded subset of `n` indices, stratified by label; sorted ascending.

  labels: (N,) ints (grades, class ids) -> strata are the values; (N, K) (CheXpert) -> strata are label patterns.
  Each stratum gets its proportional share (largest-remainder rounding, ties broken by the seed), so the subset
  has exactly n items and the label mix of the whole.
  """
  labels = np.asarray(labels)
  total = len(labels)
  n = int(n)
  if n <= 0:
    raise UsageError(f"a subset needs at least 1 example, got {n}")
  if n > total:
    raise UsageError(f"asked for a subset of {n} examples but the split has only {total}")
  if n == total:
    return np.arange(total)
  rng = np.random.default_rng(seed)
  strata = _strata(labels)
  counts = np.bincount(strata)
  quota = counts * (n / total)
  alloc = np.floor(quota).astype(int)
  short = n - alloc.sum()
  if short:
    order = np.lexsort((rng.random(len(counts)), -(quota - alloc)))
    alloc[order[:short]] += 1
  chosen = []
  for k, m in enumerate(alloc):
    if m:
      members = np.flatnonzero(strata == k)
      chosen.append(rng.choice(members, size=m, replace=False))
  return np.sort(np.concatenate(chosen))


def patient_split(patient_ids, fractions, seed, strata=None):
  """Splits by patient, never by image: returns one index array per fraction, then the rest.

  Patients are drawn in a seeded order; each part takes whole patients until it holds at least its fraction of
  the images (parts are never empty when fraction > 0 and patients remain).
  strata: optional (N,) per-image labels (ints, or (N, K) label patterns); a patient's stratum is its first
  image's. The seeded order then interleaves the strata evenly (each patient at (its seeded rank in its stratum +
  a seeded offset) / the stratum's size), so every part gets each stratum's share, give or take one patient,
  and a rare class is not left out of a small test split by chance.
  """
  patient_ids = np.asarray(patient_ids)
  uniq, first, inverse = np.unique(patient_ids, return_index=True, return_inverse=True)
  inverse = inverse.reshape(-1)
  counts = np.bincount(inverse, minlength=len(uniq))
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(uniq))
  if strata is not None:
    patient_strata = _strata(np.asarray(strata))[first]
    position = np.empty(len(uniq))
    for k in np.unique(patient_strata):
      members = order[patient_strata[order] == k]  # This stratum's patients, in the seeded order.
      position[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = order[np.argsort(position[order], kind="stable")]
  total = len(patient_ids)
  parts, pos = [], 0
  for frac in fractions:
    target = int(round(frac * total))
    taken, got = [], 0
    while pos < len(order) and (got < target or (frac > 0 and not taken)):
      taken.append(order[pos])
      got += counts[order[pos]]
      pos += 1
    parts.append(np.flatnonzero(np.isin(inverse, taken)))
  parts.append(np.flatnonzero(np.isin(inverse, order[pos:])))
  return parts


_NUMBERED_ID = re.compile(r"^(\D*?)(\d+)$")


def patient_codes(patient_ids):
  """Patient ids (N,) (str or int) -> int64 (N,) codes: equal ids get equal codes, different ids different ones.

  Integer ids (the synthetic generator's) stay as they are. Strings that are one common prefix plus a number keep
  that number, so a code can be traced back: EyePACS "10" -> 10, CheXpert "patient00042" -> 42. Any other set of
  strings (mixed forms, or numbers that would collide, e.g. "7" and "007") gets each id's rank among the distinct
  ids, sorted.
  """
  ids = np.asarray(patient_ids)
  if ids.ndim != 1:
    raise ValueError(f"patient ids must be one per image (N,), got shape {ids.shape}")
  if ids.dtype.kind in "iu":
    return ids.astype(np.int64)
  strings = np.array([str(p) for p in ids.tolist()], dtype=object)
  distinct = sorted(set(strings.tolist()))
  matches = [_NUMBERED_ID.match(p) for p in distinct]
  if distinct and all(matches) and len({m.group(1) for m in matches}) == 1:
    numbers = [int(m.group(2)) for m in matches]
    if len(set(numbers)) == len(numbers) and max(numbers) < 2 ** 62:
      code = dict(zip(distinct, numbers))
      return np.array([code[p] for p in strings.tolist()], np.int64)
  code = {p: i for i, p in enumerate(distinct)}
  return np.array([code[p] for p in strings.tolist()], np.int64)


def cap_records(records, cap, seed, split):
  """records, or a stratified seeded subset of `cap` of them (the seed is offset by the split's index)."""
  if cap is None or int(cap) >= len(records):
    return records
  return records.take(subset_indices(records.labels, int(cap), seed + SPLITS.index(split)))


# ---------------------------------------------------------------------------------------------------------------
# TFDS.


def load_tfds(name, split, config, data_dir, manual_dir, required, flag_hint, decode=False):
  """A TFDS split as a dataset of example dicts (image left encoded unless decode) and its size.

  Fails fast, before TFDS touches the network: an unprepared dataset needs --tfds_manual_dir holding `required`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    builder = tfds.builder(name, config=config, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"TFDS cannot build {name}{'/' + config if config else ''}: {e}") from e
  if not builder.is_prepared():
    if not manual_dir:
      raise UsageError(f"--dataset={flag_hint}: TFDS {name} is not prepared under {builder.data_dir}; download it by "
                       f"hand and pass --tfds_manual_dir=DIR holding {', '.join(required)} (or --tfds_data_dir "
                       f"where it is already prepared)")
    missing = [r for r in required if not os.path.exists(os.path.join(manual_dir, r))]
    if missing:
      raise UsageError(f"--tfds_manual_dir={manual_dir} lacks {', '.join(missing)} for TFDS {name}; put the "
                       f"manually downloaded files there")
    try:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception as e:  # pylint: disable=broad-except
      raise UsageError(f"preparing TFDS {name} from {manual_dir} failed: {type(e).__name__}: {e}") from e
  decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"TFDS {name} has no split {split!r}: {e}") from e
  size = int(ds.cardinality())
  if size < 0:
    size = int(builder.info.splits[split].num_examples)
  if size == 0:
    raise UsageError(f"TFDS {name} split {split!r} is empty")
  return ds, size


def tfds_strings(ds):
  """A finite dataset of scalar tf.string (e.g. TFDS `name` features) -> list of str, in order (one batched pass)."""
  out = []
  for batch in ds.batch(4096).as_numpy_iterator():
    out.extend(b.decode("utf-8", "replace") for b in batch)
  return out
