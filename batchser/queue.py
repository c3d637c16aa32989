"""A job's queue folder: clips arrive (from ``capture`` or any other tool) and runs label them.

Writers put complete files in place by renaming (:func:`enqueue` does); a
watcher also waits until a file's size and mtime stop changing, so a clip
copied in by a tool that writes in place is taken only once it is whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf

from batchser.atomic import atomic_path
from batchser.discover import SourceFile, discover

__all__ = ["QueueWatcher", "enqueue"]

log = logging.getLogger(__name__)


def enqueue(samples: np.ndarray, *, sample_rate: int, queue_dir: Path, prefix: str = "clip") -> Path:
    """Write 16-bit mono ``samples`` into ``queue_dir`` as a timestamped WAV, atomically.

    Parameters
    ----------
    samples : ndarray of int16
    sample_rate : int
    queue_dir : Path
        Created when missing.
    prefix : str
        File name prefix; the name is ``<prefix>-<UTC time to the microsecond>Z.wav``.

    Returns
    -------
    Path
        The new clip. Readers never see it half written: it is written under a
        hidden temp name, synced, then renamed.
    """
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"expected 1-D int16 samples, got {samples.dtype} with shape {samples.shape}")
    queue_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    target = queue_dir / f"{prefix}-{stamp}Z.wav"
    k = 1
    while target.exists():  # two clips in the same microsecond (or a clock step back)
        target = queue_dir / f"{prefix}-{stamp}Z-{k}.wav"
        k += 1
    with atomic_path(target) as tmp:
        sf.write(tmp, samples, sample_rate, format="WAV", subtype="PCM_16")
    log.info("queued %s (%.2f s)", target, len(samples) / sample_rate)
    return target


class QueueWatcher:
    """New, complete audio files in a folder, poll by poll.

    Parameters
    ----------
    folder : Path
        The queue; it may not exist yet.
    known : iterable of SourceFile
        Files already handled (by the run that starts the watch); they are
        reported again only if they change.
    poll_s : float
        Seconds between looks at the folder.

    Notes
    -----
    A file is returned once it has had the same size and mtime on two looks in
    a row, so at most about ``2 * poll_s`` after it appears. Hidden and temp
    files (a leading dot) are never returned; what counts as audio is what
    :func:`batchser.discover.discover` says.
    """

    def __init__(self, folder: Path, *, known: Iterable[SourceFile] = (), poll_s: float = 0.5) -> None:
        if poll_s <= 0:
            raise ValueError(f"poll_s must be positive, got {poll_s}")
        self.folder = folder
        self.poll_s = poll_s
        self._done = {f.path: (f.size, f.mtime_ns) for f in known}
        self._seen: dict[Path, tuple[int, int]] = {}  # last look, not yet settled

    def poll(self) -> list[SourceFile]:
        """One look: files that settled since the previous look, sorted by path."""
        if not self.folder.is_dir():
            return []
        ready = []
        seen = {}
        for f in discover([self.folder]):
            sig = (f.size, f.mtime_ns)
            if self._done.get(f.path) == sig:
                continue
            if self._seen.get(f.path) == sig:
                ready.append(f)
                self._done[f.path] = sig
            else:
                seen[f.path] = sig
        self._seen = seen
        return ready

    def __iter__(self) -> Iterator[list[SourceFile]]:
        """Poll forever, yielding each non-empty batch of new files."""
        while True:
            batch = self.poll()
            if batch:
                yield batch
            time.sleep(self.poll_s)
