"""Command-line entry points (absl apps). scripts/*.py are thin wrappers around these."""
