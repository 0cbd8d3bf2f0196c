"""Writing outputs atomically: what reaches the disk, and in which order."""

from __future__ import annotations

from pathlib import Path

from segml._io import atomic_dir, atomic_path


def test_a_folder_output_is_on_disk_before_and_after_its_rename(tmp_path: Path, flushes) -> None:
    """A crash just after the rename must find the new folder whole (every file and folder
    flushed while staged) and in place (the parent flushed after)."""
    target = tmp_path / "scores.parquet"
    target.mkdir()
    (target / "part-old.parquet").write_bytes(b"old")
    flushed = flushes(lambda path: (target / "part-1.parquet").exists())
    with atomic_dir(target) as staged:
        (staged / "part").mkdir(parents=True)
        (staged / "part-1.parquet").write_bytes(b"new")
        (staged / "part" / "part-2.parquet").write_bytes(b"new too")
    # Files before their folder, deepest first, the staged folder after everything in it.
    assert [(path.relative_to(staged), in_place) for path, in_place in flushed[:-1]] == [
        (Path("part/part-2.parquet"), False),
        (Path("part"), False),
        (Path("part-1.parquet"), False),
        (Path("."), False),
    ]
    assert flushed[-1] == (tmp_path, True), "the parent last, with the new folder in place"
    assert sorted(p.name for p in target.iterdir()) == ["part", "part-1.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"], "no staging left"


def test_a_file_output_is_on_disk_before_and_after_its_rename(tmp_path: Path, flushes) -> None:
    target = tmp_path / "report.md"
    target.write_text("old")
    flushed = flushes(lambda path: target.read_text())
    with atomic_path(target) as staged:
        staged.write_text("new")
    assert flushed == [(staged, "old"), (tmp_path, "new")]
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"], "no staging left"
