"""Run one job: manifest → discover → hash → cache/engine → model → report.

:func:`run_job` is the one entry point; the CLI only formats its summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# pyarrow imports pandas on its first conversion to or from numpy, which every
# job makes; importing it with the job keeps that cost (0.15 s) in start-up
# instead of in whichever stage converts first, so stage timings stay comparable.
import pandas

from batchser.archive import MAX_MEMBER_BYTES
from batchser.cache import CLAIM_STALE_S, FeatureRecord, FeatureStore
from batchser.discover import SourceFile, discover
from batchser.engine import Executor, ExtractTask, open_executor, part_seconds, run_tasks
from batchser.features import FeatureSpec
from batchser.hashing import content_hashes, progress_bar
from batchser.labels import Label, label_coverage, label_source
from batchser.manifest import Manifest, ManifestError
from batchser.model import (
    TrainedModel,
    load_model,
)
from batchser.paths import check_manifest_paths
from batchser.predict import FileOutcome, annotate_rows, domain_summary
from batchser.queue import QueueWatcher
from batchser.report import (
    ReportRow,
    ReportSet,
    SegmentRow,
    annotations_table,
    file_digests,
    segments_table,
    write_annotations,
    write_confusion_png,
    write_json,
    write_reliability_png,
)
from batchser.segments import SegmentSpec
from batchser.training import train as train_model

__all__ = ["FileOutcome", "JobSummary", "NoInputError", "check_manifest_paths", "run_job", "watch_job"]

log = logging.getLogger(__name__)


class NoInputError(RuntimeError):
    """The inputs exist but hold no audio: nothing to label, and earlier reports are left alone."""


@dataclass
class JobSummary:
    name: str
    n_files: int = 0
    n_cached: int = 0
    n_extracted: int = 0
    n_failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)
    model_id: str = ""
    metrics: dict[str, Any] | None = None
    domain: dict[str, Any] | None = None  # how far the job's files are from the training data
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per stage

    def table(self, name: str = "annotations") -> pandas.DataFrame:
        """A report this job wrote, read back and indexed by path.

        Parameters
        ----------
        name : {"annotations", "segments"}

        Raises
        ------
        FileNotFoundError
            The job wrote no such report (segments: no file was long).
        """
        written = {p.name: p for p in self.reports}
        if f"{name}.parquet" in written:
            return pandas.read_parquet(written[f"{name}.parquet"]).set_index("path")
        if f"{name}.csv" in written:
            return pandas.read_csv(written[f"{name}.csv"]).set_index("path")
        raise FileNotFoundError(f"job {self.name} wrote no {name} report (it wrote {', '.join(written) or 'none'})")


class _StageClock:
    """Wall time of consecutive stages, for summary.json and the benchmarks."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.t = into, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.t
        self.t = now


class _Executors:
    """The job's executor, opened on first use (a fully cached run starts no workers or cluster)."""

    def __init__(self, stack: contextlib.ExitStack, manifest: Manifest) -> None:
        self._stack, self._engine = stack, manifest.engine
        self._executor: Executor | None = None

    def get(self) -> Executor:
        if self._executor is None:
            e = self._engine
            self._executor = self._stack.enter_context(open_executor(e.backend, n_jobs=e.n_jobs, scheduler=e.scheduler))
        return self._executor


