"""The audio stage on real files through libsndfile: any depth, rate and channel count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from batchser.audio import AudioError, AudioStream, load
from tests.conftest import speechlike, tone, write_audio


def _peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spec) * sr / len(y))


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize(
    ("ext", "subtype"),
    [
        ("wav", "PCM_U8"),
        ("wav", "PCM_16"),
        ("wav", "PCM_24"),
        ("wav", "PCM_32"),
        ("wav", "FLOAT"),
        ("wav", "DOUBLE"),
        ("flac", "PCM_16"),
        ("flac", "PCM_24"),
        ("ogg", "VORBIS"),
    ],
)
def test_decode_any_depth_and_rate_to_16k_mono(tmp_path: Path, sr: int, ext: str, subtype: str) -> None:
    p = write_audio(tmp_path / f"t.{ext}", tone(440.0, sr=sr, seconds=0.5), sr, subtype=subtype)
    a = load(p, sample_rate=16000)
    assert a.sample_rate == 16000 and a.orig_sample_rate == sr and a.channels == 1
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.duration_s == pytest.approx(0.5, abs=0.01)
    assert len(a.samples) == pytest.approx(8000, abs=80)
    assert _peak_hz(a.samples, 16000) == pytest.approx(440.0, abs=4.0)  # resampled, not just relabelled
    assert np.abs(a.samples).max() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("channels", [2, 6])
def test_channels_are_mixed_to_mono(tmp_path: Path, channels: int) -> None:
    y = tone(300.0, sr=16000, channels=channels)
    p = write_audio(tmp_path / "multi.wav", y, 16000, subtype="PCM_16")
    a = load(p, sample_rate=16000)
    assert a.channels == channels
    np.testing.assert_allclose(a.samples, y.mean(axis=1), atol=2e-4)


def test_mp3_decodes(tmp_path: Path) -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    p = write_audio(tmp_path / "t.mp3", tone(440.0, sr=44100, seconds=1.0), 44100, fmt="MP3")
    a = load(p, sample_rate=16000)
    assert a.orig_sample_rate == 44100
    assert _peak_hz(a.samples, 16000) == pytest.approx(440.0, abs=4.0)


def test_file_object_source(tmp_path: Path) -> None:
    p = write_audio(tmp_path / "t.flac", tone(440.0, sr=16000), 16000)
    with open(p, "rb") as fh:
        assert load(fh, sample_rate=16000).orig_sample_rate == 16000


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "cannot decode"),
        (b"RIFF\x00\x00\x00\x00WAVE", "cannot decode"),
        (bytes(range(256)) * 40, "cannot decode"),
        (b"hello, I am text\n" * 50, "cannot decode"),
    ],
    ids=["empty", "riff-stub", "random-bytes", "text"],
)
def test_garbage_gives_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError, match=reason):
        load(p, sample_rate=16000)


def test_header_only_wav_is_empty(tmp_path: Path) -> None:
    p = write_audio(tmp_path / "h.wav", np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="no audio samples"):
        load(p, sample_rate=16000)


def test_nan_samples_are_refused(tmp_path: Path) -> None:
    y = tone(440.0, sr=16000)
    y[100] = np.nan
    p = write_audio(tmp_path / "nan.wav", y, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load(p, sample_rate=16000)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError):
        load(tmp_path / "gone.wav", sample_rate=16000)


def test_digital_silence_is_refused(tmp_path: Path) -> None:
    p = write_audio(tmp_path / "s.wav", np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="silent"):
        load(p, sample_rate=16000)


def test_quiet_but_not_silent_is_kept(tmp_path: Path) -> None:
    p = write_audio(tmp_path / "q.wav", tone(440.0, sr=16000, amp=1e-3), 16000, subtype="PCM_16")
    assert load(p, sample_rate=16000).samples.any()


def test_channels_that_cancel_are_labelled_from_the_loudest_with_a_warning(tmp_path: Path) -> None:
    """A stereo file whose channels are in opposite phase mixes to silence: the louder channel is used, said."""
    y = speechlike("angry", sr=16000, seconds=1.5, seed=3)
    for right in (-y, -0.999 * y):
        path = write_audio(tmp_path / "cancel.wav", np.stack([y, right], axis=1), 16000, subtype="FLOAT")
        audio = load(path, sample_rate=16000)
        assert any("channels cancel in the mono mix" in w and "channel 1" in w for w in audio.warnings), audio.warnings
        assert np.allclose(audio.samples, y, atol=1e-6)  # channel 1, as it is
    same = load(write_audio(tmp_path / "same.wav", np.stack([y, 0.5 * y], axis=1), 16000), sample_rate=16000)
    assert not any("cancel" in w for w in same.warnings)
    # A long recording streamed block by block says so instead of "silent".
    with AudioStream(write_audio(tmp_path / "long.wav", np.stack([y, -y], axis=1), 16000), sample_rate=16000) as s:
        list(s)
        with pytest.raises(AudioError, match=r"channels cancel in the mono mix.*remix 1"):
            s.check_decoded()
