"""Feature parity with the librosa tutorial recipe's straightforward librosa calls, and the fingerprint."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest

from batchser.audio import load
from batchser.features import FEATURE_DIMS, OPENSMILE_GROUPS, SPEECH_GROUPS, FeatureSpec, SlidingExtractor, extract
from batchser.segments import windows
from batchser.speech_features import SPEECH, _shared_frames, speech_frames
from tests.conftest import speechlike, tone


def tutorial_features(y: np.ndarray, sr: int, names: tuple[str, ...]) -> np.ndarray:
    """the librosa tutorial recipe's extract_feature, verbatim in spirit: three STFTs, plain calls."""
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


ALL = tuple(
    n for n in FEATURE_DIMS if n not in SPEECH_GROUPS | OPENSMILE_GROUPS.keys()
)  # the librosa tutorial recipe's groups


@pytest.mark.parametrize("kind", ["angry", "sad", "neutral", "happy"])
def test_parity_on_generated_signals(kind: str) -> None:
    y = speechlike(kind, sr=16000, seconds=1.5, seed=3)
    spec = FeatureSpec(ALL, 16000)
    got = extract(y, spec=spec)
    assert got.shape == (spec.dim,) == (193,)
    assert _rel_err(got, tutorial_features(y, 16000, ALL)) < 1e-3


def test_parity_on_real_speech(ravdess_dir: Path) -> None:
    files = sorted(ravdess_dir.glob("Actor_0[1-4]/*.flac"))[::12]  # 20 files, 4 actors, all emotions
    spec = FeatureSpec(("mfcc", "chroma", "mel", "contrast"), 16000)
    worst = 0.0
    for f in files:
        y = load(f, sample_rate=16000).samples
        worst = max(worst, _rel_err(extract(y, spec=spec), tutorial_features(y, 16000, spec.names)))
    assert worst < 1e-3


def test_default_set_is_the_tutorial_recipe_180_vector() -> None:
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


# -- speech-rate statistics ---------------------------------------------------------

SPEECH_SPEC = FeatureSpec(("mfcc_stats", "logmel_stats", "spectral_stats", "prosody"), 16000)


def test_tutorial_recipe_fingerprints_do_not_change_with_the_speech_groups() -> None:
    # Caches and models keyed on the librosa tutorial recipe's features must survive the new groups.
    assert FeatureSpec(("mfcc", "chroma", "mel"), 16000).fingerprint() == "a9e37e73e5ec00a8"
    assert SPEECH_SPEC.fingerprint() != FeatureSpec(("mfcc_stats",), 16000).fingerprint()


