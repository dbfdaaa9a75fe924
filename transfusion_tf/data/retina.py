"""Real RETINA stand-ins (PAPER.md section 1): Kaggle EyePACS via TFDS, or any folder of fundus images plus a CSV.

Folder + CSV formats, detected from the header (or set with --image_column / --label_column):
  APTOS 2019:    id_code,diagnosis     e.g. train.csv + train_images/<id_code>.png
  EyePACS 2015:  image,level           e.g. trainLabels.csv + train/<image>.jpeg
Grades are 0-4 (none, mild, moderate, severe, proliferative). The image column may hold a bare id (the extension
is found: .png .jpg .jpeg .tif .tiff .bmp .gif .webp) or a file name / relative path. Images are looked up in
--data_dir and its immediate subfolders. An optional `split` column (train / validation / test) fixes the split;
otherwise `split_records` holds out patients (EyePACS `<patient>_left/right` share a patient) with a fixed seed.
Patient ids: a `patient_id` / `patient` column, else EyePACS names; APTOS ids name no patient (has_patients False).

TFDS: `diabetic_retinopathy_detection` with a config (original, 1M, 250K, btgraham-300; default btgraham-300) and
splits train (35,126), validation (10,906), test (42,670). Preparing it needs the Kaggle files in --tfds_manual_dir
and, once, network access for the test labels (TFDS downloads retinopathy_solution.csv itself).
"""
import functools
import os
import re

from absl import logging
import numpy as np

from transfusion_tf.data import records as records_lib
from transfusion_tf.data import sources as sources_lib
from transfusion_tf.errors import UsageError

CSV_FORMATS = {"aptos": ("id_code", "diagnosis"), "eyepacs": ("image", "level")}
IMAGE_COLUMNS = ("id_code", "image", "image_id", "id", "filename", "file", "path", "image_path")
LABEL_COLUMNS = ("diagnosis", "level", "grade", "dr_grade", "label")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
CSV_NAMES = ("train.csv", "trainLabels.csv", "labels.csv")
NUM_GRADES = 5

TFDS_NAME = "diabetic_retinopathy_detection"
TFDS_CONFIGS = ("original", "1M", "250K", "btgraham-300")
DEFAULT_TFDS_CONFIG = "btgraham-300"
TFDS_SPLITS = ("train", "validation", "test")
TFDS_REQUIRED = ("trainLabels.csv", "train", "test")



def find_labels_csv(data_dir, labels_csv=None):
  """The labels CSV: `labels_csv` as given (relative to the cwd, then data_dir), else a known name in data_dir."""
  path, found = records_lib.locate_csv(data_dir, labels_csv, CSV_NAMES)
  if path is None:
    raise UsageError(f"no labels CSV in --data_dir={data_dir} (looked for {', '.join(CSV_NAMES)}"
                     f"{'; found several: ' + ', '.join(found) if found else ''}); pass --labels_csv=FILE with "
                     f"APTOS columns id_code,diagnosis or EyePACS columns image,level")
  return path


def detect_columns(fieldnames, image_column=None, label_column=None, origin=""):
  """(image column, label column) from a CSV header; explicit names win and must exist."""
  fields = [f.strip() for f in fieldnames or []]
  lower = {f.lower(): f for f in fields}

  def pick(given, candidates, what, flag):
    if given:
      if given in fields:
        return given
      raise UsageError(f"labels CSV {origin} has no column {given!r} (--{flag}); its columns: {', '.join(fields)}")
    for c in candidates:
      if c in lower:
        return lower[c]
    raise UsageError(f"labels CSV {origin} lacks {what} column (looked for {', '.join(candidates)}); its columns: "
                     f"{', '.join(fields) or '(none)'}; name it with --{flag}")
  return (pick(image_column, IMAGE_COLUMNS, "an image", "image_column"),
          pick(label_column, LABEL_COLUMNS, "a grade", "label_column"))


def _index_images(data_dir, extra_dirs=()):
  """stem -> [paths] for image files in data_dir, its immediate subfolders, and extra_dirs (one scan)."""
  index = {}
  dirs = [data_dir]
  with os.scandir(data_dir) as it:
    subdirs = sorted(e.path for e in it if e.is_dir())
  # Subfolders named like "train" come first so an id present in train/ and test/ resolves to train/.
  dirs += sorted(subdirs, key=lambda d: "train" not in os.path.basename(d).lower())
  dirs += [d for d in extra_dirs if d not in dirs]
  for d in dirs:
    try:
      with os.scandir(d) as it:
        for e in it:
          stem, ext = os.path.splitext(e.name)
          if ext.lower() in IMAGE_EXTENSIONS:
            index.setdefault(stem, []).append(e.path)
    except OSError:
      continue
  return index


_EYE = re.compile(r"^(\d+)_(left|right)$")


