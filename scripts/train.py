#!/usr/bin/env python
"""Trains one model (same as `transfusion-train`)."""
from transfusion_tf.cli.train import run

if __name__ == "__main__":
  run()
