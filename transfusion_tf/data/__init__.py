"""Data: synthetic tasks, real readers (retina, chexpert, imagenet), what they share (records, sources), task specs,
the dataset registry and the tf.data pipeline."""
