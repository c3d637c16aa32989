"""Ways a job could lie, lose a file or hang, each tried for real: odd names, foreign files in the
output folder, unlistable folders, model paths that never end, temp folders of live jobs in other
pid namespaces, zip bombs of silence, and the messages of locked indexes, full temp folders,
absurd float samples and folders of archives.

Each test failed on the code before its fix.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

import batchser
import batchser.cache.index
import batchser.engine
import batchser.longfile
from batchser.cli import main
from batchser.hashing import path_from_text, text_path
from batchser.pids import OWNER_FILE, OwnerLock, owner_state
from batchser.report import recover_reports
from batchser.spool import work_folder
from tests.conftest import speechlike, write_audio

KINDS = ["angry", "sad", "neutral", "happy"]


def _clip(path: Path, kind: str = "angry", seed: int = 0) -> Path:
    return write_audio(path, speechlike(kind, sr=16000, seconds=1.5, seed=seed), 16000)


def _annotate(tmp_path: Path, *inputs: str | Path, out: str = "out") -> int:
    return main(["annotate", "-q", *map(str, inputs), "--out", str(tmp_path / out), "--cache", str(tmp_path / "cache")])


def _annotate_args(tmp_path: Path, *args: str, out: str = "out") -> int:
    return main(["annotate", "-q", *args, "--out", str(tmp_path / out), "--cache", str(tmp_path / "cache")])


def _rows(tmp_path: Path, out: str = "out") -> pd.DataFrame:
    return pd.read_parquet(tmp_path / out / "annotations.parquet").set_index("path")


# -- 1. a path with glob characters -------------------------------------------------------------


def test_an_existing_path_with_brackets_is_that_path_not_a_pattern(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    _clip(tmp_path / "take[1]" / "a.wav")
    assert _annotate_args(tmp_path, "take[1]") == 0  # used to fail: "pattern matches nothing"
    assert list(_rows(tmp_path).index) == ["take[1]/a.wav"]

    _clip(tmp_path / "take1" / "b.wav", "sad")
    assert _annotate_args(tmp_path, "take[1]", "--overwrite") == 0  # used to label take1/ instead
    assert list(_rows(tmp_path).index) == ["take[1]/a.wav"]
    assert "also match other paths" in caplog.text  # both readings possible: said
    assert _annotate_args(tmp_path, "take[1]/*.wav", out="o2") == 0  # a pattern below the literal folder
    assert list(_rows(tmp_path, "o2").index) == ["take[1]/a.wav"]
    assert _annotate_args(tmp_path, "take[12]", out="o3") == 0  # no such path: a pattern, as before
    assert list(_rows(tmp_path, "o3").index) == ["take1/b.wav"]


# -- 2. report paths are one-to-one with file names ----------------------------------------------


def test_two_names_never_share_a_report_path(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    raw = _clip(tmp_path / "x.wav").read_bytes()
    (Path(os.fsdecode(os.fsencode(d) + b"/x\xff.wav"))).write_bytes(raw)  # the byte 0xFF
    (d / "x\\xff.wav").write_bytes(_clip(tmp_path / "y.wav", "sad", 1).read_bytes())  # a backslash, then "xff"
    assert _annotate(tmp_path, d) == 0
    parquet = _rows(tmp_path)
    csv = batchser.report.read_csv_report(tmp_path / "out" / "annotations.csv").set_index("path")
    api = batchser.annotate(d, cache=tmp_path / "cache", n_jobs=1)
    for index in (parquet.index, csv.index, api.index):
        assert len(set(index)) == 2, list(index)
    names = {path_from_text(p).rsplit(b"/", 1)[-1] for p in parquet.index}
    assert names == {b"x\xff.wav", b"x\\xff.wav"}


@given(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_report_paths_invert_exactly(name: bytes) -> None:
    text = text_path(os.fsdecode(name))
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in text)  # one line, no terminal escapes
    text.encode("utf-8")  # valid UTF-8
    assert path_from_text(text) == name


def test_a_stray_backslash_is_no_report_path() -> None:
    with pytest.raises(ValueError, match="backslash"):
        path_from_text("a\\q.wav")


# -- 3. the CSV: carriage returns and formulas -----------------------------------------------------


def test_carriage_returns_and_formulas_in_names_keep_the_csv_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "in"
    _clip(d / "a\rb.wav")
    _clip(d / "=HYPERLINK(1).wav", "sad", 1)
    _clip(d / "plain.wav", "happy", 2)
    monkeypatch.chdir(d)  # report paths relative to here: a name starts the cell
    assert _annotate(tmp_path, ".") == 0
    text = (tmp_path / "out" / "annotations.csv").read_text(encoding="utf-8")
    assert "\r" not in text
    plain = pd.read_csv(tmp_path / "out" / "annotations.csv")  # any CSV reader: three rows, no formula
    assert sorted(plain["path"]) == ["'=HYPERLINK(1).wav", "a\\x0db.wav", "plain.wav"]
    # The Parquet keeps names as they are; the CSV reads back to the same with read_csv_report.
    parquet = _rows(tmp_path)
    back = batchser.report.read_csv_report(tmp_path / "out" / "annotations.csv").set_index("path")
    assert sorted(parquet.index) == sorted(back.index) == ["=HYPERLINK(1).wav", "a\\x0db.wav", "plain.wav"]
    assert (parquet["label"] == back.loc[parquet.index, "label"]).all()


# -- 4. files of the user's own in the output folder ---------------------------------------------


def test_a_users_own_files_in_out_are_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "in"
    _clip(d / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    (out / "annotations.csv").write_text("my,own,notes\n")
    (out / "summary.json").write_text('{"mine": true}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _annotate(tmp_path, d) == 2
    assert "did not write" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # The job's own reports are replaced by the same job without --overwrite …
    assert main(["annotate", "-q", str(d), "--out", str(out), "--cache", str(tmp_path / "c"), "--overwrite"]) == 0
    assert _annotate(tmp_path, d) == 0
    # … but not once a person edited one of them.
    with open(out / "annotations.csv", "a") as fh:
        fh.write("an edit\n")
    assert _annotate(tmp_path, d) == 2
    assert "annotations.csv" in capsys.readouterr().err
    # A summary.json that is unreadable guards nothing: what it would have vouched for is not replaced.
    assert _annotate(tmp_path, d, out="o2") == 0
    (tmp_path / "o2" / "summary.json").write_text("{not json")
    assert _annotate(tmp_path, d, out="o2") == 2


def test_another_jobs_set_being_written_is_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "in"
    _clip(d / "a.wav")
    out = tmp_path / "out"
    stage = out / ".batchser-staging-1-live"
    stage.mkdir(parents=True)
    holder = _hold_lock(stage)
    try:
        assert _annotate(tmp_path, d) == 2
        assert "writing reports into" in capsys.readouterr().err
        assert stage.is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert _annotate(tmp_path, d) == 0  # its owner is gone: the leftover is cleared, the job runs
    assert not stage.exists()


# -- 5. folders that cannot be listed --------------------------------------------------------------


def _too_long_folder(root: Path) -> Path:
    """A folder whose path is longer than the OS allows (made one level at a time, relative to a fd)."""
    fd = os.open(root, os.O_RDONLY)
    name = "d" * 250
    depth = 4200 // 251 + 1
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            new = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = new
        with open(os.open("deep.wav", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as fh:
            fh.write(_clip(root.parent / "deep-src.wav").read_bytes())
    finally:
        os.close(fd)
    return root / "/".join([name] * depth)


def test_a_folder_that_cannot_be_listed_is_named_and_fails_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "in"
    _clip(d / "a.wav")
    _too_long_folder(d)
    assert _annotate(tmp_path, d) == 1  # used to exit 0 with no row and nothing said under -q
    err = capsys.readouterr().err
    assert "could not be listed" in err and "--allow-unlistable" in err
    rows = _rows(tmp_path)
    bad = rows[rows["error"].fillna("").str.startswith("cannot list this folder")]
    assert len(bad) == 1 and "too long" in bad["error"].iloc[0].lower()
    assert rows.loc["in/a.wav", "status"] == "ok"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["unlisted_folders"]["count"] == 1
    assert summary["unlisted_folders"]["first"] == list(bad.index)
    assert _annotate_args(tmp_path, str(d), "--allow-unlistable", out="o2") == 0


# -- 6. model paths that are no files --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_model_path_that_never_ends_fails_at_once(tmp_path: Path, kind: str) -> None:
    d = tmp_path / "in"
    _clip(d / "a.wav")
    if kind == "fifo":
        model = tmp_path / "model.skops"
        os.mkfifo(model)
    else:
        model = Path("/dev/zero")
    cmd = [sys.executable, "-m", "batchser", "annotate", "-q", str(d), "--model", str(model), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # used to hang, or read 24 GB
    assert proc.returncode != 0
    assert "not a regular file" in proc.stderr, proc.stderr


# -- 7. temp folders of live jobs in other pid namespaces -----------------------------------------


def _hold_lock(folder: Path) -> subprocess.Popen[bytes]:
    """Another process (standing in for a job in another container) holding ``folder``'s owner lock."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from batchser.pids import OwnerLock
        lock = OwnerLock(Path({str(folder)!r})).acquire()
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # gone now: from here, a live job in another namespace may have it