def _features(
    manifest: Manifest,
    files: Sequence[SourceFile],
    store: FeatureStore,
    summary: JobSummary,
    *,
    executors: _Executors,
    progress: bool,
    clock: _StageClock | None = None,
) -> list[FileOutcome]:
    hashes = content_hashes(files, store, progress=progress)
    if clock is not None:
        clock.lap("hash")
    todo: dict[str, SourceFile] = {}  # content hash -> one file having it
    waiting: Counter[str] = Counter()
    cached = store.get_many(h for h, _ in hashes if h)  # one read per part, of the row groups needed
    for f, (h, _err) in zip(files, hashes, strict=True):
        if h and h not in cached:
            todo.setdefault(h, f)
            waiting[h] += 1
    tasks = [ExtractTask(str(f.path), h, f.member, max(f.size, 0), verify=True, stamp=f.stamp) for h, f in todo.items()]
    retry: dict[str, FeatureRecord] = {}  # this run's read failures: reported, never cached
    eng = manifest.engine
    extracted: set[str] = set()
    deferred: list[ExtractTask] = []  # claimed by another job sharing the cache
    credited: dict[str, float] = {}  # progress given for the finished parts of long files
    parts_s: dict[str, float] = {}  # and their seconds of audio
    audio_s = [0.0]
    with progress_bar(len(files), "extracting", progress, initial=len(files) - sum(waiting.values())) as bar:

        def still_needed(task: ExtractTask) -> bool:
            if store.claim(task.content_hash):
                return True
            if store.get(task.content_hash) is None:
                deferred.append(task)
            else:
                bar.update(waiting[task.content_hash])  # another job finished it meanwhile
            return False

        def extract(batch_tasks: list[ExtractTask]) -> None:
            if not batch_tasks:
                return
            batches = run_tasks(
                batch_tasks,
                spec=store.spec,
                segments=store.segment_spec,
                batch_size=eng.batch_size,
                still_needed=still_needed,
                executor=executors.get(),
                on_part=on_part,
            )
            for batch in batches:
                store.add(batch)
                summary.n_extracted += len(batch)
                extracted.update(r.content_hash for r in batch)
                retry.update((r.content_hash, r) for r in batch if r.status == "retry")
                audio_s[0] += sum(r.duration_s for r in batch) - sum(parts_s.pop(r.content_hash, 0.0) for r in batch)
                bar.set_postfix_str(f"{audio_s[0] / 3600:.2f} h audio", refresh=False)
                bar.update(sum(waiting[r.content_hash] - credited.pop(r.content_hash, 0.0) for r in batch))

        def on_part(task: ExtractTask) -> None:
            # A long file moves the bar part by part, in files and in hours of audio.
            span = part_seconds(task, store.segment_spec)  # type: ignore[arg-type]  # parts exist only with segments
            parts_s[task.content_hash] = parts_s.get(task.content_hash, 0.0) + span
            audio_s[0] += span
            bar.set_postfix_str(f"{audio_s[0] / 3600:.2f} h audio", refresh=False)
            share = waiting[task.content_hash] / task.n_parts
            credited[task.content_hash] = credited.get(task.content_hash, 0.0) + share
            bar.update(share)

        extract(tasks)
        next_note = time.monotonic() + 2  # say what we wait for if it lasts
        # Wait for what other jobs are extracting; take over from any that died.
        while deferred:
            # Our own finished rows must reach disk first: the job we wait for
            # may be waiting for them.
            store.flush()
            store.refresh()
            pending, orphans = [], []
            for t in deferred:
                if store.get(t.content_hash) is not None:
                    bar.update(waiting[t.content_hash])
                elif store.held_elsewhere(t.content_hash):
                    pending.append(t)
                else:
                    orphans.append(t)
            deferred[:] = pending
            if orphans:
                log.info("taking over %d files from a job that stopped", len(orphans))
                extract(orphans)
            elif deferred:
                if time.monotonic() >= next_note:
                    next_note = time.monotonic() + 10
                    who = ", ".join(p.name for p in store.claimants()) or "another job"
                    log.warning(
                        "waiting for %d file(s) another job sharing the cache is extracting (claims: %s); "
                        "a job that stops heartbeating for %d s is taken over",
                        len(deferred),
                        who,
                        int(CLAIM_STALE_S),
                    )
                time.sleep(0.2)
    summary.n_cached = sum(1 for h, _ in hashes if h and h not in extracted)
    return [
        FileOutcome(f, h, (store.get(h) or retry.get(h)) if h else None, err)
        for f, (h, err) in zip(files, hashes, strict=True)
    ]


@dataclass
class _Run:
    """A finished run, as a watch needs it to label more files into the same reports."""

    manifest: Manifest
    spec: FeatureSpec
    model: TrainedModel
    summary: JobSummary
    files: list[SourceFile]
    rows: list[ReportRow]
    segment_rows: list[SegmentRow]


def _segment_spec(manifest: Manifest) -> SegmentSpec | None:
    seg = manifest.segments
    return None if seg is None else SegmentSpec(**seg.model_dump())


def _input_paths(manifest: Manifest) -> tuple[list[Path], list[Callable[[Path], Label]]]:
    paths = [manifest.resolve(i.path) for i in manifest.inputs]
    fns = [
        label_source(
            i.labels,
            resolve=manifest.resolve,
            speaker=i.speaker,
            root=manifest.root_dir,
            input_root=p,
            corpus=i.corpus_name,
        )
        for i, p in zip(manifest.inputs, paths, strict=True)
    ]
    if manifest.queue_dir.is_dir():  # captured clips: no labels
        paths.append(manifest.queue_dir)
        fns.append(label_source("none", resolve=manifest.resolve, corpus="queue"))
    return paths, fns


