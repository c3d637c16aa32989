"""The spectral building blocks every feature group draws on: one float32 power spectrogram, filter banks
built once per process (the mel bank as a sparse matrix), MFCC, chroma and librosa's tuning estimate.

Small numpy ports of librosa's definitions (``tests/test_features.py`` and ``tests/test_dsp.py`` hold them
equal); scipy is imported where it is used, so a job's main process never pays for it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from batchser import dsp

if TYPE_CHECKING:
    from scipy import sparse

__all__ = ["estimate_tuning", "power_spectrogram"]


@lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int = 128) -> sparse.csr_array:
    from scipy import sparse

    # Slaney triangles are narrow: 2,020 of 131,200 weights are non-zero at
    # 16 kHz, so the sparse product is ~35x faster than the dense one.
    return sparse.csr_array(dsp.mel_filters(sr=sr, n_fft=n_fft, n_mels=n_mels))


@lru_cache(maxsize=256)
def _chroma_basis(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    # estimate_tuning is quantised to 0.01 semitone, so ~100 distinct banks at most.
    return dsp.chroma_filters(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=12)


@lru_cache(maxsize=8)
def _window(n_fft: int, win_length: int | None = None) -> np.ndarray:
    # librosa.stft: a periodic Hann of win_length, zero-padded to n_fft, centred.
    win = win_length or n_fft
    lpad = (n_fft - win) // 2
    return np.pad(dsp.hann(win), (lpad, n_fft - win - lpad)).astype(np.float32)


@lru_cache(maxsize=8)
def _tuning_band(sr: int, n_fft: int, fmin: float = 150.0, fmax: float = 4000.0) -> tuple[int, int]:
    freqs = dsp.fft_frequencies(sr=sr, n_fft=n_fft)
    band = np.flatnonzero((fmin <= freqs) & (freqs < min(fmax, sr / 2)))
    return int(band[0]), int(band[-1]) + 1


def power_spectrogram(
    y: np.ndarray, *, n_fft: int, hop_length: int, win_length: int | None = None, frames: np.ndarray | None = None
) -> np.ndarray:
    """|STFT|**2, shape (1 + n_fft // 2, frames), C-contiguous float32.

    librosa.stft's framing (centred, zero-padded, periodic Hann of
    ``win_length``, default ``n_fft``), computed in float32 with one real FFT
    per frame; within 2e-7 of librosa's magnitudes relative to the spectrum's peak.
    ``frames`` (indices) computes only those columns.
    """
    import scipy.fft

    padded = np.pad(y, n_fft // 2)
    n_frames = 1 + (len(padded) - n_fft) // hop_length
    step = padded.strides[0]
    framed = np.lib.stride_tricks.as_strided(padded, shape=(n_frames, n_fft), strides=(hop_length * step, step))
    if frames is not None:
        framed = framed[frames]
    spec = scipy.fft.rfft(framed * _window(n_fft, win_length), axis=-1, workers=1)
    # re**2 + im**2 on the interleaved (re, im) pairs: one squaring pass instead
    # of two strided ones (same operations, same values; 20 % faster).
    sq = spec.view(spec.real.dtype) ** 2
    return np.ascontiguousarray((sq[:, 0::2] + sq[:, 1::2]).T)


def estimate_tuning(mag: np.ndarray, *, sr: int, n_fft: int, threshold: float = 0.1) -> float:
    """``librosa.estimate_tuning(S=mag, sr=sr, n_fft=n_fft)``, bit for bit, ~4x faster.

    librosa interpolates a parabola at every bin of every frame and keeps only
    the thresholded local maxima between 150 Hz and 4 kHz; this finds those
    maxima first and interpolates there alone, with the same float32/float64
    steps, so the result is identical (checked on all 1,440 RAVDESS files).
    """
    lo, hi = _tuning_band(sr, n_fft)
    ref = threshold * mag.max(axis=0)
    win = np.ascontiguousarray(mag[lo - 1 : hi + 1])  # the band with one neighbour row on each side
    masked = win * (win > ref)
    centre = masked[1:-1]
    # Flat indices into the band, row-major as np.nonzero would list them: one
    # index array and 1-D gathers cost a third of the 2-D pair.
    n = win.shape[1]
    at = np.flatnonzero((centre > masked[:-2]) & (centre >= masked[2:]))
    flat = win.reshape(-1)
    k = at // n
    x0, xm, xp = flat[at + n], flat[at], flat[at + 2 * n]
    # As librosa's numba stencil: f32 + f32, then float64 against 2 * x.
    a = (xp + xm).astype(np.float64) - 2 * x0.astype(np.float64)
    b = (xp - xm).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a).astype(mag.dtype)
    pitch = (((k + lo) + shift) * float(sr) / n_fft).astype(mag.dtype)  # int64 + f32 -> f64, as librosa
    mags = x0 + 0.5 * ((xp - xm) / 2) * shift
    keep = pitch > 0
    pitch, mags = pitch[keep], mags[keep]
    threshold_mag = np.median(mags) if mags.size else 0.0
    return dsp.pitch_tuning(pitch[mags >= threshold_mag], resolution=0.01, bins_per_octave=12)


def _mfcc(mel_power: np.ndarray, *, n_mfcc: int = 40) -> np.ndarray:
    # librosa.feature.mfcc: power_to_db (top_db=80 relative to this file's max), DCT-II ortho.
    import scipy.fft

    log_mel = dsp.power_to_db(mel_power)
    return scipy.fft.dct(log_mel, axis=-2, type=2, norm="ortho")[:n_mfcc]


def _chroma(mag: np.ndarray, *, sr: int, n_fft: int, tuning: float | None = None) -> np.ndarray:
    if tuning is None:
        tuning = estimate_tuning(mag, sr=sr, n_fft=n_fft)
    raw = _chroma_basis(sr, n_fft, tuning) @ mag
    return dsp.normalize(raw, norm=np.inf, axis=-2)


@lru_cache(maxsize=8)
def _fft_freqs(sr: int, n_fft: int) -> np.ndarray:
    return dsp.fft_frequencies(sr=sr, n_fft=n_fft).astype(np.float32)