def test_a_live_jobs_temp_folders_survive_whatever_its_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    pid = _dead_pid()
    live, dead = tmp_path / f"batchser-job-{pid}-live", tmp_path / f"batchser-job-{pid}-dead"
    live.mkdir()
    dead.mkdir()
    holder = _hold_lock(live)
    try:
        OwnerLock(dead).acquire().release()  # a killed job's: its lock is free
        (live / "listing.parquet").write_bytes(b"in use")
        assert owner_state(live) == "alive" and owner_state(dead) == "dead"
        with work_folder() as mine:
            assert owner_state(mine) == "alive"  # ours, while we run
        assert live.is_dir() and (live / "listing.parquet").read_bytes() == b"in use"  # used to be deleted
        assert not dead.exists()

        out = tmp_path / "reports"
        stage_live, stage_dead = out / f".batchser-staging-{pid}-a", out / f".batchser-staging-{pid}-b"
        stage_live.mkdir(parents=True)
        stage_dead.mkdir()
        OwnerLock(stage_dead).acquire().release()
        holder2 = _hold_lock(stage_live)
        try:
            recover_reports(out)
            assert stage_live.is_dir() and not stage_dead.exists()
        finally:
            holder2.kill()
            holder2.wait()
    finally:
        holder.kill()
        holder.wait()
    with work_folder():
        pass
    assert not live.exists()  # its owner died: cleared by the next job


