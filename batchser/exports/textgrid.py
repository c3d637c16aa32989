"""Praat TextGrids (through ``praatio``): a tier of emotions, one of confidences, when known one of speakers, and
one each for arousal and valence (the probability of the high and the positive side) when the model has them.

Each labelled interval of the recording is an interval on every tier, with
the same times as in ``segments.*`` (written in full, as praatio writes
numbers); the time between them (stretches without speech, and the gaps under
50 ms that ``segments.*`` leaves out) is empty intervals, so each tier runs
from 0 to the end of the file as Praat requires. Overlapping windows
(``method: windows``) go to further tiers, ``emotion 2`` and so on. The
speaker tier is named ``speaker`` and holds names as its labels, the layout
batchser reads back as speaker turns (``--speakers textgrid:…``).
"""

from __future__ import annotations

import os
from pathlib import Path

from batchser.exports.recording import Exporter, Recording, tier_name

__all__ = ["TEXTGRID", "write_textgrid"]


def write_textgrid(rec: Recording, target: Path, final: Path) -> None:
    """Write ``rec`` as a TextGrid (Praat's long text format, UTF-8) to ``target``."""
    from praatio import textgrid

    tg = textgrid.Textgrid(0.0, rec.end_s)
    for k, lane in enumerate(rec.lanes()):
        tiers = {"emotion": [iv.label for iv in lane], "confidence": [iv.confidence for iv in lane]}
        if rec.has_speakers:
            tiers["speaker"] = [iv.speaker for iv in lane]
        for dim in rec.dimension_names:  # P(high arousal), P(positive valence), to two decimals
            tiers[dim] = [dict(iv.dimensions).get(dim, "") for iv in lane]
        for kind, texts in tiers.items():
            entries = [(iv.start_s, iv.end_s, text) for iv, text in zip(lane, texts, strict=True)]
            tg.addTier(textgrid.IntervalTier(tier_name(kind, k), entries, 0.0, rec.end_s))
    tg.save(os.fspath(target), format="long_textgrid", includeBlankSpaces=True, reportingMode="error")


TEXTGRID = Exporter(name="textgrid", suffix=".TextGrid", what="Praat TextGrid", write=write_textgrid)
