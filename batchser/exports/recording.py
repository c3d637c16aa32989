"""What an export shows of one long recording: its labelled intervals, read off the report rows.

Every export format draws the same record: the rows of ``segments.*`` that
carry a label (speech segments; every window with ``method: windows``), each
with its label, its confidence as text and its speaker, and the recording's
length, so an interval tier can run from 0 to the end of the file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from batchser.hashing import path_from_text
from batchser.report import ReportRow, SegmentRow

__all__ = ["REVIEWED", "Exporter", "Interval", "Recording", "recordings", "tier_name"]

REVIEWED = "reviewed"  # a segment's confidence text when a person answered for it
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(value: str) -> str:
    # A tab or line break would end an Audacity label, and Praat and ELAN show them as breaks:
    # every export writes control characters (from a speaker file, say) as spaces.
    return _CONTROL.sub(" ", value)


@dataclass(frozen=True, slots=True)
class Interval:
    """One labelled row of ``segments.*``, as the exports write it."""

    start_s: float
    end_s: float
    label: str  # the row's label: an emotion, "uncertain", or a person's answer
    confidence: str  # the model's confidence to two decimals, or "reviewed" when the label is a person's
    speaker: str  # "" when no speaker turn covers it (or none were given)
    # (dimension, its probability to two decimals): P(high arousal), P(positive valence), when the model has them
    dimensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Recording:
    """A long recording's labelled intervals in time order, and where the recording is."""

    path: str  # its report path
    end_s: float  # the file's duration (or its last interval's end, if later)
    intervals: tuple[Interval, ...]
    media: Path | None  # the recording on disk; None for an archive member (or a file gone since)

    @property
    def dimension_names(self) -> list[str]:
        """The dimensions its intervals carry (``arousal``, ``valence``): a tier each in Praat and ELAN."""
        return list(dict.fromkeys(name for iv in self.intervals for name, _ in iv.dimensions))

    @property
    def has_speakers(self) -> bool:
        """Whether speaker turns named anyone in it: only then do the exports get a speaker tier."""
        return any(i.speaker for i in self.intervals)

    def lanes(self) -> list[list[Interval]]:
        """The intervals as tiers that hold no overlap: one for speech segments, more for overlapping windows.

        Each interval goes to the first tier whose last interval has ended by its
        start (greedy, in time order: the fewest tiers any overlap allows).
        """
        lanes: list[list[Interval]] = []
        for iv in sorted(self.intervals, key=lambda i: (i.start_s, i.end_s)):
            lane = next((lane for lane in lanes if lane[-1].end_s <= iv.start_s), None)
            if lane is None:
                lanes.append([iv])
            else:
                lane.append(iv)
        return lanes or [[]]


@dataclass(frozen=True, slots=True)
class Exporter:
    """A format the exports can be written in (an ``output.formats`` value)."""

    name: str  # as output.formats and --format say it, and the folder under exports/
    suffix: str  # of each file
    what: str  # for people: "Praat TextGrid"
    # (recording, the file to write, where that file will be once the report set is moved in)
    write: Callable[[Recording, Path, Path], None]


def tier_name(kind: str, lane: int) -> str:
    """``emotion``, ``confidence``, ``speaker``, ``arousal``, ``valence``; the second lane's ``emotion 2`` and so
    on (overlapping windows)."""
    return kind if lane == 0 else f"{kind} {lane + 1}"


def _media(root: Path, path: str) -> Path | None:
    name = os.fsdecode(path_from_text(path))
    full = Path(os.path.join(root, name))  # an absolute report path stays itself
    # An archive member (calls.zip::a.wav) is no file of its own: nothing to link.
    return full if full.is_file() else None


def recordings(rows: Sequence[ReportRow], seg_rows: Sequence[SegmentRow], *, root: Path) -> Iterator[Recording]:
    """One :class:`Recording` per file with segment rows, in the order its rows came.

    Parameters
    ----------
    rows : sequence of ReportRow
        The files' report rows (for each one's duration).
    seg_rows : sequence of SegmentRow
        Their segment rows; a file's rows all among them.
    root : Path
        The folder relative report paths are taken from.
    """
    by_path: dict[str, list[SegmentRow]] = {}
    for s in seg_rows:
        by_path.setdefault(s.path, []).append(s)
    duration = {r.path: r.duration_s for r in rows if r.path in by_path}
    for path, segs in by_path.items():
        intervals = tuple(
            Interval(
                start_s=s.start_s,
                end_s=s.end_s,
                label=_text(s.label),
                confidence=REVIEWED if s.reviewed else f"{s.confidence:.2f}",
                speaker=_text(s.speaker),
                dimensions=tuple((d, f"{v:.2f}") for d, v in s.dimensions.items() if not math.isnan(v)),
            )
            for s in segs
            if s.label
        )
        end = max([s.end_s for s in segs] + [d for d in [duration.get(path, math.nan)] if not math.isnan(d)])
        yield Recording(path=path, end_s=end, intervals=intervals, media=_media(root, path))