def test_a_folder_without_a_lock_is_left_alone_until_it_is_old(tmp_path: Path) -> None:
    young = tmp_path / "young"
    young.mkdir()
    assert owner_state(young) == "unknown"  # a job may be making it right now
    old = tmp_path / "old"
    old.mkdir()
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    assert owner_state(old) == "dead"
    assert not (young / OWNER_FILE).exists()


# -- 8. a zip bomb of silence ------------------------------------------------------------------------


def _zero_wav(seconds: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(seconds * 16000, dtype=np.int16), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_a_zip_of_silence_is_refused_at_discovery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arc = tmp_path / "bomb.zip"
    with zipfile.ZipFile(arc, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.wav", _zero_wav(1200))  # 37 MiB of zeros, packed into about 40 KB
        zf.writestr("clip.wav", _clip(tmp_path / "c.wav").read_bytes())
    assert _annotate(tmp_path, arc) == 0
    rows = _rows(tmp_path)
    bomb = rows.loc[f"{arc}::zeros.wav"]
    assert bomb["status"] == "error" and "max_member_ratio" in bomb["error"], bomb["error"]
    assert rows.loc[f"{arc}::clip.wav", "status"] == "ok"


def test_constant_windows_are_analysed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    y = np.zeros(16000 * 120, dtype=np.float32)  # 2 minutes: 1 s of sound, then silence
    y[:16000] = speechlike("angry", sr=16000, seconds=1.0)
    write_audio(tmp_path / "in" / "mostly-silent.wav", y, 16000)
    calls = []
    real = batchser.longfile.SlidingExtractor.extract

    def counted(self, start, samples):  # type: ignore[no-untyped-def]
        calls.append(start)
        return real(self, start, samples)

    monkeypatch.setattr(batchser.longfile.SlidingExtractor, "extract", counted)
    assert _annotate_args(tmp_path, str(tmp_path / "in"), "-j", "1", "--segments", "windows") == 0
    row = _rows(tmp_path).iloc[0]
    assert row["status"] == "ok" and row["segments"] == (120 - 4) // 2 + 1
    assert len(calls) <= 3, len(calls)  # the windows touching the sound, and one of silence for all the rest


# -- 9. messages that say what happened and what to do ---------------------------------------------


def test_a_locked_index_names_its_holder_and_that_it_can_be_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "in"
    _clip(d / "a.wav")
    assert _annotate(tmp_path, d) == 0
    index = batchser.cache.index.index_path(tmp_path / "cache")
    code = textwrap.dedent(
        f"""
        import sqlite3, time
        db = sqlite3.connect({str(index)!r}, isolation_level=None)
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        db.execute("INSERT INTO parts (folder, name, n_rows, groups) VALUES ('x', 'y', 0, '[]')")
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        monkeypatch.setattr(batchser.cache.index, "LOCK_WAIT_S", 0.5)
        assert _annotate(tmp_path, d, out="o2") == 1
        err = capsys.readouterr().err
        assert f"held by process {holder.pid}" in err, err
        assert "rebuilds it" in err and "database is locked" not in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with sqlite3.connect(index) as db:  # the index is whole after the holder died
        db.execute("SELECT count(*) FROM parts").fetchone()


def test_a_full_temp_folder_says_which_and_how_to_move_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "in"
    _clip(d / "a.wav")

    # A full disk cannot be made here without mounting one: the spool's writes fail as a full one's do.
    def full(self, table):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("pyarrow.parquet.ParquetWriter.write_table", full)
    assert _annotate(tmp_path, d) == 1
    err = capsys.readouterr().err
    assert "TMPDIR" in err and "No space left on device" in err and "OSError" not in err


def test_absurd_float_samples_get_a_reason_not_an_index_error(tmp_path: Path) -> None:
    y = np.zeros(16000, dtype=np.float32)
    y[::2], y[1::2] = 1e30, -1e30
    write_audio(tmp_path / "in" / "huge.wav", y, 16000, subtype="FLOAT")
    assert _annotate(tmp_path, tmp_path / "in") == 0
    error = _rows(tmp_path).iloc[0]["error"]
    assert "far beyond full scale" in error and "IndexError" not in error


def test_a_folder_of_archives_says_they_are_not_opened(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "in"
    d.mkdir()
    with zipfile.ZipFile(d / "takes.zip", "w") as zf:
        zf.writestr("a.wav", _clip(tmp_path / "a.wav").read_bytes())
    assert _annotate(tmp_path, d) == 1
    err = capsys.readouterr().err
    assert "takes.zip" in err and "archives inside a folder are not opened" in err
    assert _annotate(tmp_path, d / "*.zip") == 0  # as the message suggests


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"


def test_bidi_controls_in_names_are_shown_escaped_never_obeyed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchser.hashing import shown_text
    from batchser.web.review import ReviewSession, create_app

    assert shown_text("a" + BIDI + ".wav") == "a" + "".join(f"\\u{ord(c):04x}" for c in BIDI) + ".wav"
    assert shown_text("é\\u202e.wav") == "é\\u202e.wav"  # text that merely looks like an escape stays
    # "invoice\u202evaw.exe" reads as "invoiceexe.wav" where the control is obeyed.
    clips = tmp_path / "clips"
    for i, kind in enumerate(["angry", "sad", "neutral", "happy"] * 2):
        write_audio(clips / f"{kind}-{i}\u202e{i}vaw.wav", speechlike(kind, sr=16000, seconds=1.5, seed=i), 16000)
    (clips / "broken\u2066-x\u2069.wav").write_bytes(b"RIFF not audio")
    out = tmp_path / "out"
    assert main(["annotate", str(clips), "--out", str(out), "--cache", str(tmp_path / "cache"), "-j", "1"]) == 0
    printed = capsys.readouterr().out
    assert "/broken\\u2066-x\\u2069.wav: " in printed and not set(BIDI) & set(printed)
    page = (out / "report.html").read_text()
    assert "\\u202e" in page and not set(BIDI) & set(page)
    assert "\u202e" in pd.read_csv(out / "annotations.csv")["path"].str.cat()  # the data keeps the real name
    session = ReviewSession.open(out, per_label=2)
    client = create_app(session, token="t").test_client()
    html = client.get("/?token=t").get_data(as_text=True)
    assert "\\u202e" in html and not set(BIDI) & set(html)
