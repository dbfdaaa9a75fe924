"""Tests for transfusion_tf/data/pipeline.py: subsets, splits, image checks, shapes, resumability, bad images."""
import json
import os
from unittest import mock

import numpy as np
from PIL import Image
import tensorflow as tf

from transfusion_tf.data import pipeline
from transfusion_tf.data import records
from transfusion_tf.data import registry
from transfusion_tf.data import sources
from transfusion_tf.data import synthetic
from transfusion_tf.data import tasks
from transfusion_tf.errors import UsageError
from transfusion_tf.training import trainer


def _save(path, array, fmt=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, fmt)
  return path


def _records(paths, labels=None):
  n = len(paths)
  labels = np.arange(n) % 5 if labels is None else labels
  return records.FileRecords(paths=np.array(paths, dtype=object), labels=np.asarray(labels),
                             patient_ids=np.array([str(i) for i in range(n)], dtype=object), origin="list.csv",
                             rows=np.arange(2, n + 2))


def _batches(ds, k):
  return [tuple(t.numpy() for t in b) for b in ds.take(k)]


def _array_data(n=10, size=16, channels=3, task=None, batch=4, mode="unit", want=3, seed=0, augment=True):
  """Array source whose image i is the constant i (so the order can be read back), labels i % 5."""
  task = task or tasks.get_task("retina")
  images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, size, size, channels)).copy()
  raw = np.arange(n) % 5
  if task.kind == "multilabel":
    raw = (np.arange(n)[:, None] + np.arange(5)) % 3 - 1
  labels, masks = sources.training_labels(raw, task)
  src = sources.ArraySource(images=images, labels=labels, masks=masks)
  aug = pipeline.Augmentation(enabled=augment)
  return pipeline.Data(task, {"train": src, "validation": src, "test": src}, size, batch, mode, seed=seed,
                       channels=want, augmentation=aug)


class SubsetTest(tf.test.TestCase):

  def test_stratified_exact_size_and_seeded(self):
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    idx = records.subset_indices(labels, 10, seed=3)
    self.assertLen(idx, 10)
    self.assertEqual(np.bincount(labels[idx]).tolist(), [5, 3, 2])
    np.testing.assert_array_equal(idx, records.subset_indices(labels, 10, seed=3))
    self.assertFalse(np.array_equal(idx, records.subset_indices(labels, 10, seed=4)))
    self.assertTrue(np.all(np.diff(idx) > 0))

  def test_rounding_keeps_total(self):
    labels = np.repeat(np.arange(7), [3, 5, 7, 11, 13, 17, 19])
    for n in (1, 6, 13, 50, 74):
      self.assertLen(np.unique(records.subset_indices(labels, n, seed=0)), n)

  def test_multilabel_patterns(self):
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0], [1, 1], [1, 1]])
    idx = records.subset_indices(labels, 4, seed=0)
    self.assertLen({tuple(r) for r in labels[idx]}, 4)

  def test_bad_sizes(self):
    with self.assertRaisesRegex(UsageError, "only 3"):
      records.subset_indices([0, 1, 2], 4, seed=0)
    with self.assertRaises(UsageError):
      records.subset_indices([0, 1, 2], 0, seed=0)


