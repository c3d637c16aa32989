"""Audio inside zip and tar archives: discovered, hashed and decoded in place, never extracted."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from batchser.archive import hash_members, list_members, read_members
from batchser.cache import hash_file
from batchser.discover import discover
from batchser.job import run_job
from batchser.manifest import parse_manifest
from tests.conftest import PROJECT, speechlike

MODEL = PROJECT / "result" / "models" / "ravdess-4emo.skops"
KINDS = ["angry", "sad", "neutral", "happy"]


def _wav(kind: str, seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, speechlike(kind, sr=16000, seconds=1.0, seed=seed), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    """A zip, a tar.gz, a tar and a tgz of clips, a damaged member, broken archives, and one plain copy."""
    d = tmp_path / "in"
    d.mkdir()
    clips = {f"sub/{k}-{i}.wav": _wav(k, i) for i, k in enumerate(KINDS)}
    with zipfile.ZipFile(d / "bundle.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in clips.items():
            zf.writestr(name, data)
        zf.writestr("notes.txt", b"not audio, not listed")
        zf.writestr("../escape.wav", _wav("sad", 9))  # a hostile name is only a name
        zf.writestr("bad.wav", _wav("happy", 7))
    # Flip bytes in the last member's compressed data: its CRC check fails on read.
    raw = bytearray((d / "bundle.zip").read_bytes())
    with zipfile.ZipFile(d / "bundle.zip") as zf:
        info = zf.getinfo("bad.wav")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    raw[start : start + 8] = b"\xff" * 8
    (d / "bundle.zip").write_bytes(bytes(raw))
    for suffix, mode in ((".tar.gz", "w:gz"), (".tar", "w"), (".tgz", "w:gz")):
        with tarfile.open(d / f"more{suffix}", mode) as tf:
            for i, kind in enumerate(KINDS):
                data = _wav(kind, 10 + i)
                ti = tarfile.TarInfo(f"t/{kind}.wav")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    (d / "junk.zip").write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    gz = (d / "more.tar.gz").read_bytes()
    (d / "cut.tgz").write_bytes(gz[: len(gz) // 2])
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "same-as-zipped.wav").write_bytes(clips["sub/angry-0.wav"])
    return d


def _manifest(tmp: Path, inputs: list[str], *, cache: str = "cache", out: str = "out"):
    m = {
        "name": "arch",
        "inputs": [{"path": p} for p in inputs],
        "emotions": KINDS,
        "cache": cache,
        "engine": {"backend": "loky", "n_jobs": 2, "batch_size": 2},
        "model": {"path": str(MODEL)},
        "output": {"dir": out},
        # Synthetic signals, not speech: long members are cut in windows (speech segments: test_speech.py).
        "segments": {"method": "windows"},
    }
    return parse_manifest(yaml.safe_dump(m), base_dir=tmp)


def test_list_hash_and_read_members(bundles: Path) -> None:
    names = [m.name for m in list_members(bundles / "bundle.zip")]
    assert "sub/angry-0.wav" in names and "notes.txt" in names
    hashes = hash_members(bundles / "more.tar.gz", ["t/sad.wav", "t/happy.wav", "t/none.wav"])
    assert hashes["t/none.wav"][0] == "" and "not found" in hashes["t/none.wav"][1]
    got = {n: d.data for n, d, _ in read_members(bundles / "more.tar.gz", ["t/happy.wav", "t/sad.wav"]) if d}
    assert got["t/sad.wav"] == _wav("sad", 11)
    assert hashes["t/sad.wav"] == (hashlib.sha256(_wav("sad", 11)).hexdigest(), "")


def test_discover_expands_named_and_globbed_archives(bundles: Path) -> None:
    files = discover([bundles / "bundle.zip", bundles / "more.*"])
    named = {f.name.replace(str(bundles) + "/", "") for f in files}
    assert "bundle.zip::sub/happy-3.wav" in named and "bundle.zip::notes.txt" not in named
    assert {"more.tar.gz::t/angry.wav", "more.tar::t/angry.wav", "bundle.zip::../escape.wav"} <= named
    # A plain directory walk does not open archives: they are not audio files.
    assert not [f for f in discover([bundles]) if f.member]


def test_a_job_over_archives(tmp_path: Path, bundles: Path) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    inputs = ["in/bundle.zip", "in/more.tar.gz", "in/more.tar", "in/more.tgz", "in/junk.zip", "in/cut.tgz", "plain"]
    s = run_job(_manifest(tmp_path, inputs), progress=False)
    df = pd.read_parquet(tmp_path / "out" / "annotations.parquet").set_index("path")
    # Nothing was extracted to disk: only the cache and the reports are new.
    after = [p for p in tmp_path.rglob("*") if p not in before]
    assert all(p.is_relative_to(tmp_path / "cache") or p.is_relative_to(tmp_path / "out") for p in after)
    assert not (tmp_path / "escape.wav").exists()
    ok = df[df["status"] == "ok"]
    for k in KINDS:
        assert f"in/bundle.zip::sub/{k}-{KINDS.index(k)}.wav" in ok.index
        for suffix in (".tar.gz", ".tar", ".tgz"):
            assert f"in/more{suffix}::t/{k}.wav" in ok.index
    assert "in/bundle.zip::../escape.wav" in ok.index
    bad = df.loc["in/bundle.zip::bad.wav"]
    assert bad["status"] == "error" and "cannot read archive member" in bad["error"] and "CRC" in bad["error"]
    assert df.loc["in/junk.zip", "status"] == "error" and "cannot read archive" in df.loc["in/junk.zip", "error"]
    assert df.loc["in/cut.tgz", "status"] == "error" and "cannot read archive" in df.loc["in/cut.tgz", "error"]
    assert not [p for p in df.index if p.startswith("in/cut.tgz::") or p.startswith("in/junk.zip::")]
    # The same bytes inside and outside an archive are one cache row, extracted once;
    # .tar, .tar.gz and .tgz hold the same four clips.
    same = df.loc[["in/bundle.zip::sub/angry-0.wav", "plain/same-as-zipped.wav"], "content_hash"]
    assert same.nunique() == 1 and same.iloc[0] == hash_file(tmp_path / "plain" / "same-as-zipped.wav")
    assert df.loc["in/more.tar::t/sad.wav", "content_hash"] == df.loc["in/more.tgz::t/sad.wav", "content_hash"]
    distinct = df["content_hash"].dropna().nunique()
    assert s.n_extracted == distinct == 4 + 1 + 4  # zip clips, escape, tar clips (bad.wav fails its CRC)
    # Decoding from memory gives what decoding the file gives.
    p = run_job(_manifest(tmp_path, ["plain"], cache="cache2", out="out2"), progress=False)
    assert p.n_extracted == 1
    ref = pd.read_parquet(tmp_path / "out2" / "annotations.parquet").set_index("path")
    cols = ["label", "confidence", "p_angry", "p_sad", "p_neutral", "p_happy"]
    pd.testing.assert_series_equal(
        ref.loc["plain/same-as-zipped.wav", cols], df.loc["in/bundle.zip::sub/angry-0.wav", cols], check_names=False
    )
    # A second run reads no archive: hashes come from the index, features from the cache.
    again = run_job(_manifest(tmp_path, inputs), progress=False)
    assert again.n_extracted == 0 and again.n_cached == df["content_hash"].notna().sum()
    np.testing.assert_array_equal(
        pd.read_parquet(tmp_path / "out" / "annotations.parquet")["confidence"].to_numpy(), df["confidence"].to_numpy()
    )


def test_tar_links_get_a_row_of_their_own(tmp_path: Path) -> None:
    data = _wav("sad", 1)
    with tarfile.open(tmp_path / "links.tar", "w") as tf:
        ti = tarfile.TarInfo("a.wav")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        for name, kind in (("sym.wav", tarfile.SYMTYPE), ("hard.wav", tarfile.LNKTYPE)):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, "a.wav"
            tf.addfile(link)
    errors = {f.member: f.error for f in discover([tmp_path / "links.tar"])}
    assert errors["a.wav"] == ""  # they used to vanish from the report
    assert errors["sym.wav"] == errors["hard.wav"] == "a link inside the archive (to a.wav): links are not followed"


def test_a_zip_is_opened_once_per_process_not_once_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import batchser.archive

    with zipfile.ZipFile(tmp_path / "many.zip", "w") as zf:
        for i in range(40):
            zf.writestr(f"c{i:03d}.wav", _wav(KINDS[i % 4], i))
    opened: list[str] = []

    class Counting(zipfile.ZipFile):
        def __init__(self, file, *args, **kwargs):  # type: ignore[no-untyped-def]
            opened.append(str(file))
            super().__init__(file, *args, **kwargs)

    monkeypatch.setattr(batchser.archive.zipfile, "ZipFile", Counting)
    m = {
        "name": "z",
        "inputs": [{"path": "many.zip"}],
        "emotions": KINDS,
        "cache": "cache",
        "engine": {"backend": "sequential", "batch_size": 4},  # 10 batches
        "model": {"path": str(MODEL)},
        "output": {"dir": "out"},
    }
    s = run_job(parse_manifest(yaml.safe_dump(m), base_dir=tmp_path), progress=False)
    assert s.n_files == 40 and s.n_failed == 0
    mine = [f for f in opened if f.endswith("many.zip")]  # (the model file is a zip too)
    assert len(mine) == 1, mine  # listing, hashing and every batch share one open archive


def test_a_large_member_is_read_through_a_temp_file_and_the_size_limit_is_the_inputs(tmp_path: Path) -> None:
    big = np.tile(speechlike("angry", sr=16000, seconds=6.0), 8)  # 48 s, 1.5 MB as 16-bit WAV
    buf = io.BytesIO()
    sf.write(buf, big, 16000, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    arc = tmp_path / "in" / "big.zip"
    arc.parent.mkdir()
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("long.wav", data)
        zf.writestr("clip.wav", _wav("sad", 1))
    # Over the in-memory size, the bytes come back in an anonymous temp file, with their hash.
    (name, got, err), (_, small, _) = read_members(arc, ["long.wav", "clip.wav"], in_memory=100_000)
    assert (name, err, got.data, small.spill) == ("long.wav", "", None, None)  # type: ignore[union-attr]
    assert got.sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[union-attr]
    assert small.data == _wav("sad", 1)  # type: ignore[union-attr]

    # A job labels it from that file as it would from memory (long: window by window), and a member
    # over the input's max_member_mb gets a row saying so, with the field to change.
    for limit, out in ((1024, "o1"), (1, "o2")):
        m = yaml.safe_load(yaml.safe_dump(_manifest(tmp_path, [str(arc)], out=out).model_dump(mode="json")))
        m["inputs"][0]["max_member_mb"] = limit
        run_job(parse_manifest(yaml.safe_dump(m), base_dir=tmp_path), progress=False)
        rows = pd.read_csv(tmp_path / out / "annotations.csv").set_index("path")
        long = rows.loc["in/big.zip::long.wav"]
        assert rows.loc["in/big.zip::clip.wav", "status"] == "ok"
        if limit == 1024:
            assert long["status"] == "ok" and long["segments"] == (48 - 4) // 2 + 1
        else:
            assert long["status"] == "error"
            assert "over the input's limit of 1 MiB (raise inputs[].max_member_mb" in long["error"]


def test_a_member_bigger_than_memory_allows_is_decoded_in_bounded_memory(tmp_path: Path) -> None:
    """A 100 MiB member (52 minutes) raises the job's peak RSS by far less than its size."""
    seconds = 100 * 2**20 // 2 // 16000
    arc = tmp_path / "huge.zip"
    clip = (speechlike("happy", sr=16000, seconds=8.0) * 32767).astype("<i2").tobytes()
    with zipfile.ZipFile(arc, "w") as zf, zf.open("huge.wav", "w", force_zip64=True) as fh:
        n = seconds * 16000
        fh.write(b"RIFF" + (36 + 2 * n).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little"))
        fh.write((1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little"))
        fh.write((32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little"))
        fh.write(b"data" + (2 * n).to_bytes(4, "little"))
        left = 2 * n
        while left:
            piece = clip[:left]
            fh.write(piece)
            left -= len(piece)
    small = tmp_path / "small.zip"
    with zipfile.ZipFile(small, "w") as zf:
        zf.writestr("clip.wav", _wav("sad", 1))
    peaks = {}
    for name, path in (("small", small), ("huge", arc)):
        m = _manifest(tmp_path, [str(path)], out=f"out-{name}", cache=f"cache-{name}").model_dump(mode="json")
        m["engine"] = {"backend": "sequential", "n_jobs": 1}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(m))
        peaks[name] = _peak_rss_kib(tmp_path / f"{name}.yaml")
    assert pd.read_csv(tmp_path / "out-huge" / "annotations.csv")["status"].tolist() == ["ok"]
    # Held in memory the member alone would add 100 MiB; streamed from the temp file, the window does.
    assert (peaks["huge"] - peaks["small"]) / 1024 < 40, peaks


def _peak_rss_kib(manifest: Path) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "batchser", "run", "-q", str(manifest)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    return usage.ru_maxrss
