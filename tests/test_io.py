"""Writing outputs atomically: what reaches the disk, and in which order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segml._io import atomic_dir, atomic_path


def test_a_folder_output_is_on_disk_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash just after the rename must find the new folder whole (every file and folder
    flushed while staged) and in place (the parent flushed after)."""
    target = tmp_path / "scores.parquet"
    target.mkdir()
    (target / "part-old.parquet").write_bytes(b"old")
    flushed: list[tuple[Path, bool]] = []
    flush = os.fdatasync

    def recording(descriptor: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        flushed.append((path, (target / "part-1.parquet").exists()))
        flush(descriptor)

    monkeypatch.setattr("segml._io._flush", recording)
    with atomic_dir(target) as staged:
        (staged / "part").mkdir(parents=True)
        (staged / "part-1.parquet").write_bytes(b"new")
        (staged / "part" / "part-2.parquet").write_bytes(b"new too")
    renamed = [(path.relative_to(staged), in_place) for path, in_place in flushed[:-1]]
    assert sorted(renamed) == sorted(
        [
            (Path("part/part-2.parquet"), False),
            (Path("part"), False),
            (Path("part-1.parquet"), False),
            (Path("."), False),
        ]
    )
    assert renamed.index((Path("part"), False)) > renamed.index(
        (Path("part/part-2.parquet"), False)
    ), "a folder after its files"
    assert renamed[-1] == (Path("."), False), "the staged folder after everything in it"
    assert flushed[-1] == (tmp_path, True), "the parent last, with the new folder in place"
    assert sorted(p.name for p in target.iterdir()) == ["part", "part-1.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"], "no staging left"


def test_a_file_output_is_on_disk_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.md"
    target.write_text("old")
    flushed: list[tuple[str, str]] = []
    flush = os.fdatasync

    def recording(descriptor: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        flushed.append((path.name, target.read_text()))
        flush(descriptor)

    monkeypatch.setattr("segml._io._flush", recording)
    with atomic_path(target) as staged:
        staged.write_text("new")
    assert flushed == [(staged.name, "old"), (tmp_path.name, "new")]
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"], "no staging left"
