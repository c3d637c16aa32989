"""Per-file feature vectors: the librosa tutorial recipe's definitions, computed from one STFT.

The librosa tutorial recipe called ``librosa.feature.mfcc(y=...)``, ``melspectrogram(y=...)`` and
``chroma_stft(S=|stft(y)|)``: three STFTs per file and fresh filter banks on
every call. Here one float32 power spectrogram is computed per file, mel /
MFCC / chroma / contrast are derived from it, filter banks are built once per
process (the mel bank as a sparse matrix), and chroma's tuning estimate is
librosa's, computed only at the peaks it uses. The default features touch no
librosa module at run time (see ``batchser.dsp``): a worker process starts in
well under a second instead of 2-3 s. The numbers are the librosa tutorial recipe's to
within 1e-5 relative (``tests/test_features.py`` checks against the plain
librosa calls).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from batchser.spectra import _chroma, _mel_basis, _mfcc, estimate_tuning, power_spectrogram
from batchser.speech_features import SPEECH, SpeechFrames, speech_frames, speech_group

if TYPE_CHECKING:
    pass

# scipy and librosa are imported where they are used: the job's main process
# needs FeatureSpec only, and importing scipy.fft, scipy.sparse and librosa
# there (then tearing them down at exit) cost 0.2 s on every run, cold or warm.

__all__ = [
    "FEATURE_DIMS",
    "FEATURE_VERSION",
    "OPENSMILE_GROUPS",
    "SPEECH_GROUPS",
    "FeatureSpec",
    "SlidingExtractor",
    "SpeechFrames",
    "estimate_tuning",
    "extract",
    "power_spectrogram",
    "speech_frames",
]

# Bump when a change alters any feature value: it invalidates every cache key.
FEATURE_VERSION = 2

FEATURE_DIMS: dict[str, int] = {
    # The librosa tutorial recipe's: means over 128 ms frames (n_fft 2048, hop 512).
    "mfcc": 40,
    "chroma": 12,
    "mel": 128,
    "contrast": 7,
    "tonnetz": 6,
    # Speech-rate statistics over 25 ms frames every 10 ms, active frames only
    # (within 35 dB of the file's loudest frame); see ``speech_frames``.
    "mfcc_stats": 80,  # 20 MFCCs: mean, std, mean |delta|, std of delta
    "logmel_stats": 80,  # 40 log-mel bands: mean, std
    "spectral_stats": 6,  # centroid, flatness, roll-off: mean, std
    "prosody": 12,  # pitch level, range and movement; voicing; loudness; active time
    # eGeMAPS-like voice descriptors (Eyben et al. 2016) from the same frames: pitch
    # in semitones and loudness with percentiles and slopes, HNR, jitter, shimmer,
    # alpha ratio, Hammarberg index, spectral slopes, flux, voiced-segment timing.
    "voice_stats": 36,
    # openSMILE's functionals (the optional reference, pip install 'batchser[opensmile]'):
    # eGeMAPSv02 (Eyben et al. 2016) and ComParE_2016 (the INTERSPEECH challenge baseline).
    "egemaps": 88,
    "compare": 6373,
}
OPENSMILE_GROUPS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
SPEECH_GROUPS = frozenset({"mfcc_stats", "logmel_stats", "spectral_stats", "prosody", "voice_stats"})


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
        STFT frame and hop (librosa's defaults, as in the librosa tutorial recipe).
    chroma_tuning : float or None
        Chroma's tuning offset in fractions of a chroma bin. None estimates it
        per file, as ``librosa.feature.chroma_stft`` does (as the librosa tutorial does); a number
        pins it (0.0: A440), which skips the estimate, a fifth of the librosa tutorial recipe
        features' cost per file, at no loss of accuracy on RAVDESS (docs/accuracy.md).
    """

    names: tuple[str, ...]
    sample_rate: int
    n_fft: int = 2048
    hop_length: int = 512
    chroma_tuning: float | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in FEATURE_DIMS]
        if unknown:
            raise ValueError(f"unknown features {unknown}; choose from {list(FEATURE_DIMS)}")
        if self.chroma_tuning is not None and not -0.5 <= self.chroma_tuning < 0.5:
            raise ValueError(f"chroma_tuning must be in [-0.5, 0.5) chroma bins, got {self.chroma_tuning}")

    @property
    def dim(self) -> int:
        return sum(FEATURE_DIMS[n] for n in self.names)

    def columns(self) -> list[str]:
        """Column names of the vector, e.g. ``mfcc_0 … mfcc_39, chroma_0 …``."""
        return self.columns_of({"names": self.names})

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> FeatureSpec:
        """The spec :meth:`to_dict` described (a model's metadata), checked against its fingerprint."""
        spec = cls(
            names=tuple(d["names"]),  # type: ignore[arg-type]
            sample_rate=int(d["sample_rate"]),  # type: ignore[call-overload]
            n_fft=int(d.get("n_fft", 2048)),  # type: ignore[call-overload]
            hop_length=int(d.get("hop_length", 512)),  # type: ignore[call-overload]
            chroma_tuning=d.get("chroma_tuning"),  # type: ignore[arg-type]
        )
        if "fingerprint" in d and spec.fingerprint() != d["fingerprint"]:
            raise ValueError(
                f"features {spec.names} computed by this batchser have fingerprint {spec.fingerprint()}, "
                f"not {d['fingerprint']}: another batchser version or analysis settings made them"
            )
        return spec

    @staticmethod
    def columns_of(spec: dict[str, object]) -> list[str]:
        """:meth:`columns` of a spec as :meth:`to_dict` wrote it (a model's metadata)."""
        names = spec["names"]
        return [f"{n}_{i}" for n in names for i in range(FEATURE_DIMS[n])]  # type: ignore[attr-defined]

    def _params(self) -> dict[str, object]:
        params: dict[str, object] = asdict(self)
        if self.chroma_tuning is None:  # estimated, as before the option: fingerprints (and caches) unchanged
            del params["chroma_tuning"]
        return params

    def fingerprint(self) -> str:
        """Stable short hash of everything that determines the feature values."""
        params = {**self._params(), "version": FEATURE_VERSION}
        if SPEECH_GROUPS & set(self.names):  # so tutorial-recipe-only fingerprints (and caches) stay as they were
            params["speech"] = SPEECH
        if OPENSMILE_GROUPS.keys() & set(self.names):  # its values are its version's
            params["opensmile"] = opensmile_version()
        blob = json.dumps(params, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, object]:
        return {**self._params(), "version": FEATURE_VERSION, "fingerprint": self.fingerprint(), "dim": self.dim}


