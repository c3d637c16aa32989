"""Property-based fuzzing of the audio stage: random bytes and weird WAV headers.

Every input must give audio or an AudioError, quickly and in bounded memory;
anything else (another exception, a hang, a crash of the process) is a bug.
"""

from __future__ import annotations

import resource
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchser.audio import Audio, AudioError, load
from batchser.engine import ExtractTask, extract_one
from batchser.features import FeatureSpec

SPEC = FeatureSpec(("mfcc", "chroma", "mel"), 16000)
FUZZ = settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
_DIR = Path(tempfile.mkdtemp(prefix="batchser-fuzz-"))


def _check(data: bytes, suffix: str) -> None:
    p = _DIR / f"x{suffix}"
    p.write_bytes(data)
    try:
        a = load(p, sample_rate=16000)
    except AudioError as exc:
        assert str(exc)
    else:
        assert isinstance(a, Audio) and a.samples.dtype == np.float32 and np.isfinite(a.samples).all()
    # The whole per-file path, as a worker runs it, must also return a record.
    rec = extract_one(ExtractTask(str(p), "h"), spec=SPEC)
    assert rec.status in ("ok", "error") and (rec.status == "ok") == (rec.vector is not None)


def wav_header(fmt: int, channels: int, rate: int, bits: int, data_len: int, payload: bytes, extra: bytes) -> bytes:
    block = (channels * bits // 8) & 0xFFFF
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits) + extra
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    body += b"data" + struct.pack("<I", data_len) + payload
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


weird_headers = st.builds(
    wav_header,
    fmt=st.sampled_from([0, 1, 2, 3, 6, 7, 0x11, 0xFFFE, 0xFFFF]),
    channels=st.one_of(st.integers(0, 8), st.sampled_from([255, 1024, 1025, 65535])),
    rate=st.one_of(
        st.sampled_from([0, 1, 8000, 16000, 44100, 192000, 768001, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1)
    ),
    bits=st.sampled_from([0, 1, 4, 8, 12, 16, 24, 32, 64, 65535]),
    data_len=st.one_of(st.integers(0, 4096), st.sampled_from([2**31, 2**32 - 1])),
    payload=st.binary(max_size=4096),
    extra=st.binary(max_size=24),
)


@FUZZ
@given(data=st.binary(max_size=8192), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".aiff"]))
def test_random_bytes(data: bytes, suffix: str) -> None:
    _check(data, suffix)


@FUZZ
@given(data=weird_headers)
def test_weird_wav_headers(data: bytes) -> None:
    _check(data, ".wav")


@FUZZ
@given(data=st.binary(min_size=1, max_size=2048), cut=st.integers(0, 100))
def test_mutated_real_file(data: bytes, cut: int) -> None:
    # A valid file with bytes overwritten at a random place: the header survives, the data lies.
    import soundfile as sf

    p = _DIR / "base.flac"
    t = np.arange(8000) / 16000
    sf.write(p, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    base = bytearray(p.read_bytes())
    at = len(base) * cut // 100
    base[at : at + len(data)] = data
    _check(bytes(base), ".flac")


def test_memory_stays_bounded_over_many_bad_files() -> None:
    rng = np.random.default_rng(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(300):
        hdr = wav_header(1, [1, 2, 1024][i % 3], 16000, 16, 2**32 - 1, rng.bytes(4096), b"")
        _check(hdr, ".wav")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, f"peak memory grew by {grown_mib:.0f} MiB"
