"""Concurrent training runs on one machine (`--parallel_runs`) and shards from a cluster job array (`--shard=auto`).

N concurrent runs are N processes on one output folder: the study process itself and N - 1 children running the
same command with --study_stage=train. They share nothing but the folder; the run and source locks
(training/locks.py) make each run and each pretraining happen once, so resume, the plan, the progress lines and
the report work as with one process. The parent waits for its children, then runs the analyses and the report.

  auto on GPUs: one run per GPU, each child seeing only its GPU (CUDA_VISIBLE_DEVICES).
  auto on CPU: runs = cores for up to 2 cores, else cores // 2, and TensorFlow's thread pools sized to
               cores // runs each (intra-op) with 1 inter-op thread, so the runs do not fight over the cores.
A child dies with its parent (Linux: PR_SET_PDEATHSIG), so killing the study stops every child; a re-run then
resumes every unfinished run from its checkpoint.
"""
import ctypes
import os
import signal
import subprocess
import sys

from transfusion_tf.errors import UsageError

CHILD_ENV = "TRANSFUSION_TF_PARALLEL_CHILD"
# Start time (time.time(), seconds) of the study command that started a report process, for the report's wall time.
STARTED_ENV = "TRANSFUSION_TF_STUDY_STARTED"
# Processes a report process shares its analyses between (run_report sets it from the sweep's).
ANALYSIS_WORKERS_ENV = "TRANSFUSION_TF_ANALYSIS_WORKERS"
# In a helper of a report process: the comma-separated experiment ids whose analyses it computes (spawn_analyses).
ANALYSES_ENV = "TRANSFUSION_TF_ANALYSES"