# -- filter banks, built once per process ---------------------------------------


# -- the features -----------------------------------------------------------------


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
        Each group's per-file statistics (the librosa tutorial recipe's groups: means over
        frames), concatenated in ``spec.names`` order.
    """
    speech = speech_frames(y, sr=spec.sample_rate) if SPEECH_GROUPS & set(spec.names) else None
    return _vector(y, spec, speech)


class SlidingExtractor:
    """:func:`extract` for consecutive windows of one stream, sharing the work their overlap allows.

    Each window's vector is ``extract(window)``'s up to float32 rounding; the
    speech-rate frames two windows have in common are computed once (see
    :func:`speech_frames`).
    The librosa tutorial recipe's groups are computed per window: their 512-sample hop does not
    divide the usual window step, so their frames never coincide.

    Parameters
    ----------
    spec : FeatureSpec
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._speech = bool(SPEECH_GROUPS & set(spec.names))
        self._previous: SpeechFrames | None = None
        self._start = 0

    def extract(self, start: int, y: np.ndarray) -> np.ndarray:
        """The vector of the window of samples ``y`` starting at stream sample ``start``.

        ``start`` must not decrease from one call to the next.
        """
        speech = None
        if self._speech:
            shift = start - self._start
            speech = speech_frames(y, sr=self.spec.sample_rate, previous=self._previous, shift=shift)
            self._previous, self._start = speech, start
        return _vector(y, self.spec, speech)


def opensmile_version() -> str:
    """The installed opensmile package's version, or "" when it is absent."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opensmile")
    except PackageNotFoundError:
        return ""


@lru_cache(maxsize=2)
def _smile(name: str):  # type: ignore[no-untyped-def]
    import opensmile

    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, OPENSMILE_GROUPS[name]),
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def _vector(y: np.ndarray, spec: FeatureSpec, speech: SpeechFrames | None) -> np.ndarray:
    sr, n_fft, hop = spec.sample_rate, spec.n_fft, spec.hop_length
    names = set(spec.names)
    tutorial_groups = names - SPEECH_GROUPS - OPENSMILE_GROUPS.keys()
    power = power_spectrogram(y, n_fft=n_fft, hop_length=hop) if tutorial_groups else None
    mag = np.sqrt(power) if {"chroma", "contrast"} & names else None
    mel = _mel_basis(sr, n_fft) @ power if {"mfcc", "mel"} & names else None
    parts: list[np.ndarray] = []
    for name in spec.names:
        if name in SPEECH_GROUPS:
            parts.append(speech_group(name, speech))  # type: ignore[arg-type]
            continue
        if name in OPENSMILE_GROUPS:
            parts.append(_smile(name).process_signal(y, sr).to_numpy()[0])
            continue
        if name == "mfcc":
            block = _mfcc(mel)
        elif name == "mel":
            block = mel
        elif name == "chroma":
            block = _chroma(mag, sr=sr, n_fft=n_fft, tuning=spec.chroma_tuning)
        elif name == "contrast":
            import librosa

            block = librosa.feature.spectral_contrast(S=mag, sr=sr, n_fft=n_fft, hop_length=hop)
        else:  # tonnetz, as in the librosa tutorial recipe: on the harmonic component, via chroma_cqt
            import librosa

            block = librosa.feature.tonnetz(y=librosa.effects.harmonic(y), sr=sr)
        parts.append(np.mean(block, axis=-1))
    return np.concatenate(parts).astype(np.float32, copy=False)
