"""Any labelled image folder (dataset `image_csv`): images under --data_dir, one row per image in --labels_csv.

CSV layout (a header row, UTF-8):
  image column     the image's path relative to --data_dir (an absolute path also works), extension included.
                   --image_column; default: the first of image, path, image_path, filename, file, image_id.
  label column(s)  either one column of integer classes (0/1: a binary task; 0..K-1 with K >= 3: K classes) or
                   several 0/1 columns (multi-label). --label_columns=a,b,c (or --label_column=a); default: the
                   first of label, class, target, diagnosis; without one, every other column when all of them
                   hold only 0 and 1. --num_classes=K fixes K (a larger label is then a bad row); by default K is
                   the largest label + 1 and every class 0..K-1 must occur.
  patient column   optional: --patient_column; default patient_id, patient, subject_id or subject when present.
                   Without one each image is its own patient (and the test CIs say the data has no patient ids).
  split column     optional: --split_column; default `split` when present; values train / training, val / valid /
                   validation, test (any case). Without one: a seeded split by patient (--data_split_seed) holding
                   out --val_fraction and --test_fraction (default 0.15 each) of the images, stratified by each
                   patient's first label so every split gets each class's share.

Tasks (tasks.image_task): binary -> one sigmoid, primary metric auc_<label column>; classes -> softmax, one-vs-rest
AUC per class (auc_<column>_<k>), primary auc_mean (their macro mean); multi-label -> one sigmoid per column,
primary auc_mean over the columns. Every class or label needs positive and negative images in every split
(pipeline.check_classes). The CSV alone decides the task, so `task_from_options` reads it without touching images.

Images (pipeline._decode_tf): PNG (8- or 16-bit) and JPEG, also BMP and GIF (TIFF and WebP through PIL, as for
retina_csv). Grayscale is replicated to RGB, an alpha channel dropped; 16-bit values are scaled by 65535 (the
dtype's maximum, not the image's own); every image is resized, aspect not kept, to --image_size.

Bad input (one line naming the file, row, column or value; exit 2; nothing written): a missing folder or CSV, a
missing column, a label that is not an integer class (or not 0/1), a missing or corrupt image, an empty split, a
class absent from a split. --on_bad_image=skip leaves bad rows and images out with a counted warning instead.
"""
import dataclasses
import functools
import os

from absl import logging
import numpy as np

from transfusion_tf.data import records as records_lib
from transfusion_tf.data import sources as sources_lib
from transfusion_tf.data import tasks as tasks_lib
from transfusion_tf.errors import UsageError

IMAGE_COLUMNS = ("image", "path", "image_path", "filename", "file", "image_id")
LABEL_COLUMNS = ("label", "class", "target", "diagnosis")
PATIENT_COLUMNS = ("patient_id", "patient", "subject_id", "subject")
SPLIT_COLUMNS = ("split",)
CSV_NAMES = ("labels.csv",)
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15


@dataclasses.dataclass(frozen=True)
class Table:
  """A labels CSV read and checked (images not yet): the task it defines and one record per usable row.

  kind: tasks.IMAGE_KINDS. class_names: as tasks.image_task takes them. records: FileRecords with labels int32 (N,)
  (classes) or int8 (N, L) in {0, 1} (binary: L = 1; multi-label), extra["split"] when the CSV has a split column.
  columns: {"image", "labels", "patient", "split"} -> the CSV column used (None: none).
  """
  kind: str
  class_names: tuple
  records: records_lib.FileRecords
  columns: dict

  @property
  def task(self):
    return tasks_lib.image_task(self.kind, self.class_names)


def find_csv(data_dir, labels_csv=None):
  """The labels CSV: `labels_csv` as given (relative to the cwd, then to data_dir), else labels.csv or the only CSV
  in data_dir. Also checks data_dir. Returns (absolute data_dir, absolute CSV path)."""
  if not data_dir:
    raise UsageError("--dataset=image_csv needs --data_dir=DIR (the folder the image paths are relative to) and "
                     "--labels_csv=FILE")
  if not os.path.isdir(data_dir):
    raise UsageError(f"--data_dir={data_dir} is not a folder; it should hold the images the labels CSV names")
  data_dir = os.path.abspath(data_dir)
  path, found = records_lib.locate_csv(data_dir, labels_csv, CSV_NAMES)
  if path is not None:
    return data_dir, path
  raise UsageError(f"no labels CSV given and {'several' if found else 'none'} in --data_dir={data_dir}"
                   f"{' (' + ', '.join(found) + ')' if found else ''}; pass --labels_csv=FILE")


