"""Tests for transfusion_tf/training/policy.py: the pretraining policy's pure functions."""
from transfusion_tf import models
from transfusion_tf.models import init
from transfusion_tf.training import policy
from transfusion_tf.training import trainer
from transfusion_tf.errors import UsageError

import pytest


def test_pretrain_defaults_are_train_config_fields():
  defaults = policy.pretrain_defaults()
  assert defaults["optimizer"] == "adamw" and defaults["weight_decay"] > 0
  cfg = trainer.TrainConfig(model="cbr_tiny", dataset="synthetic_source", **defaults)
  for key, value in defaults.items():
    assert getattr(cfg, key) == value
  defaults["train_steps"] = 1
  assert policy.pretrain_defaults()["train_steps"] != 1  # A fresh dict each call.


def test_pretrain_image_size():
  assert policy.pretrain_image_size("cbr_small") == 32
  assert policy.pretrain_image_size("inceptionv3") == models.MIN_SIZE["inceptionv3"] > 32
  assert policy.pretrain_image_size("resnet50") == 64  # Twice the CBRs': its stem strides 4 before block1.
  assert policy.pretrain_image_size("cbr_small", requested=48) == 48


def test_eval_every_and_data_sizes():
  assert policy.pretrain_eval_every(3000) == 1500
  assert policy.pretrain_eval_every(1) == 1
  assert policy.pretrain_data_sizes(100) == {"num_train": 100, "num_val": 500, "num_test": 100}


def test_scheme_names_have_one_home():
  """models.init: SCHEMES is the list parse_scheme checks; check_scheme validates a study's init label."""
  for name in init.SCHEMES:
    assert init.check_scheme(name + ":conv1" if name in init.TAKES_STAGE else name)
  assert set(init.NEEDS_SOURCE) <= set(init.SCHEMES)
  with pytest.raises(UsageError, match="'bogus' is not a scheme; choose from random, .*transfuse:<stage>"):
    init.check_scheme("bogus")
  with pytest.raises(UsageError, match="needs a stage"):
    init.check_scheme("transfuse")
