"""Atomic writes (``tempoflow.files``): readers never see half a file, and writers of the same file at
once (several training processes writing the caption cache) never trip over each other's temporaries."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file

from tempoflow.files import save_tensors_atomic, sha256_file, write_text_atomic


def test_concurrent_writers_of_one_file_never_fail_and_leave_one_whole_file(tmp_path):
    """Issue 16: two processes wrote the caption cache through one fixed ``.tmp`` name and one of them
    lost it (FileNotFoundError in 8 of 200 tries). Unique temporaries: 200 writers, no error."""
    path = tmp_path / "cache.safetensors"

    def write(i: int) -> None:
        save_tensors_atomic(path, {"x": torch.full((256,), float(i))}, metadata={"writer": str(i)})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(200)))
    x = load_file(str(path))["x"]
    assert bool((x == x[0]).all()) and 0 <= float(x[0]) < 200  # one writer's whole file
    assert [p.name for p in tmp_path.iterdir()] == ["cache.safetensors"]  # no temporaries left


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "old")
    before = sha256_file(path)

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    from tempoflow.files import write_atomic

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken)
    assert sha256_file(path) == before and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