def _pick(fields, given, candidates, flag, csv_path, required):
  """The column named by --flag (must exist; exact, then any case), else the first candidate present, else None
  (or a UsageError when `required`)."""
  lower = {f.lower(): f for f in fields}
  if given:
    if given in fields:
      return given
    if given.lower() in lower:
      return lower[given.lower()]
    raise UsageError(f"labels CSV {csv_path} has no column {given!r} (--{flag}); its columns: {', '.join(fields)}")
  for c in candidates:
    if c in lower:
      return lower[c]
  if required:
    raise UsageError(f"labels CSV {csv_path} has no {flag.replace('_column', '')} column (looked for "
                     f"{', '.join(candidates)}); its columns: {', '.join(fields) or '(none)'}; name it with --{flag}")
  return None


def _int_value(raw):
  """'2', '2.0' -> 2; anything else (blank, '1.5', 'yes', '-1') -> None."""
  try:
    value = float(raw)
  except ValueError:
    return None
  if not np.isfinite(value) or value != int(value) or value < 0:
    return None
  return int(value)


def _label_columns(fields, rows, label_column, label_columns, taken, csv_path):
  """The label columns: --label_columns / --label_column, else a known name, else every column not taken (image,
  patient, split) when all of them hold only 0 and 1."""
  given = list(label_columns or ())
  if label_column:
    if given and given != [label_column]:
      raise UsageError(f"--label_column={label_column} and --label_columns={','.join(given)} disagree; give one of "
                       "them")
    given = [label_column]
  if given:
    return [_pick(fields, c.strip(), (), "label_columns", csv_path, True) for c in given]
  known = _pick(fields, None, LABEL_COLUMNS, "label_columns", csv_path, False)
  if known:
    return [known]
  rest = [f for f in fields if f not in taken]
  other = next(((c, line, row.get(c, "")) for line, row in rows for c in rest
                if row.get(c, "") not in ("0", "1", "0.0", "1.0")), None)
  if rest and other is None:
    return rest
  why = f" ({other[0]} holds {other[2]!r} on row {other[1]})" if other else ""
  raise UsageError(f"labels CSV {csv_path} has no label column (looked for {', '.join(LABEL_COLUMNS)}, or other "
                   f"columns holding only 0 and 1){why}; its columns: {', '.join(fields)}; name them with "
                   "--label_columns=COLUMN[,COLUMN...]")


def _parse_labels(rows, label_cols, num_classes, csv_path):
  """(labels per usable row or None, bad-row messages): ints for one column, 0/1 lists for several."""
  out, bad = [], []
  single = len(label_cols) == 1
  for line, row in rows:
    values = []
    for c in label_cols:
      raw = (row.get(c) or "").strip()
      v = _int_value(raw)
      if single and (v is None or (num_classes is not None and v >= num_classes)):
        what = f"a class 0-{num_classes - 1}" if num_classes else "an integer class 0, 1, 2, ..."
        bad.append(f"{csv_path} row {line}: {c}={raw!r} is not {what}")
        break
      if not single and v not in (0, 1):
        bad.append(f"{csv_path} row {line}: {c}={raw!r} is not 0 or 1 (several label columns are multi-label)")
        break
      values.append(v)
    out.append(values if len(values) == len(label_cols) else None)
  return out, bad


def _cache_key(options):
  data_dir, csv_path = find_csv(options.data_dir, options.labels_csv)
  st = os.stat(csv_path)
  return (data_dir, csv_path, st.st_size, st.st_mtime_ns, options.image_column, options.label_column,
          tuple(options.label_columns or ()), options.patient_column, options.split_column, options.num_classes,
          options.on_bad_image)


