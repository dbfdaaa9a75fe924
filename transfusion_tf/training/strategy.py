"""The one place that picks a tf.distribute strategy."""
import json
import os

import tensorflow as tf

from transfusion_tf.errors import UsageError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(name="auto"):
  """Returns a tf.distribute.Strategy for `name`.

  auto: MirroredStrategy over all GPUs when there are several, else OneDeviceStrategy on the GPU or the CPU.
  multi_worker: MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable.
  tpu: TPUStrategy from TPUClusterResolver (Colab or a TPU VM).
  The global batch is always per-replica batch x strategy.num_replicas_in_sync.
  """
  if name not in STRATEGIES:
    raise UsageError(f"--strategy={name!r} is not one of {', '.join(STRATEGIES)}")
  # list_physical_devices, unlike list_logical_devices, leaves the runtime uninitialised, which
  # MultiWorkerMirroredStrategy needs ("collective ops must be configured at program startup").
  gpus = tf.config.list_physical_devices("GPU")
  if name == "auto":
    name = "mirrored" if len(gpus) > 1 else "one_device"
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise UsageError("--strategy=multi_worker needs the TF_CONFIG environment variable (cluster and task)")
    return tf.distribute.MultiWorkerMirroredStrategy()
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def distribute_dataset(strategy, dataset):
  """`dataset` as `strategy`'s train step reads it: distributed over the replicas, except on a one-device CPU strategy,
  where it is returned as it is (each step's batch is then the replica's whole batch, the same tensors).

  Why: distributing wraps the dataset in a multi-device iterator whose per-device dataset runs a tf.data autotuning
  thread of its own. Beside another busy process (--parallel_runs) that thread's optimisation took about 10 s of CPU
  at a time, and deleting the iterator at a run's end waited for it: 6-39 s between runs (benchmarks/
  iterator_teardown.py). On one CPU there is no device to prefetch to, so nothing is lost.
  """
  if isinstance(strategy, tf.distribute.OneDeviceStrategy) and "CPU" in strategy.extended.worker_devices[0].upper():
    return dataset
  return strategy.experimental_distribute_dataset(dataset)


def is_chief():
  """True unless TF_CONFIG names this process a non-chief worker (only the chief writes results)."""
  cfg = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  task = cfg.get("task", {})
  if not task:
    return True
  if task.get("type") == "chief":
    return True
  has_chief = "chief" in cfg.get("cluster", {})
  return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and not has_chief