class PatientSplitTest(tf.test.TestCase):

  def test_never_splits_a_patient(self):
    rng = np.random.default_rng(0)
    patients = np.array([f"p{i}" for i in rng.integers(0, 40, size=300)])
    val, test, train = records.patient_split(patients, (0.1, 0.2), seed=1)
    self.assertLen(np.concatenate([val, test, train]), 300)
    sets = [set(patients[p]) for p in (val, test, train)]
    self.assertEmpty(sets[0] & sets[1])
    self.assertEmpty(sets[0] & sets[2])
    self.assertEmpty(sets[1] & sets[2])
    self.assertBetween(len(val), 30, 60)
    self.assertBetween(len(test), 60, 100)

  def test_small_fraction_takes_one_patient(self):
    val, train = records.patient_split(np.array(["a", "a", "b", "c"]), (0.01,), seed=0)
    self.assertNotEmpty(val)
    self.assertLen(np.concatenate([val, train]), 4)

  def test_patient_codes(self):
    self.assertAllEqual(records.patient_codes(np.array([7, 7, 3], np.int32)), [7, 7, 3])
    self.assertAllEqual(records.patient_codes(np.array(["10", "10", "4"], dtype=object)), [10, 10, 4])
    self.assertAllEqual(records.patient_codes(["patient00042", "patient00001", "patient00042"]), [42, 1, 42])
    # Mixed forms, or numbers that would collide ("7" and "007"): each id's rank among the sorted distinct ids.
    self.assertAllEqual(records.patient_codes(["b", "a1", "b", "c"]), [1, 0, 1, 2])
    self.assertAllEqual(records.patient_codes(["7", "007", "7"]), [1, 0, 1])
    self.assertEqual(records.patient_codes(["x1", "x2"]).dtype, np.int64)
    self.assertEqual(records.patient_codes(np.array([], dtype=object)).shape, (0,))


class ImageCheckTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path
    rng = np.random.default_rng(0)
    img = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    self.good = [_save(os.path.join(self.dir, "a.png"), img), _save(os.path.join(self.dir, "b.jpg"), img)]
    data = open(self.good[1], "rb").read()
    self.truncated = os.path.join(self.dir, "trunc.jpg")
    open(self.truncated, "wb").write(data[: len(data) // 2])
    png = open(self.good[0], "rb").read()
    self.truncated_png = os.path.join(self.dir, "trunc.png")
    open(self.truncated_png, "wb").write(png[: len(png) - 20])
    self.empty = os.path.join(self.dir, "empty.png")
    open(self.empty, "wb").close()
    self.garbage = os.path.join(self.dir, "garbage.png")
    open(self.garbage, "wb").write(b"not an image at all")
    # Passes the quick check (JPEG header and end marker) but cannot be decoded.
    self.sneaky = os.path.join(self.dir, "sneaky.jpg")
    open(self.sneaky, "wb").write(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 255, 300, dtype=np.uint8)) +
                                  b"\xff\xd9")

  def test_good_files_pass_with_formats(self):
    rec = records.check_image_files(_records(self.good))
    self.assertEqual(list(rec.formats), ["png", "jpeg"])

  def test_each_bad_kind_is_named(self):
    cases = {self.truncated: "truncated JPEG", self.truncated_png: "truncated PNG", self.empty: "empty file",
             self.garbage: "unrecognised header", os.path.join(self.dir, "missing.png"): "file not found"}
    for path, reason in cases.items():
      with self.assertRaisesRegex(UsageError, reason) as cm:
        records.check_image_files(_records(self.good + [path]))
      msg = str(cm.exception)
      self.assertIn(path, msg)
      self.assertIn("row 4 of list.csv", msg)
      self.assertIn("--on_bad_image=skip", msg)

  def test_counts_more_bad_files(self):
    with self.assertRaisesRegex(UsageError, "1 more bad"):
      records.check_image_files(_records(self.good + [self.empty, self.garbage]))

  def test_skip_counts_and_continues(self):
    with self.assertLogs(level="WARNING") as logs:
      rec = records.check_image_files(_records(self.good + [self.truncated, self.empty]), on_bad_image="skip")
    self.assertLen(rec, 2)
    self.assertEqual(list(rec.paths), self.good)
    self.assertLen(logs.output, 1)
    self.assertIn("skipped 2 of 4", logs.output[0])

  def test_full_check_decodes_and_caches(self):
    cache = self.create_tempdir().full_path
    records.check_image_files(_records(self.good + [self.sneaky]), level="quick")  # The quick check misses it.
    with self.assertRaisesRegex(UsageError, "sneaky.jpg.*cannot be decoded"):
      records.check_image_files(_records(self.good + [self.sneaky]), level="full", cache_dir=cache)
    sidecars = os.listdir(os.path.join(cache, "image_checks"))
    self.assertLen(sidecars, 1)
    with open(os.path.join(cache, "image_checks", sidecars[0])) as f:
      self.assertLen(json.load(f), 3)
    with mock.patch.object(records, "_full_check", side_effect=AssertionError("decoded again")):
      rec = records.check_image_files(_records(self.good + [self.sneaky]), on_bad_image="skip", level="full",
                                      cache_dir=cache)
    self.assertLen(rec, 2)

  def test_bad_choices(self):
    with self.assertRaisesRegex(UsageError, "on_bad_image"):
      records.check_image_files(_records(self.good), on_bad_image="ignore")
    with self.assertRaisesRegex(UsageError, "validate_images"):
      records.check_image_files(_records(self.good), level="deep")


