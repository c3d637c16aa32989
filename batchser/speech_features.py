"""The speech-rate feature groups: 25 ms frames every 10 ms, statistics over active frames only.

``mfcc_stats``, ``logmel_stats``, ``spectral_stats``, ``prosody`` and ``voice_stats`` (docs/architecture.md,
*Speech features*) all come from one :class:`SpeechFrames` per signal: one STFT, one autocorrelation pitch
track, shared between overlapping windows of a long recording where their frames coincide.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from batchser import dsp

if TYPE_CHECKING:
    pass

from batchser.spectra import _fft_freqs, _mel_basis, power_spectrogram

__all__ = ["SPEECH", "SpeechFrames", "speech_frames", "speech_group"]


# Speech-rate analysis: the usual ASR framing, 40 mel bands, 20 MFCCs, pitch
# 75-500 Hz (Praat's default floor) in 40 ms frames (3 periods of 75 Hz).
SPEECH = {
    "win_s": 0.025,
    "hop_s": 0.010,
    "n_mels": 40,
    "n_mfcc": 20,
    "active_db": 35.0,
    "fmin": 75.0,
    "fmax": 500.0,
    "pitch_win_s": 0.040,
    "voicing": 0.45,
}


@dataclass(frozen=True)
class SpeechFrames:
    """Frame-wise speech descriptors at 25 ms / 10 ms, all with the same frame count.

    ``active`` marks frames within ``SPEECH["active_db"]`` of the loudest one:
    statistics are taken over them, so leading and trailing silence (half of
    a RAVDESS clip) does not dilute them.
    """

    log_mel: np.ndarray  # (n_mels, frames), dB, top 80 dB
    mfcc: np.ndarray  # (n_mfcc, frames)
    level_db: np.ndarray  # (frames,) RMS level, dB re full scale
    centroid: np.ndarray  # (frames,) Hz
    flatness: np.ndarray  # (frames,) 0..1
    rolloff: np.ndarray  # (frames,) Hz, 85 % of the magnitude below it
    bands: np.ndarray  # (4, frames): alpha ratio, Hammarberg index (dB), slopes 0-500, 500-1500 Hz (dB/100 Hz)
    f0: np.ndarray  # (frames,) Hz, best candidate in every active frame (NaN elsewhere)
    periodicity: np.ndarray  # (frames,) 0..1
    active: np.ndarray  # (frames,) bool
    mel_power: np.ndarray  # (n_mels, frames), before the window-relative dB floor
    n_samples: int  # length of the analysed signal


@lru_cache(maxsize=8)
def _speech_framing(sr: int) -> tuple[int, int, int, int]:
    win = round(SPEECH["win_s"] * sr)
    hop = round(SPEECH["hop_s"] * sr)
    n_fft = 1 << (win - 1).bit_length()
    return win, hop, n_fft, round(SPEECH["pitch_win_s"] * sr)


def speech_frames(y: np.ndarray, *, sr: int, previous: SpeechFrames | None = None, shift: int = 0) -> SpeechFrames:
    """Speech-rate descriptors of one mono signal, from one STFT and one autocorrelation.

    The spectral ones follow librosa's definitions (``melspectrogram`` +
    ``power_to_db``, ``mfcc``, ``rms``, ``spectral_centroid``,
    ``spectral_flatness``, ``spectral_rolloff`` on ``stft(n_fft, hop,
    win_length)``); ``tests/test_features.py`` checks them against librosa.
    Pitch comes from :func:`batchser.dsp.autocorr_pitch`.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Mono float32 samples.
    sr : int
        Sample rate.
    previous : SpeechFrames or None
        The frames of an earlier window of the same stream, starting ``shift``
        samples before ``y``. Frames the two windows share, away from either
        window's zero-padded edges, are taken from it instead of computed
        again; the result is the same as without it up to float32 rounding
        (a window's frames are summed in other batches). Overlapping windows
        of a long file (4 s every 2 s) then cost about two thirds.
    shift : int
        ``y``'s start minus ``previous``'s, in samples.
    """
    import scipy.fft

    win, hop, n_fft, pitch_win = _speech_framing(sr)
    n = 1 + len(y) // hop
    cur, old = _shared_frames(previous, shift, len(y), hop=hop, half=n_fft // 2)
    if cur.size:
        todo = np.setdiff1d(np.arange(n), cur, assume_unique=True)
        computed = _frame_descriptors(
            power_spectrogram(y, n_fft=n_fft, hop_length=hop, win_length=win, frames=todo), sr=sr, n_fft=n_fft
        )
        p = previous
        reused = (p.mel_power, p.level_db, p.centroid, p.flatness, p.rolloff, p.bands)  # type: ignore[union-attr]
        mel_power, level_db, centroid, flatness, rolloff, bands = (
            _gather(n, todo, new, cur, prev[..., old]) for new, prev in zip(computed, reused, strict=True)
        )
    else:
        power = power_spectrogram(y, n_fft=n_fft, hop_length=hop, win_length=win)
        mel_power, level_db, centroid, flatness, rolloff, bands = _frame_descriptors(power, sr=sr, n_fft=n_fft)
    log_mel = dsp.power_to_db(mel_power)  # floored relative to this window's peak
    mfcc = scipy.fft.dct(log_mel, axis=0, type=2, norm="ortho")[: int(SPEECH["n_mfcc"])]
    active = level_db > level_db.max() - SPEECH["active_db"]
    # Pitch is computed on active frames only, so a shared frame is reused
    # where the earlier window had it active too.
    cur, old = _shared_frames(previous, shift, len(y), hop=hop, half=pitch_win // 2)
    if cur.size:
        keep = active[cur] & previous.active[old]  # type: ignore[union-attr]
        cur, old = cur[keep], old[keep]
    wanted = active.copy()
    wanted[cur] = False
    f0, periodicity = dsp.autocorr_pitch(
        y, sr=sr, frame_length=pitch_win, hop_length=hop, fmin=SPEECH["fmin"], fmax=SPEECH["fmax"], frames=wanted
    )
    if cur.size:
        f0[cur] = previous.f0[old]  # type: ignore[union-attr]
        periodicity[cur] = previous.periodicity[old]  # type: ignore[union-attr]
    return SpeechFrames(
        log_mel, mfcc, level_db, centroid, flatness, rolloff, bands, f0, periodicity, active, mel_power, len(y)
    )


def _frame_descriptors(power: np.ndarray, *, sr: int, n_fft: int) -> tuple[np.ndarray, ...]:
    """Mel power, level (dB), centroid, flatness and roll-off of each power-spectrum column.

    Each depends on its own frame only, so frames shared by two windows have the same values.
    """
    mag = np.sqrt(power)
    mel_power = _mel_basis(sr, n_fft, int(SPEECH["n_mels"])) @ power
    # librosa.feature.rms(S=mag): the DC and Nyquist bins count once, the rest twice.
    edge = power[0] + power[-1]
    level_db = 10 * np.log10(np.maximum((2 * power.sum(axis=0) - edge) / n_fft**2, 1e-20))
    freqs = _fft_freqs(sr, n_fft)
    total = mag.sum(axis=0)
    centroid = (freqs @ mag) / np.maximum(total, 1e-10)
    floored = np.maximum(power, 1e-10)
    flatness = np.exp(np.log(floored).mean(axis=0)) / floored.mean(axis=0)
    below = _cumsum_rows(mag) >= 0.85 * total
    rolloff = freqs[np.argmax(below, axis=0)]
    return mel_power, level_db, centroid, flatness, rolloff, _band_descriptors(power, sr=sr, n_fft=n_fft)


@lru_cache(maxsize=8)
def _band_matrix(sr: int, n_fft: int) -> tuple[np.ndarray, slice, slice, int, np.ndarray]:
    """Precomputed band selections: energy sums (2, bins), the Hammarberg bands, slope weights."""
    freqs = dsp.fft_frequencies(sr=sr, n_fft=n_fft)
    nyq = sr / 2

    def sel(lo: float, hi: float) -> np.ndarray:
        return (freqs >= lo) & (freqs < min(hi, nyq))

    sums = np.stack([sel(50, 1000), sel(1000, 5000)]).astype(np.float32)
    low = slice(0, int(np.flatnonzero(sel(0, 2000))[-1]) + 1)
    high_bins = np.flatnonzero(sel(2000, 5000))
    high = slice(int(high_bins[0]), int(high_bins[-1]) + 1) if high_bins.size else slice(0, 0)
    top = int(np.flatnonzero(sel(0, 1500))[-1]) + 1  # the slopes look below 1.5 kHz only
    slopes = np.zeros((2, top), dtype=np.float32)
    for k, (lo, hi) in enumerate(((0, 500), (500, 1500))):
        m = sel(lo, hi)[:top]
        f = freqs[:top][m] - freqs[:top][m].mean()
        slopes[k, m] = 100 * f / (f**2).sum()  # least-squares slope of dB over frequency, per 100 Hz
    return sums, low, high, top, slopes


def _band_descriptors(power: np.ndarray, *, sr: int, n_fft: int) -> np.ndarray:
    """eGeMAPS' spectral balance per frame: alpha ratio, Hammarberg index, slopes 0-500 and 500-1500 Hz.

    Each depends on its own frame only. Alpha ratio: energy 50-1000 Hz over
    1-5 kHz; Hammarberg: strongest bin below 2 kHz over the strongest in
    2-5 kHz; slopes: of the dB spectrum by least squares (dB per 100 Hz).
    """
    sums, low, high, top, slopes = _band_matrix(sr, n_fft)
    energy = 10 * np.log10(np.maximum(sums @ power, 1e-12))
    alpha = energy[0] - energy[1]
    if high.stop > high.start:
        hamm = 10 * np.log10(np.maximum(power[low].max(axis=0), 1e-12) / np.maximum(power[high].max(axis=0), 1e-12))
    else:  # a rate too low to have a 2-5 kHz band
        hamm = np.zeros(power.shape[1], np.float32)
    # The weights sum to zero per band, so the band's mean level drops out.
    db = 10 * np.log10(np.maximum(power[:top], 1e-12))
    return np.vstack([alpha, hamm, slopes @ db]).astype(np.float32)


def _cumsum_rows(x: np.ndarray) -> np.ndarray:
    """``np.cumsum(x, axis=0)``, bit for bit, faster for many columns.

    numpy accumulates one column at a time, a chain of dependent adds (2.9 ns
    per value here); adding row after row is one vectorised add per row.
    """
    if x.shape[1] < 200:  # below this, 257 numpy calls cost more than numpy's loop
        return np.cumsum(x, axis=0)
    out = np.empty_like(x)
    out[0] = x[0]
    for i in range(1, x.shape[0]):
        np.add(out[i - 1], x[i], out=out[i])
    return out


def _shared_frames(
    previous: SpeechFrames | None, shift: int, n_samples: int, *, hop: int, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of this window and the same frames of ``previous``, where neither touches its window's edge.

    Frame ``k`` is centred on sample ``k * hop`` and reads ``half`` samples
    either side; where that reaches past a window's end it reads padding
    zeros instead of the stream, so such frames are never shared.
    """
    none = np.zeros(0, dtype=np.intp)
    if previous is None or shift <= 0 or shift % hop:
        return none, none
    k = np.arange(1 + n_samples // hop)
    j = k + shift // hop
    c, cp = k * hop, j * hop
    ok = (c >= half) & (c + half <= n_samples) & (cp + half <= previous.n_samples) & (j < previous.level_db.size)
    return k[ok], j[ok]


def _gather(n: int, todo: np.ndarray, computed: np.ndarray, cur: np.ndarray, reused: np.ndarray) -> np.ndarray:
    out = np.empty((*computed.shape[:-1], n), dtype=computed.dtype)
    out[..., todo] = computed
    out[..., cur] = reused
    return out


def _spread(x: np.ndarray) -> np.ndarray:
    """Mean and standard deviation of each row over frames."""
    return np.concatenate([x.mean(axis=-1), x.std(axis=-1)])


def _prosody(fr: SpeechFrames) -> np.ndarray:
    # Pitch over voiced active frames, as log2(Hz) so that a range is an
    # interval in octaves whatever the speaker's register. A file with under
    # three voiced frames (whisper, noise) uses its three most periodic
    # active frames: a real, if poor, estimate, and ``voiced`` says it is one.
    voiced = fr.active & (fr.periodicity >= SPEECH["voicing"])
    idx = np.flatnonzero(voiced)
    if idx.size < 3:
        act = np.flatnonzero(fr.active)
        idx = np.sort(act[np.argsort(fr.periodicity[act])[-3:]])
    pitch = np.log2(fr.f0[idx])
    p10, p50, p90 = np.percentile(pitch, [10, 50, 90])
    level = fr.level_db[fr.active]
    l10, l90 = np.percentile(level, [10, 90])
    return np.array(
        [
            p50,  # register
            p90 - p10,  # range, octaves
            p10,
            p90,
            pitch.std(),
            np.abs(np.diff(pitch)).mean() if pitch.size > 1 else 0.0,  # movement
            voiced.mean(),  # share of frames voiced
            fr.active.mean(),  # share of frames active
            level.mean(),
            level.std(),
            l90 - l10,  # dynamic range, dB
            fr.active.sum() * SPEECH["hop_s"],  # active time, s
        ]
    )


def _pstats(x: np.ndarray) -> list[float]:
    """Mean, std, 20th/50th/80th percentiles and the 20-80 range (eGeMAPS' functionals)."""
    if x.size == 0:
        return [0.0] * 6
    p20, p50, p80 = np.percentile(x, [20, 50, 80])
    return [float(x.mean()), float(x.std()), p20, p50, p80, p80 - p20]


def _slopes(x: np.ndarray) -> list[float]:
    """Mean rise and mean fall between consecutive values (eGeMAPS' rising/falling slopes)."""
    d = np.diff(x)
    up, down = d[d > 0], d[d < 0]
    return [float(up.mean()) if up.size else 0.0, float(-down.mean()) if down.size else 0.0]


def _run_lengths(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (in frames) of the runs of True and of False in ``mask``."""
    edges = np.flatnonzero(np.diff(np.r_[False, mask, False].astype(np.int8)))
    on = edges[1::2] - edges[0::2]
    edges = np.flatnonzero(np.diff(np.r_[False, ~mask, False].astype(np.int8)))
    return on, edges[1::2] - edges[0::2]


def _voice_stats(fr: SpeechFrames) -> np.ndarray:
    act = fr.active
    voiced = act & (fr.periodicity >= SPEECH["voicing"])
    idx = np.flatnonzero(voiced)
    f0 = fr.f0[idx].astype(np.float64)
    semitones = 12 * np.log2(f0 / 27.5) if idx.size else np.zeros(0)
    loudness = (fr.mel_power[:, act].astype(np.float64) ** 0.3).sum(axis=0)  # Zwicker-like compression
    per = np.clip(fr.periodicity[idx].astype(np.float64), 1e-3, 0.999)
    hnr = 10 * np.log10(per / (1 - per))
    # Jitter and shimmer between consecutive voiced frames (10 ms apart, not
    # period by period as Praat does: a frame-rate estimate of the same thing).
    pairs = np.flatnonzero(np.diff(idx) == 1)
    period = 1.0 / f0 if idx.size else np.zeros(0)
    jitter = float((np.abs(np.diff(period))[pairs] / period[pairs]).mean()) if pairs.size else 0.0
    shimmer = float(np.abs(np.diff(fr.level_db[idx].astype(np.float64)))[pairs].mean()) if pairs.size else 0.0
    spec = fr.mel_power[:, act].astype(np.float64)
    spec /= np.maximum(spec.sum(axis=0, keepdims=True), 1e-20)
    flux = np.sqrt((np.diff(spec, axis=1) ** 2).sum(axis=0)) if spec.shape[1] > 1 else np.zeros(1)
    bands = fr.bands[:, act].astype(np.float64)
    on, off = _run_lengths(voiced[act])
    hop = SPEECH["hop_s"]
    active_s = max(act.sum() * hop, hop)
    timing = [
        on.size / active_s,  # voiced segments per second
        on.mean() * hop if on.size else 0.0,
        on.std() * hop if on.size else 0.0,
        off.mean() * hop if off.size else 0.0,
        off.std() * hop if off.size else 0.0,
        voiced.sum() / max(act.sum(), 1),
    ]
    return np.array(
        _pstats(semitones)
        + _slopes(semitones)
        + _pstats(loudness)
        + _slopes(loudness)
        + _pstats(hnr)[:2]
        + [jitter, shimmer]
        + [v for row in bands for v in _pstats(row)[:2]]
        + _pstats(flux)[:2]
        + timing
    )


def speech_group(name: str, fr: SpeechFrames) -> np.ndarray:
    act = fr.active
    if name == "voice_stats":
        return _voice_stats(fr)
    if name == "mfcc_stats":
        m = fr.mfcc[:, act]
        delta = np.diff(m, axis=1) if m.shape[1] > 1 else np.zeros((m.shape[0], 1), m.dtype)
        return np.concatenate([m.mean(axis=1), m.std(axis=1), np.abs(delta).mean(axis=1), delta.std(axis=1)])
    if name == "logmel_stats":
        return _spread(fr.log_mel[:, act])
    if name == "spectral_stats":
        return _spread(np.stack([fr.centroid[act], fr.flatness[act], fr.rolloff[act]]))
    return _prosody(fr)
