"""Tests for transfusion_tf/data/registry.py: every registered dataset builds a batch of the right shapes.

Folder datasets read tiny fixtures (the ones retina_test and chexpert_test write); TFDS datasets run under
tfds.testing.mock_data with their manual-download files faked, so nothing reaches the network. A dataset registered
without a fixture here fails test_every_dataset_has_a_fixture: adding a dataset means adding its fixture too.
"""
import contextlib
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.chexpert_test import make_chexpert
from tests.image_csv_test import make_folder
from tests.retina_test import make_aptos
from transfusion_tf.data import chexpert, imagenet, pipeline, registry, retina, tasks
from transfusion_tf.errors import UsageError

SIZE, BATCH = 24, 4


def _manual_dir(tmp, required):
  """A --tfds_manual_dir holding (empty stand-ins for) the files TFDS asks for."""
  for rel in required:
    os.makedirs(os.path.join(tmp, rel), exist_ok=True)
  return dict(tfds_manual_dir=tmp)


def _synthetic(tmp):
  return dict(num_train=8, num_val=4, num_test=4, cache_dir=tmp), contextlib.nullcontext()


def _retina_csv(tmp):
  make_aptos(tmp, n=30)
  return dict(data_dir=tmp), contextlib.nullcontext()


def _chexpert(tmp):
  make_chexpert(tmp)
  return dict(data_dir=tmp), contextlib.nullcontext()


def _image_csv(tmp):
  make_folder(tmp, n=30, kind="classes", patients=2)
  return dict(data_dir=tmp), contextlib.nullcontext()


def _tfds(required):
  def fixture(tmp):
    return _manual_dir(tmp, required), tfds.testing.mock_data(num_examples=8)
  return fixture


# Dataset name -> fixture(tmp folder) -> (build_data keywords, context to build and read in).
FIXTURES = {
    "synthetic_retina": _synthetic,
    "synthetic_cxr": _synthetic,
    "synthetic_source": _synthetic,
    "retina_csv": _retina_csv,
    "chexpert": _chexpert,
    "eyepacs_tfds": _tfds(retina.TFDS_REQUIRED),
    "chexpert_tfds": _tfds(chexpert.TFDS_REQUIRED),
    "imagenet_tfds": _tfds(imagenet.TFDS_REQUIRED),
    "image_csv": _image_csv,
}


def test_every_dataset_has_a_fixture():
  assert set(registry.names()) == set(FIXTURES)


@pytest.mark.parametrize("dataset", registry.names())
def test_builds_a_batch_of_the_right_shapes(dataset, tmp_path):
  kwargs, context = FIXTURES[dataset](str(tmp_path))
  with context:
    data = pipeline.build_data(dataset, SIZE, BATCH, "cbr_tiny", **kwargs)
    images, labels, masks = next(iter(data.train(0)))
    eval_images = next(iter(data.eval("validation")))[0]
  task = data.task
  assert task == registry.task_spec(dataset, options=kwargs)
  assert task.name == registry.task_name(dataset)
  assert images.shape == (BATCH, SIZE, SIZE, 3) and images.dtype == tf.float32
  assert eval_images.shape[1:] == (SIZE, SIZE, 3)
  assert labels.shape == (BATCH,) + task.label_shape and labels.dtype.name == task.label_dtype
  assert masks.shape == (BATCH,) + task.label_shape
  labels = labels.numpy()
  if task.kind == "multilabel":
    assert np.isin(labels, (0.0, 1.0)).all()
  else:
    assert ((labels >= 0) & (labels < max(task.num_outputs, len(task.class_names)))).all()
  assert set(data.num_examples) == {"train", "validation", "test"} and min(data.num_examples.values()) > 0
  assert data.source_description.startswith(dataset)


def test_task_specs_of_the_source_datasets():
  assert registry.task_spec("imagenet_tfds").num_outputs == 1000
  assert registry.task_spec("synthetic_source").num_outputs > 5  # The synthetic source task's class count.
  assert registry.task_spec("synthetic_retina", binary_head=True).num_outputs == 1
  assert registry.task_spec("chexpert", uncertainty_policy="ones").uncertainty_policy == "ones"
  assert set(registry.task_name(d) for d in registry.names()) == set(tasks.TASKS)


def test_unknown_dataset_lists_known():
  with pytest.raises(UsageError, match="unknown --dataset='cifar10'; known: synthetic_retina, .*imagenet_tfds"):
    registry.get("cifar10")


def test_register_refuses_a_name_twice_and_an_unknown_task():
  with pytest.raises(ValueError, match="already registered"):
    registry.register("retina_csv", "retina", retina.build_csv_folder, "again")
  with pytest.raises(ValueError, match="unknown task"):
    registry.register("mnist", "digits", retina.build_csv_folder, "digits")
  assert "mnist" not in registry.names()
