"""Run one job: manifest → discover → hash → cache/engine → model → report.

:func:`run_job` is the one entry point; the CLI only formats its summary.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from batchser.adaptation import JobAdaptation
from batchser.archive import MAX_MEMBER_BYTES, MAX_MEMBER_RATIO
from batchser.cache import FeatureStore
from batchser.discover import Skipped, SourceFile, archives_under, iter_files, skipped_lines
from batchser.exports import ExportWriter
from batchser.features import FeatureSpec
from batchser.featurize import Executors, file_features
from batchser.hashing import progress_bar
from batchser.inputs import LabelCoverage, input_paths, label_path
from batchser.labels import Label, SpeakerFolders, SubfolderHint
from batchser.manifest import Manifest
from batchser.model import TrainedModel, load_model
from batchser.outcome import FileOutcome
from batchser.paths import check_manifest_paths
from batchser.predict import annotate_rows
from batchser.queue import QueueWatcher
from batchser.relearn import ReviewedFiles, load_answers, relearn
from batchser.report import (
    ReportRow,
    ReportSet,
    annotations_table,
    segments_table,
)
from batchser.reporting import FinishedRun, commit_reports, report_writers, write_reports
from batchser.segments import SegmentSpec
from batchser.speakers import SpeakerTurns, job_turns
from batchser.spool import Listed, Spool, listed_table, work_folder
from batchser.storage import is_url, shown_url
from batchser.summary import (
    FALLBACK_NOTE,
    JobSummary,
    StageClock,
    Tally,
    check_output_owner,
)
from batchser.training import train as train_model
from batchser.vad import ENERGY, detector
from batchser.web.page import PageStats

__all__ = ["FileOutcome", "JobSummary", "NoInputError", "check_manifest_paths", "run_job", "watch_job"]

log = logging.getLogger(__name__)


class NoInputError(RuntimeError):
    """The inputs exist but hold no audio: nothing to label, and earlier reports are left alone."""


CHUNK = 4096  # files per chunk: memory holds a chunk's records and report rows, not the archive's


def _segment_spec(manifest: Manifest) -> SegmentSpec | None:
    seg = manifest.segments
    if seg is None:
        return None
    if seg.method == "speech" and detector() == ENERGY:
        log.warning(FALLBACK_NOTE)
    return SegmentSpec(**seg.model_dump())


def _speaker_allowed(manifest: Manifest) -> dict[str, bool]:
    return {i.corpus_name: i.speaker_normalization for i in manifest.inputs}


def _adaptation(manifest: Manifest, model: TrainedModel, turns: SpeakerTurns | None) -> JobAdaptation:
    return JobAdaptation(
        model,
        mode=manifest.model.adapt,
        allowed=_speaker_allowed(manifest),
        turns=turns,
        min_segments=manifest.model.min_file_segments,
    )


def _list_files(
    manifest: Manifest,
    paths: list[Path | str],
    label_fns: list[Callable[[Path | str], Label]],
    listing: Spool,
    summary: JobSummary,
    *,
    progress: bool,
    skipped: Skipped | None = None,
    turns: SpeakerTurns | None = None,
) -> list[SourceFile]:
    """Discover the inputs and label each file, into ``listing``; returns the queue's clips.

    Speaker folders that are not a speaker's each go into ``summary.speaker_folders``;
    files no decoder reads are counted in ``skipped``.

    Raises
    ------
    ManifestError
        An input's labels match none of its files, or speaker turns name no
        recording of the job (before any file is hashed).
    """
    limits = [round(i.max_member_mb * 2**20) for i in manifest.inputs] + [MAX_MEMBER_BYTES] * (
        len(paths) - len(manifest.inputs)
    )
    ratios = [i.max_member_ratio for i in manifest.inputs] + [MAX_MEMBER_RATIO] * (len(paths) - len(manifest.inputs))
    coverage = LabelCoverage(manifest, label_fns)
    folders = SpeakerFolders({i: inp.path for i, inp in enumerate(manifest.inputs) if inp.speaker == "folder"})
    hint = SubfolderHint(
        {
            i: (p, inp.path)
            for i, (inp, p) in enumerate(zip(manifest.inputs, paths, strict=False))
            if not manifest.model.train and inp.speaker != "folder" and isinstance(p, Path) and p.is_dir()
        },
        min_files=manifest.model.min_speaker_files,
    )
    queued: list[SourceFile] = []
    files: list[SourceFile] = []
    labels: list[Label] = []
    for f in iter_files(paths, max_member_bytes=limits, max_member_ratio=ratios, progress=progress, skipped=skipped):
        label = label_fns[f.input_index](label_path(f))
        coverage.add(f, label)
        folders.add(f.input_index, label)
        if not f.member and not f.remote:
            hint.add(f.input_index, f.path, label)
        if turns is not None:
            turns.match(f)
        files.append(f)
        labels.append(label)
        if f.input_index >= len(manifest.inputs):
            queued.append(f)
        if len(files) == CHUNK:
            listing.append(listed_table(files, labels))
            files, labels = [], []
    listing.append(listed_table(files, labels))
    coverage.check(quiet=not progress)
    summary.speaker_folders = folders.findings()
    summary.hints = hint.findings()
    if turns is not None:
        turns.refuse_unmatched(str(manifest.manifest_file or manifest.name))
    return queued


def _outcomes(store: FeatureStore, chunk: Listed) -> list[FileOutcome]:
    """A spooled chunk's outcomes, with their vectors (and long files' windows) read back from the cache.

    The spool does not hold them a second time. A record the cache no longer
    has (a part found damaged and set aside during the job) becomes that
    file's error, saying to run the job again; the other files go on.
    """
    out = list(chunk.outcomes or [])
    back = [j for j, o in enumerate(out) if o.record is not None and (o.record.ok or chunk.n_segments[j])]
    if back:
        # By the record's own key: a file whose segments speaker turns cut keeps them under another.
        records = store.get_many(out[j].record.content_hash for j in back)  # type: ignore[union-attr]
        for j in back:
            o = out[j]
            rec = records.get(o.record.content_hash)  # type: ignore[union-attr]
            if rec is None:
                out[j] = FileOutcome(o.source, o.content_hash, None, _LOST)
            else:
                out[j] = FileOutcome(o.source, o.content_hash, rec, o.error)
        store.release()
    return out


_LOST = (
    "its features were extracted, but the cache lost them during the job (a damaged part set aside, "
    "or another process removed it); run the job again to extract them again"
)


@dataclass
class _Training:
    """What a train job gathers while its files' features are found: every file's vector and label."""

    vectors: list[np.ndarray | None] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)

    def add(self, outcomes: Sequence[FileOutcome], labels: Sequence[Label]) -> None:
        self.vectors += [o.record.vector if o.ok and o.record is not None else None for o in outcomes]
        self.labels += labels
        self.hashes += [o.content_hash for o in outcomes]


def _find_features(
    manifest: Manifest,
    listing: Spool,
    hashed: Spool,
    store: FeatureStore,
    summary: JobSummary,
    executors: Executors,
    training: _Training | None,
    groups: JobAdaptation | None,
    *,
    progress: bool,
    clock: StageClock,
    turns: SpeakerTurns | None = None,
) -> None:
    """The first pass: each listed chunk hashed, found or extracted, spooled with its hashes into ``hashed``;
    a train job gathers its vectors, a labelling job measures its normalisation groups."""
    n = len(listing)
    with progress_bar(n, "hashing", progress) as hash_bar, progress_bar(n, "extracting", progress) as bar:
        start = 0
        for chunk in listing.chunks(CHUNK):
            outcomes = file_features(
                manifest,
                chunk.files,
                store,
                summary,
                executors=executors,
                bar=bar,
                hash_bar=hash_bar,
                lap=clock.lap,
                turns=turns,
            )
            hashed.append(listed_table(chunk.files, chunk.labels, outcomes))
            if training is not None:
                training.add(outcomes, chunk.labels)
            if groups is not None:
                groups.observe(start, outcomes, chunk.labels)
            store.release()
            start += len(chunk)
            clock.lap("features")  # lookups and extraction


def _observe(store: FeatureStore, hashed: Spool, fn: Callable[[int, list[FileOutcome], list[Label]], None]) -> None:
    """Another pass over the job's files, each chunk's records read back from the spool."""
    start = 0
    for chunk in hashed.chunks(CHUNK, found=True):
        fn(start, _outcomes(store, chunk), chunk.labels)
        start += len(chunk)


def _label_all(
    run: FinishedRun,
    rs: ReportSet,
    store: FeatureStore,
    hashed: Spool,
    groups: JobAdaptation,
    used: set[int],
    *,
    clock: StageClock,
    keep_rows: bool,
    reviewed: dict[str, str] | None = None,
    reviewed_segments: dict[str, list[tuple[float, float, str]]] | None = None,
) -> tuple[list[Path], ExportWriter]:
    """The last pass: each chunk labelled and appended to the staged reports (a long file's exports
    written with its chunk); returns the tables' paths and the exports written.

    ``reviewed``: report path -> a person's answer, which wins over the model's label;
    ``reviewed_segments``: report path -> (start, end, answer) of speech segments a person answered.
    """
    m, model = run.manifest, run.model
    classes = list(model.meta.classes)
    tally = Tally(run.summary, classes)
    run.page = PageStats(classes, m.model.min_confidence)
    annotations, segments, exports = report_writers(rs, m, classes, model.dimension_names)
    start = 0
    for chunk in hashed.chunks(CHUNK, found=True):
        rows, seg_rows = annotate_rows(
            _outcomes(store, chunk),
            chunk.labels,
            model,
            root=m.root_dir,
            train=m.model.train,
            used=used,
            min_confidence=m.model.min_confidence,
            groups=groups,
            start=start,
            reviewed=reviewed,
            reviewed_segments=reviewed_segments,
        )
        clock.lap("predict")
        tally.add(rows)
        run.page.add(rows, seg_rows)
        annotations.add(annotations_table(rows, classes, model.dimension_names))
        if seg_rows:
            segments.add(segments_table(seg_rows, classes, model.dimension_names))
            exports.add(rows, seg_rows)
        if keep_rows:
            run.rows += rows
            run.segment_rows += seg_rows
        start += len(chunk)
        clock.lap("reports")
    tally.finish(model)
    return annotations.close() + (segments.close() if segments.rows else []), exports


def _run(
    manifest: Manifest, *, progress: bool, allow_empty: bool = False, overwrite: bool = False, keep_rows: bool = False
) -> FinishedRun:
    """Run a job in chunks of :data:`CHUNK` files: memory holds a chunk, whatever the archive's size.

    Files are listed and labelled into a spool on disk (so the label check
    fails before any work); each chunk is then hashed, looked up or extracted,
    and measured for the job's normalisation groups (a second pass in cluster
    mode); a train job trains on every file's vector; then each chunk is read
    back from the cache, labelled and appended to the reports, which are
    moved into place as one set at the end. ``keep_rows``: also return every
    report row (a watch rewrites them as clips arrive).
    """
    t0 = time.perf_counter()
    summary = JobSummary(manifest.name)
    clock = StageClock(summary.stages)
    check_manifest_paths(manifest)
    if not overwrite:
        check_output_owner(manifest)
    spec = FeatureSpec(tuple(manifest.features), manifest.audio.sample_rate, chroma_tuning=manifest.chroma_tuning)
    classes = list(manifest.emotions)
    model = (
        None
        if manifest.model.train
        else load_model(manifest.model_path, feature_fingerprint=spec.fingerprint(), classes=classes)
    )
    answers = None
    if manifest.model.reviewed and model is not None:  # checked before any work: an unknown label stops the job
        answers_file = manifest.resolve(manifest.model.reviewed)
        answers = load_answers(answers_file, model.meta.classes, ignore_unknown=manifest.model.ignore_unknown_answers)
    clock.lap("load_model")
    paths, label_fns = input_paths(manifest)
    turns = job_turns(manifest)
    # The spools: a few dozen bytes per file on disk (TMPDIR), removed at the end.
    with work_folder() as work:
        listing, hashed = Spool(work / "listing.parquet"), Spool(work / "hashed.parquet")
        skipped = Skipped()
        queued = _list_files(
            manifest, paths, label_fns, listing, summary, progress=progress, skipped=skipped, turns=turns
        )
        summary.skipped = skipped.rows()
        n = len(listing)
        log.info("%s: %d files discovered", manifest.name, n)
        for line in skipped_lines(summary.skipped):
            log.info("skipped %s", line)
        if not n and not (manifest.allow_empty or allow_empty):
            where = ", ".join(shown_url(str(p)) if is_url(p) else str(p) for p in paths[: len(manifest.inputs)])
            archives = archives_under([p for p in paths[: len(manifest.inputs)] if isinstance(p, Path)])
            hint = (
                f" It holds archives ({', '.join(str(a) for a in archives[:3])}{' …' if len(archives) > 3 else ''}):"
                " archives inside a folder are not opened; name them as inputs to label their audio "
                f"(for example {Path(where.split(', ')[0]) / '*.zip'})."
                if archives
                else ""
            )
            opt_in = (
                " Check the path (an unmounted share? an empty folder?)"
                if manifest.manifest_file is None  # batchser annotate or the Python interface: no manifest to edit
                else " Check the path (an unmounted share? an empty folder?), or set allow_empty: true in "
                f"{manifest.manifest_file.name} to write empty reports"
            )
            passed = f" (skipped: {'; '.join(skipped_lines(summary.skipped))})" if summary.skipped else ""
            raise NoInputError(
                f"no audio files found in {where}{passed}; nothing was labelled and the reports in "
                f"{manifest.output_dir} are left as they were.{hint}{opt_in}"
            )
        clock.lap("discover")
        # The reports' staging folder outlives the store (closed before the reports are
        # moved in) but is made only when the first report row is ready: a job that
        # fails or is killed before that leaves no trace in output.dir.
        with contextlib.ExitStack() as reports:
            with (
                contextlib.ExitStack() as stack,
                FeatureStore(manifest.cache_dir, spec, segments=_segment_spec(manifest)) as store,
            ):
                executors = Executors(stack, manifest)
                if manifest.engine.backend == "dask" and manifest.engine.scheduler != "local":
                    executors.get()  # an unreachable cluster fails the job before any hashing
                clock.lap("open_cache")
                training = _Training() if model is None else None
                groups = None if model is None else _adaptation(manifest, model, turns)
                _find_features(
                    manifest,
                    listing,
                    hashed,
                    store,
                    summary,
                    executors,
                    training,
                    groups,
                    progress=progress,
                    clock=clock,
                    turns=turns,
                )
                used: set[int] = set()
                if model is None:
                    data = training or _Training()
                    model, summary.metrics, used = train_model(
                        manifest, data.vectors, data.labels, data.hashes, spec, progress=progress
                    )
                    del training, data
                summary.model_id = model.id
                clock.lap("train")
                if groups is None:  # a train job: its model's groups, measured now
                    groups = _adaptation(manifest, model, turns)
                    _observe(store, hashed, groups.observe)
                summary.emotion_groups = groups.check_groups(model)
                groups.cluster()
                if groups.mode == "cluster":
                    _observe(store, hashed, lambda start, outcomes, _labels: groups.observe_clusters(start, outcomes))
                wins: dict[str, str] = {}
                segment_wins: dict[str, list[tuple[float, float, str]]] = {}
                if answers is not None:
                    reviewed = ReviewedFiles(
                        answers,
                        answers_file=answers_file,
                        root=manifest.root_dir,
                        groups=groups,
                        classes=model.meta.classes,
                        inputs=[p for p in paths[: len(manifest.inputs)] if isinstance(p, Path)],
                    )
                    _observe(store, hashed, reviewed.observe)
                    reviewed.check()  # answers that match no file stop the job before any report is replaced
                    model, summary.review, wins = relearn(model, reviewed)
                    segment_wins = reviewed.segment_wins
                    summary.model_id = model.id
                clock.lap("predict")
                run = FinishedRun(manifest, spec, model, summary, queued, [], [])
                rs = reports.enter_context(ReportSet(manifest.output_dir))
                written, exports = _label_all(
                    run,
                    rs,
                    store,
                    hashed,
                    groups,
                    used,
                    clock=clock,
                    keep_rows=keep_rows,
                    reviewed=wins,
                    reviewed_segments=segment_wins,
                )
            clock.lap("close_cache")
            summary.reports = commit_reports(rs, run, written, exports, clock, t0, metrics=True)
    return run


def run_job(manifest: Manifest, *, progress: bool = True, overwrite: bool = False) -> JobSummary:
    """Run ``manifest`` to completion and write its reports.

    Parameters
    ----------
    manifest : Manifest
    progress : bool
        Show tqdm progress bars (on stderr).
    overwrite : bool
        Replace reports in ``output.dir`` that another set of inputs wrote.

    Returns
    -------
    JobSummary

    Raises
    ------
    ManifestError
        A path the manifest names is missing (before any work).
    ModelError
        The model cannot be loaded for this job (before any extraction).
    NoInputError
        The inputs hold no audio file (and ``allow_empty`` is false).
    """
    return _run(manifest, progress=progress, overwrite=overwrite).summary


def watch_job(
    manifest: Manifest,
    *,
    progress: bool = True,
    poll_s: float = 0.5,
    on_start: Callable[[JobSummary], None] | None = None,
) -> Iterator[ReportRow]:
    """Run ``manifest``, then label each clip that arrives in its queue, forever.

    Each new clip is extracted (through the cache), labelled with the job's
    model (a train job trains once, in the first run) and added to the
    reports, which are rewritten atomically; a clip that changes is labelled
    again and its row replaced. Close the iterator (or interrupt it) to stop:
    the cache is flushed and the reports are complete at every step.

    Parameters
    ----------
    manifest : Manifest
    progress : bool
        Progress bars for the first run.
    poll_s : float
        Seconds between looks at the queue folder.
    on_start : callable or None
        Called with the first run's summary before watching begins.

    Yields
    ------
    ReportRow
        One per new or changed clip, as soon as its reports are written.
    """
    run = _run(manifest, progress=progress, allow_empty=True, keep_rows=True)  # the queue is empty until clips arrive
    if on_start is not None:
        on_start(run.summary)
    queue = manifest.queue_dir
    watcher = QueueWatcher(queue, known=[f for f in run.files if f.path.is_relative_to(queue)], poll_s=poll_s)
    where = {r.path: i for i, r in enumerate(run.rows)}
    no_label = [Label()]
    log.info("watching %s for new clips (every %g s)", queue, poll_s)
    with (
        contextlib.ExitStack() as stack,
        FeatureStore(manifest.cache_dir, run.spec, segments=_segment_spec(manifest)) as store,
    ):
        executors = Executors(stack, manifest)  # one cluster for the whole watch
        for batch in watcher:
            counts = JobSummary(manifest.name)
            outcomes = file_features(manifest, batch, store, counts, executors=executors)
            run.summary.n_extracted += counts.n_extracted
            run.summary.n_cached += counts.n_cached
            store.flush()  # another job (or the next run) sees these features at once
            new, new_segs = annotate_rows(
                outcomes,
                no_label * len(outcomes),
                run.model,
                root=manifest.root_dir,
                train=False,
                min_confidence=manifest.model.min_confidence,
                adapt=manifest.model.adapt,
                allowed=_speaker_allowed(manifest),
                min_segments=manifest.model.min_file_segments,
            )
            store.release()
            changed = {r.path for r in new}
            run.segment_rows = [r for r in run.segment_rows if r.path not in changed] + new_segs
            for row in new:
                if row.path in where:
                    run.rows[where[row.path]] = row
                else:
                    where[row.path] = len(run.rows)
                    run.rows.append(row)
            write_reports(run)
            yield from new
