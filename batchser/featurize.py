"""The features stage of a job: each file's content hash, then its cached record or a fresh extraction.

Files are hashed (or their hash found by their listing stamp), looked up in the
shared cache, and the rest extracted on the job's executor; a file another job
sharing the cache is extracting is waited for (and taken over if that job
dies), never extracted twice.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from tqdm import tqdm

from batchser.cache import CLAIM_STALE_S, FeatureRecord, FeatureStore
from batchser.discover import SourceFile
from batchser.engine import Executor, ExtractTask, open_executor, part_seconds, run_tasks
from batchser.hashing import content_hashes, progress_bar, text_path
from batchser.manifest import Manifest
from batchser.outcome import FileOutcome
from batchser.segments import cut_key
from batchser.speakers import SpeakerTurns
from batchser.tasks import CHANGED, VANISHED, ReadHashed, retry_record

__all__ = ["Counts", "Executors", "file_features"]

log = logging.getLogger(__name__)


class Counts(Protocol):
    """Where the stage counts files: a job's summary."""

    n_cached: int
    n_extracted: int
    per_worker: Counter[str]  # files each Dask worker extracted


class Executors:
    """The job's executor, opened on first use (a fully cached run starts no workers or cluster)."""

    def __init__(self, stack: contextlib.ExitStack, manifest: Manifest) -> None:
        self._stack, self._engine = stack, manifest.engine
        self._executor: Executor | None = None

    def get(self) -> Executor:
        if self._executor is None:
            e = self._engine
            self._executor = self._stack.enter_context(
                open_executor(e.backend, n_jobs=e.n_jobs, scheduler=e.scheduler, connect_timeout_s=e.connect_timeout_s)
            )
        return self._executor


