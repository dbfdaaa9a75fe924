"""Data: synthetic tasks, real readers, task specs and the tf.data pipeline."""
