"""Your own videos: a folder or an Open-Sora-style CSV into clips, and training on them."""

from __future__ import annotations

import pytest
import torch

from tempoflow.cli import main
from tempoflow.data.folder import FolderConfig, list_videos, make_folder, parse_rate
from tempoflow.data.io import write_video
from tempoflow.errors import DataError

from .conftest import TINY


def _ramp(frames: int, height: int = 24, width: int = 32, shift: float = 0.0) -> torch.Tensor:
    """A video whose frame k is uniformly (k / frames + shift) mod 1: its frame index is readable."""
    level = (torch.arange(frames) / frames + shift) % 1.0
    return level.view(-1, 1, 1, 1).expand(frames, 3, height, width).clone()


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "clips"
    for i in range(4):
        write_video(folder / f"v{i}.mp4", _ramp(16, shift=0.0), fps=16.0)
        (folder / f"v{i}.txt").write_text("a ramp" if i < 2 else "another ramp")
    (folder / "notes.md").write_text("not a video")
    return folder


def test_folder_clips_resample_crop_and_caption(videos):
    cfg = FolderConfig(path=str(videos), num_frames=4, fps=8.0, resolution=16, test_fraction=0.25)
    train, test = make_folder(cfg, "train"), make_folder(cfg, "test")
    assert len(train) == 3 and len(test) == 1 and len(make_folder(cfg, "heldout")) == 0
    assert train.videos.shape == (3, 4, 3, 16, 16) and 0 <= train.videos.min() and train.videos.max() <= 1
    # 8 fps from a 16 fps file: clip frame k (at k / 8 s) is file frame 2k, whose level is 2k / 16 (reference)
    levels = train.videos[0].mean(dim=(1, 2, 3))
    assert torch.allclose(levels, torch.tensor([2, 4, 6, 8]) / 16 - 1 / 16, atol=0.03)
    assert set(train.captions + test.captions) == {"a ramp", "another ramp"}
    assert sorted(len(v) for v in train.buckets().values()) in ([1, 2], [1, 1, 1])


def test_csv_manifest_with_caption_column(tmp_path, videos):
    csv = tmp_path / "manifest.csv"
    csv.write_text("path,caption,fps\nclips/v0.mp4,first,16\nclips/v1.mp4,second,\n")
    data = make_folder(FolderConfig(path=str(csv), num_frames=2, fps=16.0, resolution=8, test_fraction=0.0), "train")
    assert data.captions == ["first", "second"] and data.videos.shape == (2, 2, 3, 8, 8)