def file_features(
    manifest: Manifest,
    files: Sequence[SourceFile],
    store: FeatureStore,
    counts: Counts,
    *,
    executors: Executors,
    bar: tqdm | None = None,
    hash_bar: tqdm | None = None,
    lap: Callable[[str], None] | None = None,
    turns: SpeakerTurns | None = None,
) -> list[FileOutcome]:
    """Each file's content hash and feature record: from the cache, or extracted (and cached).

    Parameters
    ----------
    manifest : Manifest
    files : sequence of SourceFile
        A chunk of the job's files.
    store : FeatureStore
    counts : Counts
        Files found in the cache and extracted are added to it.
    executors : Executors
        Opened on the first file to extract.
    bar, hash_bar : tqdm or None
        The job's bars of files extracted and hashed, advanced by this chunk's files.
    lap : callable or None
        Called with "hash" once the files are hashed (the job's stage clock).
    turns : SpeakerTurns or None
        Speaker turns: a long file's speech segments are cut where its speaker
        changes, and cached under a key of its content and those points
        (:func:`batchser.segments.cut_key`).

    Returns
    -------
    list of FileOutcome
        In the order of ``files``; a record's ``content_hash`` is its cache key.
    """
    hashes = content_hashes(files, store, progress=False, bar=hash_bar)
    if lap is not None:
        lap("hash")
    cutting = turns is not None and bool(turns) and store.segment_spec is not None and store.segment_spec.speech
    cuts: dict[str, tuple[float, ...]] = {}  # cache key -> change points, for files whose turns cut segments
    keys: list[str] = []  # each file's cache key; an object its worker hashes as it reads it: a placeholder
    for f, (h, err) in zip(files, hashes, strict=True):
        if not h and not err:
            keys.append(_placeholder(f))
            continue
        got = turns.for_file(f) if cutting and h else None  # type: ignore[union-attr]
        points = got.change_points() if got is not None else ()
        keys.append(cut_key(h, points) if h else "")
        if points:
            cuts[keys[-1]] = points
    todo: dict[str, tuple[SourceFile, str]] = {}  # cache key -> one file having it, and its content hash
    waiting: Counter[str] = Counter()
    cached = store.get_many(k for k in keys if k and not _is_placeholder(k))  # one read per part, as needed
    for f, (h, _err), k in zip(files, hashes, keys, strict=True):
        if k and k not in cached:
            todo.setdefault(k, (f, h))
            waiting[k] += 1
    tasks = [
        ExtractTask(
            str(f.path),
            k,
            f.member,
            max(f.size, 0),
            verify=True,
            stamp=f.stamp,
            cuts=cuts.get(k, ()),
            source_hash=h if h and k != h else "",
            read_hash=_is_placeholder(k),
        )
        for k, (f, h) in todo.items()
    ]
    retry: dict[str, FeatureRecord] = {}  # this run's read failures: reported, never cached
    hashed: dict[str, str] = {}  # placeholder -> the hash its worker read
    eng = manifest.engine
    extracted: set[str] = set()
    deferred: list[ExtractTask] = []  # claimed by another job sharing the cache
    credited: dict[str, float] = {}  # progress given for the finished parts of long files
    parts_s: dict[str, float] = {}  # and their seconds of audio
    audio_s = [0.0]
    shown = bar if bar is not None else progress_bar(len(files), "extracting", False)
    shown.update(len(files) - sum(waiting.values()))
    with contextlib.nullcontext(shown) as bar:

        def still_needed(task: ExtractTask) -> bool:
            if task.read_hash:  # its hash is not known yet: nothing to claim
                return True
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
                on_hashed=on_hashed,
                per_worker=counts.per_worker,
            )
            for batch in batches:
                store.add(batch)
                counts.n_extracted += len(batch)
                extracted.update(r.content_hash for r in batch)
                retry.update((r.content_hash, r) for r in batch if r.status == "retry")
                audio_s[0] += sum(r.duration_s for r in batch) - sum(parts_s.pop(r.content_hash, 0.0) for r in batch)
                bar.set_postfix_str(f"{audio_s[0] / 3600:.2f} h audio", refresh=False)
                bar.update(sum(waiting[r.content_hash] - credited.pop(r.content_hash, 0.0) for r in batch))

        def on_hashed(answer: ReadHashed) -> None:
            rec, key = answer.record, answer.key
            if rec.status == "retry":  # read failed: the hash is still unknown
                retry[key] = rec
            else:
                f, _ = todo[key]
                hashed[key] = rec.content_hash
                store.remember_hash(text_path(f.name), f.stamp, rec.content_hash)
                if store.get(rec.content_hash) is None:  # the same bytes under another name may be cached already
                    store.add([rec])
                counts.n_extracted += 1  # analysed by its worker either way
                extracted.add(rec.content_hash)
            bar.update(waiting[key])

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
    counts.n_cached += sum(1 for k in keys if k and not _is_placeholder(k) and k not in extracted)
    out = []
    for f, (h, err), k in zip(files, hashes, keys, strict=True):
        if _is_placeholder(k):
            h = hashed.get(k, "")
            out.append(FileOutcome(f, h, store.get(h) if h else retry.get(k)))
        elif not h and f.remote and _this_run(err):  # an object not read now: a retry row, as a worker's failed read
            out.append(FileOutcome(f, "", retry_record(_task_of(f), err)))
        else:
            out.append(FileOutcome(f, h, (store.get(k) or retry.get(k)) if k else None, err))
    return out


def _placeholder(f: SourceFile) -> str:
    """What names an object's task until its worker has hashed it."""
    return f"?{f.path}"


def _is_placeholder(key: str) -> bool:
    return key.startswith("?")


def _this_run(error: str) -> bool:
    """Whether a hashing error is this run's (vanished, changed, unreadable now), not the file's."""
    return error.startswith("cannot read:") or error in (VANISHED, CHANGED)


def _task_of(f: SourceFile) -> ExtractTask:
    return ExtractTask(str(f.path), "", f.member, max(f.size, 0), stamp=f.stamp)