def patient_id(image_id):
  """EyePACS '10_left' -> '10'; anything else is its own patient."""
  m = _EYE.match(image_id)
  return m.group(1) if m else image_id


def has_eye_names(image_ids):
  """Whether any id is an EyePACS `<patient>_left` / `_right` name (APTOS hex ids are not)."""
  return any(_EYE.match(i) for i in image_ids)


def read_csv_folder(data_dir, labels_csv=None, image_column=None, label_column=None, on_bad_image="fail",
                    validate_images="quick", cache_dir=None):
  """Reads a folder of fundus images plus an APTOS or EyePACS CSV into records.FileRecords (labels: int32 grades).

  Every problem raises a UsageError naming the file, row, column and value; with on_bad_image="skip", bad rows and
  bad images are left out with one counted warning each kind instead.
  """
  records_lib.check_choice(on_bad_image, records_lib.ON_BAD_IMAGE, "on_bad_image")
  if not data_dir:
    raise UsageError("--dataset=retina_csv needs --data_dir=DIR, the folder holding the fundus images (and, "
                     "unless --labels_csv is given, train.csv or trainLabels.csv)")
  if not os.path.isdir(data_dir):
    raise UsageError(f"--data_dir={data_dir} is not a folder; put the fundus images and their labels CSV there")
  data_dir = os.path.abspath(data_dir)
  csv_path = find_labels_csv(data_dir, labels_csv)
  fieldnames, rows = records_lib.read_csv_rows(csv_path)
  image_col, label_col = detect_columns(fieldnames, image_column, label_column, csv_path)
  split_col = next((c for c in fieldnames if c.strip().lower() == "split"), None)
  patient_col = next((c for c in fieldnames if c.strip().lower() in ("patient_id", "patient")), None)
  if not rows:
    raise UsageError(f"labels CSV {csv_path} has no rows")

  index = _index_images(data_dir, extra_dirs=(os.path.dirname(csv_path),))
  paths, labels, patients, lines, splits, stems = [], [], [], [], [], []
  bad_rows, missing = [], []
  ambiguous = 0
  for line, row in rows:
    image_id = (row.get(image_col) or "").strip()
    raw = (row.get(label_col) or "").strip()
    try:
      value = float(raw)
      grade = int(value)
      ok = value == grade and 0 <= grade < NUM_GRADES
    except ValueError:
      ok = False
    if not ok:
      bad_rows.append(f"{csv_path} row {line}: {label_col}={raw!r} is not a grade 0-{NUM_GRADES - 1}")
      continue
    if not image_id:
      bad_rows.append(f"{csv_path} row {line}: empty {image_col}")
      continue
    split = None
    if split_col:
      split = records_lib.SPLIT_ALIASES.get((row.get(split_col) or "").strip().lower())
      if split is None:
        bad_rows.append(f"{csv_path} row {line}: {split_col}={row.get(split_col)!r} is not train, validation or "
                        f"test")
        continue
    path = _resolve(image_id, data_dir, csv_path, index)
    if path is None:
      missing.append(f"{csv_path} row {line}: no image file for {image_col}={image_id!r} in {data_dir} or its "
                     f"subfolders (looked for {', '.join(IMAGE_EXTENSIONS)})")
      continue
    if isinstance(path, list):
      ambiguous += 1
      path = path[0]
    paths.append(path)
    labels.append(grade)
    stem = os.path.splitext(os.path.basename(image_id))[0]
    stems.append(stem)
    patients.append((row.get(patient_col) or "").strip() if patient_col else patient_id(stem))
    lines.append(line)
    splits.append(split)
  records_lib.report_bad_rows(bad_rows, len(rows), csv_path, on_bad_image)
  if missing:
    if on_bad_image == "fail":
      more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
      raise UsageError(f"{missing[0]}{more}; put the images in --data_dir or pass --on_bad_image=skip")
    logging.warning("skipped %d of %d rows of %s whose image file is missing (first: %s)", len(missing), len(rows),
                    csv_path, missing[0])
  if ambiguous:
    logging.warning("%d image ids of %s match files in several subfolders of %s; used the first (train* folders "
                    "first)", ambiguous, csv_path, data_dir)
  if not paths:
    raise UsageError(f"labels CSV {csv_path} has no usable rows")
  extra = {"split": np.array(splits, dtype=object)} if split_col else {}
  records = records_lib.FileRecords(paths=np.array(paths, dtype=object), labels=np.array(labels, np.int32),
                                    patient_ids=np.array(patients, dtype=object), origin=csv_path,
                                    rows=np.array(lines), extra=extra,
                                    has_patients=bool(patient_col) or has_eye_names(stems))
  return records_lib.check_image_files(records, on_bad_image, validate_images, cache_dir, what="image")


