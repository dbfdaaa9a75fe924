#!/usr/bin/env python
"""Same as `transfusion-pretrain`."""
from transfusion_tf.cli.pretrain import run

if __name__ == "__main__":
  run()
