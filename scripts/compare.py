#!/usr/bin/env python
"""Same as `transfusion-compare`."""
from transfusion_tf.cli.compare import run

if __name__ == "__main__":
  run()
