"""Damaged MP4/M4A files, made from a real M4A written by PyAV, and M4As whose durations read 0.

Each damaged file is the file's verdict (status ``error``, a reason saying what is wrong with the
MP4), never a ``retry`` row with an FFmpeg error code (AAC's decoder answers some garbage with
AVERROR(EPERM), "Operation not permitted") nor FFmpeg's own words.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchser.audio import AudioError, AudioStream, load
from batchser.cli import main
from batchser.decoders import FFmpegFile
from tests.conftest import speechlike
from tests.media import KINDS, encode

SR = 16000


def _boxes(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Top-level MP4 boxes: type -> (offset, size)."""
    out, pos = {}, 0
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out[kind] = (pos, n)
        pos += n
    return out


def _set(data: bytes, box: bytes, offset: int, value: bytes) -> bytes:
    """``value`` written ``offset`` bytes into the first box of type ``box`` (found anywhere)."""
    at = data.index(box) - 4 + offset
    return data[:at] + value + data[at + len(value) :]


def _cut_moov(data: bytes) -> bytes:
    pos, n = _boxes(data)[b"moov"]
    return data[: pos + n // 2]


def _garbage_after_ftyp(data: bytes) -> bytes:
    return data[: _boxes(data)[b"ftyp"][1]] + np.random.default_rng(0).bytes(20000)


def _empty_mdat(data: bytes) -> bytes:
    pos, n = _boxes(data)[b"mdat"]
    return data[:pos] + struct.pack(">I4s", 8, b"mdat") + data[pos + n :]


def _packets_233_bytes(data: bytes) -> bytes:
    # The sample table's uniform size (stsz) says every packet is 233 bytes: the AAC decoder
    # refuses each, some with AVERROR(EPERM), which PyAV raises as PermissionError.
    return _set(data, b"stsz", 12, struct.pack(">I", 233))


def _no_track(data: bytes) -> bytes:
    pos, n = _boxes(data)[b"moov"]
    return data[: pos + 8] + bytes(n - 8) + data[pos + n :]


def _unknown_codec(data: bytes) -> bytes:
    # The 'hdlr' box's size made huge: the track's sample description is never read, so
    # FFmpeg knows the track is audio but not its codec (PyAV then has no codec context).
    return _set(data, b"hdlr", 0, b"\x05")


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "moov-cut": (_cut_moov, "the file ends inside its 'moov' index"),
    "ftyp-then-garbage": (_garbage_after_ftyp, "the bytes at offset 28 are not an MP4 box"),
    "ftyp-only": (lambda d: d[: _boxes(d)[b"ftyp"][1]], "no 'moov' index box"),
    "empty-mdat": (_empty_mdat, "its 'mdat' box, which holds the audio, is empty"),
    "packets-refused": (_packets_233_bytes, "none of its 88 audio packets could be decoded"),
    "no-track": (_no_track, "its index describes no audio track"),
    "unknown-codec": (_unknown_codec, "its audio track names a codec this FFmpeg has no decoder for"),
}


@pytest.fixture(scope="module")
def m4a(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """Two seconds as M4A, its index last (as a recorder writes it) and first (faststart)."""
    d = tmp_path_factory.mktemp("m4a")
    t = np.arange(2 * SR) / SR  # a tone that comes and goes, whose AAC packets all refuse a size of 233 bytes
    y = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    encode(d / "a.m4a", y, SR, KINDS["m4a"])
    encode(d / "b.m4a", y, SR, KINDS["m4a-faststart"])
    return (d / "a.m4a").read_bytes(), (d / "b.m4a").read_bytes()


@pytest.mark.parametrize("name", DAMAGE)
def test_a_damaged_mp4_is_the_files_error_with_its_reason(tmp_path: Path, m4a: tuple[bytes, bytes], name: str) -> None:
    damage, why = DAMAGE[name]
    for k, data in enumerate(m4a):
        if name == "empty-mdat" and k == 1:
            continue  # faststart: the same damage, the same words (checked once)
        path = tmp_path / f"{name}-{k}.m4a"
        path.write_bytes(damage(data))
        with pytest.raises(AudioError) as caught:
            load(path, sample_rate=SR)
        err = caught.value
        assert not err.transient, str(err)
        assert str(err).startswith("not a readable MP4/M4A: ") and why in str(err), str(err)
        assert "Errno" not in str(err) and "not permitted" not in str(err) and "()" not in str(err)


def test_damaged_mp4s_get_error_rows_in_a_job(tmp_path: Path, m4a: tuple[bytes, bytes]) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "good.m4a").write_bytes(m4a[0])
    for name in ("packets-refused", "moov-cut", "unknown-codec"):
        (audio / f"{name}.m4a").write_bytes(DAMAGE[name][0](m4a[0]))
    out = tmp_path / "out"
    assert main(["annotate", str(audio), "--out", str(out), "--cache", str(tmp_path / "cache"), "-q"]) == 0
    table = pd.read_csv(out / "annotations.csv").set_index("path")
    assert table.loc[f"{audio}/good.m4a", "status"] == "ok"
    for name in ("packets-refused", "moov-cut", "unknown-codec"):
        row = table.loc[f"{audio}/{name}.m4a"]
        assert row["status"] == "error" and row["error"].startswith("not a readable MP4/M4A: "), row["error"]
        assert DAMAGE[name][1] in row["error"]