def _check_labels(
    manifest: Manifest,
    files: Sequence[SourceFile],
    labels: Sequence[Label],
    fns: Sequence[Callable[[Path], Label]],
    *,
    quiet: bool,
) -> None:
    """Say how many files each labelled input labels; refuse an input whose labels match no file.

    Raises
    ------
    ManifestError
        A label source that gives no discovered file an emotion (a table naming other
        paths, a pattern that never matches): the job would train or score on nothing.
    """
    problems = []
    seen = {os.path.realpath(f.path) if not f.member else os.path.normpath(f.name) for f in files}
    for i, inp in enumerate(manifest.inputs):
        if not inp.has_labels:
            continue
        mine = [lab for f, lab in zip(files, labels, strict=True) if f.input_index == i]
        line, none = label_coverage(f"inputs[{i}] ({inp.corpus_name})", mine, getattr(fns[i], "table", None), seen)
        if none:
            problems.append(f"inputs[{i}].labels: {line}; check the pattern or the table's paths")
        elif "match no file" in line or not all(lab.emotion for lab in mine):
            log.warning(line)  # partly labelled, or rows that name no file: worth a look
        elif not quiet:
            log.info(line)
    if problems:
        raise ManifestError(str(manifest.manifest_file or manifest.name), problems)


def _speaker_allowed(manifest: Manifest) -> dict[str, bool]:
    return {i.corpus_name: i.speaker_normalization for i in manifest.inputs}


def _tally(summary: JobSummary, rows: Sequence[ReportRow], model: TrainedModel) -> None:
    summary.n_files = len(rows)
    summary.failures = [(r.path, r.error) for r in rows if r.status != "ok"]
    summary.domain = domain_summary(rows, model)
    summary.n_failed = len(summary.failures)
    summary.label_counts = dict(Counter(r.label for r in rows if r.status == "ok").most_common())


def _write_reports(
    run: _Run, clock: _StageClock | None = None, t0: float | None = None, *, metrics: bool = False
) -> list[Path]:
    """annotations.*, segments.* (when any file was long), with ``metrics`` metrics.json and its
    plots, and summary.json naming them all with their hashes: moved into place as one set.

    With ``clock``, the tables' writing counts as the ``reports`` stage and
    ``t0`` (the job's start) sets the summary's total seconds.
    """
    m, s, model = run.manifest, run.summary, run.model
    classes = list(model.meta.classes)
    with ReportSet(m.output_dir) as rs:
        written = write_annotations(annotations_table(run.rows, classes), rs.stage, m.output.formats)
        if run.segment_rows:  # only when a file was long; an earlier run's tables are dropped otherwise
            written += write_annotations(
                segments_table(run.segment_rows, classes), rs.stage, m.output.formats, stem="segments"
            )
        if metrics and s.metrics is not None:
            title = f"{m.name} ({model.id})"
            write_json(rs.stage / "metrics.json", {"model": model.id, "classes": classes, **s.metrics})
            write_confusion_png(rs.stage / "confusion_matrix.png", s.metrics, title=title)
            write_reliability_png(rs.stage / "reliability.png", s.metrics, title=title)
            written += [rs.stage / "metrics.json", rs.stage / "confusion_matrix.png", rs.stage / "reliability.png"]
        if clock is not None:
            clock.lap("reports")  # summary.json, written last, holds every stage but its own write
        if t0 is not None:
            s.seconds = time.perf_counter() - t0
        write_json(
            rs.stage / "summary.json",
            {
                "job": m.name,
                "job_fingerprint": m.fingerprint(),
                "inputs": [str(m.resolve(i.path)) for i in m.inputs],
                "files": s.n_files,
                "from_cache": s.n_cached,
                "extracted": s.n_extracted,
                "failed": s.n_failed,
                "labels": s.label_counts,
                "model": model.id,
                "feature_fingerprint": run.spec.fingerprint(),
                "seconds": round(s.seconds, 3),
                "stage_seconds": {k: round(v, 4) for k, v in s.stages.items()},
                "domain": s.domain,
                "reports": file_digests(written),
            },
        )
        return rs.commit(drop=[f"segments.{fmt}" for fmt in ("csv", "parquet")])


