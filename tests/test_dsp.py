"""batchser.dsp against librosa itself: the ports must not drift."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal

from batchser import dsp


@pytest.mark.parametrize("n", [256, 2048, 4096])
def test_hann(n: int) -> None:
    np.testing.assert_array_equal(dsp.hann(n), scipy.signal.get_window("hann", n, fftbins=True))


@pytest.mark.parametrize(("sr", "n_fft"), [(8000, 2048), (16000, 2048), (22050, 2048), (44100, 1024)])
def test_mel_filters(sr: int, n_fft: int) -> None:
    np.testing.assert_array_equal(dsp.mel_filters(sr=sr, n_fft=n_fft), librosa.filters.mel(sr=sr, n_fft=n_fft))


@pytest.mark.parametrize("tuning", [-0.5, -0.13, 0.0, 0.07, 0.49])
@pytest.mark.parametrize("sr", [8000, 16000, 44100])
def test_chroma_filters(tuning: float, sr: int) -> None:
    ref = librosa.filters.chroma(sr=sr, n_fft=2048, tuning=tuning)
    np.testing.assert_allclose(dsp.chroma_filters(sr=sr, n_fft=2048, tuning=tuning), ref, rtol=1e-6, atol=1e-9)


def test_power_to_db_and_normalize() -> None:
    rng = np.random.default_rng(0)
    S = (rng.random((128, 50)) ** 8).astype(np.float32)
    S[3, 4] = 0.0
    np.testing.assert_array_equal(dsp.power_to_db(S), librosa.power_to_db(S))
    C = rng.random((12, 40)).astype(np.float32)
    C[:, 5] = 0.0  # an all-zero frame: librosa leaves it at zero
    np.testing.assert_array_equal(dsp.normalize(C, norm=np.inf, axis=0), librosa.util.normalize(C, norm=np.inf, axis=0))


def test_pitch_tuning() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        f = (rng.uniform(150, 4000, 500)).astype(np.float32)
        assert dsp.pitch_tuning(f) == librosa.pitch_tuning(f)
    with pytest.warns(UserWarning):
        assert dsp.pitch_tuning(np.zeros(3)) == librosa.pitch_tuning(np.zeros(3)) == 0.0


@pytest.mark.parametrize("f0", [80.0, 110.0, 150.0, 220.0, 330.0, 490.0])
def test_autocorr_pitch_finds_the_fundamental_not_a_multiple(f0: float) -> None:
    sr = 16000
    t = np.arange(sr) / sr
    y = sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.3))).astype(np.float32)
    got, strength = dsp.autocorr_pitch(y, sr=sr, frame_length=640, hop_length=160, fmin=75, fmax=500)
    inner = slice(5, -5)  # frames clear of the zero padding at the ends
    assert np.abs(got[inner] / f0 - 1).max() < 0.01
    assert strength[inner].min() > 0.9


def test_autocorr_pitch_calls_noise_unvoiced_and_frames_like_an_stft() -> None:
    sr = 16000
    y = np.random.default_rng(0).standard_normal(int(2.3 * sr)).astype(np.float32)
    f0, strength = dsp.autocorr_pitch(y, sr=sr, frame_length=640, hop_length=160, fmin=75, fmax=500)
    assert np.median(strength) < 0.3 and np.mean(strength > 0.45) < 0.05
    assert len(f0) == 1 + len(y) // 160  # as librosa.stft(hop_length=160, center=True)
    assert ((f0 >= 75 * 0.99) & (f0 <= 500 * 1.01)).all()


def test_autocorr_pitch_refuses_a_frame_shorter_than_the_longest_period() -> None:
    with pytest.raises(ValueError, match=r"cannot hold a 60\.0 Hz period"):
        dsp.autocorr_pitch(np.zeros(1000, np.float32), sr=16000, frame_length=256, hop_length=160, fmin=60.0)