@pytest.mark.parametrize("seconds", [1.2, 3.0])  # under and over 200 frames (two ways to sum for the roll-off)
def test_speech_frames_follow_librosa_definitions(seconds: float) -> None:
    sr = 16000
    y = speechlike("happy", sr=sr, seconds=seconds, seed=1) + 0.5 * speechlike("sad", sr=sr, seconds=seconds, seed=2)
    fr = speech_frames(y, sr=sr)
    kw = {"n_fft": 512, "hop_length": 160, "win_length": 400}
    mag = np.abs(librosa.stft(y, **kw))
    mel = librosa.feature.melspectrogram(S=mag**2, sr=sr, n_mels=40)
    np.testing.assert_allclose(fr.log_mel, librosa.power_to_db(mel), atol=2e-3)
    np.testing.assert_allclose(fr.mfcc, librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20), atol=5e-3)
    rms = librosa.feature.rms(S=mag, frame_length=512)[0]
    np.testing.assert_allclose(fr.level_db, 20 * np.log10(rms), atol=1e-3)
    np.testing.assert_allclose(fr.centroid, librosa.feature.spectral_centroid(S=mag, sr=sr)[0], rtol=1e-4)
    np.testing.assert_allclose(fr.flatness, librosa.feature.spectral_flatness(S=mag)[0], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(fr.rolloff, librosa.feature.spectral_rolloff(S=mag, sr=sr)[0])
    assert len(fr.f0) == len(fr.periodicity) == mag.shape[1] == fr.active.size


def test_activity_ignores_the_silence_around_speech() -> None:
    sr = 16000
    y = np.concatenate([np.zeros(sr, np.float32), tone(200, sr=sr, seconds=1.0), np.zeros(sr, np.float32)])
    fr = speech_frames(y + 1e-5 * np.random.default_rng(0).standard_normal(y.size).astype(np.float32), sr=sr)
    assert abs(fr.active.sum() * SPEECH["hop_s"] - 1.0) < 0.05  # the tone's second, not the silence


@pytest.mark.parametrize("f0", [100.0, 220.0])
def test_prosody_reads_the_pitch_of_a_voice(f0: float) -> None:
    sr = 16000
    t = np.arange(2 * sr) / sr
    vibrato = f0 * 2 ** (0.5 * np.sin(2 * np.pi * 2 * t) / 12)  # +-half a semitone
    y = sum(0.3 / k * np.sin(2 * np.pi * k * np.cumsum(vibrato) / sr) for k in (1, 2, 3)).astype(np.float32)
    pros = extract(y, spec=FeatureSpec(("prosody",), sr))
    register, spread = pros[0], pros[1]
    assert abs(register - np.log2(f0)) < 0.02  # within a quarter semitone
    assert 0.04 < spread < 1 / 12 + 0.02  # about the vibrato's one-semitone swing, in octaves
    assert pros[6] > 0.9  # voiced share


def test_unvoiced_signal_still_gives_finite_features() -> None:
    y = (0.3 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32)
    v = extract(y, spec=SPEECH_SPEC)
    assert v.shape == (SPEECH_SPEC.dim,) == (178,) and np.isfinite(v).all()
    assert v[-12 + 6] < 0.05  # voiced share: noise is not voiced


def test_speech_statistics_do_not_depend_on_silence_padding() -> None:
    # A clip and the same clip with a second of silence either side describe the same
    # sound: statistics over active frames only. (Spreads and deltas still see the
    # edge frames, so only levels are compared.)
    sr = 16000
    pad = np.zeros(sr, np.float32)
    for kind in ("happy", "sad", "angry"):
        y = speechlike(kind, sr=sr, seconds=1.0, seed=4)
        a, b = (extract(x, spec=SPEECH_SPEC) for x in (y, np.concatenate([pad, y, pad])))
        assert np.abs(a[80:120] - b[80:120]).max() < 1.0  # log-mel band means, dB
        assert np.abs(a[-12:-6] - b[-12:-6]).max() < 0.02  # pitch register, range, movement (octaves)
        assert abs(a[-1] - b[-1]) < 0.03  # active time, s


def _sliding_vs_independent(y: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray, list[int]]:
    chunks = [y[i : i + 7919] for i in range(0, y.size, 7919)]  # blocks that cut windows anywhere
    wins = list(windows(chunks, sample_rate=spec.sample_rate, window_s=4.0, hop_s=2.0, min_tail_s=0.5))
    sliding = SlidingExtractor(spec)
    shared = np.stack([sliding.extract(start, w) for start, w in wins])
    alone = np.stack([extract(w, spec=spec) for _, w in wins])
    return shared, alone, [start for start, _ in wins]


def test_overlapping_windows_share_frames_and_equal_independent_ones() -> None:
    # Sound that comes and goes, loud and faint (a frame's activity is relative to
    # its window's loudest, so it changes between windows, and with it which frames
    # get a pitch), and a tail window off the 2 s grid.
    sr = 16000
    parts = []
    for i, (kind, gain) in enumerate([("happy", 1), ("sad", 0.02), ("angry", 1), ("neutral", 0.01), ("sad", 1)]):
        y = gain * speechlike(kind, sr=sr, seconds=1.3 + 0.4 * i, seed=i)
        parts += [y, np.zeros(int(0.7 * sr), np.float32)]
    y = np.concatenate([*parts, speechlike("sad", sr=sr, seconds=1.1, seed=9)])
    spec = FeatureSpec(("mfcc_stats", "logmel_stats", "spectral_stats", "prosody", "mfcc"), sr)
    shared, alone, starts = _sliding_vs_independent(y, spec)
    assert len(starts) >= 6 and starts[-1] % (2 * sr) != 0  # the tail window cannot share
    np.testing.assert_allclose(shared, alone, rtol=1e-5, atol=1e-6 * np.abs(alone).max())
    # What is shared: every frame of the overlap but the two at each window edge,
    # whose 512-sample STFT frame reads padding zeros in one of the windows.
    prev = speech_frames(y[: 4 * sr], sr=sr)
    cur, old = _shared_frames(prev, 2 * sr, 4 * sr, hop=160, half=256)
    assert cur.tolist() == list(range(2, 199)) and (old - cur == 200).all()
    assert _shared_frames(prev, 2 * sr + 1, 4 * sr, hop=160, half=256)[0].size == 0  # off the frame grid


def test_overlapping_windows_of_real_speech_equal_independent_ones(ravdess_dir: Path) -> None:
    files = sorted(ravdess_dir.rglob("*.flac"))[::97][:8]
    y = np.concatenate([load(f, sample_rate=16000).samples for f in files])
    shared, alone, _ = _sliding_vs_independent(y, FeatureSpec(tuple(sorted(SPEECH_GROUPS)), 16000))
    np.testing.assert_allclose(shared, alone, rtol=1e-5, atol=1e-6 * np.abs(alone).max())


def test_pinned_chroma_tuning_is_librosa_chroma_at_that_tuning() -> None:
    sr = 16000
    y = speechlike("neutral", sr=sr, seconds=2.0, seed=5)  # a tone a few per cent off 440 Hz
    stft = np.abs(librosa.stft(y))
    assert abs(librosa.estimate_tuning(S=stft, sr=sr)) > 0.05  # so that pinning changes something
    pinned = FeatureSpec(("chroma",), sr, chroma_tuning=0.0)
    got = extract(y, spec=pinned)
    ref = np.mean(librosa.feature.chroma_stft(S=stft, sr=sr, tuning=0.0), axis=1)
    assert _rel_err(got, ref) < 1e-4
    assert np.abs(extract(y, spec=FeatureSpec(("chroma",), sr)) - got).max() > 1e-3  # estimated differs
    # Unset keeps the fingerprint (and caches, models) of before the option; a pinned value is its own key.
    assert FeatureSpec(("mfcc", "chroma", "mel"), 16000).fingerprint() == "a9e37e73e5ec00a8"
    assert pinned.fingerprint() != FeatureSpec(("chroma",), sr).fingerprint()
    assert "chroma_tuning" not in FeatureSpec(("chroma",), sr).to_dict() and pinned.to_dict()["chroma_tuning"] == 0.0
    with pytest.raises(ValueError, match="chroma_tuning"):
        FeatureSpec(("chroma",), sr, chroma_tuning=0.5)
