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


def test_globs_stream_in_path_order_with_glob_semantics(tmp_path: Path) -> None:
    """A glob walks from its last literal folder, matching name by name, as glob.glob would."""
    import glob

    r = tmp_path / "g"
    names = ["2024-01/a.wav", "2024-01/sub/b.wav", "2024-02/c.wav", "2023-12/d.wav", "2024-x.wav", "2024-03/.e.wav"]
    names += ["other/2024-01/f.wav", "2024-04/g.flac", "2024-05/deep/er/h.wav"]
    for n in names:
        (r / n).parent.mkdir(parents=True, exist_ok=True)
        (r / n).write_bytes(b"")
    patterns = [r / "2024-*" / "*.wav", r / "**" / "*.wav", r / "2024-0[12]", r / "2024-0?" / "**" / "h.wav"]
    for pattern in patterns:
        got = [str(f.path) for f in discover([pattern])]
        hits = glob.glob(str(pattern), recursive=True)
        expect = sorted(
            p
            for h in hits
            for p in ([h] if os.path.isfile(h) else glob.glob(os.path.join(h, "**", "*"), recursive=True))
            if os.path.isfile(p) and not os.path.basename(p).startswith(".")
        )
        assert got == expect, pattern
        assert got, pattern
