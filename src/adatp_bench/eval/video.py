"""Video lookup and uniform frame sampling, with errors that name the file.

Why this module exists:

* lmms-eval's upstream task utilities compute video roots from ``$HF_HOME`` at import time and call ``sys.exit()`` on
  a missing video (videomme, mlvu), and the decoders raise a zoo of library exceptions (``av.InvalidDataError``,
  ``decord.DECORDError``, ``IndexError`` …). Everything here turns such failures into
  :class:`adatp_bench.errors.VideoError` whose message names the path and, where there is one, the decoder's message.
* Frame sampling must be identical across all pruning methods, so there is exactly one implementation,
  :func:`sample_frame_indices`, following the LLaVA / lmms-eval convention (see its docstring).

Decoding uses PyAV (lmms-eval's default decoder, a core dependency). decord is an optional fallback, tried only when
PyAV cannot decode a file (``backend="auto"``); a warning is logged when it is used because the two decoders may
disagree by a frame on odd containers.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from adatp_bench.errors import ConfigError, VideoError, VideoTruncatedError

log = logging.getLogger(__name__)

Backend = Literal["auto", "pyav", "decord"]
DEFAULT_EXTENSIONS: tuple[str, ...] = (".mp4", ".MP4", ".mkv")
#: Videos with at least this many frames (header count) are sampled by seeking instead of decoding every frame up to
#: the last sampled one: an hour-long video has ~100k frames, of which 8-64 are needed. Same frames either way.
SEEK_MIN_FRAMES = 1500


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learned about a decodable video."""

    path: str
    num_frames: int  # frame count from the container header; 0 when the container does not say
    fps: float | None
    width: int
    height: int
    backend: str  # "pyav" or "decord"


