"""Video I/O: round trips through mp4, webm, gif and frame folders; grid layout; clear errors."""

import math
import warnings

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tempoflow.data.io import write_grid, write_video
from tempoflow.data.video_reader import VideoClip, read_video
from tempoflow.errors import DataError

HAS_VP9 = "libvpx-vp9" in av.codecs_available


def smooth_video(t: int = 16, h: int = 48, w: int = 64) -> torch.Tensor:
    """``(T, 3, H, W)`` in [0, 1]: colour gradients sliding over time (smooth, so lossy codecs do well)."""
    k = torch.arange(t, dtype=torch.float32)[:, None, None] / t
    y = torch.arange(h, dtype=torch.float32)[None, :, None] / h
    x = torch.arange(w, dtype=torch.float32)[None, None, :] / w
    red = 0.5 + 0.5 * torch.sin(2 * math.pi * (x + k)) + 0 * y
    green = 0.5 + 0.5 * torch.cos(2 * math.pi * (y - k)) + 0 * x
    blue = ((x + y) / 2).expand(t, h, w)
    return torch.stack([red, green, blue], dim=1)


def mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().mean().item()


# ---------------------------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize("fps", [8.0, 12.5, 29.97])
def test_mp4_round_trip(tmp_path, fps):
    video = smooth_video()
    path = write_video(tmp_path / "a" / "clip.mp4", video, fps=fps)
    clip = read_video(path)
    assert isinstance(clip, VideoClip) and clip.path == path
    assert clip.frames.shape == video.shape and clip.frames.dtype == torch.float32
    assert abs(clip.fps - fps) < 1e-6
    assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0
    assert mean_abs(clip.frames, video) < 0.03


def test_mp4_odd_size_comes_back_padded_to_even(tmp_path):
    # 4:2:0 H.264 cannot store odd sizes: the writer replicates the last row/column.
    video = smooth_video(8, 33, 47)
    clip = read_video(write_video(tmp_path / "odd.mp4", video, fps=8))
    assert clip.frames.shape == (8, 3, 34, 48)
    assert mean_abs(clip.frames[..., :33, :47], video) < 0.03
    assert mean_abs(clip.frames[..., 33, :47], video[..., 32, :]) < 0.03  # Edge replication.
    assert mean_abs(clip.frames[..., :33, 47], video[..., :, 46]) < 0.03


def test_grey_video_is_written_as_rgb(tmp_path):
    grey = smooth_video()[:, :1]
    clip = read_video(write_video(tmp_path / "grey.mp4", grey, fps=8))
    assert clip.frames.shape == (16, 3, 48, 64)
    assert mean_abs(clip.frames, grey.expand(-1, 3, -1, -1)) < 0.03


@pytest.mark.parametrize("fps", [10.0, 8.0])
def test_gif_round_trip(tmp_path, fps):
    video = smooth_video()
    video[5:8] = video[4]  # A still stretch must keep its frames (Pillow's writer would merge them).
    path = write_video(tmp_path / "clip.gif", video, fps=fps)
    assert b"NETSCAPE2.0" in path.read_bytes()  # The loop extension.
    clip = read_video(path)
    assert clip.frames.shape == video.shape
    # Delays are centiseconds: 8 fps is written 13, 12, 13, ... and 16 frames span exactly 2 s.
    assert abs(clip.fps - fps) < 1e-6
    assert mean_abs(clip.frames, video) < 0.05  # 256-colour palette.


@pytest.mark.skipif(not HAS_VP9, reason="this PyAV build has no libvpx-vp9 encoder")
def test_webm_round_trip_keeps_odd_size(tmp_path):
    video = smooth_video(8, 33, 47)
    clip = read_video(write_video(tmp_path / "clip.webm", video, fps=12.5))
    assert clip.frames.shape == video.shape  # VP9 stores odd sizes.
    assert abs(clip.fps - 12.5) < 1e-6
    assert mean_abs(clip.frames, video) < 0.03