def read_table(options):
  """Reads and checks --labels_csv (options: a registry.DataOptions) into a `Table`; images are not looked at.

  Cached on the CSV's path, size and mtime and the column options: the registry asks for the task and then the
  builder for the records, and a study's report asks again."""
  return _read_table(*_cache_key(options))


@functools.lru_cache(maxsize=8)
def _read_table(data_dir, csv_path, _size, _mtime, image_column, label_column, label_columns, patient_column,
                split_column, num_classes, on_bad_image):
  records_lib.check_choice(on_bad_image, records_lib.ON_BAD_IMAGE, "on_bad_image")
  fieldnames, raw_rows = records_lib.read_csv_rows(csv_path)
  fields = [f.strip() for f in fieldnames or [] if f is not None]
  if not fields:
    raise UsageError(f"labels CSV {csv_path} is empty; it needs a header row naming its columns")
  rows = [(line, {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)})
          for line, row in raw_rows]
  if not rows:
    raise UsageError(f"labels CSV {csv_path} has a header but no rows")
  if num_classes is not None and int(num_classes) < 2:
    raise UsageError(f"--num_classes={num_classes} must be at least 2")
  image_col = _pick(fields, image_column, IMAGE_COLUMNS, "image_column", csv_path, True)
  patient_col = _pick(fields, patient_column, PATIENT_COLUMNS, "patient_column", csv_path, False)
  split_col = _pick(fields, split_column, SPLIT_COLUMNS, "split_column", csv_path, False)
  taken = {image_col, patient_col, split_col}
  label_cols = _label_columns(fields, rows, label_column, label_columns, taken, csv_path)
  clash = [c for c in label_cols if c in taken]
  if clash:
    raise UsageError(f"labels CSV {csv_path}: column {clash[0]!r} cannot be a label column and the image, patient "
                     "or split column at once")

  labels, bad = _parse_labels(rows, label_cols, num_classes, csv_path)
  paths, kept_labels, patients, lines, splits = [], [], [], [], []
  for (line, row), value in zip(rows, labels):
    if value is None:
      continue
    rel = row.get(image_col, "")
    if not rel:
      bad.append(f"{csv_path} row {line}: empty {image_col}")
      continue
    patient = row.get(patient_col, "") if patient_col else rel
    if not patient:
      bad.append(f"{csv_path} row {line}: empty {patient_col}")
      continue
    if split_col:
      split = records_lib.SPLIT_ALIASES.get(row.get(split_col, "").lower())
      if split is None:
        bad.append(f"{csv_path} row {line}: {split_col}={row.get(split_col, '')!r} is not train, val(idation) or "
                   "test")
        continue
      splits.append(split)
    paths.append(os.path.join(data_dir, rel))
    kept_labels.append(value)
    patients.append(patient)
    lines.append(line)
  bad.sort(key=lambda msg: int(msg.split(" row ", 1)[1].split(":", 1)[0]))
  records_lib.report_bad_rows(bad, len(rows), csv_path, on_bad_image)
  if not paths:
    raise UsageError(f"labels CSV {csv_path} has no usable rows")

  if len(label_cols) == 1:
    values = np.array([v[0] for v in kept_labels], np.int64)
    k = int(num_classes) if num_classes is not None else int(values.max()) + 1
    if k < 2:
      raise UsageError(f"labels CSV {csv_path}: column {label_cols[0]} holds only 0s, one class, so there is nothing "
                       "to learn and no AUC")
    counts = np.bincount(values, minlength=k)
    absent = [str(c) for c in range(k) if counts[c] == 0]
    if absent:
      top = int(values.max())
      where = lines[int(np.flatnonzero(values == top)[0])]
      raise UsageError(f"labels CSV {csv_path}: column {label_cols[0]} has no row of class {', '.join(absent)} of "
                       f"0-{k - 1} (the largest label, {top}, is on row {where}: a typo?); classes must be numbered "
                       "0..K-1, each with images")
    if k == 2:
      kind, names, arr = "binary", (label_cols[0],), values.astype(np.int8).reshape(-1, 1)
    else:
      kind, names, arr = "multiclass", tuple(f"{label_cols[0]}_{c}" for c in range(k)), values.astype(np.int32)
  else:
    arr = np.array(kept_labels, np.int8)
    kind, names = "multilabel", tuple(label_cols)
    lacking = [c for j, c in enumerate(label_cols) if arr[:, j].min() == arr[:, j].max()]
    if lacking:
      raise UsageError(f"labels CSV {csv_path}: label column {lacking[0]} holds only "
                       f"{int(arr[0, label_cols.index(lacking[0])])}s, so its AUC is undefined; drop it from "
                       "--label_columns")
  extra = {"split": np.array(splits, dtype=object)} if split_col else {}
  records = records_lib.FileRecords(paths=np.array(paths, dtype=object), labels=arr,
                                    patient_ids=np.array(patients, dtype=object), origin=csv_path,
                                    rows=np.array(lines), extra=extra, has_patients=bool(patient_col))
  tasks_lib.image_task(kind, names)  # Label names that clash as metric names fail here, before any image is read.
  return Table(kind=kind, class_names=names, records=records,
               columns={"image": image_col, "labels": tuple(label_cols), "patient": patient_col, "split": split_col})


