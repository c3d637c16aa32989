"""The feature store shared by all jobs: Parquet parts, found through a per-host SQLite index.

Layout under the cache folder::

    features/<key>/_spec.json       the FeatureSpec (and segmentation) behind the key
    features/<key>/part-*.parquet   content_hash, status, error, warning, orig_sample_rate,
                                    channels, duration_s, n_segments, <one float32 column per dim>
    segments/<key>/part-*.parquet   content_hash, start_s, end_s, voiced, <dims>: long files' windows
    index/<host>.sqlite             where each hash's rows are; path -> hash; last use (batchser.cache.index;
                                    on a network file system, in the user's local cache instead)
    claims/<key>/*.claims           hashes running jobs are extracting (batchser.cache.claims)
    quarantine/                     parts (or an index) that failed their checksum, set aside

A feature row is keyed by (content hash of the file's bytes, feature key):
renamed or copied files share it, and any change of features, parameters or
segmentation misses. A file libsndfile does not recognise is decoded by FFmpeg
(:mod:`batchser.decoders`), whose samples depend on its version: its row is
filed under ``<content hash>+<decoder tag>`` (``…+ffmpeg-8.1.2-r1``), so it never
serves a job decoding with another FFmpeg, and the rows of every file libsndfile
reads keep their keys (caches written before FFmpeg decoding stay valid).

Opening a store reads no rows: a job looks up the hashes it needs, and reads
(and verifies) only the row groups holding them, so it costs what its own
files cost, not what the cache holds (``bench/cache_scale.py``).
Rows for files the bytes cannot be labelled from are kept too (a rerun does
not decode a broken file again); failures of one run (a read error, a file
that vanished or changed during the job) are never kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa

from batchser.atomic import atomic_write_text
from batchser.audio import UNRECOGNISED
from batchser.cache.claims import Claims
from batchser.cache.errors import CacheError
from batchser.cache.index import CacheIndex, Location
from batchser.cache.maintain import SMALL_ROWS, compact, folder_key, sync
from batchser.cache.parts import DamagedPartError, Parts, read_rows
from batchser.decoders import decoder_tag
from batchser.features import FeatureSpec
from batchser.segments import Segments, SegmentSpec
from batchser.storage.local import FileChangedError, hash_file
from batchser.vad import detector

__all__ = ["FeatureRecord", "FeatureStore", "FileChangedError", "hash_file", "row_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")

NO_SPEECH = "no speech"


@dataclass(frozen=True, slots=True)
class FeatureRecord:
    """What extraction produced for one file content."""

    content_hash: str
    # "ok"; "error": the bytes cannot be labelled (cached: a rerun gives the same);
    # "no speech": the voice-activity model heard none (cached, not a failure);
    # "retry": this run could not read them (I/O error, file changed), never cached.
    status: str
    error: str
    orig_sample_rate: int
    channels: int
    duration_s: float
    vector: np.ndarray | None  # float32 (dim,), None on error; a long file's: mean of its voiced windows
    warning: str = ""  # labelled, but worth a look (truncated, clipped)
    segments: Segments | None = None  # per-window results of a long file
    # What decoded the bytes: "" for libsndfile (the decoder of every format it
    # reads), else batchser.decoders.decoder_tag() (FFmpeg was asked). Part of
    # the row's key (:func:`row_key`).
    decoder: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def row_key(record: FeatureRecord) -> str:
    """The key a record's row is filed under: its content hash, ``+`` FFmpeg's tag when FFmpeg decoded it."""
    return f"{record.content_hash}+{record.decoder}" if record.decoder else record.content_hash


def _superseded(record: FeatureRecord) -> bool:
    """A libsndfile row saying "format not recognised": written before FFmpeg decoded such files."""
    return not record.decoder and record.status == "error" and record.error.startswith(UNRECOGNISED)


_META_COLUMNS = (
    "content_hash",
    "status",
    "error",
    "warning",
    "orig_sample_rate",
    "channels",
    "duration_s",
    "n_segments",
)


class FeatureStore:
    """Feature rows and the path→hash index, for one :class:`FeatureSpec`.

    Parameters
    ----------
    root : Path
        The cache folder (``cache:`` in the manifest), shared by jobs.
    spec : FeatureSpec
    segments : SegmentSpec or None
        How long files are cut; part of the key.
    flush_rows : int
        Buffered rows that trigger writing a part. ``flush_seconds`` usually
        comes first.
    flush_seconds : float
        Age of the oldest buffered row that triggers writing a part, so that an
        interrupted job loses at most this much work.
    compact_parts : int
        On close, merge the small parts (under ``SMALL_ROWS`` rows: a slow
        job's flushes) when there are at least this many.
    """

    def __init__(
        self,
        root: Path,
        spec: FeatureSpec,
        *,
        segments: SegmentSpec | None = None,
        flush_rows: int = 4096,
        flush_seconds: float = 1.0,
        compact_parts: int = 64,
    ) -> None:
        self.root = Path(root)
        self.spec = spec
        self.segment_spec = segments
        self.columns = spec.columns()
        # Segmentation changes what a long file's row holds, so it is part of the key.
        # Speech segments also depend on the voice-activity model that found them.
        self.key = spec.fingerprint() + (f"-seg{segments.fingerprint(detector())}" if segments is not None else "")
        quarantine = self.root / "quarantine"
        self._features = Parts(self.root / "features" / self.key, quarantine)
        self._segments = Parts(self.root / "segments" / self.key, quarantine)
        self._fkey = folder_key(self.root, self._features.folder)
        self._skey = folder_key(self.root, self._segments.folder)
        self._claims = Claims(self.root / "claims" / self.key)
        self.flush_rows, self.flush_seconds, self.compact_parts = flush_rows, flush_seconds, compact_parts
        self._records: dict[str, FeatureRecord] = {}  # read or written by this process
        self._used: set[str] = set()  # read from the cache by this process: their last use is recorded
        self._path_hash: dict[tuple[str, int, int, int], str] = {}  # remembered, not yet in the index
        self._pending: list[FeatureRecord] = []
        self._pending_hashes: list[tuple[str, int, int, int, str]] = []
        self._oldest_pending = 0.0
        self._last_refresh = 0.0
        self._claims_read = 0.0
        # joblib may pull the next tasks (and so call lookup) from its dispatch
        # thread while the main thread adds results.
        self._lock = threading.RLock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._index = CacheIndex(self.root)
        except OSError as exc:
            raise CacheError(f"cannot open the feature cache {self.root}: {exc.strerror or exc}") from None
        for parts in (self._features, self._segments):
            parts.remove_stale_temps()
        self._claims.remove_stale()
        self.refresh()

    # -- reading -------------------------------------------------------------
    def refresh(self) -> int:
        """Index parts written since the last call (by other jobs sharing the cache).

        Returns
        -------
        int
            Feature rows added.
        """
        with self._lock:
            return self._refresh()

    def _refresh(self) -> int:
        self._last_refresh = time.monotonic()
        self._claims.read_others()
        sync(self._index, self._segments, self._skey)  # first: feature rows refer to them
        return sync(self._index, self._features, self._fkey)

    def get_many(self, hashes: Iterable[str]) -> dict[str, FeatureRecord]:
        """The stored records of ``hashes`` (those the cache has), reading only their row groups.

        A content hash's row is its libsndfile row, or else the one FFmpeg (of
        this host's version) decoded; a libsndfile "format not recognised" row
        from before FFmpeg decoding counts as absent when PyAV is installed.
        """
        with self._lock:
            wanted = list(dict.fromkeys(hashes))
            out = {h: r for h in wanted if (r := self._records.get(h)) is not None}
            rest = [h for h in wanted if h not in out]
            if rest:
                got = self._fetch(rest)
                tag = decoder_tag()
                if tag is not None:
                    again = [h for h in rest if h not in got or _superseded(got[h])]
                    if again:
                        by_ffmpeg = self._fetch([f"{h}+{tag}" for h in again])
                        for h in again:
                            rec = by_ffmpeg.get(f"{h}+{tag}")
                            if rec is not None:
                                got[h] = rec
                            elif h in got:
                                del got[h]  # superseded: FFmpeg is asked
                self._records.update(got)
                self._used.update(row_key(r) for r in got.values())
                out.update(got)
            return out

    def get(self, content_hash: str) -> FeatureRecord | None:
        return self.get_many([content_hash]).get(content_hash)

    def lookup(self, content_hash: str, *, refresh_after_s: float = 0.25) -> FeatureRecord | None:
        """Like :meth:`get`, but on a miss looks for new parts (at most every ``refresh_after_s``).

        A job about to extract a file asks this first, so that two jobs on
        one cache do not both compute what one of them already wrote.
        """
        with self._lock:
            rec = self.get(content_hash)
            if rec is None and time.monotonic() - self._last_refresh >= refresh_after_s:
                self._refresh()
                rec = self.get(content_hash)
            return rec

    def _fetch(self, hashes: Sequence[str]) -> dict[str, FeatureRecord]:
        # A concurrent compaction may delete a part between the index lookup
        # and the read: look again (its rows are in the part that replaced it).
        for _attempt in range(5):
            try:
                return self._fetch_once(hashes)
            except FileNotFoundError:
                self._refresh()
        return {}

    def _read(
        self,
        parts: Parts,
        folder: str,
        where: dict[str, Location],
        convert: Callable[[list[str], pa.Table], Iterator[tuple[str, T]]],
    ) -> dict[str, T]:
        """``convert``'s results for the rows of ``where``, read part by part; a damaged part is set aside."""
        by_part: dict[str, list[str]] = {}
        for h, loc in where.items():
            by_part.setdefault(loc.part, []).append(h)
        out: dict[str, T] = {}
        for part, hs in by_part.items():
            groups, footer = self._index.groups(folder, part)
            try:
                table = read_rows(parts.folder / part, groups, [(where[h].row, where[h].n) for h in hs], footer=footer)
                out.update(convert(hs, table))
            except (DamagedPartError, KeyError, ValueError, TypeError, pa.ArrowException) as exc:
                parts.set_aside(parts.folder / part, f"{type(exc).__name__}: {exc}")
                self._index.forget_parts(folder, [part])
        return out

    def _fetch_once(self, hashes: Sequence[str]) -> dict[str, FeatureRecord]:
        rows = self._read(self._features, self._fkey, self._index.locate(self._fkey, hashes), self._from_table)
        found = {h: r for h, (r, n_windows) in rows.items() if not n_windows}
        long = {h: (r, n) for h, (r, n) in rows.items() if n}  # long files: their windows are read next
        if long:
            located = self._index.locate(self._skey, long)
            windows = self._read(self._segments, self._skey, located, self._segments_from_table)
            for h, (r, n) in long.items():
                segs = windows.get(h)
                if segs is None or len(segs) != n:
                    log.warning("cache row %s lacks its %d segments; it will be recomputed", h[:12], n)
                else:
                    found[h] = dataclasses.replace(r, segments=segs)
        return found

    def _from_table(self, hashes: list[str], table: pa.Table) -> Iterator[tuple[str, tuple[FeatureRecord, int]]]:
        """Each row's record (without its windows) and how many windows a long file has."""
        meta = table.select([c for c in _META_COLUMNS if c in table.column_names]).to_pydict()
        meta.setdefault("warning", [""] * table.num_rows)
        matrix = np.column_stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in self.columns]
        )
        n_segments = meta.get("n_segments") or [0] * table.num_rows
        for i, h in enumerate(meta["content_hash"]):
            if h != hashes[i]:
                raise DamagedPartError(f"row for {hashes[i][:12]} holds {h[:12]}")  # the index and the part disagree
            ok = meta["status"][i] == "ok"
            content_hash, _, decoder = h.partition("+")
            record = FeatureRecord(
                content_hash=content_hash,
                decoder=decoder,
                status=meta["status"][i],
                error=meta["error"][i] or "",
                warning=meta["warning"][i] or "",
                orig_sample_rate=int(meta["orig_sample_rate"][i] or 0),
                channels=int(meta["channels"][i] or 0),
                duration_s=float(meta["duration_s"][i] or 0.0),
                vector=matrix[i] if ok else None,
            )
            yield h, (record, int(n_segments[i] or 0))

    def _segments_from_table(self, hashes: list[str], table: pa.Table) -> Iterator[tuple[str, Segments]]:
        d = table.select(["content_hash", "start_s", "end_s", "voiced"]).to_pydict()
        prob = table.column("speech_prob").to_numpy() if "speech_prob" in table.column_names else None
        matrix = np.column_stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in self.columns]
        )
        rows: dict[str, list[int]] = {}
        for i, h in enumerate(d["content_hash"]):
            rows.setdefault(h, []).append(i)
        for h in hashes:
            idx = rows.get(h, [])
            order = sorted(idx, key=lambda i: d["start_s"][i])
            yield (
                h,
                Segments(
                    start_s=np.array([d["start_s"][i] for i in order], dtype=np.float64),
                    end_s=np.array([d["end_s"][i] for i in order], dtype=np.float64),
                    voiced=np.array([d["voiced"][i] for i in order], dtype=bool),
                    vectors=matrix[order],
                    speech_prob=None if prob is None else prob[order].astype(np.float32),
                ),
            )

    def _segments_table(self, records: list[FeatureRecord]) -> pa.Table:
        segs = [(row_key(r), r.segments) for r in records if r.segments is not None]
        matrix = np.concatenate([g.vectors for _, g in segs]).astype(np.float32)
        cols: dict[str, pa.Array] = {
            "content_hash": pa.array([h for h, g in segs for _ in range(len(g))], pa.string()),  # row keys
            "start_s": pa.array(np.concatenate([g.start_s for _, g in segs]), pa.float64()),
            "end_s": pa.array(np.concatenate([g.end_s for _, g in segs]), pa.float64()),
            "voiced": pa.array(np.concatenate([g.voiced for _, g in segs]), pa.bool_()),
        }
        if all(g.speech_prob is not None for _, g in segs):  # speech segments (windows have none)
            cols["speech_prob"] = pa.array(np.concatenate([g.speech_prob for _, g in segs]), pa.float32())
        for j, name in enumerate(self.columns):
            cols[name] = pa.array(matrix[:, j], pa.float32())
        return pa.table(cols)

    def release(self) -> None:
        """Forget the records read or written so far (not those still to be written).

        A job labelling an archive a chunk at a time calls this after each
        chunk, so that memory holds a chunk's records, not the archive's;
        their uses are recorded now rather than at :meth:`close`.
        """
        with self._lock:
            self._records = {r.content_hash: r for r in self._pending}
            if self._used:
                self._index.mark_used(self._fkey, self._used)
                self._used.clear()

    def __len__(self) -> int:
        """Feature rows in the cache for this key (an index count: no part is read)."""
        return self._index.count(self._fkey)

    def known_hash(self, path: str, stamp: tuple[int, int, int]) -> str | None:
        """Content hash seen before for this exact path and (size, mtime_ns, ctime_ns)."""
        with self._lock:
            return self._path_hash.get((path, *stamp)) or self._index.path_hash(path, stamp)

    def claim(self, content_hash: str) -> bool:
        """Take ``content_hash`` for extraction by this job.

        Returns
        -------
        bool
            False when it is already in the store (after a fresh look) or a
            live job sharing the cache has claimed it: extract it only on True.
        """
        with self._lock:
            if self.lookup(content_hash) is not None:
                return False
            now = time.monotonic()
            if now - self._claims_read >= 0.05:  # cheap: a few appended lines per file
                self._claims.read_others()
                self._claims_read = now
            if self._claims.held_by_live_job(content_hash):
                return False
            return self._claims.add(content_hash)

    def held_elsewhere(self, content_hash: str) -> bool:
        """Whether a live job sharing the cache is still extracting ``content_hash``."""
        with self._lock:
            return self._claims.held_by_live_job(content_hash)

    def claimants(self) -> list[Path]:
        """Claim files of the other jobs whose work this one has met."""
        with self._lock:
            return self._claims.waiting_for()

    # -- writing ---------------------------------------------------------------
    def remember_hash(self, path: str, stamp: tuple[int, int, int], content_hash: str) -> None:
        key = (path, *stamp)
        with self._lock:
            if self._path_hash.get(key) != content_hash:
                self._path_hash[key] = content_hash
                self._pending_hashes.append((*key, content_hash))
                self._maybe_flush()

    def add(self, records: Iterable[FeatureRecord]) -> None:
        """Keep ``records`` (written out with the next flush); "retry" records are never kept."""
        with self._lock:
            for r in records:
                if r.status == "retry" or r.content_hash in self._records:
                    continue  # a per-run failure, or already here
                self._records[r.content_hash] = r
                self._pending.append(r)
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        n = len(self._pending) + len(self._pending_hashes)
        if not n:
            return
        now = time.monotonic()
        if not self._oldest_pending:
            self._oldest_pending = now
        if n >= self.flush_rows or now - self._oldest_pending >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as new parts and index them."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._pending_hashes:
            self._index.remember_paths(self._pending_hashes)
            self._pending_hashes = []
            self._path_hash.clear()
        if self._pending:
            # Out of the buffer before writing: a signal that lands after the rename
            # (or a failing write) must not have the same rows written twice; at
            # worst they are recomputed by the next run.
            batch, self._pending = self._pending, []
            self._write_spec()
            if any(r.segments is not None for r in batch):
                # Before the rows naming them: a reader never meets a row without its windows.
                path, data = self._segments.write(self._segments_table(batch))
                self._index.add_part(self._skey, path.name, data, batch=True)
            path, data = self._features.write(self._to_table(batch))
            self._index.add_part(self._fkey, path.name, data, batch=True)
        self._oldest_pending = 0.0

    def _write_spec(self) -> None:
        spec_file = self._features.folder / "_spec.json"  # "_": pyarrow dataset readers skip it
        if not spec_file.exists():
            info = self.spec.to_dict() | {"key": self.key}
            if self.segment_spec is not None:
                info["segments"] = asdict(self.segment_spec)
            try:
                self._features.folder.mkdir(parents=True, exist_ok=True)
                atomic_write_text(spec_file, json.dumps(info, indent=2) + "\n")
            except OSError as exc:
                raise CacheError(
                    f"cannot write to the feature cache {spec_file}: {exc.strerror or exc}"
                    f"{' (the disk is full)' if exc.errno == errno.ENOSPC else ''}"
                ) from None

    def _to_table(self, records: list[FeatureRecord]) -> pa.Table:
        dim = self.spec.dim
        matrix = np.full((len(records), dim), np.nan, dtype=np.float32)
        valid = np.zeros(len(records), dtype=bool)
        for i, r in enumerate(records):
            if r.vector is not None:
                matrix[i] = r.vector
                valid[i] = True
        cols: dict[str, pa.Array] = {
            "content_hash": pa.array([row_key(r) for r in records], pa.string()),  # with FFmpeg's tag, if it decoded
            "status": pa.array([r.status for r in records], pa.string()),
            "error": pa.array([r.error for r in records], pa.string()),
            "warning": pa.array([r.warning for r in records], pa.string()),
            "orig_sample_rate": pa.array([r.orig_sample_rate for r in records], pa.int32()),
            "channels": pa.array([r.channels for r in records], pa.int32()),
            "duration_s": pa.array([r.duration_s for r in records], pa.float64()),
            "n_segments": pa.array([len(r.segments) if r.segments is not None else 0 for r in records], pa.int32()),
        }
        for j, name in enumerate(self.columns):
            cols[name] = pa.array(matrix[:, j], pa.float32(), mask=~valid)
        return pa.table(cols)

    def close(self) -> None:
        """Write what is buffered, record today's uses, merge small parts when many have piled up."""
        with self._lock:
            self.flush()
            self._claims.release()
            if self._used:
                self._index.mark_used(self._fkey, self._used)
                self._used.clear()
            for parts, folder in ((self._segments, self._skey), (self._features, self._fkey)):
                # Never wait: another job merging this folder will leave it tidy.
                compact(
                    self._index,
                    parts,
                    folder,
                    min_small=self.compact_parts,
                    small_rows=SMALL_ROWS,
                    wait=False,
                    reclaim=False,
                )
            self._index.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        # Flush even on Ctrl-C: what was extracted is kept for the resumed run.
        try:
            self.flush()
            if exc[0] is None:
                self.close()
            else:
                # Its rows indexed in memory, written; never in place of the interruption itself
                # (the parts are on disk: the next job indexes them).
                with contextlib.suppress(CacheError):
                    self._index.close()
        finally:
            self._claims.release()
