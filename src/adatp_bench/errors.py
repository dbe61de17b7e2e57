"""Errors the harness raises on bad input. Each message names the file, key or value at fault."""


class AdatpBenchError(Exception):
    """Base class for every error raised by adatp-bench on bad input or bad settings."""


class ConfigError(AdatpBenchError, ValueError):
    """An impossible or unknown setting (caught before any model is loaded)."""


class VideoError(AdatpBenchError, FileNotFoundError):
    """A video is missing, unreadable, or has too few frames."""


class DatasetError(AdatpBenchError, ValueError):
    """A dataset file is missing or does not follow the expected schema."""


class ModelLoadError(AdatpBenchError, OSError):
    """Weights are missing, or a checkpoint has the wrong architecture."""


class EvaluationError(AdatpBenchError, RuntimeError):
    """lmms-eval finished without the metrics we expected (its CLI exits 0 even then)."""