def task_from_options(options):
  """Registry task hook: the TaskSpec the labels CSV of `options` (a registry.DataOptions) defines."""
  return read_table(options).task


def split_records(records, val_fraction, test_fraction, seed):
  """{"train", "validation", "test"} -> FileRecords: by the CSV's split column when it has one (extra["split"]),
  else a seeded patient-level split stratified by label (records.patient_split). An empty split is a UsageError."""
  if "split" in records.extra:
    parts = {s: records.take(records.extra["split"] == s) for s in records_lib.SPLITS}
    if records.has_patients:
      seen = {}
      for split, part in parts.items():
        for p in set(part.patient_ids.tolist()):
          seen.setdefault(p, []).append(split)
      shared = [p for p, s in seen.items() if len(s) > 1]
      if shared:
        logging.warning("%d patients of %s have images in more than one split of its split column (first: %s in "
                        "%s); their images are not independent across splits", len(shared), records.origin,
                        shared[0], " and ".join(seen[shared[0]]))
    how = "its split column"
  else:
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
      if not 0 < frac < 1:
        raise UsageError(f"--{name}={frac} must lie strictly between 0 and 1")
    if val_fraction + test_fraction >= 1:
      raise UsageError(f"--val_fraction={val_fraction} and --test_fraction={test_fraction} leave no training "
                       "images; their sum must be below 1")
    val, test, train = records_lib.patient_split(records.patient_ids, (val_fraction, test_fraction), seed,
                                                 strata=records.labels)
    parts = {"train": records.take(train), "validation": records.take(val), "test": records.take(test)}
    how = "--val_fraction, --test_fraction"
  for split, part in parts.items():
    if len(part) == 0:
      raise UsageError(f"the {split} split of {records.origin} is empty ({len(records)} usable images); fix {how} "
                       "or add images")
  return parts


def build(task, options, image_size):
  """Registry builder of image_csv: the CSV's rows with checked images, split by its split column or by patient."""
  del image_size  # Files are resized by the pipeline.
  table = read_table(options)
  # A copy: the cached table's records stay as read (check_image_files sets the formats of what it is given).
  records = records_lib.check_image_files(table.records.take(np.arange(len(table.records))),
                                          options.on_bad_image, options.validate_images, options.cache_dir)
  val = DEFAULT_VAL_FRACTION if options.val_fraction is None else options.val_fraction
  test = DEFAULT_TEST_FRACTION if options.test_fraction is None else options.test_fraction
  parts = split_records(records, val, test, options.split_seed)
  sources = {s: sources_lib.file_source(records_lib.cap_records(parts[s], options.caps[s], options.split_seed, s),
                                        task)
             for s in records_lib.SPLITS}
  how = ("split column " + table.columns["split"] if table.columns["split"] else
         f"patient split {val:g}/{test:g} seed {options.split_seed}")
  return sources, (f"image_csv ({records.origin}: {len(records)} images, {table.kind} "
                   f"{', '.join(table.columns['labels'])}, {how})")
