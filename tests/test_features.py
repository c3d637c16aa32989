"""Feature parity with the seed's straightforward librosa calls, and the fingerprint."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest

from batchser.audio import load
from batchser.features import FEATURE_DIMS, FeatureSpec, extract
from tests.conftest import speechlike


def seed_features(y: np.ndarray, sr: int, names: tuple[str, ...]) -> np.ndarray:
    """The seed recipe's extract_feature, verbatim in spirit: three STFTs, plain calls."""
    stft = np.abs(librosa.stft(y))
    parts = {
        "mfcc": lambda: np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0),
        "chroma": lambda: np.mean(librosa.feature.chroma_stft(S=stft, sr=sr).T, axis=0),
        "mel": lambda: np.mean(librosa.feature.melspectrogram(y=y, sr=sr).T, axis=0),
        "contrast": lambda: np.mean(librosa.feature.spectral_contrast(S=stft, sr=sr).T, axis=0),
        "tonnetz": lambda: np.mean(librosa.feature.tonnetz(y=librosa.effects.harmonic(y), sr=sr).T, axis=0),
    }
    return np.concatenate([parts[n]() for n in names])


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    # Relative to each value, with a floor at 1e-6 of the vector's scale for values near 0.
    scale = np.maximum(np.abs(ref), 1e-6 * np.abs(ref).max())
    return float(np.max(np.abs(got - ref) / scale))


ALL = tuple(FEATURE_DIMS)


@pytest.mark.parametrize("kind", ["angry", "sad", "neutral", "happy"])
def test_parity_on_generated_signals(kind: str) -> None:
    y = speechlike(kind, sr=16000, seconds=1.5, seed=3)
    spec = FeatureSpec(ALL, 16000)
    got = extract(y, spec=spec)
    assert got.shape == (spec.dim,) == (193,)
    assert _rel_err(got, seed_features(y, 16000, ALL)) < 1e-3


def test_parity_on_real_speech(ravdess_dir: Path) -> None:
    files = sorted(ravdess_dir.glob("Actor_0[1-4]/*.flac"))[::12]  # 20 files, 4 actors, all emotions
    spec = FeatureSpec(("mfcc", "chroma", "mel", "contrast"), 16000)
    worst = 0.0
    for f in files:
        y = load(f, sample_rate=16000).samples
        worst = max(worst, _rel_err(extract(y, spec=spec), seed_features(y, 16000, spec.names)))
    assert worst < 1e-3


def test_default_set_is_the_seed_180_vector() -> None:
    spec = FeatureSpec(("mfcc", "chroma", "mel"), 16000)
    assert spec.dim == 180
    cols = spec.columns()
    assert cols[0] == "mfcc_0" and cols[40] == "chroma_0" and cols[52] == "mel_0" and cols[-1] == "mel_127"


def test_order_is_kept() -> None:
    y = speechlike("happy", sr=16000)
    a = extract(y, spec=FeatureSpec(("mfcc", "chroma"), 16000))
    b = extract(y, spec=FeatureSpec(("chroma", "mfcc"), 16000))
    np.testing.assert_array_equal(a, np.concatenate([b[12:], b[:12]]))


def test_fingerprint_covers_names_order_and_rate() -> None:
    base = FeatureSpec(("mfcc", "chroma", "mel"), 16000).fingerprint()
    assert base == FeatureSpec(("mfcc", "chroma", "mel"), 16000).fingerprint()
    others = {
        FeatureSpec(("mfcc", "mel", "chroma"), 16000).fingerprint(),
        FeatureSpec(("mfcc", "chroma", "mel"), 22050).fingerprint(),
        FeatureSpec(("mfcc", "chroma"), 16000).fingerprint(),
        FeatureSpec(("mfcc", "chroma", "mel"), 16000, hop_length=256).fingerprint(),
    }
    assert base not in others and len(others) == 4


def test_unknown_feature() -> None:
    with pytest.raises(ValueError, match="unknown features"):
        FeatureSpec(("mfcc", "zcr"), 16000)


def _tuning_inputs(ravdess: Path | None) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    out = []
    for sr in (8000, 16000, 22050, 44100):
        t = np.arange(2 * sr) / sr
        for i in range(8):
            y = np.sin(2 * np.pi * (180 + 47.3 * i) * t) + 0.1 * rng.standard_normal(t.size)
            out.append((y.astype(np.float32), sr))
    if ravdess is not None:
        out += [(load(f, sample_rate=16000).samples, 16000) for f in sorted(ravdess.glob("Actor_*/*.flac"))[::4]]
    return out


@pytest.mark.parametrize("real", [False, True], ids=["generated", "ravdess"])
def test_estimate_tuning_is_librosas_bit_for_bit(real: bool, request: pytest.FixtureRequest) -> None:
    from batchser.features import estimate_tuning

    inputs = _tuning_inputs(request.getfixturevalue("ravdess_dir") if real else None)
    for y, sr in inputs:
        mag = np.abs(librosa.stft(y))
        assert estimate_tuning(mag, sr=sr, n_fft=2048) == librosa.estimate_tuning(S=mag, sr=sr, n_fft=2048)


def test_power_spectrogram_matches_librosa_stft() -> None:
    from batchser.features import power_spectrogram

    for n in (100, 2047, 2048, 16000, 33333):
        y = speechlike("happy", sr=16000, seconds=n / 16000, seed=n)
        ref = np.abs(librosa.stft(y)) ** 2
        got = power_spectrogram(y, n_fft=2048, hop_length=512)
        assert got.shape == ref.shape and got.flags.c_contiguous
        assert np.max(np.abs(got - ref)) <= 1e-6 * ref.max()
