"""adatp-bench: a benchmarking harness for training-free visual-token pruning in Video LLMs (see README.md)."""

__version__ = "0.1.0"