def test_manifest_encodings_and_rational_rates(tmp_path, videos):
    """Field cases 03 and 05: a spreadsheet's UTF-8 byte-order mark; ffprobe's rational rates; bad rates
    and non-UTF-8 text stop with one line naming the file and line."""
    bom = tmp_path / "bom.csv"
    bom.write_text("path,text,fps\nclips/v0.mp4,first,30000/1001\nclips/v1.mp4,second, 16 \n", encoding="utf-8-sig")
    assert bom.read_bytes()[:3] == b"\xef\xbb\xbf"
    rows = list_videos(bom)
    assert [r[1] for r in rows] == ["first", "second"]
    assert rows[0][2] == pytest.approx(30000 / 1001) and rows[1][2] == 16.0
    assert parse_rate("25", "x") == 25.0 and parse_rate(" 24000/1001 ", "x") == pytest.approx(23.976, abs=1e-3)
    for value in ("nan", "0", "abc", "-8", "inf", "30/0"):
        bad = tmp_path / "rates.csv"
        bad.write_text(f"path,text,fps\nclips/v0.mp4,a,16\nclips/v1.mp4,b,{value}\n")
        with pytest.raises(DataError, match=r"rates.csv line 3 \(clips/v1.mp4\): fps"):
            list_videos(bad)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"path,text\nclips/v0.mp4,un caf\xe9 rouge\n")  # Latin-1
    with pytest.raises(DataError, match="latin.csv: not UTF-8"):
        list_videos(latin)
    (videos / "v0.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match="v0.txt: not UTF-8"):
        list_videos(videos)


def test_bad_inputs_name_the_file(tmp_path, videos):
    with pytest.raises(DataError, match="shorter than a clip"):
        make_folder(FolderConfig(path=str(videos), num_frames=40, fps=8.0), "train")
    (videos / "v9.mp4").write_bytes(b"garbage")
    with pytest.raises(DataError, match="v9.mp4"):
        make_folder(FolderConfig(path=str(videos), num_frames=2, test_fraction=0.0), "train")
    with pytest.raises(DataError, match="not found"):
        make_folder(FolderConfig(path=str(tmp_path / "nowhere")), "train")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,words\nx.mp4,hi\n")
    with pytest.raises(DataError, match="columns path and text"):
        make_folder(FolderConfig(path=str(bad)), "train")


def test_train_and_eval_a_flow_on_your_folder(tmp_path, videos):
    run = tmp_path / "run"
    data = ["data.name=folder", f"data.folder.path={videos}", "data.folder.num_frames=4", "data.folder.resolution=16",
            "data.folder.test_fraction=0.25"]
    assert main(["train", "demo", *TINY, *data, f"out_dir={run}"]) == 0
    assert main(["eval", str(run), "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    assert main(["train", "demo", *TINY, "data.name=folder", f"out_dir={tmp_path / 'x'}"]) == 2


def test_uncaptioned_videos_train_on_the_null_condition(tiny_cfg):
    """Field case 06: an empty caption is the null condition. Reference: the same batch with every
    caption dropped by caption_dropout≈1 (the same noise draws; both seeded draws fall below it) gives the same loss."""
    from tempoflow.runs import build_method

    for method_name in ("flow", "vlfm"):
        video = torch.rand(2, 4, 3, 16, 16)
        losses = []
        for dropout, captions in ((0.0, ["", "  "]), (0.999999, ["a red circle moves left", "a blue square"])):
            cfg = tiny_cfg(f"method={method_name}", f"flow.caption_dropout={dropout}",
                           f"vlfm.caption_dropout={dropout}", "vlfm.order=3")
            method = build_method(cfg)
            gen = torch.Generator().manual_seed(0)
            losses.append(method.loss({"video": video, "caption": captions}, gen)["loss"].item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-6), method_name


def test_a_method_that_needs_captions_names_the_uncaptioned_files(tmp_path):
    from tempoflow.errors import DataError
    from tempoflow.runs import _require_captions

    paths = [tmp_path / f"v{i}.mp4" for i in range(5)]
    with pytest.raises(DataError, match=r"none for .*v1\.mp4, .*v2\.mp4, .*v3\.mp4 and 1 more"):
        _require_captions("align", ["x", "", " ", "", ""], paths)
    with pytest.raises(DataError, match="none for video 0"):
        _require_captions("align", [""], None)
    _require_captions("align", ["x"], paths[:1])


def test_train_a_flow_on_a_half_captioned_folder(tmp_path, videos):
    for txt in list(videos.glob("*.txt"))[:2]:
        txt.unlink()
    data = ["data.name=folder", f"data.folder.path={videos}", "data.folder.num_frames=4", "data.folder.resolution=16",
            "data.folder.test_fraction=0.0"]
    assert main(["train", "demo", *TINY, *data, f"out_dir={tmp_path / 'run'}"]) == 0


def test_manifest_row_without_a_path_and_hidden_files(tmp_path, videos):
    bad = tmp_path / "manifest.csv"
    bad.write_text("path,text\nclips/v0.mp4,first\n,second\n")
    with pytest.raises(DataError, match=r"manifest.csv line 3: the path column is empty"):
        list_videos(bad)
    (videos / "._v0.mp4").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # not a video of the set
    assert all(not p.name.startswith(".") for p, _, _ in list_videos(videos))


def test_eval_of_a_run_trained_without_captions_says_what_to_do(tmp_path, videos, capsys):
    for txt in videos.glob("*.txt"):
        txt.unlink()
    run = tmp_path / "run"
    data = ["data.name=folder", f"data.folder.path={videos}", "data.folder.num_frames=4", "data.folder.resolution=16",
            "data.folder.test_fraction=0.0"]
    assert main(["train", "demo", *TINY, *data, f"out_dir={run}"]) == 0
    assert main(["eval", str(run), "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no captions" in err and "eval.prompts" in err


def test_a_manifest_split_column_decides_the_split(tmp_path):
    """What `tempoflow data` writes trains on its train rows only (the split column used to be ignored and
    the videos re-split by test_fraction, mixing held-out and test videos into training)."""
    from tempoflow.data.folder import open_folder
    from tempoflow.data.io import write_video
    from tempoflow.errors import DataError

    rows = ["path,text,split"]
    for i, split in enumerate(["train", "train", "test", "heldout", "train"]):
        write_video(tmp_path / f"v{i}.mp4", torch.full((4, 3, 16, 16), 0.1 * (i + 1)), fps=8.0)
        rows.append(f"v{i}.mp4,clip {i},{split}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    cfg = FolderConfig(path=str(manifest), num_frames=4, resolution=16, test_fraction=0.5)
    names = {split: [p.name for p in open_folder(cfg, split).paths] for split in ("train", "test", "heldout")}
    assert names == {"train": ["v0.mp4", "v1.mp4", "v4.mp4"], "test": ["v2.mp4"], "heldout": ["v3.mp4"]}
    manifest.write_text("\n".join([*rows[:3], "v2.mp4,clip 2,validation"]) + "\n")
    with pytest.raises(DataError, match=r"manifest.csv line 4: split 'validation' is not one of train, test, heldout"):
        open_folder(cfg, "train")