def resolve(text, gpus, cores):
  """(number of concurrent runs, intra-op threads per run or None) for --parallel_runs=`text` ("auto" or N)."""
  if text == "auto":
    if gpus:
      return gpus, None
    n = cores if cores <= 2 else cores // 2
  else:
    try:
      n = int(text)
    except ValueError:
      raise UsageError(f"--parallel_runs={text!r} must be 'auto' or a positive integer") from None
    if n < 1:
      raise UsageError(f"--parallel_runs={text!r} must be 'auto' or a positive integer")
  if n == 1:
    return 1, None
  return n, (None if gpus else max(1, cores // n))


def gpu_count():
  """GPUs TensorFlow sees (listing them does not start the runtime)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return len(tf.config.list_physical_devices("GPU"))


def configure(intra_op, gpus=0):
  """For one of several concurrent runs: sizes TensorFlow's thread pools (intra_op threads, 1 inter-op) and, with
  `gpus` > 0, keeps this process on the first GPU (the children get the others). Call before TensorFlow's first op."""
  if intra_op is None and not gpus:
    return
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if intra_op is not None:
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  if gpus:
    tf.config.set_visible_devices(tf.config.list_physical_devices("GPU")[:1], "GPU")


def _die_with_parent():
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except OSError:
    pass  # Not Linux: children outlive a SIGKILLed parent, and their locks go stale when they finish.


def spawn(count, argv, intra_op, gpus, started=None):
  """Starts `count` child processes running this study's command with --study_stage=train. argv: the command
  line as given (sys.argv); child k sees GPU k mod `gpus` when there are GPUs; `started`: the study's start time
  (time.time()), so that the children's elapsed times and the parent's read on one clock. Returns the Popen
  objects."""
  children = []
  for k in range(1, count + 1):
    env = dict(os.environ, **{CHILD_ENV: str(k)})
    if started is not None:
      env[STARTED_ENV] = repr(float(started))
    if gpus:
      env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
    if intra_op is not None:
      env.update(OMP_NUM_THREADS=str(intra_op), TF_NUM_INTRAOP_THREADS=str(intra_op), TF_NUM_INTEROP_THREADS="1")
    # The child keeps the parent's flags, its --shard included: it shares the parent's part of the sweep.
    cmd = [sys.executable, "-m", "transfusion_tf.cli.study"] + list(argv[1:]) + [
        "--study_stage=train", "--parallel_runs=1"]
    children.append(subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if os.name == "posix" else None))
  return children


def run_report(argv, started, workers=1):
  """Runs the analyses and the report of this study's command (`argv`, sys.argv) in a fresh process with
  TensorFlow's default thread pools, and waits for it. Used after a CPU sweep whose processes were each sized to a
  share of the cores: the pools cannot be resized once TensorFlow runs, and the analyses would keep that share.
  `started`: the study's start time (time.time()), for the report's wall time; `workers`: the sweep's processes,
  which the report process shares its analyses between (analysis_workers). Returns the exit code."""
  env = {k: v for k, v in os.environ.items()
         if k not in (CHILD_ENV, "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
  env[STARTED_ENV] = repr(float(started))
  env[ANALYSIS_WORKERS_ENV] = str(int(workers))
  # --overwrite was the sweep's (the report stage refuses it); last on the line, --nooverwrite wins over a flagfile.
  cmd = [sys.executable, "-m", "transfusion_tf.cli.study"] + list(argv[1:]) + [
      "--study_stage=report", "--parallel_runs=1", "--nooverwrite"]
  return subprocess.call(cmd, env=env, preexec_fn=_die_with_parent if os.name == "posix" else None)


def analysis_workers(text, cores, gpus=0):
  """Processes that share a report's analyses: the report process's own setting (ANALYSIS_WORKERS_ENV, from the
  sweep that started it), else what --parallel_runs=`text` gives on CPU (resolve); one where there are GPUs (each
  process would take a GPU's memory). Most of an analysis is single-threaded (activations batch by batch, SVCCA on
  small matrices): one process used 1.1 of 2 cores on the demo's."""
  if gpus:
    return 1
  if os.environ.get(ANALYSIS_WORKERS_ENV):
    try:
      return max(1, int(os.environ[ANALYSIS_WORKERS_ENV]))
    except ValueError:
      return 1
  return resolve(text, 0, cores)[0]


def analysis_helper_ids():
  """The experiment ids this process computes the analyses of, as a helper of a report process
  (spawn_analyses); None in any other process."""
  ids = os.environ.get(ANALYSES_ENV)
  return None if ids is None else [i for i in ids.split(",") if i]


def spawn_analyses(argv, groups, threads=1):
  """Starts one helper process per group of experiment ids (a list of lists), each computing those analyses of
  this study's command (`argv`, sys.argv) into the study's analysis cache, with `threads` intra-op threads (the
  cores divided by the processes). The caller holds the analysis lock, reads the cached analyses back when the
  helpers end (wait), and writes the report. Returns the Popen objects."""
  helpers = []
  for ids in groups:
    env = {k: v for k, v in os.environ.items() if k not in (CHILD_ENV, ANALYSIS_WORKERS_ENV)}
    env.update({ANALYSES_ENV: ",".join(ids)}, OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS="1")
    cmd = [sys.executable, "-m", "transfusion_tf.cli.study"] + list(argv[1:]) + [
        "--study_stage=report", "--parallel_runs=1", "--nooverwrite"]
    helpers.append(subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if os.name == "posix" else None))
  return helpers


def started_time(default):
  """The study's start time: the parent's (STARTED_ENV) in a sweep child or a report process, else `default`."""
  try:
    return float(os.environ[STARTED_ENV])
  except (KeyError, ValueError):
    return default


def wait(children):
  """Waits for every child; returns the exit codes."""
  return [c.wait() for c in children]


def array_shard(environ=None):
  """(i, n) from a cluster job array's environment (Slurm, SGE, PBS), or a UsageError naming what is missing or
  which variable holds a value that is not an integer."""
  env = os.environ if environ is None else environ

  def num(name, default=None):
    value = env.get(name, default)
    try:
      return int(value)
    except (TypeError, ValueError):
      raise UsageError(f"--shard=auto: the job-array variable {name}={value!r} is not an integer") from None
  if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
    first = num("SLURM_ARRAY_TASK_MIN", "0")
    i, n = num("SLURM_ARRAY_TASK_ID") - first, num("SLURM_ARRAY_TASK_COUNT")
  elif "SGE_TASK_ID" in env and env.get("SGE_TASK_LAST", "undefined") != "undefined":
    first, step = num("SGE_TASK_FIRST", "1"), num("SGE_TASK_STEPSIZE", "1")
    if step < 1:
      raise UsageError(f"--shard=auto: the job-array variable SGE_TASK_STEPSIZE={step} is not positive")
    i = (num("SGE_TASK_ID") - first) // step
    n = (num("SGE_TASK_LAST") - first) // step + 1
  elif "PBS_ARRAY_INDEX" in env and "TRANSFUSION_TF_ARRAY_COUNT" in env:
    i, n = num("PBS_ARRAY_INDEX"), num("TRANSFUSION_TF_ARRAY_COUNT")
  else:
    raise UsageError("--shard=auto found no job array in the environment (Slurm SLURM_ARRAY_TASK_ID and "
                     "SLURM_ARRAY_TASK_COUNT, SGE SGE_TASK_ID/FIRST/LAST, or PBS_ARRAY_INDEX with "
                     "TRANSFUSION_TF_ARRAY_COUNT); pass --shard=i/n")
  if not 0 <= i < n:
    raise UsageError(f"--shard=auto: job-array index {i} is outside 0..{n - 1}")
  return i, n
