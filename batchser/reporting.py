"""A job's report set: the writers of its tables and exports, and the commit that moves them into place.

Metrics and their plots, report.html and summary.json (naming every report
and export with its hash) are written last, into the set's staging folder,
and the whole set is moved in at once (:class:`batchser.report.ReportSet`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batchser.discover import SourceFile
from batchser.exports import EXPORTS_DIR, ExportWriter, exporters
from batchser.features import FeatureSpec
from batchser.manifest import Manifest
from batchser.model import TrainedModel
from batchser.report import (
    ReportRow,
    ReportSet,
    SegmentRow,
    TableWriter,
    annotations_table,
    segments_table,
    write_confusion_png,
    write_json,
    write_reliability_png,
)
from batchser.summary import JobSummary, StageClock, Tally, summary_payload, write_summary
from batchser.web.page import PageStats, write_page

__all__ = ["FinishedRun", "commit_reports", "report_writers", "write_reports"]


@dataclass
class FinishedRun:
    """A finished run, as a watch needs it to label more files into the same reports."""

    manifest: Manifest
    spec: FeatureSpec
    model: TrainedModel
    summary: JobSummary
    files: list[SourceFile]  # the queue's clips (a watch's first run keeps every row, below)
    rows: list[ReportRow]
    segment_rows: list[SegmentRow]
    page: PageStats | None = None  # what report.html shows, gathered as the rows were written


def report_writers(
    rs: ReportSet, manifest: Manifest, classes: list[str], dims: Sequence[str] = ()
) -> tuple[TableWriter, TableWriter, ExportWriter]:
    tables = manifest.output.tables
    return (
        TableWriter(rs.stage, tables, stem="annotations", empty=annotations_table([], classes, dims)),
        TableWriter(rs.stage, tables, stem="segments", empty=segments_table([], classes, dims)),
        ExportWriter(rs.stage, rs.out_dir, exporters(manifest.output.formats), root=manifest.root_dir),
    )


def commit_reports(
    rs: ReportSet,
    run: FinishedRun,
    written: list[Path],
    exports: ExportWriter,
    clock: StageClock | None = None,
    t0: float | None = None,
    *,
    metrics: bool = False,
) -> list[Path]:
    """With ``metrics`` metrics.json and its plots, then summary.json naming every report
    ``written`` and every file of ``exports`` with its hash: moved into place as one set.

    With ``clock``, what is left counts as the ``reports`` stage and ``t0``
    (the job's start) sets the summary's total seconds.
    """
    m, s, model = run.manifest, run.summary, run.model
    classes = list(model.meta.classes)
    if metrics and (s.metrics or s.review):
        title = f"{m.name} ({model.id})"
        evaluations = s.metrics or {}
        review = {"review": s.review} if s.review else {}
        write_json(rs.stage / "metrics.json", {"model": model.id, "classes": classes, **evaluations, **review})
        written = [*written, rs.stage / "metrics.json"]
        if any(isinstance(v, dict) and "confusion_matrix" in v for v in evaluations.values()):
            write_confusion_png(rs.stage / "confusion_matrix.png", evaluations, title=title)
            write_reliability_png(rs.stage / "reliability.png", evaluations, title=title)
            written += [rs.stage / "confusion_matrix.png", rs.stage / "reliability.png"]
    s.exports = dict(exports.written)
    if t0 is not None:
        s.seconds = time.perf_counter() - t0
    corpora = model.meta.params.get("corpora", [])
    payload = summary_payload(m, s, model_id=model.id, features=run.spec.fingerprint(), model_corpora=corpora)
    if run.page is not None and m.output.page:
        written = [*written, write_page(rs.stage / "report.html", run.page, payload, metrics=s.metrics)]
    if clock is not None:
        clock.lap("reports")  # summary.json, written last, holds every stage but its own write
    write_summary(rs.stage / "summary.json", payload, reports=written, more=exports.digests)
    # Reports of an earlier set that this one has none of go with the commit: no stale page or scores stay
    # (a watch's rewrites, which write no metrics, keep the first run's), and exports/ is this set's or none.
    extras = ["report.html", "metrics.json", "confusion_matrix.png", "reliability.png"] if metrics else []
    # A table in a format this run did not write (csv, then parquet only) goes too: the set is one run's.
    tables = [f"{stem}.{fmt}" for stem in ("annotations", "segments") for fmt in ("csv", "parquet")]
    return rs.commit(drop=tables + extras, replace=[EXPORTS_DIR])


def write_reports(run: FinishedRun) -> list[Path]:
    """Every report again from the rows a watch keeps (annotations.*, segments.* when a file was long)."""
    classes = list(run.model.meta.classes)
    tally = Tally(run.summary, classes)
    tally.add(run.rows)
    tally.finish(run.model)
    run.page = PageStats(classes, run.manifest.model.min_confidence)
    run.page.add(run.rows, run.segment_rows)
    with ReportSet(run.manifest.output_dir) as rs:
        annotations, segments, exports = report_writers(rs, run.manifest, classes, run.model.dimension_names)
        annotations.add(annotations_table(run.rows, classes, run.model.dimension_names))
        written = annotations.close()
        if run.segment_rows:
            segments.add(segments_table(run.segment_rows, classes, run.model.dimension_names))
            written += segments.close()
        exports.add(run.rows, run.segment_rows)
        return commit_reports(rs, run, written, exports)
