"""Audacity label tracks: a line per labelled interval, as Audacity's *Import Labels* reads them.

``start<TAB>end<TAB>text``, times in seconds to the microsecond (as Audacity
writes its own), UTF-8. The text is the label and the confidence
(``angry 0.83``; ``reviewed`` in place of the number for a person's answer),
then arousal and valence when the model has them (``angry 0.83 arousal 0.91
valence 0.12``: the probability of the high and the positive side), after
the speaker when one is known (``alice: angry 0.83 …``). Stretches
without speech get no label: a label track need not cover the file.
"""

from __future__ import annotations

from pathlib import Path

from batchser.exports.recording import Exporter, Interval, Recording

__all__ = ["AUDACITY", "label_text", "write_audacity"]


def label_text(iv: Interval) -> str:
    """An interval's text on the label track."""
    text = " ".join([iv.label, iv.confidence, *(f"{d} {v}" for d, v in iv.dimensions)])
    return f"{iv.speaker}: {text}" if iv.speaker else text


def write_audacity(rec: Recording, target: Path, final: Path) -> None:
    """Write ``rec``'s labelled intervals as an Audacity label track to ``target``."""
    lines = [f"{iv.start_s:.6f}\t{iv.end_s:.6f}\t{label_text(iv)}\n" for iv in rec.intervals]
    target.write_text("".join(lines), encoding="utf-8", newline="\n")


AUDACITY = Exporter(name="audacity", suffix=".txt", what="Audacity label track", write=write_audacity)
