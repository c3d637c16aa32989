"""Parallel feature extraction with joblib: batches of files per task.

The engine turns :class:`ExtractTask` records into :class:`FeatureRecord`
records. It never raises for a bad file: every failure becomes a record with
``status="error"`` and a reason, so one file cannot stop a job.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import joblib
import numpy as np
from threadpoolctl import threadpool_limits

from batchser.audio import Audio, AudioError, load
from batchser.cache import FeatureRecord
from batchser.features import FeatureSpec, extract

__all__ = ["ExtractTask", "default_batch_size", "extract_one", "run_tasks"]

log = logging.getLogger(__name__)

IN_PROCESS_BELOW = 32


@dataclass(frozen=True)
class ExtractTask:
    """One file to decode and analyse; ``content_hash`` keys its cache row."""

    path: str
    content_hash: str


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


def extract_one(task: ExtractTask, *, spec: FeatureSpec) -> FeatureRecord:
    """Decode, resample and analyse one file; failures become error records."""
    try:
        audio = load(task.path, sample_rate=spec.sample_rate)
    except AudioError as exc:
        return _error(task, str(exc))
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


def _extract_batch(tasks: Sequence[ExtractTask], spec: FeatureSpec) -> list[FeatureRecord]:
    # One BLAS thread wherever the batch runs: n workers must not fight over n
    # cores, and a multi-threaded matmul sums in another order, so features
    # (and reports) would differ in the last bit between backends.
    with threadpool_limits(limits=1):
        return [extract_one(t, spec=spec) for t in tasks]


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


def run_tasks(
    tasks: Sequence[ExtractTask],
    *,
    spec: FeatureSpec,
    backend: str = "loky",
    n_jobs: int = -1,
    batch_size: int | None = None,
    in_process_below: int = IN_PROCESS_BELOW,
    still_needed: Callable[[ExtractTask], bool] | None = None,
) -> Iterator[list[FeatureRecord]]:
    """Extract features for ``tasks``, yielding each finished batch as it completes.

    Parameters
    ----------
    tasks : sequence of ExtractTask
    spec : FeatureSpec
    backend : str
        A joblib backend name (``loky``, ``threading``, ``dask``…) or
        ``sequential`` for in-process work.
    n_jobs : int
        Workers; -1 for all cores.
    batch_size : int or None
        Files per task; None for :func:`default_batch_size`.
    in_process_below : int
        Fewer tasks than this run in this process, without starting workers.
    still_needed : callable or None
        Asked for each task just before its batch is dispatched; tasks it
        rejects are dropped (another job has meanwhile done them).

    Yields
    ------
    list of FeatureRecord
        One batch at a time, in completion order (not task order).
    """
    if not tasks:
        return
    workers = _n_workers(backend, n_jobs)
    size = batch_size or default_batch_size(len(tasks), workers)
    batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    if still_needed is not None:
        # Batches (contiguous runs of sorted paths) in random order: two jobs
        # sharing a cache then rarely work on the same batch at once, and each
        # skips what the other has written. In path order they would compute
        # the same files in lockstep. Results are keyed by content hash, so
        # the order changes nothing in the reports.
        random.shuffle(batches)

    def pending() -> Iterator[Sequence[ExtractTask]]:
        # Consumed lazily (joblib dispatches ahead by pre_dispatch only), so the
        # filter sees what other jobs wrote while this one was running.
        for batch in batches:
            kept = [t for t in batch if still_needed(t)] if still_needed else batch
            if kept:
                yield kept

    # Starting worker processes (each imports librosa) costs about as much as
    # extracting ~100 short files; below that, in-process is faster.
    if workers == 1 or len(batches) == 1 or len(tasks) < in_process_below:
        for batch in pending():
            yield _extract_batch(batch, spec)
        return
    with joblib.parallel_config(backend=backend, n_jobs=workers):
        parallel = joblib.Parallel(return_as="generator_unordered", pre_dispatch="2 * n_jobs")
        yield from parallel(joblib.delayed(_extract_batch)(b, spec) for b in pending())