def _check_output_owner(manifest: Manifest) -> None:
    """Refuse to replace reports another set of inputs wrote (``summary.json``'s job fingerprint).

    Raises
    ------
    ManifestError
        Naming the other job, its inputs, and the two fixes.
    """
    summary = manifest.output_dir / "summary.json"
    try:
        previous = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no reports yet (or none batchser can read: nothing of a job to protect)
    theirs = previous.get("job_fingerprint")
    if theirs is None or theirs == manifest.fingerprint():
        return
    inputs = ", ".join(previous.get("inputs", [])) or "unknown"
    raise ManifestError(
        str(manifest.manifest_file or manifest.name),
        [
            f"output.dir: {manifest.output_dir} holds the reports of another job ({previous.get('job')!r}, "
            f"inputs {inputs}); set output.dir to a folder of this job's own (or leave it out: "
            "result/reports/<manifest name>), or pass --overwrite to replace them"
        ],
    )


def _run(manifest: Manifest, *, progress: bool, allow_empty: bool = False, overwrite: bool = False) -> _Run:
    t0 = time.perf_counter()
    summary = JobSummary(manifest.name)
    clock = _StageClock(summary.stages)
    check_manifest_paths(manifest)
    if not overwrite:
        _check_output_owner(manifest)
    spec = FeatureSpec(tuple(manifest.features), manifest.audio.sample_rate, chroma_tuning=manifest.chroma_tuning)
    classes = list(manifest.emotions)
    model = (
        None
        if manifest.model.train
        else load_model(manifest.model_path, feature_fingerprint=spec.fingerprint(), classes=classes)
    )
    clock.lap("load_model")
    paths, label_fns = _input_paths(manifest)
    limits = [round(i.max_member_mb * 2**20) for i in manifest.inputs] + [MAX_MEMBER_BYTES] * (
        len(paths) - len(manifest.inputs)
    )
    files = discover(paths, max_member_bytes=limits, progress=progress)
    log.info("%s: %d files discovered", manifest.name, len(files))
    if not files and not (manifest.allow_empty or allow_empty):
        where = ", ".join(str(manifest.resolve(i.path)) for i in manifest.inputs)
        raise NoInputError(
            f"no audio files found in {where}; nothing was labelled and the reports in {manifest.output_dir} "
            "are left as they were. Check the path (an unmounted share? an empty folder?), or set "
            "allow_empty: true in the manifest to write empty reports"
        )
    labels = [label_fns[f.input_index](Path(f.name) if f.member else f.path) for f in files]
    _check_labels(manifest, files, labels, label_fns, quiet=not progress)

    clock.lap("discover")
    with (
        contextlib.ExitStack() as stack,
        FeatureStore(manifest.cache_dir, spec, segments=_segment_spec(manifest)) as store,
    ):
        executors = _Executors(stack, manifest)
        if manifest.engine.backend == "dask" and manifest.engine.scheduler != "local":
            executors.get()  # an unreachable cluster fails the job before any hashing
        clock.lap("open_cache")
        outcomes = _features(manifest, files, store, summary, executors=executors, progress=progress, clock=clock)
        clock.lap("features")  # lookups and extraction
    clock.lap("close_cache")

    used: set[int] = set()
    if model is None:
        vectors = [o.record.vector if o.ok and o.record is not None else None for o in outcomes]
        model, summary.metrics, used = train_model(
            manifest, vectors, labels, [o.content_hash for o in outcomes], spec, progress=progress
        )
    summary.model_id = model.id
    clock.lap("train")

    rows, seg_rows = annotate_rows(
        outcomes,
        labels,
        model,
        root=manifest.root_dir,
        train=manifest.model.train,
        used=used,
        min_confidence=manifest.model.min_confidence,
        adapt=manifest.model.adapt,
        allowed=_speaker_allowed(manifest),
    )
    _tally(summary, rows, model)
    # The feature vectors (in the outcomes and the closed store) are not needed
    # for the reports: free them before the report tables are built.
    del outcomes, store
    clock.lap("predict")
    run = _Run(manifest, spec, model, summary, files, rows, seg_rows)
    summary.reports = _write_reports(run, clock, t0, metrics=True)
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
    run = _run(manifest, progress=progress, allow_empty=True)  # the queue is empty until clips arrive
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
        executors = _Executors(stack, manifest)  # one cluster for the whole watch
        for batch in watcher:
            counts = JobSummary(manifest.name)
            outcomes = _features(manifest, batch, store, counts, executors=executors, progress=False)
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
            )
            changed = {r.path for r in new}
            run.segment_rows = [r for r in run.segment_rows if r.path not in changed] + new_segs
            for row in new:
                if row.path in where:
                    run.rows[where[row.path]] = row
                else:
                    where[row.path] = len(run.rows)
                    run.rows.append(row)
            _tally(run.summary, run.rows, run.model)
            _write_reports(run)
            yield from new
