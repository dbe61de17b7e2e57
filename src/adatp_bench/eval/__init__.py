"""Evaluation data layer: video decoding, synthetic benchmarks, offline lmms-eval tasks and result checks."""
