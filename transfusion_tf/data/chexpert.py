"""Real CheXpert (PAPER.md section 1) from its own folder layout, or through TFDS `chexpert`.

Layout: ROOT (CheXpert-v1.0-small/ or CheXpert-v1.0/) holds train.csv and valid.csv. Their Path column reads
`CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`, resolved against ROOT's parent or ROOT itself
(both are tried). Columns: Path, Sex, Age, Frontal/Lateral, AP/PA, then 14 observations valued 1.0, 0.0, -1.0
(uncertain) or blank. We keep five: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion, as int8
in {-1, 0, 1} with blank -> 0; `tasks.apply_uncertainty` applies the policy later.

Splits [default]: validation = 5% of train.csv held out by patient (seeded; a patient is never split), test = the
official valid.csv (234 images). Patient ids come from the Path's (or TFDS name's) `patientNNNNN` folder.
"""
import functools
import os
import re

import numpy as np

from transfusion_tf.data import records as records_lib
from transfusion_tf.data import sources as sources_lib
from transfusion_tf.data.tasks import CXR_PATHOLOGIES
from transfusion_tf.errors import UsageError

ROOT_NAMES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
REQUIRED_COLUMNS = ("Path",) + CXR_PATHOLOGIES
# The 14 observations in CSV (and TFDS label) order.
OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices")
_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": 0}
_PATIENT = re.compile(r"(patient\d+)")

TFDS_NAME = "chexpert"
TFDS_REQUIRED = tuple(os.path.join("CheXpert-v1.0-small", p) for p in ("train", "valid", "train.csv", "valid.csv"))
# TFDS label ids: ClassLabel(names=["uncertain", "positive", "negative", "unmentioned"]) -> raw value.
_TFDS_LABEL_VALUES = (-1.0, 1.0, 0.0, 0.0)


def patient_id_from_path(path):
  """'.../train/patient00001/study1/view1_frontal.jpg' -> 'patient00001' ('' when the path has none)."""
  m = _PATIENT.search(path)
  return m.group(1) if m else ""


def find_root(data_dir):
  """The folder holding train.csv and valid.csv: data_dir itself or its CheXpert-v1.0[-small] subfolder."""
  if not data_dir:
    raise UsageError("--dataset=chexpert needs --data_dir=DIR, the CheXpert-v1.0-small folder (holding train.csv, "
                     "valid.csv, train/ and valid/) or its parent")
  if not os.path.isdir(data_dir):
    raise UsageError(f"--data_dir={data_dir} is not a folder; unpack CheXpert-v1.0-small there")
  for candidate in (data_dir,) + tuple(os.path.join(data_dir, n) for n in ROOT_NAMES):
    if os.path.isfile(os.path.join(candidate, "train.csv")) or os.path.isfile(os.path.join(candidate, "valid.csv")):
      return os.path.abspath(candidate)
  raise UsageError(f"no CheXpert train.csv or valid.csv in --data_dir={data_dir} or its "
                   f"{' or '.join(ROOT_NAMES)} subfolder; point --data_dir at the unpacked CheXpert folder")


