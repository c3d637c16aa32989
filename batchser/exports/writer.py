"""The exports of a job's long recordings, written into its report set a chunk of files at a time."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from batchser.exports.names import EXPORTS_DIR, export_name
from batchser.exports.recording import Exporter, recordings
from batchser.report import ReportError, ReportRow, SegmentRow

__all__ = ["ExportWriter"]


class ExportWriter:
    """Each long recording's exports, written into a :class:`~batchser.report.ReportSet`'s staging folder.

    Call :meth:`add` with each chunk's report rows: a recording's segment rows
    all come in one chunk, so its files are written then, and memory holds a
    chunk's rows, never the job's. :attr:`digests` (for ``summary.json``) and
    :attr:`counts` grow by a name and a hash per file written.

    Parameters
    ----------
    stage : Path
        The report set's staging folder; files go to ``stage/exports/<format>/``.
    out_dir : Path
        Where the set is moved (the ELAN files' relative media links start there).
    exporters : sequence of Exporter
        The formats asked for (none: :meth:`add` writes nothing).
    root : Path
        The folder relative report paths are taken from (to find each recording).
    """

    def __init__(self, stage: Path, out_dir: Path, exporters: Sequence[Exporter], *, root: Path) -> None:
        self.stage, self.out_dir, self.root = stage / EXPORTS_DIR, out_dir / EXPORTS_DIR, root
        self.exporters = list(exporters)
        self.digests: dict[str, dict[str, Any]] = {}  # "exports/textgrid/a.wav.TextGrid" -> sha256, bytes
        self.counts: Counter[str] = Counter()  # files per format

    def add(self, rows: Sequence[ReportRow], seg_rows: Sequence[SegmentRow]) -> None:
        """Write the exports of every recording whose segment rows are in ``seg_rows``.

        Raises
        ------
        ReportError
            The staging folder cannot be written (a full disk); earlier reports stay as they were.
        """
        if not self.exporters or not seg_rows:
            return
        for rec in recordings(rows, seg_rows, root=self.root):
            for exporter in self.exporters:
                rel = f"{exporter.name}/{export_name(rec.path, exporter.suffix)}"
                name = f"{EXPORTS_DIR}/{rel}"
                if name in self.digests:  # the same recording listed twice by overlapping inputs
                    continue
                target = self.stage / rel
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    exporter.write(rec, target, self.out_dir / rel)
                    data = target.read_bytes()
                except OSError as exc:
                    raise ReportError(
                        f"cannot write reports to {self.out_dir.parent}: {exc.strerror or exc}; any previous reports "
                        "there are untouched"
                    ) from None
                self.digests[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                self.counts[exporter.name] += 1

    @property
    def written(self) -> Mapping[str, int]:
        """Files written per format, in the order the formats were asked for (0 when no recording was long)."""
        return {e.name: self.counts[e.name] for e in self.exporters}