def _resolve(image_id, data_dir, csv_path, index):
  """Path of an image id; a list when several files match; None when none does."""
  if os.path.splitext(image_id)[1].lower() in IMAGE_EXTENSIONS:
    for base in (data_dir, os.path.dirname(csv_path)):
      candidate = os.path.join(base, image_id)
      if os.path.isfile(candidate):
        return candidate
    hits = index.get(os.path.splitext(os.path.basename(image_id))[0], [])
    hits = [h for h in hits if os.path.basename(h) == os.path.basename(image_id)]
    if hits:
      return hits if len(hits) > 1 else hits[0]
    return None
  hits = index.get(image_id)
  if not hits:
    return None
  return hits if len(hits) > 1 else hits[0]


def split_records(records, val_fraction=0.1, test_fraction=0.1, seed=0):
  """{"train", "validation", "test"} -> FileRecords: from a `split` column when the CSV has one, otherwise a
  seeded patient-level split (both eyes of an EyePACS patient stay together)."""
  if "split" in records.extra:
    parts = {s: records.take(records.extra["split"] == s) for s in records_lib.SPLITS}
  else:
    val, test, train = records_lib.patient_split(records.patient_ids, (val_fraction, test_fraction), seed)
    parts = {"train": records.take(train), "validation": records.take(val), "test": records.take(test)}
  for split, part in parts.items():
    if len(part) == 0:
      raise UsageError(f"the {split} split of {records.origin} is empty ({len(records)} usable images); add images "
                       f"or fix its split column")
  return parts


def load_eyepacs_tfds(split, config=None, data_dir=None, manual_dir=None, decode=True):
  """EyePACS through TFDS: (dataset of (image, label int64 grade), size).

  decode=True gives uint8 images (H, W, 3); decode=False the encoded JPEG bytes (the pipeline decodes them itself,
  at a reduced DCT scale). Fails fast with a UsageError naming --tfds_manual_dir and the files it needs.
  """
  config = config or DEFAULT_TFDS_CONFIG
  if config not in TFDS_CONFIGS:
    raise UsageError(f"--tfds_config={config!r} is not one of {', '.join(TFDS_CONFIGS)}")
  if split not in TFDS_SPLITS:
    raise UsageError(f"EyePACS has splits {', '.join(TFDS_SPLITS)}, not {split!r}")
  ds, size = records_lib.load_tfds(TFDS_NAME, split, config, data_dir, manual_dir, required=TFDS_REQUIRED,
                                   flag_hint="eyepacs_tfds", decode=decode)
  return ds.map(lambda ex: (ex["image"], ex["label"])), size


def eyepacs_tfds_patients(split, config=None, data_dir=None, manual_dir=None, take=None):
  """Patient ids (str, `10_left` -> "10") of the first `take` (None: all) examples of an EyePACS TFDS split, in
  load_eyepacs_tfds' order; None when no name is an EyePACS eye name. One pass over the split, nothing decoded."""
  ds, _ = records_lib.load_tfds(TFDS_NAME, split, config or DEFAULT_TFDS_CONFIG, data_dir, manual_dir,
                                required=TFDS_REQUIRED, flag_hint="eyepacs_tfds", decode=False)
  ds = ds.map(lambda ex: ex["name"])
  names = records_lib.tfds_strings(ds if take is None else ds.take(take))
  return np.array([patient_id(n) for n in names], dtype=object) if has_eye_names(names) else None


def build_csv_folder(task, options, image_size):
  """Registry builder of retina_csv: the folder's images, split by its CSV's split column or by patient."""
  del image_size  # Files are resized by the pipeline.
  records = read_csv_folder(options.data_dir, options.labels_csv, image_column=options.image_column,
                            label_column=options.label_column, **options.check_kwargs)
  parts = split_records(records, val_fraction=0.1 if options.val_fraction is None else options.val_fraction,
                        test_fraction=0.1 if options.test_fraction is None else options.test_fraction,
                        seed=options.split_seed)
  sources = {s: sources_lib.file_source(records_lib.cap_records(parts[s], options.caps[s], options.split_seed, s),
                                        task)
             for s in records_lib.SPLITS}
  return sources, f"retina_csv ({records.origin}, {len(records)} images)"


def build_eyepacs_tfds(task, options, image_size):
  """Registry builder of eyepacs_tfds: TFDS diabetic_retinopathy_detection, images left encoded."""
  del image_size
  config = options.tfds_config
  sources = {}
  for split in records_lib.SPLITS:
    raw, size = load_eyepacs_tfds(split, config=config, data_dir=options.tfds_data_dir,
                                  manual_dir=options.tfds_manual_dir, decode=False)
    patients = functools.partial(eyepacs_tfds_patients, split, config, options.tfds_data_dir, options.tfds_manual_dir)
    sources[split] = sources_lib.tfds_source(raw, size, True, options.caps[split], task,
                                             f"eyepacs_tfds/{config or 'btgraham-300'}", patients=patients)
  return sources, f"eyepacs_tfds (TFDS diabetic_retinopathy_detection/{config or DEFAULT_TFDS_CONFIG})"