def read_csv(root, csv_name, frontal_only=False, on_bad_image="fail", validate_images="quick", cache_dir=None):
  """Reads ROOT/csv_name into records.FileRecords: labels int8 (N, 5) in {-1, 0, 1}, patient ids, extra["view"]."""
  records_lib.check_choice(on_bad_image, records_lib.ON_BAD_IMAGE, "on_bad_image")
  csv_path = os.path.join(root, csv_name)
  if not os.path.isfile(csv_path):
    raise UsageError(f"CheXpert {csv_name} not found in {root}; it comes with the CheXpert download (pass the "
                     f"folder holding it as --data_dir)")
  fieldnames, raw_rows = records_lib.read_csv_rows(csv_path, what="CheXpert CSV")
  fields = [c.strip() for c in fieldnames or []]
  missing = [c for c in REQUIRED_COLUMNS if c not in fields]
  if missing:
    raise UsageError(f"CheXpert CSV {csv_path} lacks column {missing[0]!r}"
                     f"{' (and ' + ', '.join(missing[1:]) + ')' if len(missing) > 1 else ''}; its columns: "
                     f"{', '.join(fields)}")
  if frontal_only and "Frontal/Lateral" not in fields:
    raise UsageError(f"--frontal_only needs the Frontal/Lateral column, which CheXpert CSV {csv_path} lacks")
  rows = [(line, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for line, row in raw_rows]
  if not rows:
    raise UsageError(f"CheXpert CSV {csv_path} has no rows")

  bases = _bases(root, rows[0][1]["Path"])
  paths, labels, patients, views, lines, bad_rows = [], [], [], [], [], []
  for line, row in rows:
    view = row.get("Frontal/Lateral", "") or ("Lateral" if "lateral" in row["Path"].lower() else "Frontal")
    if frontal_only and view.lower() != "frontal":
      continue
    values = []
    for name in CXR_PATHOLOGIES:
      v = row.get(name, "")
      if v not in _VALUES:
        bad_rows.append(f"{csv_path} row {line}: {name}={v!r} is not 1.0, 0.0, -1.0 or blank")
        break
      values.append(_VALUES[v])
    else:
      rel = row["Path"]
      if not rel:
        bad_rows.append(f"{csv_path} row {line}: empty Path")
        continue
      paths.append(_resolve(rel, bases))
      labels.append(values)
      patients.append(patient_id_from_path(rel) or rel)
      views.append(view)
      lines.append(line)
  records_lib.report_bad_rows(bad_rows, len(rows), csv_path, on_bad_image)
  if not paths:
    raise UsageError(f"CheXpert CSV {csv_path} has no usable rows{' after --frontal_only' if frontal_only else ''}")
  # A Path without a patientNNNNN folder is its own patient; with none anywhere the data names no patients.
  has_patients = any(_PATIENT.search(p) for p in patients)
  records = records_lib.FileRecords(paths=np.array(paths, dtype=object), labels=np.array(labels, np.int8),
                                    patient_ids=np.array(patients, dtype=object), origin=csv_path,
                                    rows=np.array(lines), extra={"view": np.array(views, dtype=object)},
                                    has_patients=has_patients)
  return records_lib.check_image_files(records, on_bad_image, validate_images, cache_dir, what="image")


def _bases(root, first_path):
  """Folders to resolve the Path column against, the one that fits the first row first."""
  parent = os.path.dirname(root)
  bases = [parent, root]
  if not os.path.isfile(os.path.join(parent, first_path)) and os.path.isfile(os.path.join(root, first_path)):
    bases = [root, parent]
  return bases


def _resolve(rel, bases):
  if os.path.isabs(rel):
    return rel
  first = os.path.join(bases[0], rel)
  if os.path.isfile(first):
    return first
  for base in bases[1:]:
    candidate = os.path.join(base, rel)
    if os.path.isfile(candidate):
      return candidate
  # "CheXpert-v1.0-small/train/..." under a root renamed to something else: drop the first component.
  parts = rel.split("/", 1)
  if len(parts) == 2 and parts[0] in ROOT_NAMES:
    for base in bases:
      candidate = os.path.join(base, parts[1])
      if os.path.isfile(candidate):
        return candidate
  return first  # Missing: check_image_files reports it by this name.


def holdout_validation(records, val_fraction=0.05, seed=0):
  """(train, validation) FileRecords: a seeded patient-level hold-out of `val_fraction` of the images."""
  val, train = records_lib.patient_split(records.patient_ids, (val_fraction,), seed)
  return records.take(train), records.take(val)


def read_splits(data_dir, frontal_only=False, val_fraction=0.05, seed=0, on_bad_image="fail",
                validate_images="quick", cache_dir=None):
  """{"train", "validation", "test": FileRecords, "root": str}: train.csv minus a patient hold-out, the hold-out,
  and the official valid.csv as test."""
  root = find_root(data_dir)
  kw = dict(frontal_only=frontal_only, on_bad_image=on_bad_image, validate_images=validate_images,
            cache_dir=cache_dir)
  train, val = holdout_validation(read_csv(root, "train.csv", **kw), val_fraction, seed)
  test = read_csv(root, "valid.csv", **kw)
  out = {"train": train, "validation": val, "test": test, "root": root}
  for split in records_lib.SPLITS:
    if len(out[split]) == 0:
      raise UsageError(f"the CheXpert {split} split under {root} is empty")
  return out


def load_chexpert_tfds(split, data_dir=None, manual_dir=None, frontal_only=False, val_fraction=0.05, seed=0,
                       decode=True):
  """CheXpert through TFDS: (dataset of (image, raw labels float32 (5,) in {-1, 0, 1}), size, size_is_exact).

  split: "train" / "validation" (TFDS train minus / only a patient hold-out chosen by hashing the patient id with
  the seed, so no pass over the data is needed) or "test" (TFDS validation = official valid.csv). With the hold-out
  or frontal_only the size is an estimate (size_is_exact False). decode=False leaves images encoded.
  """
  ds, size, exact = _tfds_examples(split, data_dir, manual_dir, frontal_only, val_fraction, seed, decode)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  index = [OBSERVATIONS.index(p) for p in CXR_PATHOLOGIES]
  table = tf.constant(_TFDS_LABEL_VALUES)

  def to_labels(ex):
    ids = tf.cast(ex["label"], tf.int32)
    ids = tf.pad(ids, [[0, tf.maximum(0, len(OBSERVATIONS) - tf.shape(ids)[0])]], constant_values=3)
    return ex["image"], tf.gather(table, tf.gather(ids, index))
  return ds.map(to_labels), size, exact


def chexpert_tfds_patients(split, data_dir=None, manual_dir=None, frontal_only=False, val_fraction=0.05, seed=0,
                           take=None):
  """Patient ids (str, "patient00001") of the first `take` (None: all) examples of load_chexpert_tfds(split, ...),
  in its order (same filters); None when no name holds a patient folder. One pass, nothing decoded."""
  ds, _, _ = _tfds_examples(split, data_dir, manual_dir, frontal_only, val_fraction, seed, decode=False)
  ds = ds.map(lambda ex: ex["name"])
  names = records_lib.tfds_strings(ds if take is None else ds.take(take))
  if not any(_PATIENT.search(n) for n in names):
    return None
  return np.array([patient_id_from_path(n) or n for n in names], dtype=object)


def _tfds_examples(split, data_dir, manual_dir, frontal_only, val_fraction, seed, decode):
  """The TFDS example dicts of `split` after the frontal and hold-out filters: (dataset, size, size_is_exact)."""
  if split not in records_lib.SPLITS:
    raise UsageError(f"CheXpert splits are {', '.join(records_lib.SPLITS)}, not {split!r}")
  tfds_split = "validation" if split == "test" else "train"
  ds, size = records_lib.load_tfds(TFDS_NAME, tfds_split, None, data_dir, manual_dir, required=TFDS_REQUIRED,
                                   flag_hint="chexpert_tfds", decode=decode)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  exact = True
  if frontal_only:
    ds = ds.filter(lambda ex: tf.equal(ex["image_view"], 0))
    exact = False
  if split != "test":
    buckets = 10_000
    cut = int(round(val_fraction * buckets))
    salt = tf.constant(f"/{seed}")

    def held_out(ex):
      patient = tf.strings.regex_replace(ex["name"], r"^.*(patient[0-9]+).*$", r"\1")
      return tf.strings.to_hash_bucket_fast(patient + salt, buckets) < cut
    if split == "validation":
      ds = ds.filter(held_out)
      size = max(1, int(round(size * val_fraction)))
    else:
      ds = ds.filter(lambda ex: tf.logical_not(held_out(ex)))
      size = max(1, size - int(round(size * val_fraction)))
    exact = False
  return ds, size, exact


def build_folder(task, options, image_size):
  """Registry builder of chexpert: train.csv minus a patient hold-out, the hold-out, valid.csv as test."""
  del image_size  # Files are resized by the pipeline.
  parts = read_splits(options.data_dir, frontal_only=options.frontal_only,
                      val_fraction=0.05 if options.val_fraction is None else options.val_fraction,
                      seed=options.split_seed, **options.check_kwargs)
  sources = {s: sources_lib.file_source(records_lib.cap_records(parts[s], options.caps[s], options.split_seed, s),
                                        task)
             for s in records_lib.SPLITS}
  return sources, (f"chexpert ({parts['root']}{', frontal only' if options.frontal_only else ''}, "
                   f"uncertainty policy {options.uncertainty_policy})")


def build_tfds(task, options, image_size):
  """Registry builder of chexpert_tfds: TFDS chexpert with a patient-hashed validation hold-out."""
  del image_size
  frac = 0.05 if options.val_fraction is None else options.val_fraction
  sources = {}
  for split in records_lib.SPLITS:
    raw, size, exact = load_chexpert_tfds(split, data_dir=options.tfds_data_dir, manual_dir=options.tfds_manual_dir,
                                          frontal_only=options.frontal_only, val_fraction=frac,
                                          seed=options.split_seed, decode=False)
    patients = functools.partial(chexpert_tfds_patients, split, options.tfds_data_dir, options.tfds_manual_dir,
                                 options.frontal_only, frac, options.split_seed)
    sources[split] = sources_lib.tfds_source(raw, size, exact, options.caps[split], task, "chexpert_tfds",
                                             patients=patients)
  return sources, ("chexpert_tfds (TFDS chexpert, patient-hashed validation hold-out, official valid as "
                   f"test{', frontal only' if options.frontal_only else ''})")
