#!/usr/bin/env python
"""Prints each model's parameter count beside the paper's (same as `transfusion-models`)."""
from transfusion_tf.cli.models import run

if __name__ == "__main__":
  run()
