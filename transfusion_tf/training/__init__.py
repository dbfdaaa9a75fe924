"""Training: distribution strategy, custom-loop trainer, exact metrics, summaries."""