class ShapesTest(tf.test.TestCase):

  def test_preprocessing_modes(self):
    expected = {"tf": (-1.0, 1.0), "unit": (0.0, 1.0), "caffe": (-123.68, 255 - 103.939),
                "torch": (-0.485 / 0.229, (1 - 0.406) / 0.225)}
    for mode, (lo, hi) in expected.items():
      data = _array_data(n=12, mode=mode)
      images, labels, masks = next(iter(data.train(0)))
      self.assertEqual(images.shape, (4, 16, 16, 3))
      self.assertEqual(images.dtype, tf.float32)
      self.assertGreaterEqual(float(tf.reduce_min(images)), lo - 1e-3, mode)
      self.assertLessEqual(float(tf.reduce_max(images)), hi + 1e-3, mode)
      self.assertEqual(labels.dtype, tf.int32)
      self.assertEqual(masks.dtype, tf.float32)

  def test_channel_conversion(self):
    cxr = tasks.get_task("cxr")
    data = _array_data(n=8, channels=1, task=cxr, want=3)
    images, labels, masks = next(iter(data.eval("validation")))
    self.assertEqual(images.shape, (4, 16, 16, 3))
    self.assertAllClose(images[..., 0], images[..., 2])
    self.assertEqual(labels.shape, (4, 5))
    self.assertEqual(masks.shape, (4, 5))
    self.assertEqual(labels.dtype, tf.float32)
    data = _array_data(n=8, channels=3, want=1)
    images, _, _ = next(iter(data.train(0)))
    self.assertEqual(images.shape, (4, 16, 16, 1))

  def test_resize_and_crop_arrays(self):
    task = tasks.get_task("retina")
    images = np.zeros((4, 20, 30, 3), np.uint8)
    images[:, :, 5:25] = 255  # A bright centre square; the crop keeps only it.
    labels, masks = sources.training_labels(np.arange(4), task)
    src = sources.ArraySource(images=images, labels=labels, masks=masks)
    data = pipeline.Data(task, {"train": src, "validation": src}, 10, 4, "unit")
    batch, _, _ = next(iter(data.eval("validation")))
    self.assertEqual(batch.shape, (4, 10, 10, 3))
    self.assertAllClose(batch, np.ones_like(batch), atol=1e-3)

  def test_sample_images(self):
    data = _array_data(n=8)
    images, labels = data.sample_images(3)
    self.assertEqual(images.shape, (3, 16, 16, 3))
    self.assertEqual(images.dtype, np.uint8)
    self.assertEqual(list(images[:, 0, 0, 0]), [0, 1, 2])
    self.assertLen(labels, 3)


