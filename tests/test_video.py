"""Frame sampling, video lookup and decoding errors (adatp_bench.eval.video)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from adatp_bench.errors import ConfigError, VideoError
from adatp_bench.eval import video as video_module
from adatp_bench.eval.synthetic import PALETTE, Scene, VideoSpec, render_scenes, write_mp4
from adatp_bench.eval.video import load_video_frames, probe_video, resolve_video, sample_frame_indices

SPEC = VideoSpec(width=64, height=48, num_frames=24, fps=8)
SCENES = [Scene(0, 12, "red", "white"), Scene(12, 24, "blue", "yellow")]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "two_scenes.mp4"
    write_mp4(render_scenes(SCENES, SPEC), path, SPEC.fps)
    return path


# -- sampling ---------------------------------------------------------------------------------------------------------


def test_uniform_indices_include_both_ends_and_are_evenly_spaced() -> None:
    idx = sample_frame_indices(100, 8)
    assert idx.tolist() == [0, 14, 28, 42, 56, 70, 84, 99]  # floor((99 * k) / 7)
    assert np.issubdtype(idx.dtype, np.integer)
    assert sample_frame_indices(32, 32).tolist() == list(range(32))
    assert sample_frame_indices(5, 1).tolist() == [0]


def test_short_video_repeats_frames() -> None:
    assert sample_frame_indices(3, 5).tolist() == [0, 0, 1, 1, 2]
    assert sample_frame_indices(1, 4).tolist() == [0, 0, 0, 0]
    assert len(sample_frame_indices(10, 64)) == 64


def test_sampling_rejects_impossible_requests() -> None:
    with pytest.raises(ConfigError):
        sample_frame_indices(10, 0)
    with pytest.raises(VideoError):
        sample_frame_indices(0, 8)


# -- decoding ---------------------------------------------------------------------------------------------------------


def _close(pixel: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.asarray(rgb)) <= tol))


def test_load_frames_shape_dtype_and_content(video: Path) -> None:
    frames = load_video_frames(video, 8)
    assert frames.shape == (8, SPEC.height, SPEC.width, 3) and frames.dtype == np.uint8
    # Scene colours survive encoding (top-right pixel: background at the bright end of the gradient).
    assert _close(frames[0, 2, -2], PALETTE["red"])
    assert _close(frames[-1, 2, -2], PALETTE["blue"])


def test_load_frames_repeats_for_short_video(video: Path) -> None:
    frames = load_video_frames(video, 40)  # 24 frames in the file
    assert frames.shape[0] == 40
    idx = sample_frame_indices(24, 40)
    for a, b in zip(range(39), range(1, 40), strict=True):
        if idx[a] == idx[b]:
            np.testing.assert_array_equal(frames[a], frames[b])


def test_pyav_and_decord_agree(video: Path) -> None:
    pytest.importorskip("decord")
    np.testing.assert_array_equal(
        load_video_frames(video, 6, backend="pyav"), load_video_frames(video, 6, backend="decord")
    )


def test_seeking_path_returns_the_same_frames_as_sequential_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long videos are sampled by seeking; with B-frames and many keyframes it must pick exactly the same frames."""
    import av

    spec = VideoSpec(width=64, height=48, num_frames=300, fps=30)
    frames = render_scenes([Scene(0, 150, "red", "white"), Scene(150, 300, "blue", "yellow")], spec).copy()
    frames[:, :4, :4] = np.random.default_rng(0).integers(0, 255, (300, 4, 4, 3))  # every frame distinct
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"g": "25", "bf": "3"}  # a keyframe every 25 frames, B-frames (pts order != decode order)
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    monkeypatch.setattr(video_module, "SEEK_MIN_FRAMES", 10**9)
    sequential = {n: load_video_frames(path, n, backend="pyav") for n in (7, 16, 64)}
    monkeypatch.setattr(video_module, "SEEK_MIN_FRAMES", 0)
    for n, expected in sequential.items():
        seeked = video_module._pyav_read_by_seeking(path, n)
        assert seeked is not None
        np.testing.assert_array_equal(seeked.frames, expected)
        np.testing.assert_array_equal(load_video_frames(path, n, backend="pyav"), expected)


def test_missing_video_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match=r"nope\.mp4"):
        load_video_frames(missing, 4)
    with pytest.raises(VideoError, match=r"nope\.mp4"):
        probe_video(missing)


@pytest.mark.parametrize("backend", ["pyav", "auto", "decord"])
def test_garbage_video_names_path_and_decoder_message(tmp_path: Path, backend: str) -> None:
    if backend == "decord":
        pytest.importorskip("decord")
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(VideoError) as info:
        load_video_frames(bad, 4, backend=backend)  # type: ignore[arg-type]
    message = str(info.value)
    assert "garbage.mp4" in message
    assert "Invalid data" in message or "Error reading" in message  # the decoder's own words


def test_video_with_zeroed_payload_is_a_video_error(video: Path, tmp_path: Path) -> None:
    """Valid container header, undecodable frames."""
    data = bytearray(video.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov")
    assert 4 < start < end
    data[start:end] = bytes(end - start)
    broken = tmp_path / "zeroed.mp4"
    broken.write_bytes(data)
    with pytest.raises(VideoError, match=r"zeroed\.mp4"):
        load_video_frames(broken, 4)
    with pytest.raises(VideoError, match=r"zeroed\.mp4"):
        probe_video(broken)


def test_directory_and_bad_backend_are_rejected(video: Path, tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="not a regular file"):
        load_video_frames(tmp_path, 4)
    with pytest.raises(ConfigError):
        load_video_frames(video, 4, backend="torchcodec")  # type: ignore[arg-type]


def test_probe_reports_geometry(video: Path) -> None:
    info = probe_video(video)
    assert (info.width, info.height, info.num_frames, info.backend) == (SPEC.width, SPEC.height, 24, "pyav")
    assert info.fps == pytest.approx(SPEC.fps)


# -- lookup -----------------------------------------------------------------------------------------------------------


def test_resolve_video_tries_extensions_like_upstream(tmp_path: Path) -> None:
    (tmp_path / "abc.MP4").write_bytes(b"x")
    (tmp_path / "def.mkv").write_bytes(b"x")
    (tmp_path / "ghi.mp4").write_bytes(b"x")
    assert resolve_video(tmp_path, "abc") == tmp_path / "abc.MP4"
    assert resolve_video(tmp_path, "def") == tmp_path / "def.mkv"
    assert resolve_video(tmp_path, "ghi.mp4") == tmp_path / "ghi.mp4"
    assert resolve_video(tmp_path, "def.mp4") == tmp_path / "def.mkv"  # extension swapped, as upstream VideoMME


def test_resolve_video_error_lists_every_candidate(tmp_path: Path) -> None:
    with pytest.raises(VideoError) as info:
        resolve_video(tmp_path, "xyz")
    message = str(info.value)
    for name in ("xyz.mp4", "xyz.MP4", "xyz.mkv"):
        assert str(tmp_path / name) in message
    with pytest.raises(VideoError, match="does not exist"):
        resolve_video(tmp_path / "no_such_dir", "xyz")
