"""How long recordings are cut: speech segments (the default) or fixed windows.

A file longer than ``SegmentSpec.over_s`` is analysed piece by piece as its
audio streams in, so memory follows the piece, not the file. With
``method="speech"`` the pieces are the speech segments a voice-activity model
finds (see :mod:`batchser.vad`); with ``method="windows"``, windows
``window_s`` long every ``hop_s``, each with a voiced flag from the energy
rule. Each piece gets the same feature vector a short file gets; the report
labels each and aggregates the speech (voiced) ones into the file's row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from batchser.vad import SegmenterParams

__all__ = ["SegmentSpec", "Segments", "cut_key", "is_voiced", "split_at", "windows"]


@dataclass(frozen=True)
class SegmentSpec:
    """How long files are cut.

    Parameters
    ----------
    over_s : float
        Files longer than this are segmented; shorter ones get one vector.
    method : {"speech", "windows"}
        Speech segments from a voice-activity model, or fixed windows.
    threshold : float
        Speech: a frame whose speech probability reaches this starts speech.
    min_speech_s, min_silence_s : float
        Speech: shorter speech is dropped; shorter pauses do not end a segment.
    max_segment_s : float
        Speech: longer segments are cut at their least speech-like frame. The
        model was trained on utterances of 1 to 8 s.
    pad_s : float
        Speech: added before and after each segment (at most half of ``min_silence_s``).
    gate_db : float
        Speech: frames quieter than this, away from louder ones, skip the model.
    short_files : bool
        Speech: files up to ``over_s`` are checked too; one without speech gets
        status ``no speech`` instead of a label (it is still analysed whole).
    window_s, hop_s : float
        Window length and step. The default 4 s is about a RAVDESS utterance,
        the length the model was trained on.
    voiced_db : float
        A 25 ms frame louder than this (RMS, dBFS) counts as sound.
    voiced_fraction : float
        A window is voiced when at least this fraction of its frames are.
    min_tail_s : float
        Audio after the last full window, if at least this long, gets a final
        window ending at the end of the file.
    """

    over_s: float = 10.0
    method: str = "speech"
    threshold: float = 0.5
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3
    max_segment_s: float = 8.0
    pad_s: float = 0.1
    gate_db: float = -55.0
    short_files: bool = False
    window_s: float = 4.0
    hop_s: float = 2.0
    voiced_db: float = -45.0
    voiced_fraction: float = 0.2
    min_tail_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.hop_s <= self.window_s <= self.over_s:
            raise ValueError(
                f"need 0 < hop_s <= window_s <= over_s, got hop_s={self.hop_s}, window_s={self.window_s}, "
                f"over_s={self.over_s}"
            )

        if self.method not in ("speech", "windows"):
            raise ValueError(f"method must be 'speech' or 'windows', got {self.method!r}")
        if not 2 * self.pad_s <= self.min_silence_s:
            raise ValueError(
                f"need 2 * pad_s <= min_silence_s, got pad_s={self.pad_s}, min_silence_s={self.min_silence_s}"
            )

    SPEECH_KEYS = ("threshold", "min_speech_s", "min_silence_s", "max_segment_s", "pad_s", "gate_db", "short_files")
    WINDOW_KEYS = ("window_s", "hop_s", "voiced_db", "voiced_fraction", "min_tail_s")

    def fingerprint(self, detector: str = "") -> str:
        """What a file's cached rows depend on: the method's own settings (and, for speech, ``detector``)."""
        d = asdict(self)
        if self.method == "windows":
            # The settings of before speech segments existed: their cache rows stay valid.
            d = {k: d[k] for k in ("over_s", *self.WINDOW_KEYS)}
        else:
            d = {k: d[k] for k in ("over_s", "method", *self.SPEECH_KEYS, "voiced_db")} | {"detector": detector}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def speech(self) -> bool:
        return self.method == "speech"

    def segmenter(self) -> SegmenterParams:
        return SegmenterParams.from_seconds(
            threshold=self.threshold,
            min_speech_s=self.min_speech_s,
            min_silence_s=self.min_silence_s,
            max_segment_s=self.max_segment_s,
            pad_s=self.pad_s,
        )


@dataclass(frozen=True)
class Segments:
    """Per-piece results for one file, in time order (speech segments or windows)."""

    start_s: np.ndarray  # float64 (n,)
    end_s: np.ndarray  # float64 (n,)
    voiced: np.ndarray  # bool (n,): speech segments are all voiced
    vectors: np.ndarray  # float32 (n, dim)
    speech_prob: np.ndarray | None = None  # float32 (n,): a speech segment's mean speech probability

    def __len__(self) -> int:
        return len(self.start_s)

    def summary_vector(self) -> np.ndarray:
        """Mean vector of the voiced pieces (of all, when none is voiced), weighted by their length."""
        use = self.voiced if self.voiced.any() else np.ones(len(self), dtype=bool)
        weights = (self.end_s - self.start_s)[use]
        return np.average(self.vectors[use], axis=0, weights=weights).astype(np.float32)


def windows(
    chunks: Iterable[np.ndarray], *, sample_rate: int, window_s: float, hop_s: float, min_tail_s: float = 0.5
) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, samples) of each window over a stream of sample chunks.

    Holds at most one window plus one chunk. Windows start every ``hop_s``
    while a whole window fits; a tail of at least ``min_tail_s`` after the last
    one gets a final window ending at the end of the stream.
    """
    win, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # stream index of buf[0]
    next_start = total = last_end = 0
    for chunk in chunks:
        buf = np.concatenate([buf, chunk]) if buf.size else np.asarray(chunk, dtype=np.float32)
        total += len(chunk)
        while next_start + win <= total:
            off = next_start - buf_start
            yield next_start, buf[off : off + win].copy()
            last_end = next_start + win
            next_start += hop
        keep_from = min(next_start, max(0, total - win))  # the tail window may reach back
        if keep_from > buf_start:
            buf = buf[keep_from - buf_start :]
            buf_start = keep_from
    if total - last_end >= round(min_tail_s * sample_rate) and total > 0:
        start = max(0, total - win)
        yield start, buf[start - buf_start :].copy()


