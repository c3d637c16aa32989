"""Long recordings as fixed windows: which windows, and which of them hold sound.

A file longer than ``SegmentSpec.over_s`` is analysed window by window
(``window_s`` long, every ``hop_s``) as its audio streams in, so memory
follows the window, not the file. Each window gets the same feature vector
a short file gets, and a voiced flag; the report labels each window and
aggregates the voiced ones into the file's row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["SegmentSpec", "Segments", "is_voiced", "windows"]


@dataclass(frozen=True)
class SegmentSpec:
    """How long files are cut.

    Parameters
    ----------
    over_s : float
        Files longer than this are segmented; shorter ones get one vector.
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

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Segments:
    """Per-window results for one file, in time order."""

    start_s: np.ndarray  # float64 (n,)
    end_s: np.ndarray  # float64 (n,)
    voiced: np.ndarray  # bool (n,)
    vectors: np.ndarray  # float32 (n, dim)

    def __len__(self) -> int:
        return len(self.start_s)

    def summary_vector(self) -> np.ndarray:
        """Mean vector of the voiced windows (of all, when none is voiced)."""
        use = self.vectors[self.voiced] if self.voiced.any() else self.vectors
        return use.mean(axis=0).astype(np.float32)


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
