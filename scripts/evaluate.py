#!/usr/bin/env python
"""Same as `transfusion-evaluate`."""
from transfusion_tf.cli.evaluate import run

if __name__ == "__main__":
  run()