def is_voiced(samples: np.ndarray, *, sample_rate: int, voiced_db: float, fraction: float) -> bool:
    """Whether at least ``fraction`` of the 25 ms frames of ``samples`` are louder than ``voiced_db``."""
    frame = max(1, round(0.025 * sample_rate))
    n = len(samples) // frame
    if n == 0:
        return False
    x = samples[: n * frame].reshape(n, frame).astype(np.float64)
    with np.errstate(divide="ignore"):
        level = 10 * np.log10(np.mean(x * x, axis=1))
    return bool(np.mean(level > voiced_db) >= fraction)


def split_at(a: int, b: int, cuts: np.ndarray, *, min_len: int) -> list[tuple[int, int]]:
    """``[a, b)`` cut at the points of ``cuts`` (sorted, same units) that leave no piece under ``min_len``.

    A speech segment crossing a change of speaker is cut there; a change
    within ``min_len`` of the segment's edge (or of the last cut) is not a
    cut: the sliver would be too short to say anything, and belongs to the
    speaker of most of the segment anyway.
    """
    pieces, at = [], a
    lo, hi = np.searchsorted(cuts, a, side="right"), np.searchsorted(cuts, b, side="left")
    for c in cuts[lo:hi].tolist():
        c = int(c)
        if c - at >= min_len and b - c >= min_len:
            pieces.append((at, c))
            at = c
    pieces.append((at, b))
    return pieces


def cut_key(content_hash: str, cuts: Iterable[float]) -> str:
    """The cache key of a file's segments cut at ``cuts`` (seconds): its content hash when there are none.

    Segments depend on the bytes, the segmentation settings (the store's
    folder) and, when speaker turns cut them, the change points: a digest
    of the content hash and the points to the millisecond, shaped like a
    content hash. Renaming speakers changes nothing; moving a change does.
    """
    points = [f"{c:.3f}" for c in cuts]
    if not points:
        return content_hash
    return hashlib.sha256(f"{content_hash}\0cut at\0{','.join(points)}".encode()).hexdigest()
