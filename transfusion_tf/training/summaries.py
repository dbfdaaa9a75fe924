"""TensorBoard summaries under the project's names: `split/metric` scalars, input images, conv1 histograms,
hparams once per run. A Writer with no log dir (non-chief workers) does nothing."""
import numpy as np
import tensorflow as tf


class Writer:
  """Thin wrapper over tf.summary for one run's `tb/` directory."""

  def __init__(self, logdir):
    self.writer = tf.summary.create_file_writer(logdir) if logdir else None

  def scalars(self, values, step):
    """values: {name like 'train/loss' or 'val/auc_referable': float}."""
    if self.writer is None:
      return
    with self.writer.as_default(step=int(step)):
      for name, value in values.items():
        if value is not None and np.isfinite(value):
          tf.summary.scalar(name, float(value))

  def histogram(self, name, values, step):
    if self.writer is None:
      return
    with self.writer.as_default(step=int(step)):
      tf.summary.histogram(name, tf.convert_to_tensor(values))

  def images(self, name, images, step):
    """images: (N, H, W, C) with C in {1, 3}, any range; min-max scaled per image for display."""
    if self.writer is None or images is None or len(images) == 0:
      return
    x = np.asarray(images, np.float32)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    with self.writer.as_default(step=int(step)):
      tf.summary.image(name, (x - lo) / np.maximum(hi - lo, 1e-6), max_outputs=len(x))

  def hparams(self, config, run_name):
    """Writes the run's hyper-parameters once (TensorBoard's HParams dashboard)."""
    if self.writer is None:
      return
    from tensorboard.plugins.hparams import api as hp
    flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()
            if v is not None}
    with self.writer.as_default():
      hp.hparams(flat, trial_id=str(run_name))

  def close(self):
    if self.writer is not None:
      self.writer.flush()
      self.writer.close()
