"""Tests for transfusion_tf/cli/__init__.py and cli/common.py: every command is quiet at start-up and turns a user
mistake into exactly one `error:` line on stderr with exit status 2. Runs scripts/*.py as subprocesses."""
import os
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import pytest

from transfusion_tf.cli import STARTUP_NOISE, VERBOSE_ENV
from transfusion_tf.cli import common
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import parallel
from transfusion_tf.models import weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One bad value per console command, of a flag that command defines.
BAD_VALUES = {"train": "--batch_size=abc", "evaluate": "--eval_batch_size=abc", "pretrain": "--train_steps=abc",
              "compare": "--num_images=abc", "study": "--study_seeds=abc", "models": "--table_image_size=abc"}


def _popen(name, *args, **extra_env):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop(VERBOSE_ENV, None)
  env.update(extra_env)
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", f"{name}.py"), *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_script(name, *args, **extra_env):
  """Runs scripts/NAME.py to the end: a CompletedProcess with its stdout and stderr."""
  proc = _popen(name, *args, **extra_env)
  out, err = proc.communicate(timeout=300)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Every subprocess case of this module, started at once: each spends its seconds importing TensorFlow, so two
  cores run them in about half the time one after the other takes. {key: CompletedProcess}."""
  tmp = tmp_path_factory.mktemp("flagfiles")
  missing, bad = tmp / "missing.cfg", tmp / "bad.cfg"
  bad.write_text("--model=cbr_tiny\n--no_such_flag=3\n")
  cases = {name: (name, BAD_VALUES[name]) for name in BAD_VALUES}
  cases["missing_flagfile"] = ("train", f"--flagfile={missing}")
  cases["bad_flagfile"] = ("train", f"--flagfile={bad}")
  procs = {key: _popen(*args) for key, args in cases.items()}
  procs["verbose"] = _popen("models", BAD_VALUES["models"], **{VERBOSE_ENV: "1"})
  done = {}
  for key, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
  done["paths"] = {"missing": missing, "bad": bad}
  return done


def nonempty(text):
  return [line for line in text.splitlines() if line.strip()]


def test_every_command_is_listed():
  scripts = {f[:-3] for f in os.listdir(os.path.join(ROOT, "scripts")) if f.endswith(".py")}
  assert scripts == set(BAD_VALUES)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_bad_flag_value_is_one_line_exit_2(name, runs):
  proc = runs[name]
  lines = nonempty(proc.stderr)
  assert proc.returncode == 2, proc.stderr
  assert len(lines) == 1, lines
  assert lines[0].startswith("error:") and BAD_VALUES[name].split("=")[0] in lines[0], lines


def test_flagfile_mistakes_name_the_flagfile(runs):
  missing, bad = runs["paths"]["missing"], runs["paths"]["bad"]
  proc = runs["missing_flagfile"]
  assert proc.returncode == 2
  assert nonempty(proc.stderr) == [f"error: cannot open --flagfile={missing}: No such file or directory"]
  proc = runs["bad_flagfile"]
  assert proc.returncode == 2
  assert nonempty(proc.stderr) == [f"error: unknown flag --no_such_flag in flagfile {bad}"]


def test_verbose_startup_shows_the_notices_again(runs):
  quiet = nonempty(runs["models"].stderr)
  loud = nonempty(runs["verbose"].stderr)
  extra = [line for line in loud if line not in quiet]
  assert extra, loud  # tensorflow-cpu prints at least the oneDNN notice.
  assert all(STARTUP_NOISE.search(line) for line in extra), extra
  assert loud[-1] == quiet[-1]


def test_flag_error_line_in_process(tmp_path):
  """flag_error_line on absl's own errors, without a subprocess: nested flagfiles and values given twice."""
  values = flags.FlagValues()
  flags.DEFINE_integer("size", 1, "", flag_values=values)
  inner = tmp_path / "inner.cfg"
  inner.write_text("# a comment\n--size=abc\n")
  outer = tmp_path / "outer.cfg"
  outer.write_text(f"--flagfile={inner}\n")
  for argv, expected in (([f"--flagfile={outer}"], f"(in flagfile {inner})"),
                         (["--size=x", f"--flagfile={outer}"], "--size=x: "),
                         ([f"--flagfile={tmp_path / 'none.cfg'}"], "cannot open --flagfile=")):
    with pytest.raises(flags.Error) as info:
      values(["prog"] + argv)
    line = common.flag_error_line(info.value, ["prog"] + argv)
    assert expected in line and "ERROR::" not in line and "\n" not in line, line