def test_folder_of_png_round_trip_in_natural_order(tmp_path):
    video = smooth_video(12, 20, 24)
    folder = tmp_path / "frames"
    for k in range(len(video)):  # frame_0 ... frame_11: "frame_10" must sort after "frame_9".
        write_grid(folder / f"frame_{k}.png", video[k : k + 1], pad=0)
    (folder / "notes.txt").write_text("not a frame")
    clip = read_video(folder)
    assert clip.frames.shape == video.shape and clip.fps == 8.0
    assert (clip.frames - video).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only.
    assert read_video(folder, fps=24).fps == 24.0
    assert read_video(folder, max_frames=3).frames.shape[0] == 3


def test_write_grid_layout(tmp_path):
    b, t, h, w, pad = 2, 5, 6, 7, 2
    levels = torch.arange(b * t, dtype=torch.float32).reshape(b, t, 1, 1, 1) / 255
    videos = levels.expand(b, t, 3, h, w).clone()  # Cell (b, k) has grey level (b * t + k) / 255.
    image = torch.from_numpy(np.array(Image.open(write_grid(tmp_path / "g.png", videos, pad=pad))))
    assert image.shape == (b * (h + pad) + pad, t * (w + pad) + pad, 3)
    for i in range(b):
        for k in range(t):
            top, left = pad + i * (h + pad), pad + k * (w + pad)
            assert (image[top : top + h, left : left + w] == i * t + k).all()
    assert (image[:pad] == 0).all() and (image[:, :pad] == 0).all()  # Black padding by default.

    # nrow wraps each video onto ceil(T / nrow) rows; a list and a single video are accepted too.
    wrapped = Image.open(write_grid(tmp_path / "w.png", list(videos), nrow=2, pad=pad))
    assert wrapped.size == (2 * (w + pad) + pad, b * 3 * (h + pad) + pad)  # PIL size is (W, H).
    single = Image.open(write_grid(tmp_path / "s.png", videos[0, :, :1], pad=0))
    assert single.size == (t * w, h)


def test_read_with_max_frames_and_size(tmp_path):
    video = smooth_video()
    path = write_video(tmp_path / "clip.mp4", video, fps=8)
    clip = read_video(path, max_frames=5, size=(24, 32))
    assert clip.frames.shape == (5, 3, 24, 32) and clip.fps == 8.0
    expected = F.interpolate(video[:5], size=(24, 32), mode="bilinear", antialias=True)
    assert mean_abs(clip.frames, expected) < 0.03


def test_write_is_atomic_and_overwrites(tmp_path):
    video = smooth_video()
    path = write_video(tmp_path / "clip.mp4", video, fps=8)
    write_video(path, video.flip(0), fps=8)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # No temporary files left.
    assert mean_abs(read_video(path).frames, video.flip(0)) < 0.03


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    video = smooth_video()
    path = write_video(tmp_path / "clip.mp4", video, fps=8)
    before = path.read_bytes()

    def broken(*args):
        raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")

    monkeypatch.setattr("tempoflow.data.io._encode_yuv420", broken)
    with pytest.raises(DataError, match="clip.mp4"):
        write_video(path, video.flip(0), fps=8)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"] and path.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# Errors: each a DataError naming the file.


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="video file not found: .*nothere.mp4"):
        read_video(tmp_path / "nothere.mp4")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(
        torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0)).byte().numpy()
    )
    with pytest.raises(DataError, match="noise.mp4") as info:
        read_video(path)
    assert isinstance(info.value.__cause__, av.FFmpegError)  # Chained, not swallowed.


