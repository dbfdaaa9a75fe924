"""Two local worker processes train under MultiWorkerMirroredStrategy and must end with identical weights."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from transfusion_tf import models
from transfusion_tf.training import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


class MultiWorkerTest(tf.test.TestCase):

  def test_two_workers_identical_weights(self):
    run_dir = os.path.join(self.create_tempdir().full_path, "run")
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    args = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--strategy=multi_worker",
            "--model=cbr_tiny", "--image_size=32", "--width_multiplier=0.25", "--train_steps=4", "--eval_every=2",
            "--batch_size=4", "--num_train=64", "--num_val=32", "--num_test=32", f"--run_dir={run_dir}"]
    procs = []
    for i in range(2):
      env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                   "task": {"type": "worker", "index": i}}))
      procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True))
    outs = []
    for p in procs:
      try:
        outs.append(p.communicate(timeout=240)[0])
      except subprocess.TimeoutExpired:
        for q in procs:
          q.kill()
        raise
    for p, out in zip(procs, outs):
      self.assertEqual(p.returncode, 0, out[-3000:])
    result = rundir.read_json(os.path.join(run_dir, "result.json"))
    self.assertEqual(result["replicas"], 2)
    self.assertEqual(result["global_batch"], 8)
    chief = models.read_weight_file(rundir.weights_path(run_dir, "final")).by_name()
    other = models.read_weight_file(
        rundir.weights_path(os.path.join(run_dir, "_workers", "1"), "final")).by_name()
    step0 = models.read_weight_file(rundir.weights_path(run_dir, "step0")).by_name()
    self.assertEqual(sorted(chief), sorted(other))
    differ = [f"{name}[{i}]" for name in chief for i, (a, b) in enumerate(zip(chief[name], other[name]))
              if not np.allclose(a, b, rtol=0, atol=1e-6)]
    self.assertEqual(differ, [])
    self.assertFalse(np.allclose(chief["conv1_conv"][0], step0["conv1_conv"][0]))  # It did train.
