"""Decode any libsndfile-readable file, mix to mono, resample with soxr.

One function does it, :func:`load`; failures raise :class:`AudioError` with a
reason meant for the report's ``error`` column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import librosa
import numpy as np
import soundfile as sf

__all__ = ["SILENCE_DBFS", "Audio", "AudioError", "load"]

SILENCE_DBFS = -100
SILENCE_PEAK = 10 ** (SILENCE_DBFS / 20)


class AudioError(Exception):
    """A file that cannot be turned into usable audio; ``str()`` is the reason."""


@dataclass(frozen=True)
class Audio:
    """Decoded mono audio and what the file was before conversion."""

    samples: np.ndarray  # float32, mono, at sample_rate
    sample_rate: int
    orig_sample_rate: int
    channels: int
    duration_s: float  # of the original file


def _open_error(exc: Exception) -> AudioError:
    msg = str(exc).strip()
    # libsndfile's messages start with the file name; keep only the reason.
    if ": " in msg and isinstance(exc, sf.LibsndfileError):
        msg = msg.split(": ", 1)[1]
    return AudioError(f"cannot decode: {msg}" if msg else f"cannot decode: {type(exc).__name__}")


def load(source: str | Path | BinaryIO, *, sample_rate: int) -> Audio:
    """Decode ``source`` to mono float32 at ``sample_rate``.

    Parameters
    ----------
    source : path or binary file object
        Anything libsndfile reads (WAV at any bit depth, FLAC, OGG, MP3, AIFF, …).
    sample_rate : int
        Target rate; soxr (high quality) resamples when the file differs.

    Returns
    -------
    Audio

    Raises
    ------
    AudioError
        Unreadable, empty, non-finite or silent (peak below ``SILENCE_DBFS``)
        audio, with the reason.
    """
    try:
        with sf.SoundFile(source) as f:
            orig_sr, channels = int(f.samplerate), int(f.channels)
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise _open_error(exc) from None
    except OSError as exc:
        raise AudioError(f"cannot read: {exc.strerror or exc}") from None
    if orig_sr <= 0:
        raise AudioError(f"invalid sample rate {orig_sr} in header")
    if data.shape[0] == 0:
        raise AudioError("no audio samples (empty or header-only file)")
    if not np.isfinite(data).all():
        raise AudioError("non-finite samples (NaN or inf) in the audio data")
    mono = data.mean(axis=1) if channels > 1 else data[:, 0]
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        # Any emotion label for silence would be a guess; say so instead.
        raise AudioError(f"silent: peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS, below {SILENCE_DBFS} dBFS")
    if orig_sr != sample_rate:
        mono = librosa.resample(mono, orig_sr=orig_sr, target_sr=sample_rate, res_type="soxr_hq")
    return Audio(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        sample_rate=sample_rate,
        orig_sample_rate=orig_sr,
        channels=channels,
        duration_s=data.shape[0] / orig_sr,
    )