def test_truncated_mp4(tmp_path):
    path = write_video(tmp_path / "cut.mp4", smooth_video(), fps=8)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.mp4"):
        read_video(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(DataError, match="empty.mp4"):
        read_video(path)


def test_text_file_is_not_a_video(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 100)  # FFmpeg would render this as "tty" video.
    with pytest.raises(DataError, match="notes.txt"):
        read_video(path)


def test_empty_folder(tmp_path):
    folder = tmp_path / "noframes"
    folder.mkdir()
    with pytest.raises(DataError, match="noframes"):
        read_video(folder)


def test_folder_with_mixed_sizes(tmp_path):
    write_grid(tmp_path / "f1.png", smooth_video(1, 8, 8), pad=0)
    write_grid(tmp_path / "f2.png", smooth_video(1, 8, 10), pad=0)
    with pytest.raises(DataError, match="f2.png"):
        read_video(tmp_path)


def test_corrupt_frame_in_folder(tmp_path):
    write_grid(tmp_path / "f1.png", smooth_video(1, 8, 8), pad=0)
    (tmp_path / "f2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="f2.png"):
        read_video(tmp_path)


@pytest.mark.parametrize("name", ["clip.avi", "clip", "grid.tiff"])
def test_unknown_suffix_on_write(tmp_path, name):
    write = write_grid if name.startswith("grid") else write_video
    args = (smooth_video(2, 8, 8),) if write is write_grid else (smooth_video(2, 8, 8), 8)
    with pytest.raises(DataError, match=name):
        write(tmp_path / name, *args)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "video, fps",
    [
        (torch.zeros(4, 2, 8, 8), 8),
        (torch.zeros(3, 8, 8), 8),
        (torch.full((2, 3, 8, 8), math.nan), 8),
        (torch.zeros(2, 3, 8, 8), 0.0),
    ],
    ids=["two-channels", "3-d", "nan", "zero-fps"],
)
def test_malformed_input_on_write(tmp_path, video, fps):
    with pytest.raises(ValueError):
        write_video(tmp_path / "bad.mp4", video, fps=fps)


# ---------------------------------------------------------------------------------------------
# Users' own files (issue 15 kind A): rotation, variable frame rate, early stop, memory.


def _mux(path, arrays, times=None, rate=8, rotation=0):
    """An H.264 mp4 of ``(H, W, 3)`` uint8 arrays, at ``rate`` or at the given capture ``times`` (s)."""
    from fractions import Fraction

    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = arrays[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        if times is not None:
            stream.codec_context.time_base = stream.time_base = tb
        for i, array in enumerate(arrays):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), tb
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, rotation):
    """Phones store portrait video as landscape frames plus a display matrix; reference: np.rot90 of
    the coded frame by the rotation PyAV reports (degrees counter-clockwise)."""
    from tempoflow.data.video_reader import read_clip

    mark = np.zeros((32, 48), np.uint8)
    mark[:8] = 255
    mark[8:24, :8] = 255  # an L: a wrong turn or a flip shows
    path = _mux(tmp_path / "r.mp4", [np.dstack([mark] * 3)] * 4, rotation=rotation)
    with av.open(str(path)) as c:
        stored = next(c.decode(video=0)).rotation
    want = np.rot90(mark, stored // 90).astype(np.float32) / 255
    got = read_video(path).frames[0].mean(0).numpy()
    assert got.shape == want.shape and np.abs(got - want).mean() < 0.05
    clip = read_clip(path, 2, 8.0)
    assert clip.shape == (2, *want.shape, 3) and clip.dtype == np.uint8


def test_variable_frame_rate_clip_by_timestamp(tmp_path):
    """A burst 50 ms apart, then frames 250 ms apart (field case 02): clip frame k is the frame on
    screen at k / fps (brute force over the known capture times), and a clip that fits the file's
    duration is accepted though the file has fewer frames than its stored rate (20) x duration."""
    from tempoflow.data.video_reader import read_clip

    times = [0.05 * i for i in range(20)] + [1.0 + 0.25 * i for i in range(10)]
    ends = times[1:] + [times[-1] + 0.25]
    level = 8
    arrays = [np.full((16, 16, 3), level * i, np.uint8) for i in range(len(times))]
    path = _mux(tmp_path / "vfr.mp4", arrays, times=times, rate=20)
    fps = 2.0
    clip = read_clip(path, 6, fps)  # to 3.0 s
    shot = [round(float(f.mean()) / level) for f in clip]
    for k, i in enumerate(shot, 1):
        on_screen = [j for j in range(len(times)) if times[j] < k / fps + 1e-9 <= ends[j] + 1e-9]
        assert i == on_screen[0], (k, shot)
    with pytest.raises(DataError, match=r"shorter than a clip of 7 frames"):
        read_clip(path, 7, fps)  # 3.5 s > 3.25 s + the last frame's stored duration
    # a rate given by the caller (a manifest's fps) spaces the frames evenly instead: frame k at k / 20
    even = read_clip(path, 3, 10.0, file_fps=20.0)
    assert [round(float(f.mean()) / level) for f in even] == [1, 3, 5]


def test_clip_stops_decoding_after_its_last_frame(tmp_path, monkeypatch):
    """A 2-frame clip at the file's rate from a 40-frame file decodes 3 frames (the third shows the
    second has left the screen), not 40."""
    from tempoflow.data import video_reader as io

    arrays = [np.full((16, 16, 3), 6 * i, np.uint8) for i in range(40)]
    path = _mux(tmp_path / "long.mp4", arrays, rate=8)
    decoded = []
    original = io._decoded

    def counting(*args):
        for item in original(*args):
            decoded.append(1)
            yield item

    monkeypatch.setattr(io, "_decoded", counting)
    clip = io.read_clip(path, 2, 8.0)
    assert len(decoded) == 3
    assert [round(float(f.mean()) / 6) for f in clip] == [0, 1]  # frame k (1-based) at k / fps


def test_video_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    from tempoflow.data import video_reader as io
    from tempoflow.data.folder import FolderConfig, make_folder

    path = write_video(tmp_path / "v" / "a.mp4", smooth_video(4, 32, 32), fps=8)
    monkeypatch.setattr(io, "available_memory", lambda: 10_000)  # bytes
    with pytest.raises(DataError, match=r"reading 4 frames of 32x32 from .*a\.mp4 needs .* GiB"):
        read_video(path)
    with pytest.raises(DataError, match=r"clips of 2 frames at 64x64 .* needs"):
        make_folder(FolderConfig(path=str(path.parent), num_frames=2, resolution=64, test_fraction=0.0), "train")


def _truncated_mp4(tmp_path, frames: int, keep: int):
    """A ``frames``-frame mp4 (``write_video``) whose header comes first (remuxed with ``movflags=faststart``,
    as files streamed from the web are), cut where the frame data of packet ``keep`` starts: the header
    still declares ``frames`` frames, ``keep`` decode. Returns the path."""
    full = write_video(tmp_path / "full.mp4", smooth_video(frames, 32, 32), fps=8)
    fast = tmp_path / "fast.mp4"
    with av.open(str(full)) as source, av.open(str(fast), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:  # not the flushing packet
                packet.stream = stream
                out.mux(packet)
    with av.open(str(fast)) as container:
        starts = [packet.pos for packet in container.demux(container.streams.video[0]) if packet.dts is not None]
    cut = tmp_path / f"cut{keep}.mp4"
    cut.write_bytes(fast.read_bytes()[: starts[keep]])
    return cut


def test_a_truncated_file_warns_with_the_declared_and_decoded_frame_counts(tmp_path):
    """Field case: a cut mp4 whose header says 16 frames decoded 4 (FFmpeg's threaded decoder ends it
    quietly) and trained without a word."""
    from tempoflow.data.video_reader import read_clip

    path = _truncated_mp4(tmp_path, 16, 4)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 16  # what the header declares
    with pytest.warns(UserWarning) as record:
        clip = read_video(path)
    assert len(clip.frames) == 4
    assert [str(w.message) for w in record] == [
        f"{path}: its header declares 16 frames but only 4 decode (truncated or damaged?); using those 4"]
    with pytest.warns(UserWarning, match="declares 16 frames but only 4 decode"):
        read_clip(path, 4, 8.0)  # a clip that reaches the end of what decodes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_video(path, max_frames=2)  # stopped before the end: nothing to say
        read_clip(path, 2, 8.0)
        read_video(tmp_path / "full.mp4")  # complete: the counts agree
