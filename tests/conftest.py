"""Shared pytest set-up: quiet TensorFlow's C++ logs and run headless."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
