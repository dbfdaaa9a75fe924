"""transfusion_tf: reproduce and extend Raghu et al., "Transfusion" (NeurIPS 2019) with TensorFlow/Keras.

Layers, each importing only earlier ones (tests/imports_test.py checks it, and that no module is in an import
cycle): errors, files -> models -> data -> training -> analysis -> experiments -> cli. The data flows
data -> models -> training -> analysis -> experiments, but data imports models for its preprocessing.
"""
import os as _os

# TensorFlow's C++ INFO/WARNING lines drown the progress output. Level 2 keeps errors and leaves oneDNN on
# (turning oneDNN off made training 3.3x slower on the 2-core CPU machines). Users can still override it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
