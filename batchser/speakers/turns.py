"""One recording's speaker turns, and the two questions a job asks of them.

Where does the speaker change (:meth:`Turns.change_points`: a speech segment
crossing such a point is cut there), and who speaks in a segment
(:meth:`Turns.speakers_of`: the speaker whose turns cover most of it).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Turn", "Turns", "TurnsError", "is_anonymous"]

# The names diarization tools give speakers they cannot name: pyannote and whisperX write
# SPEAKER_00, NeMo speaker_0. Such a name means "the same voice" within one recording only.
_ANONYMOUS = re.compile(r"^(speaker|spk|spkr)[ _-]?\d+$", re.IGNORECASE)


class TurnsError(ValueError):
    """A speaker-turns file that cannot be read; ``str(err)`` names the file (and line) and the fix."""


def is_anonymous(name: str) -> bool:
    """Whether ``name`` is a diarizer's label for an unnamed voice (``SPEAKER_00``, ``speaker_1``, ``spk2``).

    Such a speaker is standardised within its own recording only: the next
    recording's ``SPEAKER_00`` is someone else.
    """
    return bool(_ANONYMOUS.match(name))


@dataclass(frozen=True, slots=True)
class Turn:
    """A stretch of time in which ``speaker`` speaks (seconds from the start of the recording)."""

    start_s: float
    end_s: float
    speaker: str


@dataclass(frozen=True, eq=False)
class Turns:
    """A recording's speaker turns, sorted by start; a speaker's turns that touch or overlap are one.

    Build it with :meth:`of`, which checks and tidies what a file gave.

    Attributes
    ----------
    recording : str
        The name the source gives the recording: an RTTM file id, or a
        TextGrid's or ELAN file's name without extension (with its folders
        below the turns folder, ``/``-separated).
    source : str
        The file the turns were read from, for messages.
    turns : tuple of Turn
    """

    recording: str
    source: str
    turns: tuple[Turn, ...]

    @classmethod
    def of(cls, recording: str, source: str, turns: Iterable[Turn]) -> Turns:
        """Checked, sorted turns; zero-length ones dropped and each speaker's overlapping ones merged.

        Raises
        ------
        TurnsError
            A time that is not finite or negative, or a turn ending before it starts.
        """
        by_speaker: dict[str, list[tuple[float, float]]] = {}
        for t in turns:
            if not (math.isfinite(t.start_s) and math.isfinite(t.end_s)) or t.start_s < 0:
                raise TurnsError(f"{source}: turn of {t.speaker!r} at {t.start_s}-{t.end_s} s: times must be >= 0")
            if t.end_s < t.start_s:
                raise TurnsError(f"{source}: turn of {t.speaker!r} ends ({t.end_s} s) before it starts ({t.start_s} s)")
            if t.end_s > t.start_s and t.speaker:
                by_speaker.setdefault(t.speaker, []).append((t.start_s, t.end_s))
        merged: list[Turn] = []
        for speaker, spans in by_speaker.items():
            spans.sort()
            a, b = spans[0]
            for s, e in spans[1:]:
                if s <= b:
                    b = max(b, e)
                else:
                    merged.append(Turn(a, b, speaker))
                    a, b = s, e
            merged.append(Turn(a, b, speaker))
        merged.sort(key=lambda t: (t.start_s, t.end_s, t.speaker))
        return cls(recording, source, tuple(merged))

    def __len__(self) -> int:
        return len(self.turns)

    @property
    def speakers(self) -> tuple[str, ...]:
        """The speakers, in order of first appearance."""
        return tuple(dict.fromkeys(t.speaker for t in self.turns))

    def change_points(self) -> tuple[float, ...]:
        """Times where one speaker hands over to another: where a segment across them is cut.

        The recording is read as runs of time in which exactly one speaker
        speaks; between two runs of different speakers (a pause, or both
        talking at once) the change is the midpoint. A short turn inside
        another's (a "mm-hm" over a long answer) ends no run of the speaker
        it interrupts, so it changes nothing.
        """
        events: list[tuple[float, int, str]] = []
        for t in self.turns:
            events += [(t.start_s, 1, t.speaker), (t.end_s, -1, t.speaker)]
        events.sort(key=lambda e: (e[0], e[1]))
        active: dict[str, int] = {}
        runs: list[list] = []  # [speaker, start, end] of the solo runs, in order
        at = 0.0
        for time, step, speaker in events:
            if time > at and len(active) == 1:
                (who,) = active
                if runs and runs[-1][0] == who and runs[-1][2] >= at:
                    runs[-1][2] = time
                else:
                    runs.append([who, at, time])
            active[speaker] = active.get(speaker, 0) + step
            if not active[speaker]:
                del active[speaker]
            at = time
        return tuple((a[2] + b[1]) / 2 for a, b in itertools.pairwise(runs) if a[0] != b[0])

    def speakers_of(self, start_s: Sequence[float] | np.ndarray, end_s: Sequence[float] | np.ndarray) -> list[str]:
        """The speaker whose turns cover most of each segment ``[start_s[i], end_s[i])``; ``""`` where none does.

        A tie goes to the speaker who speaks first in the recording.
        """
        starts = np.array([t.start_s for t in self.turns])
        ends = np.array([t.end_s for t in self.turns])
        names = self.speakers
        who = np.array([names.index(t.speaker) for t in self.turns], dtype=np.intp)
        longest = float((ends - starts).max()) if len(starts) else 0.0
        out = []
        for a, b in zip(np.asarray(start_s, dtype=np.float64), np.asarray(end_s, dtype=np.float64), strict=True):
            lo, hi = np.searchsorted(starts, a - longest), np.searchsorted(starts, b)
            cover = np.clip(np.minimum(ends[lo:hi], b) - np.maximum(starts[lo:hi], a), 0, None)
            if not len(cover) or cover.max() <= 0:
                out.append("")
                continue
            per = np.bincount(who[lo:hi], weights=cover, minlength=len(names))
            out.append(names[int(np.argmax(per))])
        return out