def test_weights_folder_or_other_file_is_one_line_naming_it(tmp_path):
  with pytest.raises(UsageError, match=rf"^--weights={tmp_path} is a folder; pass the weights file in it"):
    weights.resolve_weights_path("cbr_tiny", str(tmp_path))
  text = tmp_path / "notes.h5"
  text.write_text("not HDF5")
  with pytest.raises(UsageError) as info:
    weights.read_weight_file(str(text))
  assert str(info.value) == f"--weights file {text} is not a readable HDF5 weights file (file signature not found)"


def test_binary_flagfile_is_one_line_naming_it(tmp_path, capsys):
  binary = tmp_path / "weights.h5"
  binary.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe" + bytes(range(256)))
  outer = tmp_path / "outer.cfg"
  outer.write_text(f"--flagfile={binary}\n")
  for path in (binary, outer):  # Given directly, and nested in a text flagfile.
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as info:
      common.parse_flags(["prog", f"--flagfile={path}"])
    assert info.value.code == 2
    assert nonempty(capsys.readouterr().err) == [
        f"error: --flagfile={binary} is not a text flagfile (byte 0x89 at offset 0 is not UTF-8); pass a file of "
        f"--flag=value lines"]


def test_shard_auto_value_not_an_integer_names_the_variable():
  with pytest.raises(UsageError, match=r"^--shard=auto: the job-array variable SLURM_ARRAY_TASK_ID='abc' is not an "
                                       r"integer$"):
    parallel.array_shard({"SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "4"})
  with pytest.raises(UsageError, match=r"SGE_TASK_LAST='x'"):
    parallel.array_shard({"SGE_TASK_ID": "2", "SGE_TASK_LAST": "x"})
  assert parallel.array_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)


def test_train_refuses_a_study_root(tmp_path, capsys):
  from transfusion_tf.cli import train  # pylint: disable=import-outside-toplevel
  (tmp_path / "plan.json").write_text("{}\n")
  before = sorted(os.listdir(tmp_path))
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as info:
    common.checked_main(train.main)(common.parse_flags(["transfusion-train", f"--run_dir={tmp_path}",
                                                        "--dataset=synthetic_retina", "--model=cbr_tiny",
                                                        "--train_steps=2", "--image_size=16"]))
  assert info.value.code == 2
  assert nonempty(capsys.readouterr().err) == [
      f"error: --run_dir={tmp_path} is a study folder (it holds plan.json), not a run folder; pass a new folder, or "
      f"let transfusion-study train the study's runs"]
  assert sorted(os.listdir(tmp_path)) == before


def test_study_init_seeds_bad_items_name_the_flag():
  from transfusion_tf.cli import study as study_cli  # pylint: disable=g-import-not-at-top
  assert study_cli._init_seeds(["random=5", "meanvar=2"]) == {"random": 5, "meanvar": 2}
  with pytest.raises(UsageError, match=r"^--study_init_seeds item 'random' must look like random=5$"):
    study_cli._init_seeds(["random"])
  with pytest.raises(UsageError, match=r"^--study_init_seeds has an unknown init 'rnadom'"):
    study_cli._init_seeds(["rnadom=5"])


def test_study_learning_rates_bad_items_name_the_flag():
  from transfusion_tf.cli import study as study_cli  # pylint: disable=g-import-not-at-top
  assert study_cli._learning_rates(["resnet50=0.004"]) == {"resnet50": 0.004}
  with pytest.raises(UsageError, match=r"^--study_learning_rates item 'resnet50' must look like resnet50=0.004$"):
    study_cli._learning_rates(["resnet50"])
  for bad in ("0", "-1", "nan", "inf"):
    with pytest.raises(UsageError,
                       match=r"^--study_learning_rates item resnet50=.* must be a positive learning rate$"):
      study_cli._learning_rates([f"resnet50={bad}"])