class OrderTest(tf.test.TestCase):

  def test_each_epoch_is_a_permutation(self):
    data = _array_data(n=10, batch=5, augment=False)
    seen = np.concatenate([np.round(b[0][:, 0, 0, 0] * 255) for b in _batches(data.train(0), 6)]).astype(int)
    for epoch in range(3):
      self.assertCountEqual(seen[10 * epoch:10 * (epoch + 1)], range(10))
    self.assertFalse(np.array_equal(seen[:10], seen[10:20]))
    self.assertFalse(np.array_equal(seen[:10], np.arange(10)))

  def test_seed_changes_order(self):
    a = _batches(_array_data(n=10, seed=0).train(0), 2)
    b = _batches(_array_data(n=10, seed=1).train(0), 2)
    self.assertFalse(all(np.array_equal(x[0], y[0]) for x, y in zip(a, b)))

  def test_resume_arrays(self):
    data = _array_data(n=10, batch=4)  # Batches cross epoch boundaries.
    full = _batches(data.train(0), 9)
    for k in (1, 3, 7):
      resumed = _batches(_array_data(n=10, batch=4).train(k), 9 - k)
      for a, b in zip(full[k:], resumed):
        for x, y in zip(a, b):
          np.testing.assert_array_equal(x, y)

  def test_array_pipelines_are_not_autotuned(self):
    # In-memory sources run with fixed parallelism: an autotuning thread held each iterator's deletion for seconds
    # beside another busy process (benchmarks/iterator_teardown.py). The order is unchanged (the tests above).
    data = _array_data(n=10, batch=4)
    for ds in (data.train(0), data.eval("validation")):
      self.assertFalse(ds.options().autotune.enabled)

  def test_augmentation_is_deterministic_and_varies(self):
    rng = np.random.default_rng(0)
    task = tasks.get_task("retina")
    images = (rng.random((6, 16, 16, 3)) * 255).astype(np.uint8)
    labels, masks = sources.training_labels(np.zeros(6), task)
    src = sources.ArraySource(images=images, labels=labels, masks=masks)
    make = lambda aug: pipeline.Data(task, {"train": src, "validation": src}, 16, 6, "unit",  # noqa: E731
                                     augmentation=pipeline.Augmentation(enabled=aug))
    a = _batches(make(True).train(0), 2)
    b = _batches(make(True).train(0), 2)
    plain = _batches(make(False).train(0), 2)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    self.assertGreater(np.abs(a[0][0] - plain[0][0]).max(), 0.05)
    evals = [b[0] for b in _batches(make(True).eval("validation"), 1)]
    np.testing.assert_allclose(evals[0], images / 255.0, atol=1e-5)  # No augmentation at eval.

  def test_flips_override_the_task(self):
    # Flips only (no rotation, brightness or contrast), so each training image is the original or a mirror of it.
    rng = np.random.default_rng(1)
    task = tasks.get_task("retina")  # Its own flips: left-right and up-down.
    images = (rng.random((8, 16, 16, 3)) * 255).astype(np.uint8)
    labels, masks = sources.training_labels(np.zeros(8), task)
    src = sources.ArraySource(images=images, labels=labels, masks=masks)

    def seen(flips):
      aug = pipeline.Augmentation(flips=flips, rotation_degrees=0.0, brightness=0.0, contrast=0.0)
      data = pipeline.Data(task, {"train": src, "validation": src}, 16, 8, "unit", augmentation=aug)
      out = set()
      for x, _, _ in _batches(data.train(0), 4):
        for img in x:
          found = {name for name, f in (("same", lambda a: a), ("lr", lambda a: a[:, ::-1]),
                                        ("ud", lambda a: a[::-1]), ("lr_ud", lambda a: a[::-1, ::-1]))
                   if any(np.abs(img - f(im) / 255.0).max() < 1e-5 for im in images)}
          self.assertLen(found, 1, f"flips={flips}: a training image is not one original or mirror")
          out |= found
      return out

    self.assertEqual(seen("none"), {"same"})
    self.assertEqual(seen("lr"), {"same", "lr"})
    self.assertEqual(seen(None), {"same", "lr", "ud", "lr_ud"})  # The task's.
    with self.assertRaisesRegex(UsageError, "--flips='diagonal'"):
      pipeline.build_data("synthetic_retina", 16, 4, "cbr_tiny", flips="diagonal")
    # A run trained with other flips is another configuration: the study does not reuse it.
    base = trainer.TrainConfig(dataset="image_csv", data_kwargs={"data_dir": "d"})
    other = trainer.TrainConfig(dataset="image_csv", data_kwargs={"data_dir": "d", "flips": "none"})
    self.assertEqual(trainer.train_config_differences(base.to_dict(), other), ["data_kwargs"])

  def test_eval_finite_fixed_order_partial_batch(self):
    data = _array_data(n=10, batch=4)
    batches = _batches(data.eval("test"), 10)
    self.assertEqual([len(b[1]) for b in batches], [4, 4, 2])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.arange(10) % 5)
    np.testing.assert_array_equal(data.labels("test")[0], np.arange(10) % 5)


class FileSourceTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path
    rng = np.random.default_rng(1)
    paths = []
    for i in range(7):
      img = (rng.random((30 + i, 40, 3)) * 255).astype(np.uint8)
      ext = ("png", "jpg", "tif")[i % 3]
      paths.append(_save(os.path.join(self.dir, f"im{i}.{ext}"), img))
    big = (rng.random((400, 300, 3)) * 255).astype(np.uint8)  # Decoded at a reduced DCT scale.
    paths.append(_save(os.path.join(self.dir, "big.jpg"), big))
    self.paths = paths
    self.task = tasks.get_task("retina")

  def _data(self, paths, on_bad_image="fail", batch=3):
    rec = records.check_image_files(_records(paths), on_bad_image=on_bad_image)
    src = sources.file_source(rec, self.task)
    return pipeline.Data(self.task, {"train": src, "validation": src}, 24, batch, "tf", seed=5,
                         on_bad_image=on_bad_image)

  def test_file_pipelines_keep_autotuning(self):
    # Decoding files is where parallelism pays, and its best setting depends on the machine.
    ds = self._data(self.paths[:3]).train(0)
    self.assertNotEqual(ds.options().autotune.enabled, False)

  def test_decodes_every_format(self):
    data = self._data(self.paths)
    batches = _batches(data.eval("validation"), 5)
    self.assertEqual([b[0].shape for b in batches], [(3, 24, 24, 3)] * 2 + [(2, 24, 24, 3)])
    self.assertBetween(float(np.min([b[0].min() for b in batches])), -1.0, -0.5)
    self.assertBetween(float(np.max([b[0].max() for b in batches])), 0.5, 1.0)

  def test_unchecked_formats_go_by_extension(self):
    rec = records.check_image_files(_records(self.paths[:3]), level="off")
    self.assertEqual(list(rec.formats), ["", "", ""])
    src = sources.file_source(rec, self.task)
    self.assertEqual(list(src.use_pil), [False, False, True])  # .png, .jpg, .tif
    data = pipeline.Data(self.task, {"train": src, "validation": src}, 24, 3, "tf")
    self.assertEqual(next(iter(data.eval("validation")))[0].shape, (3, 24, 24, 3))

  def test_resume_files(self):
    full = _batches(self._data(self.paths).train(0), 6)
    resumed = _batches(self._data(self.paths).train(4), 2)
    for a, b in zip(full[4:], resumed):
      for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)

  def _sneaky(self):
    path = os.path.join(self.dir, "sneaky.jpg")
    open(path, "wb").write(b"\xff\xd8\xff\xe0" + b"\x13" * 300 + b"\xff\xd9")
    return path

  def test_runtime_decode_failure_skip(self):
    data = self._data(self.paths[:4] + [self._sneaky()], on_bad_image="skip")
    with self.assertLogs(level="WARNING") as logs:
      labels = np.concatenate([b[1] for b in _batches(data.eval("validation"), 5)])
    self.assertLen(labels, 4)
    self.assertIn("sneaky.jpg", "\n".join(logs.output))

  def test_runtime_decode_failure_fail_names_file(self):
    for position in (1, 4):  # In the middle, and last (caught by the end sentinel).
      paths = self.paths[:4]
      paths = paths[:position] + [self._sneaky()] + paths[position:]
      data = self._data(paths)
      with self.assertRaises(tf.errors.OpError) as cm:
        _batches(data.eval("validation"), 5)
      err = pipeline.as_usage_error(cm.exception)
      self.assertIsInstance(err, UsageError)
      self.assertIn("sneaky.jpg", str(err))
      self.assertIn("--on_bad_image=skip", str(err))
    self.assertIsNone(pipeline.as_usage_error(ValueError("other")))


class BuildDataTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.cache = self.create_tempdir().full_path
    self.small = dict(num_train=24, num_val=12, num_test=12, cache_dir=self.cache)

  def test_unknown_dataset_lists_known(self):
    with self.assertRaisesRegex(UsageError, "synthetic_retina.*chexpert"):
      pipeline.build_data("mnist", 32, 4, "cbr_small")

  def test_bad_arguments(self):
    with self.assertRaisesRegex(UsageError, "preprocessing"):
      pipeline.build_data("synthetic_retina", 32, 4, "cbr_small", preprocessing="zscore", **self.small)
    with self.assertRaisesRegex(UsageError, "train_subset"):
      pipeline.build_data("synthetic_retina", 32, 4, "cbr_small", train_subset=0, **self.small)
    with self.assertRaisesRegex(UsageError, "exceeds"):
      pipeline.build_data("synthetic_retina", 32, 4, "cbr_small", train_subset=25, **self.small)

  def test_synthetic_tasks(self):
    for dataset, label_shape in (("synthetic_retina", ()), ("synthetic_cxr", (5,)), ("synthetic_source", ())):
      data = pipeline.build_data(dataset, 32, 4, "resnet50", train_subset=16, **self.small)
      self.assertEqual(data.num_examples, {"train": 16, "validation": 12, "test": 12})
      self.assertIn("not real patients", data.source_description)
      self.assertEqual(data.preprocessing, "caffe")
      images, labels, masks = next(iter(data.train(0)))
      self.assertEqual(images.shape, (4, 32, 32, 3))
      self.assertEqual(labels.shape, (4,) + label_shape)
      self.assertEqual(masks.shape, (4,) + label_shape)
      self.assertEqual(data.task.name, registry.task_name(dataset))

  def test_check_classes_on_the_synthetic_tasks(self):
    # The tiny synthetic splits the trainer's tests use hold both classes; a 4-image retina test split does not
    # (grades 2, 2, 3, 3), and cxr needs one pathology with both classes.
    for dataset in ("synthetic_retina", "synthetic_cxr", "synthetic_source"):
      for sizes in (self.small, dict(num_train=32, num_val=16, num_test=16), dict(num_train=64, num_val=32,
                                                                                    num_test=48)):
        pipeline.check_classes(pipeline.build_data(dataset, 16, 4, "cbr_tiny", **dict(sizes, cache_dir=self.cache)))
    data = pipeline.build_data("synthetic_retina", 16, 4, "cbr_tiny", num_train=24, num_val=12, num_test=4,
                               cache_dir=self.cache)
    with self.assertRaisesRegex(UsageError, r"^the test split of synthetic_retina .* one class only \(grades "
                                            r"0:0 1:0 2:2 3:2 4:0, i\.e\. 4 referable \(grade >= 2\) and 0 not\)"):
      pipeline.check_classes(data)
    pipeline.check_classes(data, splits=("train", "validation"))
    cxr = pipeline.build_data("synthetic_cxr", 16, 4, "cbr_tiny", **self.small)
    labels, _ = cxr.labels("validation")
    labels[:] = 0  # Every pathology negative: no AUC anywhere.
    with self.assertRaisesRegex(UsageError, r"^the validation split .* one class only \(Atelectasis 0 positive/\d+ "
                                            r"negative, Cardiomegaly"):
      pipeline.check_classes(cxr)

  def test_synthetic_patients(self):
    # Retina: examples 2k and 2k+1 are the two eyes of patient k, whatever the split's size; splits share none.
    data = pipeline.build_data("synthetic_retina", 32, 4, "cbr_tiny", train_subset=16, **self.small)
    test = data.patients("test")
    self.assertEqual(test.dtype, np.int64)
    self.assertLen(test, 12)
    self.assertAllEqual(test[0::2], test[1::2])
    self.assertLen(np.unique(test), 6)
    self.assertEmpty(set(test) & set(data.patients("validation")))
    self.assertEmpty(set(test) & set(data.patients("train")))
    self.assertLen(data.patients("train"), 16)  # The train subset keeps its examples' patients.
    _, _, meta = synthetic.load_or_generate("retina", "test", 12, 32, 0, cache_dir=self.cache)
    self.assertAllEqual(test, meta["patient_id"])
    # CXR: a patient's studies are consecutive examples; the source task names no patients.
    cxr = pipeline.build_data("synthetic_cxr", 32, 4, "cbr_tiny", **self.small).patients("test")
    self.assertLen(cxr, 12)
    self.assertTrue(np.all(np.diff(cxr) >= 0))
    self.assertLess(len(np.unique(cxr)), 12)
    self.assertIsNone(pipeline.build_data("synthetic_source", 32, 4, "cbr_tiny", **self.small).patients("test"))

  def test_cxr_policy_reaches_masks(self):
    data = pipeline.build_data("synthetic_cxr", 16, 8, "cbr_tiny", uncertainty_policy="ignore", augment=False,
                               **self.small)
    labels, masks = data.labels("validation")
    self.assertTrue(np.all(np.isin(labels, (0.0, 1.0))))
    self.assertEqual(data.task.uncertainty_policy, "ignore")
    got = np.concatenate([b[2] for b in _batches(data.eval("validation"), 5)])
    np.testing.assert_array_equal(got, masks)


