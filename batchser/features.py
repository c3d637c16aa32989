"""Per-file feature vectors: the seed recipe's definitions, computed from one STFT.

The seed called ``librosa.feature.mfcc(y=...)``, ``melspectrogram(y=...)`` and
``chroma_stft(S=|stft(y)|)``: three STFTs per file and fresh filter banks on
every call. Here the magnitude STFT is computed once, mel / MFCC / chroma /
contrast are derived from it, and filter banks are built once per process.
The numbers are the seed's (see ``tests/test_features.py`` for the parity
check against the plain librosa calls).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import librosa
import numpy as np
import scipy.fft

__all__ = ["FEATURE_DIMS", "FEATURE_VERSION", "FeatureSpec", "extract"]

# Bump when a change alters any feature value: it invalidates every cache key.
FEATURE_VERSION = 1

FEATURE_DIMS: dict[str, int] = {"mfcc": 40, "chroma": 12, "mel": 128, "contrast": 7, "tonnetz": 6}


@dataclass(frozen=True)
class FeatureSpec:
    """Which features, and the analysis parameters they share.

    Parameters
    ----------
    names : tuple of str
        Feature groups in output order, from ``FEATURE_DIMS``.
    sample_rate : int
        Rate the audio is resampled to before analysis.
    n_fft, hop_length : int
        STFT frame and hop (librosa's defaults, as in the seed).
    """

    names: tuple[str, ...]
    sample_rate: int
    n_fft: int = 2048
    hop_length: int = 512

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in FEATURE_DIMS]
        if unknown:
            raise ValueError(f"unknown features {unknown}; choose from {list(FEATURE_DIMS)}")

    @property
    def dim(self) -> int:
        return sum(FEATURE_DIMS[n] for n in self.names)

    def columns(self) -> list[str]:
        """Column names of the vector, e.g. ``mfcc_0 … mfcc_39, chroma_0 …``."""
        return [f"{n}_{i}" for n in self.names for i in range(FEATURE_DIMS[n])]

    def fingerprint(self) -> str:
        """Stable short hash of everything that determines the feature values."""
        blob = json.dumps({**asdict(self), "version": FEATURE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "version": FEATURE_VERSION, "fingerprint": self.fingerprint(), "dim": self.dim}


# -- filter banks, built once per process ---------------------------------------


@lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int = 128) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)


@lru_cache(maxsize=256)
def _chroma_basis(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    # estimate_tuning is quantised to 0.01 semitone, so ~100 distinct banks at most.
    return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=12)


@lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    return librosa.filters.get_window("hann", n_fft, fftbins=True)


# -- the features -----------------------------------------------------------------


def _magnitude(y: np.ndarray, *, n_fft: int, hop_length: int) -> np.ndarray:
    return np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length, window=_window(n_fft)))


def _mel_power(mag: np.ndarray, *, sr: int, n_fft: int) -> np.ndarray:
    power = mag * mag  # the seed's melspectrogram(y=...) uses power 2
    return _mel_basis(sr, n_fft) @ power


def _mfcc(mel_power: np.ndarray, *, n_mfcc: int = 40) -> np.ndarray:
    # librosa.feature.mfcc: power_to_db (top_db=80 relative to this file's max), DCT-II ortho.
    log_mel = librosa.power_to_db(mel_power)
    return scipy.fft.dct(log_mel, axis=-2, type=2, norm="ortho")[:n_mfcc]


def _chroma(mag: np.ndarray, *, sr: int, n_fft: int) -> np.ndarray:
    tuning = librosa.estimate_tuning(S=mag, sr=sr, n_fft=n_fft, bins_per_octave=12)
    raw = _chroma_basis(sr, n_fft, round(float(tuning), 4)) @ mag
    return librosa.util.normalize(raw, norm=np.inf, axis=-2)


def extract(y: np.ndarray, *, spec: FeatureSpec) -> np.ndarray:
    """Feature vector of one mono signal.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Mono float32 samples at ``spec.sample_rate``.
    spec : FeatureSpec

    Returns
    -------
    np.ndarray, shape (spec.dim,), float32
        Means over frames of each feature group, concatenated in ``spec.names`` order.
    """
    sr, n_fft, hop = spec.sample_rate, spec.n_fft, spec.hop_length
    mag = _magnitude(y, n_fft=n_fft, hop_length=hop)
    mel = None
    parts: list[np.ndarray] = []
    for name in spec.names:
        if name in ("mfcc", "mel") and mel is None:
            mel = _mel_power(mag, sr=sr, n_fft=n_fft)
        if name == "mfcc":
            block = _mfcc(mel)
        elif name == "mel":
            block = mel
        elif name == "chroma":
            block = _chroma(mag, sr=sr, n_fft=n_fft)
        elif name == "contrast":
            block = librosa.feature.spectral_contrast(S=mag, sr=sr, n_fft=n_fft, hop_length=hop)
        else:  # tonnetz, as in the seed: on the harmonic component, via chroma_cqt
            block = librosa.feature.tonnetz(y=librosa.effects.harmonic(y), sr=sr)
        parts.append(np.mean(block, axis=-1))
    return np.concatenate(parts).astype(np.float32, copy=False)
