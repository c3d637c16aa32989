"""Parallel feature extraction with joblib: batches of files per task.

The engine turns :class:`ExtractTask` records into :class:`FeatureRecord`
records. It never raises for a bad file: every failure becomes a record with
``status="error"`` and a reason, so one file cannot stop a job.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import hashlib
import io
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import joblib
import numpy as np
from threadpoolctl import threadpool_limits

from batchser.archive import MemberData, read_members
from batchser.audio import AudioError, AudioStream
from batchser.cache import FeatureRecord, hash_file
from batchser.executors import EngineError, Executor, n_workers, open_executor
from batchser.features import FeatureSpec, extract
from batchser.longfile import (
    HASHED_ON_READ_BYTES,
    PARTS_IN_PROCESS_S,
    PartResult,
    extract_part,
    extract_segmented,
    merge_parts,
    merge_speech,
    no_speech_record,
    part_seconds,
    plan_parts,
    short_file_has_speech,
    speech_part,
    speech_plan,
    vad_part,
)
from batchser.segments import SegmentSpec
from batchser.storage import (
    ObjectChangedError,
    ObjectNotFoundError,
    StorageError,
    is_url,
    raise_read_error,
    storage_for,
)
from batchser.tasks import CHANGED, VANISHED, ExtractTask, ReadHashed, decoded_by, error_record, retry_record

__all__ = [
    "EngineError",
    "Executor",
    "ExtractTask",
    "default_batch_size",
    "extract_one",
    "keep_freed_memory",
    "open_executor",
    "part_seconds",
    "plan_parts",
    "run_tasks",
    "too_small_for_workers",
]

log = logging.getLogger(__name__)

IN_PROCESS_BELOW = 32
IN_PROCESS_BYTES = 64 << 20


def extract_one(
    task: ExtractTask, *, spec: FeatureSpec, segments: SegmentSpec | None = None, data: MemberData | None = None
) -> FeatureRecord:
    """Decode, resample and analyse one file (or archive member ``data``); failures become records.

    With ``segments``, a file longer than ``segments.over_s`` is analysed
    window by window (see :mod:`batchser.segments`) without loading it whole.
    A failure the bytes decide (undecodable, silent, too short) is an
    ``"error"`` record; one of this run (a read error, a file that vanished,
    or with ``task.verify`` bytes that are no longer those of
    ``task.content_hash``) is a ``"retry"`` record, which the cache never keeps.
    """
    if task.verify and data is not None and data.sha256 != task.bytes_hash:
        return retry_record(task, CHANGED)
    record = _decode_and_extract(task, spec=spec, segments=segments, data=data)
    if task.verify and data is None and record.status != "retry":
        # The hash was taken when the file was listed and the decoder read it
        # again since: hash it once more (0.05 ms a clip, from the page cache)
        # so that features of other bytes never land under this key.
        try:
            now = hash_file(task.path)
        except FileNotFoundError:
            return retry_record(task, VANISHED)
        except OSError as exc:
            return retry_record(task, f"cannot read: {exc.strerror or exc}; rerun to retry")
        if now != task.bytes_hash:
            return retry_record(task, CHANGED)
    return record


def _storage_failure(task: ExtractTask, exc: StorageError) -> FeatureRecord:
    """A read of an object that failed: this run's problem (a ``retry`` row), never the bytes' verdict."""
    if isinstance(exc, ObjectChangedError):
        return retry_record(task, CHANGED)
    if isinstance(exc, ObjectNotFoundError):
        return retry_record(task, VANISHED)
    return retry_record(task, f"cannot read: {exc}; rerun to retry")


def extract_object(
    task: ExtractTask, *, spec: FeatureSpec, segments: SegmentSpec | None = None
) -> FeatureRecord | ReadHashed:
    """An object in storage, read where it is analysed: whole into memory when small, else in ranges.

    Every read is checked against the stamp the object was listed with (a
    replaced object gives a ``retry``). A small object's bytes are hashed as
    they arrive: a ``read_hash`` task (its hash not known yet) is answered
    with a :class:`~batchser.tasks.ReadHashed` filed under that hash, and any
    other is refused unless the bytes are the ones its hash names.
    """
    store = storage_for(task.path)
    if task.size <= HASHED_ON_READ_BYTES:
        try:
            data = store.read(task.path, size=task.size, stamp=task.stamp)
        except StorageError as exc:
            return _storage_failure(task, exc)
        digest = hashlib.sha256(data).hexdigest()
        member = MemberData(data, None, digest)
        if task.read_hash:
            known = dataclasses.replace(task, content_hash=digest, read_hash=False)
            return ReadHashed(task.content_hash, extract_one(known, spec=spec, segments=segments, data=member))
        return extract_one(task, spec=spec, segments=segments, data=member)
    # Larger: decoded as it streams, block by block; the checked reads stand for a second hashing.
    try:
        with store.open(task.path, size=task.size, stamp=task.stamp) as fh:
            record = extract_one(task, spec=spec, segments=segments, data=MemberData(None, fh, task.content_hash))
            raise_read_error(fh)  # before the record: a failed read looks like the end of the data
    except StorageError as exc:
        return _storage_failure(task, exc)
    return record


def _decode_and_extract(
    task: ExtractTask, *, spec: FeatureSpec, segments: SegmentSpec | None, data: MemberData | None
) -> FeatureRecord:
    source: str | BinaryIO = task.path
    if data is not None:
        source = data.spill if data.spill is not None else io.BytesIO(data.data or b"")  # type: ignore[assignment]
    try:
        stream = AudioStream(source, sample_rate=spec.sample_rate)
    except AudioError as exc:
        return retry_record(task, str(exc)) if exc.transient else decoded_by(error_record(task, str(exc)), exc.decoder)
    with stream:
        # The record says what decoded the bytes: the cache files FFmpeg's verdicts apart (FeatureStore).
        return decoded_by(_analyse(task, stream, spec=spec, segments=segments), stream.decoder)


def _analyse(
    task: ExtractTask, stream: AudioStream, *, spec: FeatureSpec, segments: SegmentSpec | None
) -> FeatureRecord:
    try:
        if segments is not None and stream.declared_duration_s > segments.over_s:
            return extract_segmented(task, stream, spec=spec, seg=segments)
        audio = stream.read_all()
    except AudioError as exc:
        return retry_record(task, str(exc)) if exc.transient else error_record(task, str(exc))
    if audio.samples.size < spec.n_fft:
        # Shorter than one analysis frame: the "mean over frames" would be one
        # padded frame, and nobody conveys an emotion in that time.
        need = spec.n_fft / spec.sample_rate
        return error_record(task, f"too short: {audio.duration_s:.3f} s, need at least {need:.3f} s", audio)
    checked = segments is not None and segments.speech and segments.short_files
    if checked and not short_file_has_speech(audio.samples, segments):  # type: ignore[arg-type]
        warning = "; ".join(audio.warnings)
        rate, channels, duration = audio.orig_sample_rate, audio.channels, audio.duration_s
        return no_speech_record(task, rate=rate, channels=channels, duration=duration, warning=warning)
    try:
        vector = extract(audio.samples, spec=spec)
    except Exception as exc:  # one odd file must not end the job
        log.debug("feature extraction failed for %s", task.path, exc_info=True)
        return error_record(task, f"feature extraction failed: {type(exc).__name__}: {exc}", audio)
    if not np.isfinite(vector).all():
        return error_record(task, "features are not finite", audio)
    return FeatureRecord(
        task.content_hash,
        "ok",
        "",
        audio.orig_sample_rate,
        audio.channels,
        audio.duration_s,
        vector,
        "; ".join(audio.warnings),
    )


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let this process reuse freed memory for the next file's arrays instead of returning it.

    Every file allocates a few arrays of about a megabyte (frames, spectrum,
    power). glibc serves such sizes with fresh ``mmap`` pages or trims them
    off the heap when freed, so each file pays hundreds of page faults to
    zero memory it is about to overwrite: 0.8 of 2.5 ms per RAVDESS clip,
    measured. Raising the mmap and trim thresholds (32 and 64 MiB) keeps them
    on the heap; the process holds at most its own peak. Called once per
    worker process; a no-op (False) where the C library is not glibc.

    Returns
    -------
    bool
        Whether the thresholds were set.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


PARENT_POLL_S = 1.0


@lru_cache(maxsize=1)
def exit_with_parent(parent_pid: int) -> bool:
    """In a worker process started by ``parent_pid``: exit when that process is gone.

    A job killed with ``kill -9`` cannot stop its workers, and loky keeps idle
    workers waiting for tasks that will never come (about 100 MB each). A
    daemon thread checks every second whether the worker's parent is still
    ``parent_pid`` (a dead parent's children are re-parented) and ends the
    worker when it is not. Called once per worker; a no-op in the job's own
    process.

    Returns
    -------
    bool
        Whether a watch was started.
    """
    if os.getpid() == parent_pid or os.getppid() != parent_pid:
        return False  # in the job itself, or not a child of it (a Dask worker has its own parent)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="batchser-parent-watch", daemon=True).start()
    return True


def _extract_batch(
    tasks: Sequence[ExtractTask], spec: FeatureSpec, segments: SegmentSpec | None = None, parent_pid: int = 0
) -> list[FeatureRecord | PartResult | ReadHashed]:
    keep_freed_memory()
    if parent_pid:
        exit_with_parent(parent_pid)
    # One BLAS thread wherever the batch runs: n workers must not fight over n
    # cores, and a multi-threaded matmul sums in another order, so features
    # (and reports) would differ in the last bit between backends.
    with threadpool_limits(limits=1):
        out: dict[ExtractTask, FeatureRecord | PartResult | ReadHashed] = {}
        for t in tasks:
            if t.n_parts > 1 and segments is not None:
                if not segments.speech:
                    out[t] = extract_part(t, spec=spec, seg=segments)
                else:  # first pass: frame probabilities; second: the segments' vectors
                    out[t] = (vad_part if t.spans is None else speech_part)(t, spec=spec, seg=segments)
            elif is_url(t.path) and not t.member:
                out[t] = extract_object(t, spec=spec, segments=segments)
            elif not t.member:
                out[t] = extract_one(t, spec=spec, segments=segments)
        by_archive: dict[str, list[ExtractTask]] = {}
        for t in tasks:
            if t.member:
                by_archive.setdefault(t.path, []).append(t)
        for path, members in by_archive.items():
            wanted = {t.member: t for t in members}
            where = path if is_url(path) else Path(path)
            for name, data, err in read_members(where, list(wanted), stamp=members[0].stamp if is_url(path) else None):
                t = wanted[name]
                # These bytes hashed fine when listed: failing to read them now is this run's problem.
                out[t] = (
                    retry_record(t, err) if data is None else extract_one(t, spec=spec, segments=segments, data=data)
                )
        return [out[t] for t in tasks]


def _extract_batch_on_worker(
    tasks: Sequence[ExtractTask], spec: FeatureSpec, segments: SegmentSpec | None = None
) -> tuple[str, list[FeatureRecord | PartResult | ReadHashed]]:
    """:func:`_extract_batch` on a Dask worker, with the worker's name (or address) for the job's summary."""
    from distributed import get_worker

    try:
        worker = get_worker()
        name = worker.name if isinstance(worker.name, str) else worker.address
    except ValueError:  # not on a worker (a client running the task itself)
        name = "client"
    return str(name), _extract_batch(tasks, spec, segments)


def _on_cluster(fn: Callable[..., Any], calls: Iterator[tuple[Any, ...]]) -> Iterator[Any]:
    """``fn(*args)`` for each of ``calls`` on the job's Dask cluster, results in completion order.

    Submitted to the client :func:`~batchser.executors.open_executor` opened,
    at most two per worker thread ahead (``calls`` is consumed lazily, so the
    job's filter sees what other jobs wrote meanwhile). Not through joblib's
    Dask backend: with one worker thread it runs everything in the client,
    where a cluster that shares no disk may not even see the files. A task
    lost with its worker is rerun elsewhere by the scheduler.
    """
    from distributed import as_completed, get_client

    client = get_client()
    ahead = 2 * max(1, sum(client.nthreads().values()))
    running = as_completed()
    for args in calls:
        running.add(client.submit(fn, *args, pure=False))
        if running.count() >= ahead:
            yield next(running).result()
    for done in running:
        yield done.result()


def _files_done(results: Sequence[FeatureRecord | PartResult | ReadHashed]) -> float:
    """Files a batch's results stand for: a part of a long file counts its share (second speech passes none)."""
    return sum(
        (0.0 if r.task.spans is not None else 1 / r.task.n_parts) if isinstance(r, PartResult) else 1.0 for r in results
    )


def default_batch_size(n_files: int, n_workers: int) -> int:
    """Files per task: about 8 tasks per worker, 1 to 64 files each.

    Enough tasks to balance load and show progress, few enough that joblib's
    per-task overhead (pickling, IPC) stays a small fraction of the work.
    """
    return max(1, min(64, n_files // max(1, 8 * n_workers)))


def too_small_for_workers(tasks: Sequence[ExtractTask], in_process_below: int = IN_PROCESS_BELOW) -> bool:
    """Whether ``tasks`` finish sooner in this process than after starting workers.

    Starting worker processes costs ~0.4 s (fresh interpreters importing
    numpy, scipy, soundfile), what one core needs for ~250 short clips. So:
    fewer than ``in_process_below`` tasks, or up to 8 times as many whose
    files total under 64 MiB (file bytes stand for the work: 120 RAVDESS
    48 kHz WAVs, 48 MB, finish in-process in half the time). 0: never.
    """
    if in_process_below <= 0:
        return False
    if len(tasks) < in_process_below:
        return True
    return len(tasks) <= 8 * in_process_below and sum(t.size for t in tasks) <= IN_PROCESS_BYTES


def run_tasks(
    tasks: Sequence[ExtractTask],
    *,
    spec: FeatureSpec,
    segments: SegmentSpec | None = None,
    backend: str = "loky",
    n_jobs: int = -1,
    batch_size: int | None = None,
    in_process_below: int = IN_PROCESS_BELOW,
    still_needed: Callable[[ExtractTask], bool] | None = None,
    executor: Executor | None = None,
    on_part: Callable[[ExtractTask], None] | None = None,
    on_hashed: Callable[[ReadHashed], None] | None = None,
    per_worker: Counter[str] | None = None,
) -> Iterator[list[FeatureRecord]]:
    """Extract features for ``tasks``, yielding each finished batch as it completes.

    Parameters
    ----------
    tasks : sequence of ExtractTask
    spec : FeatureSpec
    segments : SegmentSpec or None
        How long files are cut into windows; None analyses every file whole.
    backend : str
        A joblib backend name (``loky``, ``threading``, ``dask``…) or
        ``sequential`` for in-process work.
    n_jobs : int
        Workers; -1 for all cores.
    batch_size : int or None
        Files per task; None for :func:`default_batch_size`.
    in_process_below : int
        See :func:`too_small_for_workers`; 0 always uses ``backend``.
    still_needed : callable or None
        Asked for each task just before its batch is dispatched; tasks it
        rejects are dropped (another job has meanwhile done them).
    executor : Executor or None
        From :func:`open_executor`; overrides ``backend`` and ``n_jobs``.
        A Dask executor always runs on the cluster, however few the tasks.
    on_part : callable or None
        Called with each finished part of a long file (see :func:`plan_parts`)
        but the one that completes it, for progress; the file's record comes
        in a batch once all its parts are done.
    on_hashed : callable or None
        Called with the answer of each ``read_hash`` task (an object whose
        hash its worker took as it read it), which no yielded batch holds.
    per_worker : Counter or None
        On Dask, files done per worker (name, else address) are added to it.

    Yields
    ------
    list of FeatureRecord
        One batch at a time, in completion order (not task order).
    """
    if not tasks:
        return
    if executor is not None:
        backend, workers = executor.backend, executor.n_workers
    else:
        workers = n_workers(backend, n_jobs)
    whole: list[ExtractTask] = []
    split: list[ExtractTask] = []
    for t in tasks:
        planned = plan_parts(t, spec=spec, seg=segments) if segments is not None else [t]
        (split if len(planned) > 1 else whole).extend(planned)
    size = batch_size or default_batch_size(len(whole), workers)
    batches = [whole[i : i + size] for i in range(0, len(whole), size)]
    if still_needed is not None:
        # Batches (contiguous runs of sorted paths) in random order: two jobs
        # sharing a cache then rarely work on the same batch at once, and each
        # skips what the other has written. In path order they would compute
        # the same files in lockstep. Results are keyed by content hash, so
        # the order changes nothing in the reports.
        random.shuffle(batches)
    decided: dict[str, bool] = {}  # a long file is claimed (or not) once, for all its parts

    def needed(task: ExtractTask) -> bool:
        if task.content_hash not in decided:
            decided[task.content_hash] = still_needed(task) if still_needed else True
        return decided[task.content_hash]

    def pending(todo: list[Sequence[ExtractTask]]) -> Iterator[Sequence[ExtractTask]]:
        # Consumed lazily (joblib dispatches ahead by pre_dispatch only), so the
        # filter sees what other jobs wrote while this one was running.
        for batch in todo:
            kept = [t for t in batch if needed(t)]
            if kept:
                yield kept

    remote = backend == "dask"  # the user asked for the cluster: never second-guess it
    # Parts of long files are ~0.4 s of work a part: under an hour of them is
    # done before workers would have started (bench/long_file.py).
    parts_s = sum(part_seconds(t, segments) for t in split) if segments is not None else 0.0
    small = too_small_for_workers(whole, in_process_below) and parts_s < PARTS_IN_PROCESS_S

    def execute(todo: list[Sequence[ExtractTask]]) -> Iterator[list[FeatureRecord | PartResult | ReadHashed]]:
        if not remote and (workers == 1 or len(todo) == 1 or small):
            yield from (_extract_batch(b, spec, segments) for b in pending(todo))
            return
        if remote:
            for name, got in _on_cluster(_extract_batch_on_worker, ((b, spec, segments) for b in pending(todo))):
                if per_worker is not None:
                    per_worker[name] += _files_done(got)  # type: ignore[assignment]
                yield got
            return
        with joblib.parallel_config(backend=backend, n_jobs=workers):
            parallel = joblib.Parallel(return_as="generator_unordered", pre_dispatch="2 * n_jobs")
            parent = os.getpid() if backend == "loky" else 0  # loky's workers are this process's children
            yield from parallel(joblib.delayed(_extract_batch)(b, spec, segments, parent) for b in pending(todo))

    first: dict[str, list[PartResult]] = {}
    if segments is not None and segments.speech and split:
        # Speech segments of files in parts: a first pass finds every frame's
        # speech probability; the segments are drawn from the whole file's frames.
        second: list[ExtractTask] = []
        done: list[FeatureRecord] = []
        for batch in execute([[t] for t in split]):
            for r in batch:
                got = first.setdefault(r.task.content_hash, [])
                got.append(r)  # type: ignore[arg-type]  # parts give PartResults
                if len(got) == r.task.n_parts:
                    plan = speech_plan(got, spec=spec, seg=segments)
                    if isinstance(plan, FeatureRecord):
                        done.append(plan)
                        first.pop(r.task.content_hash)
                    else:
                        second += plan
        if done:
            yield done
        split = second
    # Each part of a long file is a task of its own, dispatched first: the
    # longest work starts early instead of trailing at the end.
    results = execute([[t] for t in split] + batches)
    if segments is not None and segments.speech:
        yield from (_compact(b) for b in _merged_speech(_hashed(results, on_hashed), first, split, on_part))
    else:
        yield from (_compact(b) for b in _merged(_hashed(results, on_hashed), on_part))


def _hashed(
    results: Iterable[list[FeatureRecord | PartResult | ReadHashed]], on_hashed: Callable[[ReadHashed], None] | None
) -> Iterator[list[FeatureRecord | PartResult]]:
    """The batches without the answers of ``read_hash`` tasks, each handed to ``on_hashed`` instead."""
    for batch in results:
        rest: list[FeatureRecord | PartResult] = []
        for r in batch:
            if isinstance(r, ReadHashed):
                if on_hashed is None:
                    raise ValueError("a read_hash task needs on_hashed to receive its record")
                vector = r.record.vector  # a worker's vector is a view of its unpickled buffer: keep a copy
                on_hashed(
                    r if vector is None else ReadHashed(r.key, dataclasses.replace(r.record, vector=vector.copy()))
                )
            else:
                rest.append(r)
        yield rest


def _merged_speech(
    results: Iterable[list[FeatureRecord | PartResult]],
    first: dict[str, list[PartResult]],
    second: Sequence[ExtractTask],
    on_part: Callable[[ExtractTask], None] | None,
) -> Iterator[list[FeatureRecord]]:
    """Batches of records, a long file's once its second pass is in (``on_part`` hears of its other parts)."""
    expected = Counter(t.content_hash for t in second)
    got: dict[str, list[PartResult]] = {}
    for batch in results:
        done: list[FeatureRecord] = []
        for r in batch:
            if isinstance(r, FeatureRecord):
                done.append(r)
                continue
            h = r.task.content_hash
            got.setdefault(h, []).append(r)
            if len(got[h]) == expected[h]:
                done.append(merge_speech(first.pop(h), got.pop(h)))
            elif on_part is not None:
                on_part(r.task)
        if done:
            yield done


def _merged(
    results: Iterable[list[FeatureRecord | PartResult]], on_part: Callable[[ExtractTask], None] | None
) -> Iterator[list[FeatureRecord]]:
    """Batches of records, a long file's once all its parts are in (``on_part`` hears of the others)."""
    parts: dict[str, list[PartResult]] = {}
    for batch in results:
        done: list[FeatureRecord] = []
        for r in batch:
            if isinstance(r, FeatureRecord):
                done.append(r)
                continue
            got = parts.setdefault(r.task.content_hash, [])
            got.append(r)
            if len(got) == r.task.n_parts:
                done.append(merge_parts(parts.pop(r.task.content_hash)))
            elif on_part is not None:
                on_part(r.task)
        if done:
            yield done


def _compact(batch: list[FeatureRecord]) -> list[FeatureRecord]:
    """The batch with its vectors as rows of one array.

    A vector unpickled from a worker is a view, through a memoryview, of its
    own bytearray: 460 bytes of wrappers around 712 of data, kept for every
    file until the job ends. One array per batch holds the same numbers.
    """
    ok = [i for i, r in enumerate(batch) if r.vector is not None]
    if not ok:
        return batch
    matrix = np.stack([batch[i].vector for i in ok])  # type: ignore[misc]
    out = list(batch)
    for row, i in zip(matrix, ok, strict=True):
        out[i] = dataclasses.replace(batch[i], vector=row)
    return out
