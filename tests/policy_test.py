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


def test_pretrain_model_kwargs_reach_the_study_and_the_command():
  """ResNet50's source starts its residual blocks as shortcuts (study pretraining and transfusion-pretrain); the
  study's own runs and the other models keep the standard init."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from transfusion_tf.cli import pretrain as pretrain_cli  # pylint: disable=g-import-not-at-top
  from transfusion_tf.experiments import plan  # pylint: disable=g-import-not-at-top
  assert policy.pretrain_model_kwargs("resnet50") == {"zero_init_residual": True}
  assert policy.pretrain_model_kwargs("cbr_small") == {}
  policy.pretrain_model_kwargs("resnet50")["zero_init_residual"] = False
  assert policy.pretrain_model_kwargs("resnet50")["zero_init_residual"]  # A fresh dict each call.
  cfg = plan.StudyConfig(out="/nonexistent", models=("cbr_small", "resnet50"),
                         base=trainer.TrainConfig(model_kwargs={"width_multiplier": 0.5}))
  assert plan.pretrain_config(cfg, "resnet50").model_kwargs["zero_init_residual"] is True
  assert "zero_init_residual" not in plan.pretrain_config(cfg, "cbr_small").model_kwargs
  assert "zero_init_residual" not in cfg.model_kwargs("resnet50")  # The study's runs: standard init.
  for args, want in ((["--model=resnet50"], True), (["--model=resnet50", "--nozero_init_residual"], None),
                     (["--model=cbr_small"], None)):
    with flagsaver.flagsaver():
      flags.FLAGS(["transfusion-pretrain", *args])
      got = pretrain_cli.config_from_flags().model_kwargs.get("zero_init_residual")
    assert got == want, (args, got)


def test_pretrain_learning_rate_reaches_the_study_and_the_command():
  """InceptionV3's source trains at a tenth of the CBRs' peak rate (study pretraining and transfusion-pretrain); a
  rate given on the command line wins."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from transfusion_tf.cli import pretrain as pretrain_cli  # pylint: disable=g-import-not-at-top
  from transfusion_tf.experiments import plan  # pylint: disable=g-import-not-at-top
  base = policy.pretrain_defaults()["learning_rate"]
  assert policy.pretrain_learning_rate("cbr_small") == base
  assert policy.pretrain_learning_rate("resnet50") == base
  assert policy.pretrain_learning_rate("inceptionv3") == pytest.approx(0.3 * base)
  assert policy.pretrain_learning_rate("inceptionv3", requested=1e-3) == 1e-3
  cfg = plan.StudyConfig(out="/nonexistent", models=("cbr_small", "inceptionv3"), base=trainer.TrainConfig())
  assert plan.pretrain_config(cfg, "inceptionv3").learning_rate == pytest.approx(0.3 * base)
  assert plan.pretrain_config(cfg, "cbr_small").learning_rate == base
  given = plan.StudyConfig(out="/nonexistent", models=("inceptionv3",), base=trainer.TrainConfig(),
                           pretrain_learning_rate=5e-4)
  assert plan.pretrain_config(given, "inceptionv3").learning_rate == 5e-4
  for args, want in ((["--model=inceptionv3"], 0.3 * base), (["--model=inceptionv3", "--learning_rate=0.001"], 1e-3),
                     (["--model=cbr_small"], base)):
    with flagsaver.flagsaver():
      flags.FLAGS(["transfusion-pretrain", *args])
      got = pretrain_cli.config_from_flags().learning_rate
    assert got == pytest.approx(want), (args, got)


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
