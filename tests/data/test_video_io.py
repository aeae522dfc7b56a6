import gzip

import numpy as np
import pytest

from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.builtin.opencv_sample import vtest_path
from modelforge.data.formats.video import (
    VideoWriter,
    iter_frames,
    probe_video,
    read_video,
    read_video_folder,
    sample_frames,
    sample_indices,
    write_video,
)


def _frames(count: int = 12, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth frames (lossy codecs keep them close) whose brightness encodes the frame index."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = (xx * 2 + yy)[None, :, :, None] % 64
    return (base + 15 * np.arange(count)[:, None, None, None] + np.zeros(3, dtype=int)).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".avi", ".mp4", ".mkv"])
def test_write_then_read_keeps_frame_count_and_size(tmp_path, suffix):
    frames = _frames()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=12)
    info = probe_video(path)
    assert (info.frame_count, info.width, info.height, info.fps) == (12, 64, 48, 12.0)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    # MJPG (.avi) and mp4v (.mp4) are lossy but close; FFV1 (.mkv) is lossless
    error = np.abs(back.astype(int) - frames).mean()
    assert error == 0 if suffix == ".mkv" else error < 4


def test_sample_frames_uniformly(tmp_path):
    frames = _frames(16)
    path = write_video(tmp_path / "clip.mkv", frames)
    assert sample_indices(16, 4) == [2, 6, 10, 14]
    assert sample_indices(3, 5) == [0, 0, 1, 2, 2]
    picked = sample_frames(path, 4)
    assert picked.shape == (4, 48, 64, 3)
    assert np.array_equal(picked, frames[[2, 6, 10, 14]])
    assert np.array_equal(sample_frames(path, 20), frames[sample_indices(16, 20)])  # more than there are: repeats
    assert read_video(path, max_frames=3).shape[0] == 3


def test_grayscale_frames_and_bad_writer_input(tmp_path):
    gray = _frames()[..., 0]
    assert read_video(write_video(tmp_path / "gray.mkv", gray)).shape == (12, 48, 64, 3)
    with pytest.raises(DataError, match=r"clip\.mov: cannot pick a codec for suffix \.mov"):
        VideoWriter(tmp_path / "clip.mov")
    with pytest.raises(DataError, match="no frames to write"):
        write_video(tmp_path / "empty.avi", [])
    with VideoWriter(tmp_path / "mixed.avi") as writer:
        writer.write(gray[0])
        with pytest.raises(ValueError, match="frame 1 is 32x48, the video is 64x48"):
            writer.write(gray[0][:, :32])


def test_corrupt_empty_and_missing_videos_name_the_file(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    with pytest.raises(DataError, match=r"junk\.avi: cannot open as a video"):
        probe_video(junk)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(DataError, match=r"empty\.mp4: video file is empty \(0 bytes\)"):
        read_video(empty)
    with pytest.raises(DataError, match=r"nope\.avi: no such video file"):
        list(iter_frames(tmp_path / "nope.avi"))
    good = write_video(tmp_path / "good.avi", _frames())
    cut = tmp_path / "cut.avi"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"cut\.avi: "):
        sample_frames(cut, 4)


def test_video_folder_skips_and_counts_bad_clips(tmp_path):
    for name in ("left", "right"):
        write_video(tmp_path / name / "a.avi", _frames(4))
    (tmp_path / "right" / "broken.avi").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"broken\.avi: cannot open"):
        read_video_folder(tmp_path)
    folder = read_video_folder(tmp_path, on_error="skip")
    assert folder.classes == ["left", "right"]
    assert [(p.parent.name, label) for p, label in folder.clips] == [("left", 0), ("right", 1)]
    assert folder.skipped[0][0] == str(tmp_path / "right" / "broken.avi")


def test_vtest_sample_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingDependencyError, match="apt-get install opencv-doc"):
        vtest_path([tmp_path / "nowhere"])
    # Debian may ship the sample gzipped: it is decompressed once into the cache
    clip = write_video(tmp_path / "src" / "vtest.avi", _frames(3))
    packed = tmp_path / "doc" / "vtest.avi.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(clip.read_bytes()))
    found = vtest_path([tmp_path / "doc"])
    assert found == tmp_path / "cache" / "opencv-sample" / "vtest.avi" and found.read_bytes() == clip.read_bytes()
    assert read_video(found).shape == (3, 48, 64, 3)


def test_real_vtest_sample_when_installed():
    try:
        path = vtest_path()
    except MissingDependencyError:
        pytest.skip("opencv-doc is not installed")
    info = probe_video(path)
    assert (info.width, info.height) == (768, 576) and info.frame_count > 700
    first = next(iter_frames(path))
    assert first.shape == (576, 768, 3)
