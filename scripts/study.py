#!/usr/bin/env python
"""Same as `transfusion-study`."""
from transfusion_tf.cli.study import run

if __name__ == "__main__":
  run()
