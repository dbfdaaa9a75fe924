"""Tests for the trainer and the train/evaluate/pretrain commands: contract, resume after SIGKILL, bad input."""
import contextlib
import errno
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from unittest import mock

import h5py
import numpy as np
import tensorflow as tf
from absl.testing import flagsaver

import transfusion_tf
from transfusion_tf import models
from transfusion_tf.cli import common
from transfusion_tf.cli import evaluate as evaluate_cli
from transfusion_tf.cli import train as train_cli
from transfusion_tf.data import tasks
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import stats
from transfusion_tf.models import cost as cost_lib
from transfusion_tf.training import locks, metrics, rundir, trainer
from transfusion_tf.training import strategy as strategy_lib
from transfusion_tf.training import policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_DATA = dict(num_train=256, num_val=128, num_test=128)


def run_script(name, *args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", f"{name}.py"), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def run_in_process(main, *args):
  """Runs a command's `main` in this process as its script would (flags parsed, then main): (exit status, stderr).

  Saves a TensorFlow import per case; the real processes' stderr and exit status are tested in cli_test.py."""
  err = io.StringIO()
  with flagsaver.flagsaver(), contextlib.redirect_stderr(err):
    try:
      common.checked_main(main)(common.parse_flags([main.__module__, *args]))
      code = 0
    except SystemExit as e:
      code = e.code
  return code, err.getvalue()


def error_lines(stderr):
  return [l for l in stderr.splitlines() if l.startswith("error:")]


def snapshot(run_dir):
  """{relative path: sha1} of every file under `run_dir`."""
  out = {}
  for root, _, files in os.walk(run_dir):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, run_dir)] = hashlib.sha1(open(path, "rb").read()).hexdigest()
  return out


def snapshot_h5(f):
  """{dataset path: sha1 of its bytes} of an open h5py file (weights compared across runs)."""
  out = {}
  f.visititems(lambda name, obj: out.__setitem__(name, hashlib.sha1(obj[()].tobytes()).hexdigest())
               if isinstance(obj, h5py.Dataset) else None)
  return out


def tb_event_files(run_dir):
  return tf.io.gfile.glob(os.path.join(run_dir, "tb", "events.*"))


def try_read_only_bind(path):
  """Mounts `path` read-only onto itself (stops root too); True on success."""
  proc = subprocess.run(["mount", "--bind", "-o", "ro", path, path], capture_output=True, text=True)
  if proc.returncode:
    return False
  probe = os.path.join(path, "probe")
  try:
    open(probe, "w").close()
  except OSError:
    return True
  os.remove(probe)  # Bind mounted, but writable (old kernels ignore ro on the first bind): undo.
  subprocess.run(["umount", path], check=False)
  return False


def tiny_cfg(**kw):
  base = dict(model="cbr_tiny", dataset="synthetic_retina", image_size=32, train_steps=6, eval_every=3,
              batch_size=8, model_kwargs={"width_multiplier": 0.25}, data_kwargs=dict(SMALL_DATA))
  base.update(kw)
  return trainer.TrainConfig(**base)