class TfdsAndFlagsTest(tf.test.TestCase):
  """TFDS paths run under tfds.testing.mock_data only: nothing here may reach the network."""

  def test_imagenet_and_stratified_tfds_subset(self):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    manual = self.create_tempdir().full_path
    with self.assertRaisesRegex(UsageError, "ILSVRC2012_img_train.tar"):
      with tfds.testing.mock_data(num_examples=4):
        pipeline.build_data("imagenet_tfds", 32, 4, "resnet50")
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
      open(os.path.join(manual, name), "w").close()
    with tfds.testing.mock_data(num_examples=20):
      data = pipeline.build_data("imagenet_tfds", 32, 4, "resnet50", tfds_manual_dir=manual, train_subset=8,
                                 num_test=6)
      self.assertEqual(data.task.num_outputs, 1000)
      self.assertEqual(data.num_examples, {"train": 8, "validation": 20, "test": 6})
      first = [b[1].numpy() for b in data.train(0).take(3)]
      images = next(iter(data.eval("test")))[0]
    self.assertEqual(images.shape, (4, 32, 32, 3))
    self.assertLessEqual(len(np.unique(np.concatenate(first))), 8)  # Only the subset's examples come back.

  def test_flag_kwargs_fit_build_data(self):
    import dataclasses  # pylint: disable=import-outside-toplevel
    import inspect  # pylint: disable=import-outside-toplevel
    from transfusion_tf.data import flags as data_flags  # pylint: disable=import-outside-toplevel
    kwargs = data_flags.data_kwargs_from_flags()
    params = set(inspect.signature(pipeline.build_data).parameters)
    params |= {f.name for f in dataclasses.fields(pipeline.DataOptions)}
    self.assertEmpty(set(kwargs) - params)
    kwargs.pop("dataset")
    small = dict(num_train=8, num_val=4, num_test=4, cache_dir=self.create_tempdir().full_path)
    data = pipeline.build_data("synthetic_retina", 16, 4, "cbr_tiny", **dict(kwargs, **small))
    self.assertEqual(data.num_examples["train"], 8)  # Called the way the trainer and the study call it.
    self.assertEqual(kwargs["uncertainty_policy"], "per_pathology")
    self.assertEqual(kwargs["on_bad_image"], "fail")
    for name in ("dataset", "data_dir", "labels_csv", "tfds_manual_dir", "tfds_config", "num_train", "num_val",
                 "num_test", "train_subset", "uncertainty_policy", "frontal_only", "on_bad_image", "augment",
                 "preprocessing", "synthetic_difficulty", "data_cache_dir"):
      self.assertIn(name, data_flags.FLAGS)
      self.assertTrue(data_flags.FLAGS[name].help)
    names = [f.name for f in data_flags.FLAGS.get_flags_for_module(data_flags.__name__)]
    self.assertIn("dataset", names)
    self.assertNotIn("image_size", names)


if __name__ == "__main__":
  tf.test.main()
