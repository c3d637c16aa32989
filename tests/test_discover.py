from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchser.discover import discover
from tests.conftest import tone, write_audio


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    r = tmp_path / "in"
    write_audio(r / "b" / "2.wav", tone(200, sr=8000), 8000)
    write_audio(r / "a.flac", tone(200, sr=8000), 8000)
    write_audio(r / "b" / "c" / "3.ogg", tone(200, sr=8000), 8000)
    write_audio(r / "noext", tone(200, sr=8000), 8000, fmt="WAV")  # audio without an extension
    (r / "notes.txt").write_text("not audio")
    (r / "broken.mp3").write_bytes(b"\x00" * 10)  # an audio name: kept, so the report can say why
    (r / ".hidden.wav").write_bytes(b"")
    (r / "folder.wav").mkdir()  # a directory named like audio
    return r


def test_recursive_sorted_and_filtered(tree: Path) -> None:
    got = [f.path.relative_to(tree).as_posix() for f in discover([tree])]
    assert got == ["a.flac", "b/2.wav", "b/c/3.ogg", "broken.mp3", "noext"]


def test_records_carry_size_and_mtime(tree: Path) -> None:
    f = discover([tree / "a.flac"])[0]
    st = os.stat(tree / "a.flac")
    assert (f.size, f.mtime_ns, f.input_index, f.error) == (st.st_size, st.st_mtime_ns, 0, "")


def test_glob_and_explicit_file_and_dedupe(tree: Path) -> None:
    files = discover([tree / "b" / "**" / "*.ogg", tree / "notes.txt", tree])
    by_name = {f.path.name: f.input_index for f in files}
    assert by_name["3.ogg"] == 0  # the first input that finds a file owns it
    assert by_name["notes.txt"] == 1  # named explicitly: reported, whatever it is
    assert len(files) == len(set(f.path for f in files))


def test_missing_input_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        discover([tmp_path / "nope"])


def test_dangling_link_is_reported_not_dropped(tree: Path) -> None:
    (tree / "dangling.wav").symlink_to(tree / "gone.wav")
    f = next(f for f in discover([tree]) if f.path.name == "dangling.wav")
    assert f.error.startswith("cannot stat")


def test_link_loop_does_not_hang(tree: Path) -> None:
    (tree / "b" / "loop").symlink_to(tree, target_is_directory=True)
    assert len(discover([tree])) == 5


def test_discovery_counts_what_it_looks_at(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(300):
        (tmp_path / f"notes-{i}.txt").write_text("not audio")
    (tmp_path / "a.wav").write_bytes(b"")
    assert [f.path.name for f in discover([tmp_path], progress=True)] == ["a.wav"]
    assert "discovering: 301 files" in capsys.readouterr().err
    discover([tmp_path])
    assert capsys.readouterr().err == ""
