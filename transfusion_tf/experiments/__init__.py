"""Experiments: the study runner and its report."""