@dataclass(frozen=True)
class SampledVideo:
    """The frames a cell feeds the model, and which frames of the video they are."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    indices: list[int]  # frame index of each returned frame (repeats when the video is shorter than N)
    total_frames: int  # frames the video has (decodable ones)

    @property
    def repeats_frames(self) -> bool:
        """True when the video has fewer frames than were sampled, so frames repeat."""
        return self.total_frames < len(self.indices)


#: Bump when the frame sampling or decoding changes what frames a video yields: cached frames are then re-decoded.
SAMPLER_VERSION = 1
#: A header may overstate the frame count by a frame or two (some muxers do); more than this is a truncated file.
TRUNCATION_TOLERANCE = 2


def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """Uniformly spaced frame indices, exactly as LLaVA-OneVision / LLaVA-Video and lmms-eval's decord path sample.

    ``np.linspace(0, total_frames - 1, num_frames, dtype=int)``: the first and last frames are always included and
    indices are truncated (not rounded). When the video has fewer frames than requested, indices **repeat** (e.g.
    ``total_frames=3, num_frames=5`` gives ``[0, 0, 1, 1, 2]``), so the model always receives ``num_frames`` frames.
    This is the documented LLaVA behaviour; note that lmms-eval's PyAV ``read_video`` instead returns
    ``min(total, num)`` frames.

    Raises:
        ConfigError: ``num_frames < 1``.
        VideoError: ``total_frames < 1`` (nothing to sample from).
    """
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
    if total_frames < 1:
        raise VideoError(f"cannot sample {num_frames} frames from a video with {total_frames} frames")
    return np.linspace(0, total_frames - 1, num_frames, dtype=int)


def resolve_video(
    root: str | os.PathLike[str],
    relative_name: str,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
) -> Path:
    """Find ``relative_name`` under ``root``, trying the name as given and then with each extension.

    ``relative_name`` may carry an extension (``"clip.mp4"``; MLVU, LongVideoBench) or not (``"fFjv93ACGo8"``;
    VideoMME's ``videoID``). If it ends with one of ``extensions``, that extension is also swapped for the others,
    mirroring the upstream VideoMME lookup (``.mp4`` → ``.MP4`` → ``.mkv``).

    Raises:
        VideoError: nothing found; the message lists every path tried.
    """
    if not relative_name:
        raise VideoError(f"empty video name (root {root})")
    base = Path(root)
    stem = relative_name
    for ext in extensions:
        if relative_name.endswith(ext):
            stem = relative_name[: -len(ext)]
            break
    candidates: list[Path] = [base / relative_name, *(base / f"{stem}{ext}" for ext in extensions)]
    tried: list[Path] = list(dict.fromkeys(candidates))  # de-duplicate, keep order
    for candidate in tried:
        if candidate.is_file():
            return candidate
    hint = "" if base.is_dir() else f" (the directory {base} does not exist)"
    raise VideoError(f"video {relative_name!r} not found{hint}; tried: " + ", ".join(str(p) for p in tried))


def load_video_frames(path: str | os.PathLike[str], num_frames: int, *, backend: Backend = "auto") -> np.ndarray:
    """The frames of :func:`read_sampled` alone, ``(N, H, W, 3)`` uint8 RGB."""
    return read_sampled(path, num_frames, backend=backend).frames


def read_sampled(path: str | os.PathLike[str], num_frames: int, *, backend: Backend = "auto") -> SampledVideo:
    """Decode ``num_frames`` uniformly sampled frames (:func:`sample_frame_indices`), with their indices.

    The frame count comes from the container header; when the header has none (some mkv/webm files), the frames are
    counted by decoding. A header that overstates the count by more than :data:`TRUNCATION_TOLERANCE` frames means a
    truncated file (e.g. a "faststart" mp4 whose index survived a cut download): :class:`VideoError`, never a silent
    re-sampling over what is left. Long videos
    (``>= SEEK_MIN_FRAMES``) are read by seeking to each sampled frame (frame-exact, checked by pts) instead of
    decoding every frame, falling back to sequential decoding when the file does not allow exact seeking.

    Args:
        path: video file.
        num_frames: frames to return (repeated frames for short videos, see :func:`sample_frame_indices`).
        backend: ``"pyav"``, ``"decord"``, or ``"auto"`` (PyAV, then decord if PyAV fails and decord is installed).

    Raises:
        VideoError: the file is missing, cannot be opened or decoded, has no video stream, or yields no frames.
            The message names the path and carries the decoder's message.
    """
    file = _existing_file(path)
    if backend not in ("auto", "pyav", "decord"):
        raise ConfigError(f"unknown video backend {backend!r}; expected 'auto', 'pyav' or 'decord'")
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
    if backend == "decord":
        return _decord_read(file, num_frames)
    try:
        return _pyav_read(file, num_frames)
    except VideoTruncatedError:
        raise  # the file is damaged: another decoder must not paper over it
    except VideoError as pyav_error:
        if backend == "pyav" or not _decord_available():
            raise
        try:
            frames = _decord_read(file, num_frames)
        except VideoError as decord_error:
            raise VideoError(f"{pyav_error}; decord fallback also failed: {decord_error}") from pyav_error
        log.warning("PyAV could not decode %s (%s); used decord instead", file, pyav_error)
        return frames


def probe_video(path: str | os.PathLike[str], *, backend: Backend = "auto") -> VideoInfo:
    """Check that ``path`` exists, has a video stream and decodes at least its first frame.

    Cheap (opens the file and decodes one frame) and cached per ``(path, size, mtime)``, so task code can call it for
    every document. Raises :class:`VideoError` naming the file otherwise.
    """
    file = _existing_file(path)
    stat = file.stat()
    return _probe_cached(str(file.resolve()), stat.st_size, stat.st_mtime_ns, backend)


# --------------------------------------------------------------------------------------------------------------------
# internals


def _existing_file(path: str | os.PathLike[str]) -> Path:
    file = Path(path)
    if not file.exists():
        raise VideoError(f"video file not found: {file}")
    if not file.is_file():
        raise VideoError(f"video path is not a regular file: {file}")
    return file


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except Exception:  # decord's import can fail with more than ImportError (missing shared libraries)
        return False
    return True


def _pyav_decode_selected(file: Path, indices: np.ndarray) -> tuple[list[np.ndarray | None], int]:
    """Decode sequentially up to ``max(indices)``; return the requested frames (None if past the end) and the count."""
    import av

    wanted: dict[int, list[int]] = {}
    for position, index in enumerate(indices.tolist()):
        wanted.setdefault(int(index), []).append(position)
    last = int(indices.max())
    out: list[np.ndarray | None] = [None] * len(indices)
    decoded = 0
    with av.open(str(file)) as container:
        if not container.streams.video:
            raise VideoError(f"no video stream in {file}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i in wanted:
                    array = frame.to_ndarray(format="rgb24")
                    for position in wanted[i]:
                        out[position] = array
                if i >= last:
                    break
        except av.error.EOFError:  # some truncated/empty containers end with EOFError instead of stopping
            pass
        except av.error.InvalidDataError:
            if decoded == 0:
                raise
            # data ends mid-packet after `decoded` good frames (a cut file): the caller compares with the header
    return out, decoded


def _pyav_header_frames(file: Path) -> int:
    import av

    with av.open(str(file)) as container:
        if not container.streams.video:
            raise VideoError(f"no video stream in {file}")
        return int(container.streams.video[0].frames or 0)


def _pyav_count_frames(file: Path) -> int:
    import av

    count = 0
    with av.open(str(file)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for _ in container.decode(stream):
                count += 1
        except av.error.EOFError:
            pass
    return count


def _pyav_read_by_seeking(file: Path, num_frames: int) -> SampledVideo | None:
    """Frame-exact sampling by seeking, for long videos; None when the file does not allow it (caller falls back).

    The presentation-order frame list is the sorted packet pts (demuxing only, no decoding), so frame ``i`` here is
    frame ``i`` of a sequential decode. For each wanted frame we seek to the keyframe before it and decode forward to
    the frame whose pts equals the target; any surprise (missing pts, target not hit) returns None.
    """
    import av

    with av.open(str(file)) as container:
        stream = container.streams.video[0]
        pts = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None and packet.size)
        if not pts or len(set(pts)) != len(pts):
            return None
        indices = sample_frame_indices(len(pts), num_frames)
        stream.thread_type = "AUTO"
        found: dict[int, np.ndarray] = {}
        for index in sorted(set(indices.tolist())):
            target = pts[index]
            container.seek(target, stream=stream, backward=True, any_frame=False)
            try:
                for frame in container.decode(stream):
                    if frame.pts is None:
                        return None
                    if frame.pts >= target:
                        if frame.pts == target:
                            found[index] = frame.to_ndarray(format="rgb24")
                        break
            except av.error.EOFError:
                pass
            if index not in found:
                return None
    return SampledVideo(np.stack([found[i] for i in indices.tolist()]), [int(i) for i in indices], len(pts))


def _pyav_read(file: Path, num_frames: int) -> SampledVideo:
    try:
        total = _pyav_header_frames(file)
        if total >= max(SEEK_MIN_FRAMES, 8 * num_frames):  # seeking pays off only for sparse sampling
            try:
                frames = _pyav_read_by_seeking(file, num_frames)
            except Exception as exc:  # the sequential path below reports real decoding errors
                log.debug("%s: seeking failed (%s); decoding sequentially", file, exc)
                frames = None
            if frames is not None:
                return frames
        if total <= 0:
            total = _pyav_count_frames(file)
        if total <= 0:
            raise VideoError(f"no decodable frames in {file}")
        indices = sample_frame_indices(total, num_frames)
        frames, decoded = _pyav_decode_selected(file, indices)
        if any(f is None for f in frames):  # the header overstated the frame count
            if decoded == 0:
                raise VideoError(f"no decodable frames in {file} (header says {total})")
            if total - decoded > TRUNCATION_TOLERANCE:
                raise VideoTruncatedError(
                    f"{file} is truncated: its header says {total} frames but only {decoded} decode (a cut "
                    "download?). Re-download or re-encode it (ffmpeg -i in.mp4 -c:v libx264 out.mp4)."
                )
            log.debug("%s: header says %d frames but %d decode; sampling from %d", file, total, decoded, decoded)
            total, indices = decoded, sample_frame_indices(decoded, num_frames)
            frames, _ = _pyav_decode_selected(file, indices)
            if any(f is None for f in frames):
                raise VideoError(f"{file}: frame count changed between two decoding passes")
    except VideoError:
        raise
    except Exception as exc:  # any decoder failure means "this file cannot be decoded"; keep the decoder's message
        raise VideoError(f"cannot decode video {file} with PyAV: {type(exc).__name__}: {exc}") from exc
    return SampledVideo(np.stack(frames), [int(i) for i in indices], total)  # type: ignore[arg-type]


def _decord_read(file: Path, num_frames: int) -> SampledVideo:
    try:
        import decord
    except Exception as exc:
        raise VideoError(f"cannot decode video {file}: decord is not importable ({exc})") from exc
    try:
        reader = decord.VideoReader(str(file), ctx=decord.cpu(0), num_threads=1)
        total = len(reader)
        if total <= 0:
            raise VideoError(f"no decodable frames in {file}")
        indices = sample_frame_indices(total, num_frames)
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(f"cannot decode video {file} with decord: {type(exc).__name__}: {exc}") from exc
    return SampledVideo(np.ascontiguousarray(frames, dtype=np.uint8), [int(i) for i in indices], total)


def _pyav_probe(file: Path) -> VideoInfo:
    import av

    try:
        with av.open(str(file)) as container:
            if not container.streams.video:
                raise VideoError(f"no video stream in {file}")
            stream = container.streams.video[0]
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise VideoError(f"no decodable frames in {file}")
            rate = stream.average_rate
            return VideoInfo(
                path=str(file),
                num_frames=int(stream.frames or 0),
                fps=float(rate) if rate else None,
                width=int(first.width),
                height=int(first.height),
                backend="pyav",
            )
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(f"cannot decode video {file} with PyAV: {type(exc).__name__}: {exc}") from exc


def _decord_probe(file: Path) -> VideoInfo:
    frames = _decord_read(file, 1).frames
    try:
        import decord

        fps = float(decord.VideoReader(str(file), ctx=decord.cpu(0), num_threads=1).get_avg_fps())
    except Exception:
        fps = None
    return VideoInfo(str(file), 0, fps, int(frames.shape[2]), int(frames.shape[1]), "decord")


@functools.lru_cache(maxsize=8192)
def _probe_cached(path: str, size: int, mtime_ns: int, backend: Backend) -> VideoInfo:
    del size, mtime_ns  # cache key only: a rewritten file is probed again
    file = Path(path)
    if backend == "decord":
        return _decord_probe(file)
    try:
        return _pyav_probe(file)
    except VideoError as pyav_error:
        if backend == "pyav" or not _decord_available():
            raise
        try:
            info = _decord_probe(file)
        except VideoError as decord_error:
            raise VideoError(f"{pyav_error}; decord fallback also failed: {decord_error}") from pyav_error
        log.warning("PyAV could not decode %s (%s); decord can", file, pyav_error)
        return info
