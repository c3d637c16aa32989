"""Bad input, unwritable outputs and vanishing files: clear reasons, nothing lost.

Jobs run through the real CLI in a subprocess. As root, permission bits do not
bind, so the subprocess runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH
(util-linux ``setpriv``): a chmod 000 file is then really unreadable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

import batchser.job
from batchser.engine import VANISHED
from batchser.job import run_job
from batchser.manifest import load_manifest
from tests.badfiles import make_bad_corpus
from tests.conftest import PROJECT, speechlike, write_audio

MODEL = PROJECT / "result" / "models" / "ravdess-4emo.skops"
IS_ROOT = os.geteuid() == 0


def without_dac(cmd: list[str]) -> list[str]:
    """``cmd`` run so that file permissions apply even to root."""
    if not IS_ROOT:
        return cmd
    if not shutil.which("setpriv"):
        pytest.skip("running as root without util-linux setpriv: file permissions cannot be made to apply")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]


def cli(args: list[str], *, drop_root: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "batchser", *args]
    return subprocess.run(without_dac(cmd) if drop_root else cmd, capture_output=True, text=True, timeout=300)


def annotate_manifest(tmp_path: Path, inputs: list[str], *, name: str = "job.yaml", **over: object) -> Path:
    m = {
        "name": "reliability",
        "inputs": [{"path": p} for p in inputs],
        "emotions": ["angry", "sad", "neutral", "happy"],
        "cache": "cache",
        "engine": {"backend": "loky", "n_jobs": 2},
        "model": {"path": str(MODEL), "train": False},
        "output": {"dir": "reports"},
        **over,
    }
    p = tmp_path / name
    p.write_text(yaml.safe_dump(m))
    return p


@pytest.fixture
def good_dir(tmp_path: Path) -> Path:
    d = tmp_path / "good"
    for i, kind in enumerate(["angry", "sad", "neutral", "happy"]):
        write_audio(d / f"{kind}.wav", speechlike(kind, sr=16000, seconds=1.5, seed=i), 16000)
    return d


def test_every_bad_file_gets_a_reason_and_the_others_are_untouched(tmp_path: Path, good_dir: Path) -> None:
    expect = make_bad_corpus(tmp_path / "mess")
    # Reference: the good files alone.
    ref = cli(["run", "-q", str(annotate_manifest(tmp_path, ["good"], name="ref.yaml", output={"dir": "ref"}))])
    assert ref.returncode == 0, ref.stderr
    res = cli(["run", str(annotate_manifest(tmp_path, ["good", "mess"]))], drop_root=True)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(tmp_path / "reports" / "annotations.csv", keep_default_na=False)
    mess = {p.removeprefix("mess/"): row for p, row in df.set_index("path").iterrows() if p.startswith("mess/")}
    assert set(mess) == set(expect), "a non-file (directory, FIFO, link loop) was reported, or a file is missing"
    for name, exp in expect.items():
        row = mess[name]
        assert row["status"] == exp.status, (name, row["error"])
        if exp.status == "error":
            assert exp.text in row["error"], (name, row["error"])
            assert row["label"] == "" and row["p_sad"] == ""
        else:
            assert row["label"] in {"angry", "sad", "neutral", "happy"} and row["error"] == "", name
            assert exp.text in row["warning"], (name, row["warning"])
        if exp.channels is not None:
            assert row["channels"] == exp.channels
        if exp.orig_sample_rate is not None:
            assert row["orig_sample_rate"] == exp.orig_sample_rate
    # The good files are labelled exactly as when the mess is absent.
    ref_df = pd.read_parquet(tmp_path / "ref" / "annotations.parquet").set_index("path")
    good = pd.read_parquet(tmp_path / "reports" / "annotations.parquet").set_index("path").loc[ref_df.index]
    pd.testing.assert_frame_equal(good, ref_df)
    n_err = sum(e.status == "error" for e in expect.values())
    assert f"{n_err} failed" in res.stdout and "failed: mess/" in res.stdout


def test_fail_threshold_exits_1_after_writing_reports(tmp_path: Path, good_dir: Path) -> None:
    (good_dir / "broken.wav").write_bytes(b"RIFF....garbage")
    ok = cli(["run", "-q", str(annotate_manifest(tmp_path, ["good"], fail_threshold=0.5))])
    assert ok.returncode == 0, ok.stderr
    res = cli(["run", "-q", str(annotate_manifest(tmp_path, ["good"], fail_threshold=0.1))])
    assert res.returncode == 1
    assert "1 of 5 files failed (20.0%), more than fail_threshold 10.0%" in res.stderr
    assert len(pd.read_parquet(tmp_path / "reports" / "annotations.parquet")) == 5


def test_file_vanishing_after_discovery(tmp_path: Path, good_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = batchser.job.iter_files

    def discover_then_delete(paths, **kwargs):  # type: ignore[no-untyped-def]
        yield from real(paths, **kwargs)
        (good_dir / "sad.wav").unlink()  # gone between the listing and the read

    monkeypatch.setattr(batchser.job, "iter_files", discover_then_delete)
    s = run_job(load_manifest(annotate_manifest(tmp_path, ["good"])), progress=False)
    assert (s.n_files, s.n_failed) == (4, 1)
    assert s.failures == [("good/sad.wav", VANISHED)]


def _report_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_read_only_output_keeps_previous_reports(tmp_path: Path, good_dir: Path) -> None:
    job = annotate_manifest(tmp_path, ["good"])
    assert cli(["run", "-q", str(job)]).returncode == 0
    before = _report_bytes(tmp_path / "reports")
    write_audio(good_dir / "new.wav", speechlike("sad", sr=16000, seed=9), 16000)
    (tmp_path / "reports").chmod(0o555)
    try:
        res = cli(["run", "-q", str(job)], drop_root=True)
    finally:
        (tmp_path / "reports").chmod(0o755)
    assert res.returncode == 1
    assert "cannot write reports to" in res.stderr and "Permission denied" in res.stderr
    assert "previous reports there are untouched" in res.stderr
    assert _report_bytes(tmp_path / "reports") == before
    assert not list((tmp_path / "reports").glob(".*"))  # no temp file left behind


@contextlib.contextmanager
def tiny_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if not IS_ROOT or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode:
        pytest.skip("needs root and mount(8) to make a real full file system (tmpfs)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_gives_a_clear_error_and_keeps_previous_reports(tmp_path: Path, good_dir: Path) -> None:
    with tiny_disk(tmp_path / "disk", "256k") as disk:
        job = annotate_manifest(tmp_path, ["good"], output={"dir": str(disk / "reports")})
        assert cli(["run", "-q", str(job)]).returncode == 0
        before = _report_bytes(disk / "reports")
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        write_audio(good_dir / "new.wav", speechlike("sad", sr=16000, seed=9), 16000)
        res = cli(["run", "-q", str(job)])
        assert res.returncode == 1
        assert "No space left on device" in res.stderr and "cannot write reports" in res.stderr
        assert _report_bytes(disk / "reports") == before


def test_full_cache_disk_is_a_clear_error(tmp_path: Path, good_dir: Path) -> None:
    with tiny_disk(tmp_path / "disk", "12k") as disk:
        res = cli(["run", "-q", str(annotate_manifest(tmp_path, ["good"], cache=str(disk / "cache")))])
        assert res.returncode == 1
        assert "cannot write to the feature cache" in res.stderr and "No space left" in res.stderr


def test_nothing_is_written_outside_output_and_cache(tmp_path: Path, good_dir: Path) -> None:
    make_bad_corpus(tmp_path / "mess", unreadable=False)
    job = annotate_manifest(tmp_path, ["good", "mess"])
    before = {p for p in tmp_path.rglob("*")}
    assert cli(["run", "-q", str(job)]).returncode == 0
    new = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in new if not (p.is_relative_to(tmp_path / "reports") or p.is_relative_to(tmp_path / "cache"))]
    assert new and not outside


def test_the_decoders_own_notes_show_only_with_verbose(tmp_path: Path, good_dir: Path) -> None:
    # An MP3 with a tag and no valid frames: libmpg123 prints "Note: Illegal Audio-MPEG-Header" to fd 2.
    (good_dir / "noisy.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10 + b"\xff" * 100)
    job = annotate_manifest(tmp_path, ["good"], engine={"backend": "sequential"})
    loud = cli(["-v", "run", str(job)])
    if "Note:" not in loud.stderr:
        pytest.skip("this libsndfile/libmpg123 prints no notes for a broken MP3")
    plain = cli(["run", "--overwrite", str(job)])
    assert plain.returncode == 0 and "Note:" not in plain.stderr, plain.stderr
    quiet = cli(["run", "-q", "--overwrite", str(job)])
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_sound_unlike_any_speech_gets_a_warning_beside_its_label(tmp_path: Path) -> None:
    """Dithered silence, hiss and a tone get confident labels from any classifier: each row says the label is a
    guess, and how to tell whether the file holds speech."""
    import numpy as np

    from batchser.cli import main

    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(3 * sr) / sr
    write_audio(tmp_path / "in" / "dither.wav", (rng.integers(-1, 2, t.size) / 32768).astype(np.float32), sr)
    write_audio(tmp_path / "in" / "hiss.wav", (0.3 * rng.standard_normal(t.size)).astype(np.float32), sr)
    write_audio(tmp_path / "in" / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    out = tmp_path / "out"
    assert (
        main(["annotate", "-q", str(tmp_path / "in"), "--out", str(out), "--cache", str(tmp_path / "c"), "-j", "1"])
        == 0
    )
    rows = pd.read_csv(out / "annotations.csv")
    assert (rows["status"] == "ok").all()
    assert rows["warning"].str.contains("unlike any speech the model was trained on").all(), rows["warning"].tolist()
    assert rows["warning"].str.contains("--check-speech").all()
