"""transfusion_tf: reproduce and extend Raghu et al., "Transfusion" (NeurIPS 2019) with TensorFlow/Keras.

Layers, each importing only earlier ones (tests/imports_test.py checks it, and that no module is in an import
cycle): errors, files -> models -> data -> training -> analysis -> experiments -> cli. The data flows
data -> models -> training -> analysis -> experiments, but data imports models for its preprocessing.
"""
import os as _os
import platform as _platform

# TensorFlow's C++ INFO/WARNING lines drown the progress output. Level 2 keeps errors and leaves oneDNN on
# (turning oneDNN off made training 3.3x slower on the 2-core CPU machines). Users can still override it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512-class features; on an AVX2-only x86
# CPU (measured: a 2-core AMD EPYC) they are off, and a full-width ResNet50 at 64 px trained at 11.9 img/s instead
# of 27.5 img/s with them on (benchmarks/trainer_benchmark.py). On by default on every x86-64 machine, so that one
# kind of kernel runs everywhere; TF_ENABLE_ONEDNN_OPTS=0 turns them off.
ONEDNN_DEFAULT_ON = _platform.machine().lower() in ("x86_64", "amd64")
if ONEDNN_DEFAULT_ON:
  _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
