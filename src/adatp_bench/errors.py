"""Errors the harness raises on bad input. Each message names the file, key or value at fault."""


class AdatpBenchError(Exception):
    """Base class for every error raised by adatp-bench on bad input or bad settings."""


class ConfigError(AdatpBenchError, ValueError):
    """An impossible or unknown setting (caught before any model is loaded)."""


class UnreachableSetting(ConfigError):
    """A valid setting that this method cannot reach on this model (DyCoke below 25%, a budget that keeps no token
    per frame). A sweep marks such a cell "n/a" with this reason instead of failing it; a single run still exits
    non-zero with it."""


class VideoError(AdatpBenchError, FileNotFoundError):
    """A video is missing, unreadable, or has too few frames."""


class VideoTruncatedError(VideoError):
    """A video's header promises more frames than the file holds (a cut download)."""


class DatasetError(AdatpBenchError, ValueError):
    """A dataset file is missing or does not follow the expected schema."""


class DataCheckError(DatasetError):
    """A cell's pre-flight found rows or videos it cannot score (the message lists each, by file and reason)."""


class ModelLoadError(AdatpBenchError, OSError):
    """Weights are missing, or a checkpoint has the wrong architecture."""


class EvaluationError(AdatpBenchError, RuntimeError):
    """lmms-eval finished without the metrics we expected (its CLI exits 0 even then)."""


def root_cause(err: BaseException) -> BaseException:
    """The error that explains a failure: wrappers (tenacity's ``RetryError``, futures, ``raise ... from``) peeled
    off, down to the innermost adatp-bench error when there is one (it names the file, column, row or value), else
    the innermost error."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        attempt = getattr(current, "last_attempt", None)  # tenacity.RetryError
        if attempt is not None and hasattr(attempt, "exception") and attempt.exception() is not None:
            current = attempt.exception()
            continue
        current = current.__cause__ or current.__context__
    ours = [e for e in chain if isinstance(e, AdatpBenchError)]
    return ours[-1] if ours else chain[-1]