class TrainCommandTest(tf.test.TestCase):

  def test_contract_command_and_rerun(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    args = ["--model=cbr_tiny", "--dataset=synthetic_retina", "--image_size=64", "--init=random",
            "--train_steps=40", "--eval_every=20", "--batch_size=16", "--seed=0", "--num_train=512", "--num_val=256",
            "--num_test=200", f"--run_dir={run_dir}"]
    proc = run_script("train", *args)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    result = rundir.read_json(os.path.join(run_dir, "result.json"))
    for key in ("final", "best", "steps_to_threshold", "flags", "versions"):
      self.assertIn(key, result)
    curve = rundir.read_json(os.path.join(run_dir, "curve.json"))
    self.assertEqual([p["step"] for p in curve], [0, 20, 40])
    for p in curve:
      self.assertTrue({"step", "seconds", "auc_referable"} <= set(p))
      self.assertBetween(p["auc_referable"], 0.0, 1.0)
    self.assertNotEmpty(os.listdir(os.path.join(run_dir, "tb")))
    self.assertTrue(os.path.exists(rundir.weights_path(run_dir, "step0")))
    self.assertIn("--model=cbr_tiny", open(os.path.join(run_dir, "flags.txt")).read())
    mtime = os.path.getmtime(os.path.join(run_dir, "result.json"))
    again = run_script("train", *args)
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn("already finished", again.stdout)
    self.assertNotIn("step 20/40", again.stdout)
    self.assertEqual(os.path.getmtime(os.path.join(run_dir, "result.json")), mtime)
    # Evaluate scores the finished run on the test split.
    ev = run_script("evaluate", f"--run_dir={run_dir}", "--split=test")
    self.assertEqual(ev.returncode, 0, ev.stderr[-3000:])
    scored = rundir.read_json(os.path.join(run_dir, "eval_test_final.json"))
    self.assertEqual(scored["num_examples"], 200)
    self.assertBetween(scored["metrics"]["auc_referable"], 0.0, 1.0)
    # The primary AUC with its patient-clustered 95% DeLong CI, and the images and patients behind it.
    auc, lo, hi = scored["intervals"]["auc_referable"]
    self.assertIn(f"\nauc_referable {auc:.4f} [{lo:.4f}, {hi:.4f}]\n", ev.stdout)
    self.assertRegex(ev.stdout, r"(?m)^auc_referable \d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\]$")
    self.assertIn("\ntest: 200 images, 100 patients (CI clustered by patient)\n", ev.stdout)

  def test_resume_after_sigkill(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    args = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--model=cbr_tiny", "--image_size=32",
            "--width_multiplier=0.5", "--train_steps=300", "--eval_every=50", "--batch_size=8",
            "--num_train=256", "--num_val=64", "--num_test=64", f"--run_dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
      saved = [f for f in os.listdir(ckpt_dir)] if os.path.isdir(ckpt_dir) else []
      if any(f.startswith("ckpt-100.index") for f in saved):
        break
      time.sleep(0.05)
    self.assertIsNone(proc.poll(), "training finished before it could be killed; make the run longer")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    self.assertFalse(os.path.exists(os.path.join(run_dir, "result.json")))
    resumed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertIn("resuming", resumed.stdout)
    self.assertNotIn("step 1/300", resumed.stdout)
    curve = rundir.read_json(os.path.join(run_dir, "curve.json"))
    self.assertEqual([p["step"] for p in curve], list(range(0, 301, 50)))
    result = rundir.read_json(os.path.join(run_dir, "result.json"))
    self.assertEqual(result["final"]["step"], 300)
    # The selected checkpoint survives the kill: the best step of the whole curve, with its weights on disk.
    best = trainer._select(curve, "auc_referable")  # pylint: disable=protected-access
    self.assertEqual(result["selected"]["step"], best["step"])
    with h5py.File(rundir.weights_path(run_dir, "best"), "r") as f:
      self.assertEqual(int(f.attrs["step"]), best["step"])
    rescored = evaluate_cli.evaluate_run(run_dir, "test", "best", batch_size=8)
    self.assertAllClose(rescored["metrics"], result["selected"]["test"], atol=1e-6)

  def test_user_mistakes_exit_2_with_one_line(self):
    tmp = self.create_tempdir().full_path
    run_dir = os.path.join(tmp, "run")
    cases = [
        (["--model=vgg16"], "--model=vgg16"),
        (["--init=meanvar"], "needs source weights"),
        (["--model=inceptionv3", "--image_size=64"], "below inceptionv3's minimum of 75"),
        (["--dataset=nope"], "--dataset=nope"),
        (["--init=pretrained", f"--weights={tmp}/missing.h5"], "missing.h5"),
        (["stray_argument"], "unexpected arguments: stray_argument"),
        (["--eval_split=test"], "--eval_split='test'"),
    ]
    for extra, needle in cases:
      code, stderr = run_in_process(train_cli.main, f"--run_dir={run_dir}", "--train_steps=2", *extra)
      self.assertEqual(code, 2, (extra, stderr[-2000:]))
      errors = error_lines(stderr)
      self.assertLen(errors, 1, stderr)
      self.assertIn(needle, errors[0])
    self.assertFalse(os.path.exists(os.path.join(run_dir, "config.json")))

  def test_path_mistakes_and_no_empty_run_dir_left(self):
    tmp = self.create_tempdir().full_path
    afile = os.path.join(tmp, "afile")
    open(afile, "w").close()
    for run_dir, needle in ((afile, "is an existing file"), (os.path.join(afile, "run"), "which is a file")):
      code, stderr = run_in_process(train_cli.main, f"--run_dir={run_dir}", "--train_steps=2")
      self.assertEqual(code, 2, stderr[-2000:])
      errors = error_lines(stderr)
      self.assertLen(errors, 1, stderr)
      self.assertIn(needle, errors[0])
    # A mistake found only once the data is built: the folders made for the run are gone again.
    code, stderr = run_in_process(train_cli.main, f"--run_dir={tmp}/new/deeper/run", "--train_steps=2",
                                  "--num_val=0")
    self.assertEqual(code, 2, stderr[-2000:])
    self.assertIn("--num_val", error_lines(stderr)[0])
    self.assertEqual(sorted(os.listdir(tmp)), ["afile"])

  def test_unwritable_run_dir(self):
    tmp = self.create_tempdir().full_path
    parent = os.path.join(tmp, "ro")
    os.makedirs(parent)
    if try_read_only_bind(parent):
      self.addCleanup(subprocess.run, ["umount", parent], check=False)
      for run_dir, needle in ((parent, "is not writable"), (os.path.join(parent, "run"), "cannot be created")):
        code, stderr = run_in_process(train_cli.main, f"--run_dir={run_dir}", "--train_steps=2")
        self.assertEqual(code, 2, stderr[-2000:])
        errors = error_lines(stderr)
        self.assertLen(errors, 1, stderr)
        self.assertIn(needle, errors[0])
    else:  # No mount privilege: simulate what the kernel would say.
      real = os.access
      with mock.patch.object(os, "access", lambda p, m: False if p == parent else real(p, m)):
        with self.assertRaisesRegex(UsageError, "cannot be created"):
          trainer.train(tiny_cfg(), os.path.join(parent, "run"))
    self.assertEqual(os.listdir(parent), [])
    # A writable run directory in a folder that is not: the lock file beside it could not be made.
    run_dir = os.path.join(tmp, "rw", "run")
    os.makedirs(run_dir)
    real = os.access
    with mock.patch.object(os, "access", lambda p, m: False if p == os.path.dirname(run_dir) else real(p, m)):
      with self.assertRaisesRegex(UsageError, "not writable, and the run's lock file goes there"):
        trainer.train(tiny_cfg(), run_dir)
    self.assertEqual(os.listdir(run_dir), [])

  def test_two_processes_train_one_run_dir_once(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    args = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--model=cbr_tiny", "--image_size=32",
            "--width_multiplier=0.25", "--train_steps=60", "--eval_every=20", "--batch_size=8", "--num_train=128",
            "--num_val=64", "--num_test=64", f"--run_dir={run_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    trained = [out for out, _ in outs if "training cbr_tiny" in out]
    self.assertLen(trained, 1, [o for o, _ in outs])
    for p, (out, err) in zip(procs, outs):
      if "training cbr_tiny" in out:
        self.assertEqual(p.returncode, 0, err[-2000:])
      elif p.returncode == 2:  # Issue 24, case 16: the run is held: one line, non-zero, nothing done.
        self.assertRegex(err, r"error: --run_dir=.* is being trained by .*; nothing was done")
      else:  # It came after the other one finished.
        self.assertEqual(p.returncode, 0, err[-2000:])
        self.assertIn("already finished", out)
    self.assertEqual(trained[0].count("  eval "), 3)  # Steps 20, 40, 60 (step 0 is not printed).
    self.assertLen(tb_event_files(run_dir), 1)
    curve = rundir.read_json(os.path.join(run_dir, "curve.json"))
    self.assertEqual([p["step"] for p in curve], [0, 20, 40, 60])
    self.assertFalse(os.path.exists(locks.lock_path(run_dir)))


class TrainerTest(tf.test.TestCase):

  def test_refuses_different_config_and_keeps_files(self):
    run_dir = self.create_tempdir().full_path
    trainer.train(tiny_cfg(), run_dir)
    before = open(os.path.join(run_dir, "result.json")).read()
    with self.assertRaisesRegex(UsageError, "different configuration.*learning_rate"):
      trainer.train(tiny_cfg(learning_rate=0.1), run_dir)
    self.assertEqual(open(os.path.join(run_dir, "result.json")).read(), before)
    result = trainer.train(tiny_cfg(learning_rate=0.1), run_dir, overwrite=True)
    self.assertEqual(result["flags"]["learning_rate"], 0.1)

  def test_selected_checkpoint_scored_on_test(self):
    run_dir = self.create_tempdir().full_path
    result = trainer.train(tiny_cfg(data_kwargs=dict(SMALL_DATA, num_test=100)), run_dir)
    curve = rundir.read_json(os.path.join(run_dir, "curve.json"))
    sel = result["selected"]
    self.assertEqual(sel["rule"], "best validation auc_referable, ties to the earlier step")
    best = max(curve, key=lambda p: (p["auc_referable"], -p["step"]))
    self.assertEqual(sel["step"], best["step"])
    self.assertEqual(sel["validation"], {k: v for k, v in best.items() if k not in ("step", "seconds")})
    self.assertEqual(set(sel["test"]), {"auc_referable", "accuracy", "kappa_quadratic"})
    self.assertEqual(sel["test_examples"], 100)
    self.assertEqual(result["best"]["auc_referable"], best["auc_referable"])  # Kept: per-metric max.
    # The cost: the model's own counts at the run's image size, and throughputs that were measured (not compared).
    cost = result["cost"]
    model, _ = rundir.load_run_model(run_dir, "best")
    self.assertEqual(cost["params"], model.count_params())
    self.assertEqual(cost["macs_per_image"], cost_lib.macs_per_image(model))
    self.assertEqual(cost["flops_per_image"], 2 * cost["macs_per_image"])
    self.assertEqual(cost["image_size"], [32, 32])
    self.assertGreater(cost["train_images_per_second"], 0)
    self.assertGreater(cost["inference_images_per_second"], 0)
    with h5py.File(rundir.weights_path(run_dir, "best"), "r") as f:
      self.assertEqual(int(f.attrs["step"]), sel["step"])
    scores, labels = rundir.load_test_predictions(run_dir)["auc_referable"]
    self.assertEqual(scores.shape, (100,))
    self.assertEqual(metrics.roc_auc(labels, scores), rundir.read_json(
        os.path.join(run_dir, "result.json"))["selected"]["test"]["auc_referable"])
    rescored = evaluate_cli.evaluate_run(run_dir, "test", "best", batch_size=8)
    self.assertAllClose(rescored["metrics"], sel["test"], atol=1e-6)
    self.assertTrue(rescored["weights"].endswith("best.weights.h5"))
    # The synthetic retina's test patients: examples 2k and 2k+1, saved for all 100 images.
    patients = rundir.load_test_patients(run_dir)
    self.assertEqual(patients.shape, (100,))
    self.assertAllEqual(patients[0::2], patients[1::2])
    self.assertLen(np.unique(patients), 50)
    self.assertAllEqual(rundir.load_test_patients(run_dir, key="auc_referable"), patients)
    # evaluate's CI is the clustered DeLong of the saved arrays: auc +- 1.959964 sd, clipped to [0, 1].
    auc, var = stats.delong_auc(scores, labels, clusters=patients)
    lo, hi = rescored["intervals"]["auc_referable"][1:]
    self.assertAllClose([lo, hi], [max(0.0, auc - 1.959964 * var ** 0.5), min(1.0, auc + 1.959964 * var ** 0.5)],
                        atol=1e-6)
    self.assertEqual(rescored["patients"], 50)
    self.assertEqual(evaluate_cli.interval_lines(rescored)[-1], "test: 100 images, 50 patients (CI clustered by "
                     "patient)")
    self.assertEqual(evaluate_cli.interval_lines(dict(rescored, patients=None))[-1],
                     "test: 100 images, no patient ids (each image its own cluster)")

  def test_resume_rebuilds_the_best_export(self):
    run_dir = self.create_tempdir().full_path
    trainer.train(tiny_cfg(), run_dir)
    curve_path, best_path = os.path.join(run_dir, "curve.json"), rundir.weights_path(run_dir, "best")

    def resume_with_best_at(step):
      curve = rundir.read_json(curve_path)
      for p in curve:
        p["auc_referable"] = 0.9 if p["step"] == step else 0.5
      rundir.atomic_write_json(curve_path, curve)
      for path in (best_path, os.path.join(run_dir, "result.json")):
        os.remove(path)
      return trainer.train(tiny_cfg(), run_dir)["selected"]

    # Killed between the last checkpoint and its best export: the restored model is that step's, exported again.
    sel = resume_with_best_at(6)
    self.assertEqual((sel["step"], sel["from_step"]), (6, 0))
    # The best step's weights are gone and cannot be rebuilt: selection restarts at the resumed step, and says so.
    sel = resume_with_best_at(3)
    self.assertEqual((sel["step"], sel["from_step"]), (6, 6))
    with h5py.File(best_path, "r") as f:
      self.assertEqual(int(f.attrs["step"]), 6)

  def test_plateau_stop_on_a_scripted_curve_never_before_the_minimum_and_after_a_kill(self):
    """The validation metric is scripted (flat from step 6 on, or rising): the run stops at the plateau, not on a
    rising curve, never before --min_train_steps, and a run killed mid-way resumes into the same stop and weights."""
    real_evaluate = trainer.Trainer.evaluate

    def run(run_dir, values, kill_at=None, **kw):
      """Trains with the primary metric at evaluation k replaced by values[k]."""
      cfg = tiny_cfg(train_steps=30, eval_every=3, plateau_patience=2, plateau_min_delta=0.01, **kw)

      def evaluate(self, split):
        point = real_evaluate(self, split)
        k = int(self.optimizer.iterations.numpy()) // 3  # The step being evaluated (self.step lags it).
        if kill_at is not None and k == kill_at:
          raise KeyboardInterrupt  # Killed before this evaluation's checkpoint.
        point["auc_referable"] = values[min(k, len(values) - 1)]
        return point

      with mock.patch.object(trainer.Trainer, "evaluate", evaluate):
        return trainer.train(cfg, run_dir)

    flat = [0.5, 0.6, 0.7, 0.75, 0.751, 0.752, 0.75, 0.75, 0.75, 0.75, 0.75]
    base = self.create_tempdir().full_path
    res = run(os.path.join(base, "flat"), flat)
    self.assertEqual(res["stopped"]["reason"], "plateau")
    self.assertEqual(res["stopped"]["step"], 15)  # Evaluations at 12 and 15 add < 0.01 over 0.75 at step 9.
    self.assertEqual(res["final"]["step"], 15)
    self.assertIn("last 2 evaluations", res["stopped"]["rule"])
    rising = [0.5 + 0.02 * k for k in range(11)]
    res = run(os.path.join(base, "rising"), rising)
    self.assertEqual((res["stopped"]["reason"], res["stopped"]["step"]), ("budget", 30))
    res = run(os.path.join(base, "minimum"), flat, min_train_steps=24)
    self.assertEqual((res["stopped"]["reason"], res["stopped"]["step"]), ("plateau", 24))
    # Killed at the evaluation of step 12: the re-run resumes from the step-9 checkpoint and stops as before.
    killed = os.path.join(base, "killed")
    with self.assertRaises(KeyboardInterrupt):
      run(killed, flat, kill_at=4)
    self.assertFalse(os.path.exists(os.path.join(killed, "result.json")))
    res = run(killed, flat)
    self.assertEqual((res["stopped"]["reason"], res["stopped"]["step"]), ("plateau", 15))
    with h5py.File(rundir.weights_path(killed, "final"), "r") as a, \
         h5py.File(rundir.weights_path(os.path.join(base, "flat"), "final"), "r") as b:
      self.assertEqual(snapshot_h5(a), snapshot_h5(b))

  def test_a_resumed_run_refuses_a_deleted_or_damaged_curve(self):
    """Issue 24, cases 3 and 9: a curve.json deleted or damaged under an unfinished run used to change the selected
    checkpoint silently (or crash); the re-run now stops with one line naming the file."""
    real_evaluate = trainer.Trainer.evaluate

    def killed_at_step_6(self, split):
      if int(self.optimizer.iterations.numpy()) == 6:
        raise KeyboardInterrupt
      return real_evaluate(self, split)

    for damage in ("delete", "garbage"):
      run_dir = os.path.join(self.create_tempdir().full_path, "run")
      with mock.patch.object(trainer.Trainer, "evaluate", killed_at_step_6):
        with self.assertRaises(KeyboardInterrupt):
          trainer.train(tiny_cfg(train_steps=9), run_dir)
      curve = os.path.join(run_dir, "curve.json")
      if damage == "delete":
        os.remove(curve)
        pattern = r"curve.json is missing the evaluations at steps 0, 3 of the run resumed at step 3"
      else:
        with open(curve, "w") as f:
          f.write("[{not json")
        pattern = r"curve.json is damaged \(JSONDecodeError\)"
      with self.assertRaisesRegex(UsageError, pattern):
        trainer.train(tiny_cfg(train_steps=9), run_dir)
      self.assertFalse(os.path.exists(os.path.join(run_dir, "result.json")))

  def test_bad_plateau_and_learning_rate_values_are_refused(self):
    for kw, pattern in ((dict(plateau_patience=0, plateau_min_delta=0.01), "plateau_patience=0"),
                        (dict(plateau_patience=2, plateau_min_delta=float("nan")), "plateau_min_delta=nan"),
                        (dict(min_train_steps=99), "min_train_steps=99"),
                        (dict(learning_rate=float("nan")), "learning_rate=nan"),
                        (dict(learning_rate=float("inf")), "learning_rate=inf"),
                        (dict(learning_rate=-0.01), "learning_rate=-0.01")):
      with self.assertRaisesRegex(UsageError, pattern):
        trainer.validate(tiny_cfg(**kw))

  def test_selection_rule_ties_and_nan(self):
    curve = [{"step": 0, "m": float("nan")}, {"step": 10, "m": 0.7}, {"step": 20, "m": 0.9},
             {"step": 30, "m": 0.9}, {"step": 40, "m": 0.8}]
    self.assertEqual(trainer._select(curve, "m")["step"], 20)  # pylint: disable=protected-access
    self.assertEqual(trainer._select(list(reversed(curve)), "m")["step"], 20)  # pylint: disable=protected-access
    nan = [{"step": s, "m": float("nan")} for s in (0, 10)]
    self.assertEqual(trainer._select(nan, "m")["step"], 0)  # pylint: disable=protected-access

  def test_predict_traces_once_over_partial_batches(self):
    # 37 validation and 45 test examples in batches of 8: partial last batches of 5 and 5, then 8 again.
    cfg = tiny_cfg(data_kwargs=dict(num_train=64, num_val=37, num_test=45))
    t = trainer.Trainer(cfg, os.path.join(self.create_tempdir().full_path, "never_written"))
    for split in ("validation", "test", "validation"):
      t.evaluate(split)
    self.assertEqual(t._predict.experimental_get_tracing_count(), 1)  # pylint: disable=protected-access
    self.assertFalse(os.path.exists(t.run_dir))  # Constructing and evaluating writes nothing.

  def test_overwrite_keeps_the_old_run_until_the_new_one_starts(self):
    tmp = self.create_tempdir().full_path
    run_dir = os.path.join(tmp, "run")
    trainer.train(tiny_cfg(), run_dir)
    before = snapshot(run_dir)
    self.assertTrue({"result.json", "curve.json", "weights/final.weights.h5", "weights/best.weights.h5",
                     "checkpoints/checkpoint"} <= set(before))
    bad_csv = os.path.join(tmp, "labels.csv")
    with open(bad_csv, "w") as f:
      f.write("id_code,diagnosis\nimg1,9\n")
    bad = [tiny_cfg(dataset="retina_csv", data_kwargs=dict(data_dir=tmp, labels_csv=bad_csv)),
           tiny_cfg(learning_rate=0.1, data_kwargs=dict(SMALL_DATA, num_test=0)),
           tiny_cfg(init="pretrained", weights=bad_csv)]
    for cfg in bad:
      with self.assertRaises(UsageError):
        trainer.train(cfg, run_dir, overwrite=True)
      self.assertEqual(snapshot(run_dir), before)
      self.assertEqual(sorted(os.listdir(tmp)), ["labels.csv", "run"])  # No .previous, no .lock.
    # A new run that fails before its first checkpoint puts the old one back.
    with mock.patch.object(trainer.Trainer, "_run", side_effect=RuntimeError("boom")):
      with self.assertRaisesRegex(RuntimeError, "boom"):
        trainer.train(tiny_cfg(learning_rate=0.1), run_dir, overwrite=True)
    self.assertEqual(snapshot(run_dir), before)
    self.assertEqual(sorted(os.listdir(tmp)), ["labels.csv", "run"])
    # An earlier --overwrite killed before its first checkpoint left DIR (no checkpoint) and DIR.previous: the
    # next one keeps the finished run aside, not the fragment.
    shutil.copytree(run_dir, run_dir + ".previous")
    shutil.rmtree(os.path.join(run_dir, "checkpoints"))
    with mock.patch.object(trainer.Trainer, "_run", side_effect=RuntimeError("boom")):
      with self.assertRaisesRegex(RuntimeError, "boom"):
        trainer.train(tiny_cfg(learning_rate=0.1), run_dir, overwrite=True)
    self.assertEqual(snapshot(run_dir), before)
    result = trainer.train(tiny_cfg(learning_rate=0.1), run_dir, overwrite=True)
    self.assertEqual(result["flags"]["learning_rate"], 0.1)
    self.assertEqual(sorted(os.listdir(tmp)), ["labels.csv", "run"])  # .previous deleted after the checkpoint.

  def test_held_run_dir_is_skipped_and_untouched(self):
    tmp = self.create_tempdir().full_path
    run_dir = os.path.join(tmp, "run")
    with open(locks.lock_path(run_dir), "w") as f:
      json.dump({"host": "elsewhere.example", "pid": 1, "proc_start": None, "acquired": time.time()}, f)
    self.assertIsNone(trainer.train(tiny_cfg(), run_dir))
    self.assertIsNone(trainer.pretrain(tiny_cfg(dataset="synthetic_source"), os.path.join(tmp, "run")))
    self.assertEqual(os.listdir(tmp), ["run.lock"])

  def test_wrong_architecture_weights_name_the_layer(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, "small.weights.h5")
    models.save_weight_file(models.build_model("cbr_small", 3, (32, 32, 3)), path)
    with self.assertRaisesRegex(UsageError, "layer 'conv1_conv'"):
      trainer.train(tiny_cfg(init="pretrained", weights=path), os.path.join(tmp, "run"))

  def test_weight_decay_applies_to_conv_kernels_only(self):
    model = models.build_model("cbr_tiny", 5, (32, 32, 3), width_multiplier=0.25)
    decayed = {v.path for v in trainer.decayed_variables(model)}
    self.assertEqual(decayed, {f"conv{i}_conv/kernel" for i in range(1, 5)})
    for name in ("adamw", "sgd"):
      cfg = tiny_cfg(optimizer=name, learning_rate=0.1, weight_decay=0.5, lr_schedule="constant")
      model = models.build_model("cbr_tiny", 5, (32, 32, 3), width_multiplier=0.25)
      for v in model.trainable_variables:
        v.assign(tf.ones_like(v))
      opt = trainer.make_optimizer(cfg, model)
      # Zero gradients: what changes is the decoupled decay alone, a factor 1 - lr * wd = 0.95.
      opt.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
      for v in model.trainable_variables:
        expected = 0.95 if v.path in decayed else 1.0
        self.assertAllClose(v.numpy(), np.full(v.shape, expected), msg=f"{name} {v.path}")

  def test_pretrain_command_defaults(self):
    # The pretrain command and the study's pretraining share policy.pretrain_defaults() (AdamW + decay).
    from transfusion_tf.experiments import plan  # pylint: disable=g-import-not-at-top
    cfg = plan.pretrain_config(plan.StudyConfig(out="/nonexistent", models=("cbr_tiny",),
                                                base=tiny_cfg()), "cbr_tiny")
    for key, value in policy.pretrain_defaults().items():
      self.assertEqual(getattr(cfg, key), value, key)
    self.assertEqual(cfg.dataset, "synthetic_source")
    run_dir = os.path.join(self.create_tempdir().full_path, "pre")
    proc = run_script("pretrain", f"--run_dir={run_dir}", "--model=cbr_tiny", "--train_steps=2", "--eval_every=2",
                      "--num_train=32", "--num_val=16", "--num_test=16", "--batch_size=8", "--width_multiplier=0.25")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    train = rundir.read_json(os.path.join(run_dir, "config.json"))["train"]
    for key, value in policy.pretrain_defaults().items():
      if key != "train_steps":
        self.assertEqual(train[key], value, key)
    self.assertIn("pretrained weights written to", proc.stdout)

  def test_pretrain_then_transfer_schemes(self):
    tmp = self.create_tempdir().full_path
    src_cfg = tiny_cfg(dataset="synthetic_source", train_steps=4, eval_every=4)
    path = trainer.pretrain(src_cfg, os.path.join(tmp, "pre"), os.path.join(tmp, "src.weights.h5"))
    src = models.read_weight_file(path)
    self.assertEqual(src.attrs["source"], "synthetic_source")
    self.assertEqual(src.attrs["conv_scale"], "global_factor")  # One factor: the kernels' scale profile is kept.
    ratios = [k.std() / np.sqrt(2.0 / np.prod(k.shape[:-1]))
              for k in (src.by_name()[f"conv{i}_conv"][0] for i in range(1, 5))]
    self.assertAllClose(np.exp(np.mean(np.log(ratios))), 1.0, rtol=1e-4)
    self.assertGreater(src.attrs["conv_scale_factor"], 0.0)
    for scheme in ("pretrained", "meanvar", "transfuse:conv2", "gabor"):
      run_dir = os.path.join(tmp, scheme.replace(":", "_"))
      result = trainer.train(tiny_cfg(init=scheme, weights=None if scheme == "gabor" else path), run_dir)
      self.assertEqual(result["final"]["step"], 6)
      step0 = models.read_weight_file(rundir.weights_path(run_dir, "step0")).by_name()
      if scheme == "pretrained":
        self.assertIn("standing in for ImageNet", result["source_weights"])
        self.assertAllEqual(step0["conv3_conv"][0], src.by_name()["conv3_conv"][0])
      if scheme == "transfuse:conv2":
        self.assertAllEqual(step0["conv2_conv"][0], src.by_name()["conv2_conv"][0])
        self.assertNotAllClose(step0["conv3_conv"][0], src.by_name()["conv3_conv"][0])

  def test_mixed_precision_and_tensorboard(self):
    import keras
    run_dir = self.create_tempdir().full_path
    result = trainer.train(tiny_cfg(mixed_precision=True), run_dir)
    self.assertTrue(np.isfinite(result["final"]["auc_referable"]))
    self.assertEqual(keras.mixed_precision.global_policy().name, "float32")  # Restored after the run.
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(run_dir, "tb", "events.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        tags.update(v.tag for v in event.summary.value)
    for tag in ("train/loss", "train/lr", "train/images_per_second", "val/auc_referable", "conv1/kernel",
                "train/examples"):
      self.assertIn(tag, tags)
    self.assertTrue(any("hparams" in t for t in tags), tags)

  def test_bfloat16(self):
    import keras
    cfg = tiny_cfg(mixed_precision="bfloat16")
    self.assertEqual(trainer.precision_policy(cfg.mixed_precision), "mixed_bfloat16")
    # bfloat16 has float32's exponent range: no loss scaling (float16 keeps it).
    self.assertNotIsInstance(trainer.make_optimizer(cfg), keras.optimizers.LossScaleOptimizer)
    self.assertIsInstance(trainer.make_optimizer(tiny_cfg(mixed_precision=True)), keras.optimizers.LossScaleOptimizer)
    first = trainer.train(cfg, self.create_tempdir().full_path)
    again = trainer.train(cfg, self.create_tempdir().full_path)
    self.assertTrue(np.isfinite(first["final"]["auc_referable"]))
    self.assertEqual(first["final"]["auc_referable"], again["final"]["auc_referable"])  # Deterministic on CPU.
    self.assertEqual(keras.mixed_precision.global_policy().name, "float32")  # Restored after the run.
    with self.assertRaisesRegex(UsageError, "mixed_precision='float8' must be False, True"):
      trainer.validate(tiny_cfg(mixed_precision="float8"))
    # Runs recorded before bfloat16 existed (mixed_precision False) still match a float32 study.
    self.assertEqual(trainer.train_config_differences(tiny_cfg().to_dict(), tiny_cfg(mixed_precision=False)), [])
    self.assertEqual(trainer.train_config_differences(tiny_cfg().to_dict(), cfg), ["mixed_precision"])
    from absl.testing import flagsaver
    from transfusion_tf.training import flags as train_flags
    with flagsaver.flagsaver(bfloat16=True):
      self.assertEqual(train_flags.config_from_flags().mixed_precision, "bfloat16")
    with flagsaver.flagsaver(bfloat16=True, mixed_precision=True):
      with self.assertRaisesRegex(UsageError, "--mixed_precision .float16. and --bfloat16 exclude each other"):
        train_flags.config_from_flags()

  def test_steps_to_threshold_and_cxr_metrics(self):
    run_dir = self.create_tempdir().full_path
    result = trainer.train(tiny_cfg(dataset="synthetic_cxr", convergence_auc=0.0), run_dir)
    self.assertEqual(result["steps_to_threshold"], 0)
    self.assertIn("auc_pleural_effusion", result["final"])
    self.assertEqual(result["primary_metric"], "auc_mean")
    # Every test image's patient is saved; each pathology's arrays drop masked images, and key= aligns them.
    patients = rundir.load_test_patients(run_dir)
    self.assertEqual(patients.shape, (128,))
    self.assertLess(len(np.unique(patients)), 128)  # Patients with several studies.
    for key, (scores, _) in rundir.load_test_predictions(run_dir).items():
      self.assertEqual(rundir.load_test_patients(run_dir, key=key).shape, scores.shape)
    never = trainer.train(tiny_cfg(convergence_auc=1.01), self.create_tempdir().full_path)
    self.assertIsNone(never["steps_to_threshold"])
    curve = rundir.read_json(os.path.join(run_dir, "curve.json"))
    self.assertTrue(all(np.isfinite(p["seconds"]) for p in curve))
    json.dumps(result)


class EvaluateIntervalsTest(tf.test.TestCase):
  """transfusion-evaluate's DeLong CIs on hand-made arrays (the end-to-end lines: TrainCommandTest)."""

  def test_each_key_is_clustered_over_its_own_images(self):
    rng = np.random.default_rng(0)
    task = tasks.get_task("cxr", uncertainty_policy="ignore")
    n = 60
    labels = rng.integers(0, 2, (n, 5)).astype(np.float32)
    labels[:, 4] = 1.0  # One class only: no AUC, no CI.
    masks = (rng.random((n, 5)) > 0.25).astype(np.float32)
    logits = rng.normal(size=(n, 5)) + 2.0 * labels
    patients = np.repeat(np.arange(20), 3)
    clustered = evaluate_cli.auc_intervals(task, labels, masks, logits, patients)
    plain = evaluate_cli.auc_intervals(task, labels, masks, logits)
    inputs, indices = metrics.auc_inputs(task, labels, masks, logits), metrics.auc_indices(task, masks, n)
    for key, (scores, binary) in inputs.items():
      if key == "auc_pleural_effusion":
        self.assertTrue(np.isnan(clustered[key]).all())
        continue
      auc, var = stats.delong_auc(scores, binary, clusters=patients[indices[key]])
      half = 1.959964 * np.sqrt(var)
      self.assertAllClose(clustered[key], [auc, max(0.0, auc - half), min(1.0, auc + half)])
      auc, var = stats.delong_auc(scores, binary)
      self.assertAllClose(plain[key][1], max(0.0, auc - 1.959964 * np.sqrt(var)))
    # The primary auc_mean comes first: the mean of the four labels with an AUC, its variance with their covariance.
    self.assertEqual(list(clustered)[0], "auc_mean")
    keys, scores, binary, defined = metrics.label_matrices(inputs, indices, n)
    means, cov = stats.delong_cov_mean(scores, binary, defined, patients)
    self.assertAllClose(means[0], metrics.compute_metrics(task, labels, masks, logits)["auc_mean"], atol=1e-12)
    half = 1.959964 * np.sqrt(cov[0, 0])
    self.assertAllClose(clustered["auc_mean"], [means[0], max(0.0, means[0] - half), min(1.0, means[0] + half)])
    _, plain_cov = stats.delong_cov_mean(scores, binary, defined)
    self.assertAllClose(plain["auc_mean"][1], max(0.0, means[0] - 1.959964 * np.sqrt(plain_cov[0, 0])))
    self.assertNotAllClose(cov, plain_cov)
    out = {"intervals": {"auc_mean": (0.70001, 0.65, 0.75), "auc_edema": (0.81234, 0.79011, 1.0)}, "split": "test",
           "num_examples": 60, "patients": 20}
    self.assertEqual(evaluate_cli.interval_lines(out), ["auc_mean 0.7000 [0.6500, 0.7500]",
                                                        "auc_edema 0.8123 [0.7901, 1.0000]",
                                                        "test: 60 images, 20 patients (CI clustered by patient)"])

  def test_one_vs_rest_classes_get_auc_mean_with_their_covariance(self):
    rng = np.random.default_rng(1)
    task = tasks.image_task("multiclass", ("a", "b", "c"))
    n = 300
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]
    masks = np.ones(n, np.float32)
    out = evaluate_cli.auc_intervals(task, labels, masks, logits)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    means, cov = stats.delong_cov_mean(probs.T, np.eye(3)[labels].T.astype(int))
    self.assertAllClose(out["auc_mean"][0], metrics.compute_metrics(task, labels, masks, logits)["auc_mean"])
    self.assertAllClose(out["auc_mean"][2] - out["auc_mean"][1], 2 * 1.959964 * np.sqrt(cov[0, 0]))
    # One softmax: the classes' AUCs are correlated, so the labels-as-independent variance is not the one used.
    independent = sum(stats.delong_auc(probs[:, k], labels == k)[1] for k in range(3)) / 9
    self.assertGreater(abs(cov[0, 0] / independent - 1.0), 0.05)


class DamageAndFullDiskTest(tf.test.TestCase):
  """A damaged newest checkpoint falls back to the previous one; a full disk ends with one line and resumes."""

  def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    trainer.train(tiny_cfg(), run_dir)
    os.remove(os.path.join(run_dir, "result.json"))  # Unfinished again, with checkpoints at steps 3 and 6.
    ckpt_dir = os.path.join(run_dir, "checkpoints")

    def truncate(step):
      data = tf.io.gfile.glob(os.path.join(ckpt_dir, f"ckpt-{step}.data-*"))[0]
      with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)  # Read less bytes than requested.

    truncate(6)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      result = trainer.train(tiny_cfg(), run_dir)
    warnings = [l for l in out.getvalue().splitlines() if "is damaged" in l]
    self.assertLen(warnings, 1, out.getvalue())
    self.assertIn("ckpt-6 is damaged (IndexError", warnings[0])
    self.assertIn("resuming from the previous one, ckpt-3 (step 3)", warnings[0])
    self.assertIn(f"resuming {run_dir} from step 3", out.getvalue())
    self.assertEqual(result["final"]["step"], 6)
    self.assertEqual([p["step"] for p in rundir.read_json(os.path.join(run_dir, "curve.json"))], [0, 3, 6])
    # Step 6 was trained again and saved whole: the next resume reads it.
    os.remove(os.path.join(run_dir, "result.json"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      trainer.train(tiny_cfg(), run_dir)
    self.assertIn(f"resuming {run_dir} from step 6", out.getvalue())
    self.assertNotIn("is damaged", out.getvalue())
    # A damaged list of checkpoints (the `checkpoint` file) is set aside; the checkpoints in the folder are used.
    os.remove(os.path.join(run_dir, "result.json"))
    open(os.path.join(ckpt_dir, "checkpoint"), "w").close()  # Cut to 0 bytes (garbage TensorFlow ignores itself).
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      trainer.train(tiny_cfg(), run_dir)
    self.assertIn(f"warning: {ckpt_dir}/checkpoint is damaged", out.getvalue())
    self.assertIn(f"resuming {run_dir} from step 6", out.getvalue())
    # None readable: one line naming the folder and --overwrite, and nothing changed.
    os.remove(os.path.join(run_dir, "result.json"))
    truncate(3)
    truncate(6)
    before = snapshot(run_dir)
    with self.assertRaises(UsageError) as caught:
      trainer.train(tiny_cfg(), run_dir)
    self.assertIn(f"no readable checkpoint in {ckpt_dir} (ckpt-6: IndexError", str(caught.exception))
    self.assertIn("retrain this run with --overwrite", str(caught.exception))
    self.assertEqual(snapshot(run_dir), before)
    self.assertFalse(os.path.exists(locks.lock_path(run_dir)))

  def test_full_disk_is_one_line_leaves_no_lock_and_resumes(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    args = [f"--run_dir={run_dir}", "--model=cbr_tiny", "--image_size=32", "--train_steps=6", "--eval_every=3",
            "--batch_size=8", "--width_multiplier=0.25", "--num_train=256", "--num_val=128", "--num_test=128"]
    save = tf.train.CheckpointManager.save
    calls = []

    def full_at_step_6(manager, checkpoint_number=None, **kw):
      calls.append(checkpoint_number)
      if checkpoint_number == 6:
        raise tf.errors.ResourceExhaustedError(None, None, f"{run_dir}/checkpoints/ckpt-6_temp/part-00000-of-00001"
                                               ".data-00000-of-00001.tempstate123; No space left on device")
      return save(manager, checkpoint_number=checkpoint_number, **kw)

    def curve_write_fails(path, obj):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path + ".tmp")

    def h5py_write_fails(*a, **kw):  # h5py's message: no errno, no file name.
      raise OSError("Can't write data (file write failed: errno = 28, error message = 'No space left on device')")

    cases = [(mock.patch.object(tf.train.CheckpointManager, "save", full_at_step_6), run_dir),
             (mock.patch.object(rundir, "atomic_write_json", curve_write_fails), run_dir),
             (mock.patch.object(rundir, "save_model_weights", h5py_write_fails), run_dir)]
    for patch, folder in cases:
      with patch:
        code, stderr = run_in_process(train_cli.main, *args)
      self.assertEqual(code, 1, stderr[-2000:])
      errors = error_lines(stderr)
      self.assertLen(errors, 1, stderr)
      self.assertEqual(errors[0], f"error: no space left on device writing {folder}; free space and re-run to resume")
      self.assertNotIn("Traceback", stderr)
      self.assertFalse(os.path.exists(locks.lock_path(run_dir)))  # Nothing blocks the next run.
    self.assertIn(6, calls)
    code, stderr = run_in_process(train_cli.main, *args)  # Space freed: the same command goes on.
    self.assertEqual(code, 0, stderr[-2000:])
    self.assertEqual(rundir.read_json(os.path.join(run_dir, "result.json"))["final"]["step"], 6)


class MachineTest(tf.test.TestCase):
  """The machine line of result.json and the report, and the oneDNN default the package sets."""

  def test_device_description_names_the_cpu_its_vector_extension_and_onednn(self):
    with mock.patch.object(tf.config, "list_physical_devices", return_value=[]):
      desc = trainer.device_description()
    self.assertRegex(desc, r"^CPU: .+ \(.+\), \d+ cores, oneDNN (on|off|unknown)$")
    if platform.machine() == "x86_64" and os.path.exists("/proc/cpuinfo"):
      self.assertRegex(desc, r"\(x86_64, (AVX-512|AVX2|AVX)\)")
      # conftest imports the package before TensorFlow, as every command does, so oneDNN is on here.
      self.assertTrue(desc.endswith("oneDNN on"), desc)

  def test_one_cpu_reads_the_dataset_itself_and_others_distribute_it(self):
    # A distributed dataset's own autotuning thread held each run's end for seconds beside another busy process
    # (benchmarks/iterator_teardown.py); on one CPU the trainer reads the dataset as it is.
    ds = tf.data.Dataset.range(4).batch(2)
    self.assertIs(strategy_lib.distribute_dataset(tf.distribute.OneDeviceStrategy("/cpu:0"), ds), ds)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    distributed = strategy_lib.distribute_dataset(mirrored, ds)
    self.assertIsNot(distributed, ds)
    self.assertEqual([int(tf.reduce_sum(b)) for b in distributed], [1, 5])

  def test_import_turns_onednn_on_on_x86_unless_the_user_chose(self):
    code = "import os, transfusion_tf; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    self.assertEqual(out.stdout.strip(), "1" if transfusion_tf.ONEDNN_DEFAULT_ON else "None")
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, TF_ENABLE_ONEDNN_OPTS="0"),
                         capture_output=True, text=True, check=True)
    self.assertEqual(out.stdout.strip(), "0")


class DamagedRunTest(tf.test.TestCase):
  """Issue 24: a damaged result.json resumes instead of counting as finished; an interrupted --overwrite's old run is
  named; a split of one class and a run folder given as a study's --out are refused."""

  def test_damaged_result_resumes_and_rescoring_gives_the_same_selection(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    first = trainer.train(tiny_cfg(), run_dir)
    for damage in ("[]", "{not json"):
      with open(os.path.join(run_dir, "result.json"), "w") as f:
        f.write(damage)
      again = trainer.train(tiny_cfg(), run_dir)
      self.assertEqual(again["selected"]["step"], first["selected"]["step"])
      self.assertAllClose(again["selected"]["test"]["auc_referable"], first["selected"]["test"]["auc_referable"])
      self.assertIsInstance(rundir.read_json(os.path.join(run_dir, "result.json")), dict)

  def test_interrupted_overwrite_names_the_previous_run(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    os.makedirs(run_dir)
    os.makedirs(run_dir + ".previous")
    with self.assertRaisesRegex(UsageError, r"\.previous holds the run an interrupted --overwrite was replacing.*"
                                r"mv .*\.previous"):
      trainer.train(tiny_cfg(), run_dir)

  def test_a_test_split_of_one_class_is_refused_before_training(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    data = dict(SMALL_DATA, num_test=4)  # The synthetic retina's first 4 test images are all referable.
    with self.assertRaisesRegex(UsageError, r"test split .* has one class only"):
      trainer.train(tiny_cfg(data_kwargs=data), run_dir)
    self.assertFalse(os.path.exists(os.path.join(run_dir, "config.json")))

  def test_a_run_folder_is_not_a_study_out(self):
    from transfusion_tf.experiments import study  # pylint: disable=import-outside-toplevel
    run_dir = self.create_tempdir().full_path
    open(os.path.join(run_dir, "config.json"), "w").close()
    with self.assertRaisesRegex(UsageError, r"is a run folder \(it holds config.json\), not a study folder"):
      study.check_out(run_dir)