def test_a_damaged_packet_decoded_as_43_channels_does_not_crash(tmp_path: Path) -> None:
    # Every packet 233 bytes: the AAC decoder reads one's garbage as a 43-channel frame, whose
    # planes past the channels PyAV lists with stray pointers (reading them was a segfault).
    path = tmp_path / "a.m4a"
    encode(path, speechlike("neutral", sr=SR, seconds=2.0), SR, KINDS["m4a"])
    path.write_bytes(_packets_233_bytes(path.read_bytes()))
    audio = load(path, sample_rate=SR)
    assert audio.warnings == (
        "truncated: header declares 2.000 s, data holds 0.023 s",
        "damaged: 87 of 88 packets could not be decoded and were skipped",
    )


def _zero_durations(data: bytes) -> bytes:
    """mvhd, tkhd and mdhd durations set to 0 (version-0 boxes, as PyAV writes them)."""
    for box, offset in ((b"mvhd", 24), (b"tkhd", 28), (b"mdhd", 24)):
        assert data[data.index(box) + 4] == 0  # version 0: 32-bit times
        data = _set(data, box, offset, bytes(4))
    return data


def test_an_m4a_whose_durations_read_zero_is_measured_and_decoded(tmp_path: Path) -> None:
    # Twelve seconds: past the ten above which a file is analysed by its segments, which
    # a length read as 0 used to hide (the whole file was decoded and labelled as one clip).
    y = speechlike("sad", sr=SR, seconds=12.0)
    good, zero = tmp_path / "good.m4a", tmp_path / "zero.m4a"
    encode(good, y, SR, KINDS["m4a"])
    zero.write_bytes(_zero_durations(good.read_bytes()))
    with FFmpegFile(str(zero)) as f:
        assert abs(f.frames - 12 * 44100) < 4096 and not f.frames_exact
    with AudioStream(zero, sample_rate=SR) as stream:
        assert stream.declared_duration_s > 11.9
    whole, damaged = load(good, sample_rate=SR), load(zero, sample_rate=SR)
    np.testing.assert_array_equal(whole.samples, damaged.samples)
    assert damaged.warnings == ()  # the container's length counts the encoder's priming: no false "truncated"


def test_an_m4a_whose_index_times_are_damaged_says_how_much_it_could_read(
    tmp_path: Path, m4a: tuple[bytes, bytes]
) -> None:
    # The audio track's timescale (mdhd) set to 0: FFmpeg reads 2 of the 88 packets the sample table lists,
    # 0.023 s of a 2 s file. Labelled from what was read, never silently: the warning says what is missing.
    path = tmp_path / "timescale-0.m4a"
    path.write_bytes(_set(m4a[0], b"mdhd", 20, bytes(4)))
    audio = load(path, sample_rate=SR)
    assert audio.warnings == ("damaged: the MP4 index lists 88 audio packets, 2 could be read (0.023 s of audio)",)
    whole = tmp_path / "whole.m4a"
    whole.write_bytes(m4a[0])
    assert load(whole, sample_rate=SR).warnings == ()
