"""Tests for transfusion_tf/data/image_csv.py: any labelled image folder (binary, classes, multi-label), its splits,
its image formats, bad input, and a tiny transfusion-train run on a folder written here."""
import json
import os

import numpy as np
import tensorflow as tf

from tests.cli_test import run_script
from transfusion_tf import files
from transfusion_tf.data import image_csv, pipeline, records, registry
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import answer, catalog, common, plan, t2
from transfusion_tf.training import metrics, rundir, trainer

SIZE = 16


def _write_csv(path, header, rows):
  with open(path, "w", encoding="utf-8") as f:
    f.write(",".join(header) + "\n")
    for row in rows:
      f.write(",".join(str(v) for v in row) + "\n")


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tf.io.write_file(path, tf.io.encode_png(tf.constant(array)))


def make_folder(root, n=24, kind="binary", patients=None, split=False, seed=0, rel="img"):
  """A folder of n small RGB PNGs under root/rel and root/labels.csv; each image's mean brightness follows its label
  so a model can learn it. kind: binary (label 0/1), classes (label 0-2), multilabel (columns a, b). patients: images
  per patient (None: no patient column). split: add a split column (train, val, test in turn). Returns the rows."""
  rng = np.random.default_rng(seed)
  header = ["path"] + {"binary": ["label"], "classes": ["label"], "multilabel": ["a", "b"]}[kind]
  header += ["patient_id"] if patients else []
  header += ["split"] if split else []
  rows = []
  for i in range(n):
    labels = {"binary": [i % 2], "classes": [i % 3], "multilabel": [i % 2, (i // 2) % 2]}[kind]
    level = 40 + 60 * sum(labels) + rng.integers(0, 30)
    image = np.clip(rng.normal(level, 20, (SIZE + 4, SIZE, 3)), 0, 255).astype(np.uint8)
    name = f"{rel}/{i:03d}.png"
    _png(os.path.join(root, name), image)
    row = [name] + labels
    row += [f"p{i // patients}"] if patients else []
    row += [("train", "val", "test")[i % 3]] if split else []
    rows.append(row)
  _write_csv(os.path.join(root, "labels.csv"), header, rows)
  return rows


def _build(root, **kw):
  return pipeline.build_data("image_csv", SIZE, 4, "cbr_tiny", data_dir=root, **kw)


class TasksTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def test_binary(self):
    make_folder(self.root, kind="binary")
    data = _build(self.root)
    task = data.task
    self.assertEqual((task.name, task.kind, task.num_outputs, task.head), ("image", "multilabel", 1, "sigmoid"))
    self.assertEqual(task.primary_metric, "auc_label")
    images, labels, masks = next(iter(data.train(0)))
    self.assertEqual(images.shape, (4, SIZE, SIZE, 3))
    self.assertEqual(labels.shape, (4, 1))
    self.assertAllEqual(masks, np.ones((4, 1)))
    self.assertEqual(sum(data.num_examples.values()), 24)
    self.assertIsNone(data.patients("test"))  # No patient column: each image its own cluster.

  def test_classes_one_vs_rest_auc(self):
    make_folder(self.root, n=30, kind="classes")
    data = _build(self.root)
    task = data.task
    self.assertEqual((task.kind, task.num_outputs, task.primary_metric), ("multiclass", 3, "auc_mean"))
    self.assertEqual(task.class_names, ("label_0", "label_1", "label_2"))
    labels = np.array([0, 1, 2, 0, 1, 2])
    # Class 0's probabilities rank image 3 (a class 0) below images 1 and 4 and above 2 and 5: AUC 6/8.
    logits = np.array([[4, 0, 0], [1, 2, 0], [0, 0, 3], [1, 3, 0], [1, 2.5, 0], [0, 0.5, 3]])
    out = metrics.compute_metrics(task, labels, np.ones(6), logits)
    self.assertEqual(out["auc_label_2"], 1.0)
    self.assertAllClose(out["auc_label_0"], 0.75)
    self.assertAllClose(out["auc_mean"], np.mean([out[f"auc_label_{k}"] for k in range(3)]))
    self.assertAllClose(out["accuracy"], 5 / 6)
    self.assertEqual(set(metrics.auc_indices(task, np.ones(6), 6)), {"auc_label_0", "auc_label_1", "auc_label_2"})

  def test_multilabel(self):
    make_folder(self.root, n=32, kind="multilabel")
    data = _build(self.root)
    task = data.task
    self.assertEqual((task.kind, task.class_names, task.primary_metric), ("multilabel", ("a", "b"), "auc_mean"))
    _, labels, _ = next(iter(data.train(0)))
    self.assertEqual(labels.shape, (4, 2))
    self.assertTrue(np.isin(labels.numpy(), (0.0, 1.0)).all())
    self.assertEqual(registry.task_spec("image_csv", options={"data_dir": self.root, "dataset": "image_csv"}), task)

  def test_columns_named_by_flags(self):
    make_folder(self.root, n=32, kind="multilabel")
    os.rename(os.path.join(self.root, "labels.csv"), os.path.join(self.root, "my labels.csv"))
    data = _build(self.root, labels_csv="my labels.csv", image_column="PATH", label_columns=("b",))
    self.assertEqual((data.task.kind, data.task.primary_metric), ("multilabel", "auc_b"))
    with self.assertRaisesRegex(UsageError, r"my labels.csv has no column 'c' \(--label_columns\); its columns: path, "
                                r"a, b"):
      _build(self.root, labels_csv="my labels.csv", label_columns=("a", "c"))


class SplitTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def _parts(self, seed=0, **options):
    table = image_csv.read_table(registry.DataOptions(data_dir=self.root, **options))
    return image_csv.split_records(table.records, 0.2, 0.2, seed)

  def test_patient_split_keeps_a_patient_in_one_split_and_is_deterministic(self):
    make_folder(self.root, n=60, kind="binary", patients=3)
    parts = self._parts()
    seen = [set(parts[s].patient_ids) for s in records.SPLITS]
    self.assertEqual(sum(len(s) for s in seen), 20)
    self.assertEmpty(seen[0] & seen[1] | seen[0] & seen[2] | seen[1] & seen[2])
    again = self._parts()
    for s in records.SPLITS:
      self.assertAllEqual(parts[s].paths, again[s].paths)
    other = self._parts(seed=1)
    self.assertNotAllEqual(np.sort(parts["test"].paths), np.sort(other["test"].paths))
    # Stratified: each held-out split holds both labels.
    for s in ("validation", "test"):
      self.assertEqual(set(parts[s].labels.ravel()), {0, 1}, s)
    data = _build(self.root)
    self.assertTrue(data.patients("test") is not None)
    self.assertLen(data.patients("test"), data.num_examples["test"])

  def test_a_rare_class_reaches_every_split(self):
    # 5 positives in 100: an unstratified 20% split leaves them all out about a third of the time.
    ids = np.array([f"p{i}" for i in range(100)], dtype=object)
    labels = (np.arange(100) % 20 == 3).astype(np.int64)
    for seed in range(10):
      val, test, train = records.patient_split(ids, (0.2, 0.2), seed, strata=labels)
      self.assertEqual(len(val) + len(test) + len(train), 100)
      for part in (val, test, train):
        self.assertGreaterEqual(labels[part].sum(), 1, seed)
      self.assertEqual(len(test), 20)

  def test_split_column(self):
    rows = make_folder(self.root, n=30, kind="classes", split=True)
    parts = self._parts()
    want = {"train": "train", "validation": "val", "test": "test"}
    for split, value in want.items():
      self.assertLen(parts[split], sum(r[-1] == value for r in rows))
    self.assertEqual(os.path.basename(parts["validation"].paths[0]), "001.png")

  def test_empty_split_and_absent_class(self):
    rows = make_folder(self.root, n=30, kind="classes", split=True)
    rows = [r[:-1] + ["train" if r[-1] == "val" else r[-1]] for r in rows]
    _write_csv(os.path.join(self.root, "labels.csv"), ["path", "label", "split"], rows)
    with self.assertRaisesRegex(UsageError, r"the validation split of .*labels.csv is empty"):
      _build(self.root)
    # No class 2 in validation: its one-vs-rest AUC there is undefined.
    splits = [("train", "val", "test")[(i // 3) % 3] for i in range(len(rows))]
    rows = [r[:-1] + ["train" if r[1] == 2 and s == "val" else s] for r, s in zip(rows, splits)]
    _write_csv(os.path.join(self.root, "labels.csv"), ["path", "label", "split"], rows)
    data = _build(self.root)
    with self.assertRaisesRegex(UsageError, r"the validation split of image_csv .* has 0 images of label_2 and \d+ "
                                r"without, so its AUC is undefined"):
      pipeline.check_classes(data)

  def test_train_subset_and_caps(self):
    make_folder(self.root, n=60, kind="binary", patients=2)
    data = _build(self.root, train_subset=10, num_test=8)
    self.assertEqual(data.num_examples["train"], 10)
    self.assertEqual(data.num_examples["test"], 8)
    labels, _ = data.labels("train")
    self.assertEqual(int(labels.sum()), 5)  # Stratified.
    pipeline.check_classes(data)


class BadInputTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def test_missing_folder_and_csv(self):
    with self.assertRaisesRegex(UsageError, "needs --data_dir"):
      _build(None)
    with self.assertRaisesRegex(UsageError, r"--data_dir=/no/such is not a folder"):
      _build("/no/such")
    with self.assertRaisesRegex(UsageError, r"--labels_csv=nope.csv not found"):
      _build(self.root, labels_csv="nope.csv")
    with self.assertRaisesRegex(UsageError, r"no labels CSV given and none in --data_dir"):
      _build(self.root)

  def test_missing_column(self):
    rows = make_folder(self.root, n=6)
    _write_csv(os.path.join(self.root, "labels.csv"), ["file_name", "label"], rows)
    with self.assertRaisesRegex(UsageError, r"labels.csv has no image column \(looked for image, path.*\); its "
                                r"columns: file_name, label; name it with --image_column"):
      _build(self.root)
    with self.assertRaisesRegex(UsageError, r"has no column 'patient' \(--patient_column\)"):
      _build(self.root, image_column="file_name", patient_column="patient")
    _write_csv(os.path.join(self.root, "labels.csv"), ["path", "age"], [[r[0], 50 + i] for i, r in enumerate(rows)])
    with self.assertRaisesRegex(UsageError, r"has no label column .*its columns: path, age; name them with "
                                r"--label_columns"):
      _build(self.root)

  def test_label_out_of_range(self):
    rows = make_folder(self.root, n=12, kind="multilabel")
    rows[4][2] = 2
    _write_csv(os.path.join(self.root, "labels.csv"), ["path", "a", "b"], rows)
    with self.assertRaisesRegex(UsageError, r"has no label column .* \(b holds '2' on row 6\)"):
      _build(self.root)
    with self.assertRaisesRegex(UsageError, r"labels.csv row 6: b='2' is not 0 or 1 .*fix the CSV or pass "
                                r"--on_bad_image=skip"):
      _build(self.root, label_columns=("a", "b"))
    data = _build(self.root, label_columns=("a", "b"), on_bad_image="skip")
    self.assertEqual(sum(data.num_examples.values()), 11)
    rows = make_folder(self.root, n=12, kind="binary")
    rows[2][1] = 3
    _write_csv(os.path.join(self.root, "labels.csv"), ["path", "label"], rows)
    with self.assertRaisesRegex(UsageError, r"row 4: label='3' is not a class 0-1"):
      _build(self.root, num_classes=2)
    with self.assertRaisesRegex(UsageError, r"column label has no row of class 2 of 0-3 \(the largest label, 3, is on "
                                r"row 4: a typo\?\)"):
      _build(self.root)
    rows[2][1] = -1
    _write_csv(os.path.join(self.root, "labels.csv"), ["path", "label"], rows)
    with self.assertRaisesRegex(UsageError, r"row 4: label='-1' is not an integer class"):
      _build(self.root)
    _write_csv(os.path.join(self.root, "labels.csv"), ["path", "label"], [[r[0], 0] for r in rows])
    with self.assertRaisesRegex(UsageError, r"column label holds only 0s, one class"):
      _build(self.root)

  def test_corrupt_and_missing_image(self):
    make_folder(self.root, n=12)
    with open(os.path.join(self.root, "img", "005.png"), "wb") as f:
      f.write(b"not an image at all")
    with self.assertRaisesRegex(UsageError, r"image file .*img/005.png \(row 7 of .*labels.csv\): not a PNG/JPEG"):
      _build(self.root)
    os.remove(os.path.join(self.root, "img", "005.png"))
    with self.assertRaisesRegex(UsageError, r"image file .*img/005.png \(row 7 of .*labels.csv\): file not found"):
      _build(self.root)
    self.assertEqual(sum(_build(self.root, on_bad_image="skip").num_examples.values()), 11)

  def test_label_names_that_clash(self):
    make_folder(self.root, n=12, kind="multilabel")
    with open(os.path.join(self.root, "labels.csv"), encoding="utf-8") as f:
      text = f.read().replace("path,a,b", "path,Mean,b", 1)
    with open(os.path.join(self.root, "labels.csv"), "w", encoding="utf-8") as f:
      f.write(text)
    with self.assertRaisesRegex(UsageError, "auc_mean"):
      _build(self.root)


class ImageFormatsTest(tf.test.TestCase):

  def test_grayscale_16bit_and_jpeg(self):
    root = self.create_tempdir().full_path
    ramp = np.tile(np.linspace(0, 1, SIZE), (SIZE, 1))[..., None]
    _png(os.path.join(root, "gray8.png"), (ramp * 255).astype(np.uint8))
    _png(os.path.join(root, "gray16.png"), (ramp * 4095).astype(np.uint16))  # A 12-bit scan in 16 bits.
    _png(os.path.join(root, "rgb16.png"), np.concatenate([ramp * 65535] * 3, axis=-1).astype(np.uint16))
    tf.io.write_file(os.path.join(root, "rgb.jpg"), tf.io.encode_jpeg(
        tf.constant(np.concatenate([ramp * 255] * 3, axis=-1).astype(np.uint8)), quality=100))
    names = ["gray8.png", "gray16.png", "rgb16.png", "rgb.jpg"]
    _write_csv(os.path.join(root, "labels.csv"), ["image", "label", "split"],
               [[n, i % 2, s] for s in ("train", "validation", "test") for i, n in enumerate(names)])
    data = pipeline.build_data("image_csv", SIZE, 4, "cbr_tiny", data_dir=root, augment=False)
    ds = data._dataset("test", training=False, start=0, apply_preprocessing=False)  # pylint: disable=protected-access
    images = next(iter(ds))[0].numpy()
    self.assertEqual(images.shape, (4, SIZE, SIZE, 3))
    gray8, gray16, rgb16, jpg = images
    self.assertAllClose(gray8[..., 0], gray8[..., 2])  # Grayscale replicated to RGB.
    self.assertAllClose(gray8[:, -1, 0], np.full(SIZE, 255.0), atol=1.0)
    # 16-bit: scaled by 65535, not by the image's own maximum, and not quantised to 8 bits.
    self.assertAllClose(gray16[:, -1, 0], np.full(SIZE, 4095 * 255 / 65535), atol=0.05)
    self.assertGreater(len(np.unique(np.round(gray16[0, :, 0], 3))), 10)
    self.assertAllClose(rgb16, gray8, atol=1.0)
    self.assertAllClose(jpg, gray8, atol=8.0)  # JPEG's loss.


class EndToEndTest(tf.test.TestCase):

  def test_train_writes_per_label_aucs_and_patients(self):
    root = self.create_tempdir().full_path
    make_folder(root, n=48, kind="multilabel", patients=2)
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    proc = run_script("train", "--dataset=image_csv", f"--data_dir={root}", f"--labels_csv={root}/labels.csv",
                      f"--run_dir={run_dir}", f"--image_size={SIZE}", "--batch_size=8", "--train_steps=4",
                      "--eval_every=2", "--model=cbr_tiny", "--width_multiplier=0.25", "--val_fraction=0.25",
                      "--test_fraction=0.25")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(run_dir, "result.json"), encoding="utf-8") as f:
      result = json.load(f)
    self.assertEqual(result["primary_metric"], "auc_mean")
    test = result["selected"]["test"]
    self.assertTrue({"auc_a", "auc_b", "auc_mean"} <= set(test))
    self.assertAllClose(test["auc_mean"], (test["auc_a"] + test["auc_b"]) / 2)
    preds = rundir.load_test_predictions(run_dir)
    self.assertEqual(set(preds), {"auc_a", "auc_b"})
    self.assertAllClose(metrics.roc_auc(preds["auc_a"][1], preds["auc_a"][0]), test["auc_a"])
    patients = rundir.load_test_patients(run_dir)
    self.assertLen(patients, 12)
    self.assertLess(len(set(patients.tolist())), 12)  # Two images per patient: DeLong clusters them.

  def test_bad_input_is_one_line_exit_2_nothing_written(self):
    root = self.create_tempdir().full_path
    rows = make_folder(root, n=12)
    rows[3][1] = "yes"
    _write_csv(os.path.join(root, "labels.csv"), ["path", "label"], rows)
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    proc = run_script("train", "--dataset=image_csv", f"--data_dir={root}", f"--run_dir={run_dir}",
                      f"--image_size={SIZE}", "--train_steps=2")
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    self.assertLen(lines, 1, proc.stderr)
    self.assertRegex(lines[0], r"^error: .*labels.csv row 5: label='yes' is not an integer class")
    self.assertFalse(os.path.exists(run_dir))


class StudyTest(tf.test.TestCase):
  """The study's readings on the image task, on hand-made results (as tests/experiments_test.py does for retina and
  CheXpert): T2 tabulates each class and the macro mean, and reads transfer − random on the primary metric."""

  def _fake_run(self, path, task, quality, seed):
    n = 600
    labels = np.arange(n) % task.num_outputs
    shared = np.random.default_rng(7).normal(size=(n, task.num_outputs))
    noise = np.random.default_rng(100 + seed).normal(size=(n, task.num_outputs))
    scores = quality * np.eye(task.num_outputs)[labels] + shared + 0.05 * noise
    test, preds = {}, {"index": np.arange(n), "patient": np.arange(n) // 2}
    for k, name in enumerate(task.class_names):
      key = f"auc_{name}"
      preds[f"{key}.scores"], preds[f"{key}.labels"] = scores[:, k], (labels == k).astype(np.int8)
      preds[f"{key}.index"] = np.arange(n)
      test[key] = metrics.roc_auc(labels == k, scores[:, k])
    test["auc_mean"] = float(np.mean(list(test.values())))
    os.makedirs(path, exist_ok=True)
    with files.atomic_open(os.path.join(path, "test_predictions.npz"), "wb") as f:
      np.savez(f, **preds)
    curve = [{"step": s, "seconds": float(s), "auc_mean": test["auc_mean"] - 0.4 * np.exp(-s / 40.0)}
             for s in range(0, 401, 25)]
    files.atomic_write_json(os.path.join(path, "curve.json"), curve)
    files.atomic_write_json(os.path.join(path, "result.json"), {
        "final": dict(curve[-1]), "best": dict(curve[-1]), "primary_metric": "auc_mean", "selected": {
            "rule": "best validation", "step": 400, "validation": {"auc_mean": curve[-1]["auc_mean"]}, "test": test,
            "predictions": "test_predictions.npz"},
        "seconds": 1.0, "source_weights": None, "device": "CPU: test", "steps_to_threshold": None})

  def test_t2_and_the_answer_read_the_image_task(self):
    root = self.create_tempdir().full_path
    make_folder(root, n=30, kind="classes")
    out = self.create_tempdir().full_path
    base = trainer.TrainConfig(dataset="image_csv", image_size=32, train_steps=400, eval_every=25,
                               data_kwargs={"data_dir": root})
    cfg = plan.StudyConfig(out=out, base=base, models=("cbr_tiny",), seeds=3, experiments=("T1", "T2"),
                           source_weights=os.path.join(out, "src.h5"), curve_area_steps=100)
    runs = plan.plan_runs(cfg, catalog.experiments())
    task = registry.task_spec("image_csv", options=base.data_kwargs)
    for r in runs:
      self._fake_run(plan.run_dir(cfg, r), task, 2.0, r.seed)
    ctx = common.load_context(cfg, runs)
    self.assertEqual((ctx.task.name, ctx.primary), ("image", "auc_mean"))
    text = "\n".join(t2.section(ctx))
    for row in ("| cbr_tiny | label_0 |", "| cbr_tiny | label_2 |", "| cbr_tiny | mean |"):
      self.assertIn(row, text)
    self.assertNotIn("Atelectasis", text)
    (verdict,) = t2.readings(ctx)
    self.assertEqual(verdict.verdict, "holds")  # Same scores for both inits: equivalent within the margin.
    self.assertIn("T1 reads the retina task", "\n".join(catalog.experiments()[0].section(ctx)))
    self.assertIn("Test `auc_mean`, transfer − random", answer.q1(ctx, {"T2": "T2"}))
