"""Exports people open: each long recording's segments as a Praat TextGrid, an ELAN file, an Audacity label track.

One module per format (:mod:`~batchser.exports.textgrid`,
:mod:`~batchser.exports.eaf`, :mod:`~batchser.exports.audacity`), each an
:class:`Exporter` in :data:`EXPORTERS`, the registry ``output.formats`` names;
:class:`ExportWriter` writes them into a job's report set as its rows come,
under ``exports/<format>/`` with names that mirror the report paths
(:func:`export_name`). The job calls them; they never reach back into it.
"""

from __future__ import annotations

from collections.abc import Sequence

from batchser.exports.audacity import AUDACITY
from batchser.exports.eaf import EAF
from batchser.exports.names import EXPORTS_DIR, export_name
from batchser.exports.recording import Exporter, Interval, Recording, recordings
from batchser.exports.textgrid import TEXTGRID
from batchser.exports.writer import ExportWriter

__all__ = [
    "EXPORTERS",
    "EXPORTS_DIR",
    "ExportWriter",
    "Exporter",
    "Interval",
    "Recording",
    "export_name",
    "exporters",
    "recordings",
]

# output.formats value -> its exporter, in the order the docs list them.
EXPORTERS: dict[str, Exporter] = {e.name: e for e in (TEXTGRID, EAF, AUDACITY)}


def exporters(formats: Sequence[str]) -> list[Exporter]:
    """The exporters among ``formats`` (the others are tables: csv, parquet), in the order given."""
    return [EXPORTERS[f] for f in formats if f in EXPORTERS]
