"""Parallel feature extraction with joblib: batches of files per task.

The engine turns :class:`ExtractTask` records into :class:`FeatureRecord`
records. It never raises for a bad file: every failure becomes a record with
``status="error"`` and a reason, so one file cannot stop a job.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import io
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import joblib
import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

from batchser.archive import MemberData, read_members
from batchser.audio import Audio, AudioError, AudioStream, aligned, check_signal, clip_warning
from batchser.cache import FeatureRecord, hash_file
from batchser.features import FeatureSpec, SlidingExtractor, extract
from batchser.segments import Segments, SegmentSpec, is_voiced, windows

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

DASK_HINT = "install it with: pip install 'batchser[dask]'"
CONNECT_TIMEOUT_S = 10  # a scheduler that is up answers in milliseconds; retries cover a busy one


class EngineError(RuntimeError):
    """The execution engine cannot start (a missing extra, an unreachable scheduler)."""


@dataclass(frozen=True)
class Executor:
    """Where :func:`run_tasks` runs: a joblib backend and how many workers it has."""

    backend: str
    n_workers: int
    description: str = ""


@contextlib.contextmanager
def open_executor(backend: str, *, n_jobs: int = -1, scheduler: str | None = None) -> Iterator[Executor]:
    """Set up ``backend`` for the duration of a job.

    For ``dask``, connects a ``distributed.Client`` to ``scheduler``
    (``tcp://host:port``) or, for ``"local"``, starts a ``LocalCluster`` of
    ``n_jobs`` single-threaded worker processes (-1: one per core) on loopback,
    and closes what it started on exit. Other backends need no set-up.

    Raises
    ------
    EngineError
        dask/distributed is not installed, or the scheduler cannot be reached.
    """
    if backend != "dask":
        yield Executor(backend, _n_workers(backend, n_jobs), backend)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise EngineError(f"engine.backend dask needs dask.distributed ({exc}); {DASK_HINT}") from None
    # distributed sets its loggers to INFO on import and would report every
    # worker and connection; follow batchser's verbosity instead (INFO at -vv).
    ours = logging.getLogger("batchser").getEffectiveLevel()
    logging.getLogger("distributed").setLevel(logging.INFO if ours <= logging.DEBUG else logging.WARNING)
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            workers = joblib.cpu_count() if n_jobs < 0 else n_jobs
            cluster: Any = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.WARNING,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"))
            except (OSError, TimeoutError) as exc:
                raise EngineError(
                    f"cannot reach the Dask scheduler at {scheduler}: {exc}; start one "
                    "(dask scheduler; dask worker <address>) or use engine.scheduler: local"
                ) from None
        threads = sum(client.nthreads().values())
        if threads == 0:
            raise EngineError(f"the Dask cluster at {scheduler} has no workers; start some with dask worker")
        log.info("dask: %d worker threads at %s", threads, client.scheduler.address)
        yield Executor("dask", threads, f"dask {client.scheduler.address}")


log = logging.getLogger(__name__)

IN_PROCESS_BELOW = 32
IN_PROCESS_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class ExtractTask:
    """One file to decode and analyse; ``content_hash`` keys its cache row."""

    path: str
    content_hash: str
    member: str = ""  # name inside the archive at ``path``
    size: int = 0  # bytes, to judge whether starting workers pays (0: unknown)
    # Check that the bytes decoded are the ones ``content_hash`` names (the
    # job's tasks do; a cache row must describe what its key says).
    verify: bool = False
    # (size, mtime_ns, ctime_ns) when listed: lets a part of a long file check
    # it reads the bytes hashed without hashing the whole file once per part.
    stamp: tuple[int, int, int] | None = None
    # A long file is analysed in n_parts stretches of part_windows windows
    # each, one task per part (see plan_parts).
    part: int = 0
    n_parts: int = 1
    part_windows: int = 0


VANISHED = "vanished: the file was removed or renamed after it was listed; rerun to label it"
CHANGED = "changed during the job: its bytes are not those hashed when it was listed; rerun to label the new content"


def _retry(task: ExtractTask, reason: str) -> FeatureRecord:
    """A failure of this run, not of the bytes: reported, never cached, retried next run."""
    if reason.startswith("cannot read") and not os.path.lexists(task.path):
        reason = VANISHED
    return FeatureRecord(task.content_hash, "retry", reason, 0, 0, 0.0, None)


def _error(task: ExtractTask, reason: str, audio: Audio | None = None) -> FeatureRecord:
    if audio is None:
        return FeatureRecord(task.content_hash, "error", reason, 0, 0, 0.0, None)
    return FeatureRecord(
        task.content_hash,
        "error",
        reason,
        audio.orig_sample_rate,
        audio.channels,
        audio.duration_s,
        None,
        "; ".join(audio.warnings),
    )


def _analyse_windows(
    chunks: Iterable[np.ndarray], *, start: int, spec: FeatureSpec, seg: SegmentSpec, min_tail_s: float
) -> Segments | None:
    """Each window's vector and voiced flag over ``chunks``, a stream beginning at sample ``start``."""
    sr = spec.sample_rate
    sliding = SlidingExtractor(spec)  # overlapping windows share their common frames
    # A window of one constant value (digital silence, a stuck converter) has the
    # same vector wherever it stands: computed once. Hours of zeros padded into
    # a file (or a zip bomb of them) then cost a min and a max per window.
    constant: dict[tuple[float, int], np.ndarray] = {}
    starts, ends, voiced, vectors = [], [], [], []
    for rel, samples in windows(chunks, sample_rate=sr, window_s=seg.window_s, hop_s=seg.hop_s, min_tail_s=min_tail_s):
        if samples.size < spec.n_fft:
            continue
        if samples[0] == samples.min() == samples.max():
            key = (float(samples[0]), samples.size)
            if key not in constant:
                constant[key] = sliding.extract(start + rel, samples)
            vectors.append(constant[key])
        else:
            vectors.append(sliding.extract(start + rel, samples))
        starts.append((start + rel) / sr)
        ends.append((start + rel + samples.size) / sr)
        voiced.append(is_voiced(samples, sample_rate=sr, voiced_db=seg.voiced_db, fraction=seg.voiced_fraction))
    if not vectors:
        return None
    return Segments(np.array(starts), np.array(ends), np.array(voiced, dtype=bool), np.stack(vectors))


def _long_file_record(
    task: ExtractTask, segments: Segments | None, *, rate: int, channels: int, duration: float, warning: str
) -> FeatureRecord:
    """The record of a long file from its windows.

    Raises
    ------
    AudioError
        No window (the file is too short to segment), or features that are not finite.
    """
    if segments is None:
        raise AudioError(f"too short to segment: {duration:.3f} s")
    if not np.isfinite(segments.vectors).all():
        raise AudioError("features are not finite")
    vector = segments.summary_vector()
    return FeatureRecord(task.content_hash, "ok", "", rate, channels, duration, vector, warning, segments)


def _extract_segmented(task: ExtractTask, stream: AudioStream, *, spec: FeatureSpec, seg: SegmentSpec) -> FeatureRecord:
    """A long file, window by window as it decodes (memory: one window and one block)."""
    segments = _analyse_windows(stream, start=0, spec=spec, seg=seg, min_tail_s=seg.min_tail_s)
    duration = stream.frames / stream.orig_sample_rate
    stream.check_decoded()
    return _long_file_record(
        task,
        segments,
        rate=stream.orig_sample_rate,
        channels=stream.channels,
        duration=duration,
        warning="; ".join(stream.warnings),
    )


PART_S = 300.0  # audio per part of a long file: a few seconds of work, so progress moves and cores share it
PARTS_IN_PROCESS_S = 3600.0
PREROLL_S = 1.0  # decoded before (and after) a part, then dropped: the resampler settles
# Formats whose seek lands on the exact sample (PCM containers, FLAC); others stream whole.
SPLIT_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AIFC", "CAF", "FLAC"})
SPLIT_SUFFIXES = frozenset({".wav", ".wave", ".rf64", ".w64", ".aif", ".aiff", ".aifc", ".caf", ".flac"})
PROBE_BYTES = 1 << 20  # smaller files cannot hold two parts' worth of audio


@dataclass(frozen=True)
class PartResult:
    """What one part of a long file gave; :func:`merge_parts` joins a file's parts into its record."""

    task: ExtractTask
    status: str  # "ok", "error" or "retry", as FeatureRecord
    error: str
    orig_sample_rate: int = 0
    channels: int = 0
    end_frame: int = 0  # input frame where this part's decoding stopped
    frames: int = 0
    clipped: int = 0
    peak: float = 0.0
    warnings: tuple[str, ...] = ()  # from the part that reached the end of the data
    segments: Segments | None = None


def part_seconds(task: ExtractTask, seg: SegmentSpec) -> float:
    """Seconds of audio in which one part of ``task``'s file starts its windows (see :func:`plan_parts`)."""
    return task.part_windows * seg.hop_s


def plan_parts(task: ExtractTask, *, spec: FeatureSpec, seg: SegmentSpec) -> list[ExtractTask]:
    """``task`` as the parts a long file is analysed in (``[task]`` when it is not split).

    A file is split when it is a PCM or FLAC file (exact seeks) holding at
    least two parts' worth of windows, its listing stamp is known (each part
    checks it), and part starts fall on input samples. The plan depends on
    the file alone, never on the workers, so reports do not either.
    """
    if task.member or task.stamp is None or task.size < PROBE_BYTES:
        return [task]
    if os.path.splitext(task.path)[1].lower() not in SPLIT_SUFFIXES:
        return [task]
    try:
        info = sf.info(os.fsencode(task.path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return [task]  # the worker says what is wrong with it
    if info.format not in SPLIT_FORMATS or not info.samplerate:
        return [task]
    sr = spec.sample_rate
    hop = round(seg.hop_s * sr)
    per = max(1, round(PART_S / seg.hop_s))
    total = round(info.frames * sr / info.samplerate)
    n_windows = (total - round(seg.window_s * sr)) // hop + 1 if total >= round(seg.window_s * sr) else 0
    n_parts = n_windows // per
    if info.duration <= seg.over_s or n_parts < 2:
        return [task]
    preroll = round(PREROLL_S * sr)
    if not all(aligned(max(0, k * per * hop - preroll), info.samplerate, sr) for k in range(n_parts)):
        return [task]
    return [dataclasses.replace(task, part=k, n_parts=n_parts, part_windows=per) for k in range(n_parts)]


def _stamp_of(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def extract_part(task: ExtractTask, *, spec: FeatureSpec, seg: SegmentSpec) -> PartResult:
    """Windows ``part * P`` to ``(part + 1) * P - 1`` of a long file, ``P = task.part_windows``.

    The last part runs to the end of the data and adds the tail window. The
    file's stamp is checked before and after: a file rewritten meanwhile
    gives a ``retry``, as :func:`extract_one` does.
    """
    sr = spec.sample_rate
    hop, win, per = round(seg.hop_s * sr), round(seg.window_s * sr), task.part_windows
    last = task.part == task.n_parts - 1
    start = task.part * per * hop
    stop = None if last else start + (per - 1) * hop + win
    try:
        if _stamp_of(task.path) != task.stamp:
            return PartResult(task, "retry", CHANGED)
        with AudioStream(task.path, sample_rate=sr) as stream:
            # Past the data's end (a header that overstates it) the stream gives
            # less; the windows then end where the data does, as a whole read's.
            chunks = stream.span(start, stop, preroll=round(PREROLL_S * sr))
            tail = seg.min_tail_s if last else max(seg.min_tail_s, 1 / sr)  # a tail only where the data ends
            segments = _analyse_windows(chunks, start=start, spec=spec, seg=seg, min_tail_s=tail)
            warnings = stream.warnings
        if _stamp_of(task.path) != task.stamp:
            return PartResult(task, "retry", CHANGED)
    except FileNotFoundError:
        return PartResult(task, "retry", VANISHED)
    except OSError as exc:
        return PartResult(task, "retry", f"cannot read: {exc.strerror or exc}; rerun to retry")
    except AudioError as exc:
        return PartResult(task, "retry" if exc.transient else "error", str(exc))
    return PartResult(
        task,
        "ok",
        "",
        stream.orig_sample_rate,
        stream.channels,
        stream.end_frame,
        stream.frames,
        stream.clipped,
        stream.peak,
        tuple(w for w in warnings if not w.startswith("clipped")),  # clipping is summed over parts
        segments,
    )


def merge_parts(parts: Sequence[PartResult]) -> FeatureRecord:
    """The record of a long file from all its parts (any order), as :func:`extract_one` would give it."""
    parts = sorted(parts, key=lambda p: p.task.part)
    task = parts[0].task
    for status in ("retry", "error"):  # this run's failures first: they say nothing of the bytes
        bad = next((p for p in parts if p.status == status), None)
        if bad is not None:
            return FeatureRecord(task.content_hash, status, bad.error, 0, 0, 0.0, None)
    first = parts[0]
    duration = max(p.end_frame for p in parts) / first.orig_sample_rate
    frames = sum(p.frames for p in parts)
    warnings = list(dict.fromkeys(w for p in parts for w in p.warnings))  # each part that reached the end says it
    clip = clip_warning(sum(p.clipped for p in parts), frames * first.channels)
    if clip:
        warnings.append(clip)

    rate, channels, warning = first.orig_sample_rate, first.channels, "; ".join(warnings)
    pieces = [p.segments for p in parts if p.segments is not None]
    try:
        check_signal(frames, max(p.peak for p in parts))
        joined = None
        if pieces:
            joined = Segments(
                np.concatenate([g.start_s for g in pieces]),
                np.concatenate([g.end_s for g in pieces]),
                np.concatenate([g.voiced for g in pieces]),
                np.concatenate([g.vectors for g in pieces]),
            )
        return _long_file_record(task, joined, rate=rate, channels=channels, duration=duration, warning=warning)
    except AudioError as exc:
        return FeatureRecord(task.content_hash, "error", str(exc), rate, channels, duration, None, warning)


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
    if task.verify and data is not None and data.sha256 != task.content_hash:
        return _retry(task, CHANGED)
    record = _decode_and_extract(task, spec=spec, segments=segments, data=data)
    if task.verify and data is None and record.status != "retry":
        # The hash was taken when the file was listed and the decoder read it
        # again since: hash it once more (0.05 ms a clip, from the page cache)
        # so that features of other bytes never land under this key.
        try:
            now = hash_file(task.path)
        except FileNotFoundError:
            return _retry(task, VANISHED)
        except OSError as exc:
            return _retry(task, f"cannot read: {exc.strerror or exc}; rerun to retry")
        if now != task.content_hash:
            return _retry(task, CHANGED)
    return record


def _decode_and_extract(
    task: ExtractTask, *, spec: FeatureSpec, segments: SegmentSpec | None, data: MemberData | None
) -> FeatureRecord:
    source: str | BinaryIO = task.path
    if data is not None:
        source = data.spill if data.spill is not None else io.BytesIO(data.data or b"")  # type: ignore[assignment]
    try:
        with AudioStream(source, sample_rate=spec.sample_rate) as stream:
            if segments is not None and stream.declared_duration_s > segments.over_s:
                return _extract_segmented(task, stream, spec=spec, seg=segments)
            audio = stream.read_all()
    except AudioError as exc:
        return _retry(task, str(exc)) if exc.transient else _error(task, str(exc))
    if audio.samples.size < spec.n_fft:
        # Shorter than one analysis frame: the "mean over frames" would be one
        # padded frame, and nobody conveys an emotion in that time.
        need = spec.n_fft / spec.sample_rate
        return _error(task, f"too short: {audio.duration_s:.3f} s, need at least {need:.3f} s", audio)
    try:
        vector = extract(audio.samples, spec=spec)
    except Exception as exc:  # one odd file must not end the job
        log.debug("feature extraction failed for %s", task.path, exc_info=True)
        return _error(task, f"feature extraction failed: {type(exc).__name__}: {exc}", audio)
    if not np.isfinite(vector).all():
        return _error(task, "features are not finite", audio)
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
) -> list[FeatureRecord | PartResult]:
    keep_freed_memory()
    if parent_pid:
        exit_with_parent(parent_pid)
    # One BLAS thread wherever the batch runs: n workers must not fight over n
    # cores, and a multi-threaded matmul sums in another order, so features
    # (and reports) would differ in the last bit between backends.
    with threadpool_limits(limits=1):
        out: dict[ExtractTask, FeatureRecord | PartResult] = {}
        for t in tasks:
            if t.n_parts > 1 and segments is not None:
                out[t] = extract_part(t, spec=spec, seg=segments)
            elif not t.member:
                out[t] = extract_one(t, spec=spec, segments=segments)
        by_archive: dict[str, list[ExtractTask]] = {}
        for t in tasks:
            if t.member:
                by_archive.setdefault(t.path, []).append(t)
        for path, members in by_archive.items():
            wanted = {t.member: t for t in members}
            for name, data, err in read_members(Path(path), list(wanted)):
                t = wanted[name]
                # These bytes hashed fine when listed: failing to read them now is this run's problem.
                out[t] = _retry(t, err) if data is None else extract_one(t, spec=spec, segments=segments, data=data)
        return [out[t] for t in tasks]


def _n_workers(backend: str, n_jobs: int) -> int:
    if backend == "sequential":
        return 1
    return joblib.cpu_count() if n_jobs < 0 else n_jobs


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
        workers = _n_workers(backend, n_jobs)
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
    # Each part of a long file is a task of its own, dispatched first: the
    # longest work starts early instead of trailing at the end.
    batches = [[t] for t in split] + batches
    decided: dict[str, bool] = {}  # a long file is claimed (or not) once, for all its parts

    def needed(task: ExtractTask) -> bool:
        if task.content_hash not in decided:
            decided[task.content_hash] = still_needed(task) if still_needed else True
        return decided[task.content_hash]

    def pending() -> Iterator[Sequence[ExtractTask]]:
        # Consumed lazily (joblib dispatches ahead by pre_dispatch only), so the
        # filter sees what other jobs wrote while this one was running.
        for batch in batches:
            kept = [t for t in batch if needed(t)]
            if kept:
                yield kept

    remote = backend == "dask"  # the user asked for the cluster: never second-guess it
    # Parts of long files are ~0.4 s of work a part: under an hour of them is
    # done before workers would have started (bench/long_file.py).
    parts_s = sum(part_seconds(t, segments) for t in split) if segments is not None else 0.0
    small = too_small_for_workers(whole, in_process_below) and parts_s < PARTS_IN_PROCESS_S
    if not remote and (workers == 1 or len(batches) == 1 or small):
        results: Iterator[list[FeatureRecord | PartResult]] = (_extract_batch(b, spec, segments) for b in pending())
        yield from _merged(results, on_part)
        return
    with joblib.parallel_config(backend=backend, n_jobs=-1 if remote else workers):
        parallel = joblib.Parallel(return_as="generator_unordered", pre_dispatch="2 * n_jobs")
        parent = os.getpid() if backend == "loky" else 0  # loky's workers are this process's children
        results = parallel(joblib.delayed(_extract_batch)(b, spec, segments, parent) for b in pending())
        yield from (_compact(batch) for batch in _merged(results, on_part))


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
