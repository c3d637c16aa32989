"""The Parquet feature store shared by all jobs.

Layout under the cache folder::

    hashes/part-*.parquet                  path, size, mtime_ns, ctime_ns -> content_hash
    features/<fingerprint>/_spec.json      the FeatureSpec behind the fingerprint
    features/<fingerprint>/part-*.parquet  content_hash, status, error, orig_sample_rate,
                                           channels, duration_s, <one float32 column per dim>
    quarantine/                            parts that failed their checksum, set aside

A feature row is keyed by (content hash of the file's bytes, feature fingerprint):
renamed or copied files share it, and any change of features or parameters
misses. Parts are written whole to a dot-temp file and renamed, so readers
(plain ``pandas.read_parquet`` on the folder works) never see a partial part;
each part's name carries the SHA-256 of its bytes, checked on every read.
Rows for files the bytes cannot be labelled from are kept too (a rerun does not
decode a broken file again); failures of one run (a read error, a file that
vanished or changed during the job) are never kept.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchser.atomic import atomic_write_text, fsync_dir
from batchser.features import FeatureSpec
from batchser.segments import Segments, SegmentSpec

__all__ = ["CLAIM_STALE_S", "CacheError", "FeatureRecord", "FeatureStore", "FileChangedError", "hash_file"]

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20
_hash_buffers = threading.local()


CLAIM_STALE_S = 30.0  # a claim file whose heartbeat has not moved for this long belongs to a dead job


class CacheError(RuntimeError):
    """The feature cache cannot be written (full disk, read-only folder)."""


class FileChangedError(OSError):
    """A file's size or modification time moved while it was being read."""


def hash_file(path: str | Path, *, expect: tuple[int, int, int] | None = None) -> str:
    """SHA-256 of a file's bytes, hex.

    Parameters
    ----------
    path : str or Path
    expect : (size, mtime_ns, ctime_ns) or None
        What the file was when it was listed. The hash is refused unless the
        open file has them before and after the read: the path index
        stores the hash under them, and a hash of other bytes there would be
        trusted by every later job.

    Raises
    ------
    FileChangedError
        The file is not (or no longer) what ``expect`` says.
    OSError
        It cannot be read.
    """
    # Into one buffer per thread: read(1 MiB) allocates a fresh 1 MiB per file
    # and shrinks it to the file's size (5 % slower on 2-second clips).
    buf = getattr(_hash_buffers, "view", None)
    if buf is None:
        buf = _hash_buffers.view = memoryview(bytearray(_HASH_CHUNK))
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        before = os.fstat(fh.fileno()) if expect is not None else None
        while n := fh.readinto(buf):
            h.update(buf[:n])
        if expect is not None:
            after = os.fstat(fh.fileno())
            if any((st.st_size, st.st_mtime_ns, st.st_ctime_ns) != expect for st in (before, after)):  # type: ignore[union-attr]
                raise FileChangedError(f"{path} changed while it was being read")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class FeatureRecord:
    """What extraction produced for one file content."""

    content_hash: str
    # "ok"; "error": the bytes cannot be labelled (cached: a rerun gives the same);
    # "retry": this run could not read them (I/O error, file changed), never cached.
    status: str
    error: str
    orig_sample_rate: int
    channels: int
    duration_s: float
    vector: np.ndarray | None  # float32 (dim,), None on error; a long file's: mean of its voiced windows
    warning: str = ""  # labelled, but worth a look (truncated, clipped)
    segments: Segments | None = None  # per-window results of a long file

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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


# part-<time ns>-<pid>-<first 32 hex of the SHA-256 of the file's bytes>.parquet:
# the checksum travels with the part in the one rename that publishes it.
# Parquet pages carry no checksum, so without it a flipped bit is a wrong label.
_PART_NAME = re.compile(r"^part-\d{20}-\d+-(?P<sha>[0-9a-f]{32})\.parquet$")
_MAX_PART_BYTES = 4 << 30  # far above any part this store writes (4,096 rows)


def _read_verified(path: Path) -> bytes | None:
    """The bytes of part ``path`` when they match the checksum in its name, else None.

    Opened without following links and without blocking, and read only when
    it is a regular file: a FIFO or device named like a part must not hang a job.

    Raises
    ------
    FileNotFoundError
        The part is gone (a concurrent compaction removed it).
    """
    m = _PART_NAME.match(path.name)
    if m is None:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_PART_BYTES:
            return None
        data = fh.read()
    return data if hashlib.sha256(data).hexdigest()[:32] == m["sha"] else None


def _parse_part(data: bytes) -> pa.Table:
    # ParquetFile, not pq.read_table: the latter goes through pyarrow.dataset,
    # which imports pandas (0.3 s per job with its teardown) to read one file.
    with pq.ParquetFile(pa.BufferReader(data)) as f:
        return f.read()


class _Parts:
    """A folder of immutable, checksummed Parquet parts, appended by atomic renames.

    A part that fails its checksum or does not parse is moved to
    ``<cache>/quarantine/`` with a warning naming it, and its rows are simply
    missing (so recomputed). Files this store did not write (other names,
    folders, FIFOs, links) are never opened; a ``part-*`` among them is named
    in a warning once.
    """

    def __init__(self, folder: Path, quarantine: Path) -> None:
        self.folder = folder
        self.quarantine = quarantine
        self.seen: set[str] = set()  # parts already read (or set aside) by this process

    def list(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        out = []
        for entry in os.scandir(self.folder):
            if not entry.name.startswith("part-"):
                continue
            if _PART_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                out.append(Path(entry.path))
            elif entry.name not in self.seen:
                self.seen.add(entry.name)
                log.warning(
                    "ignoring %s in the feature cache: not a part batchser wrote (parts are regular files named "
                    "part-<time>-<pid>-<checksum>.parquet; caches from before checksums are recomputed); "
                    "move it away",
                    entry.path,
                )
        return sorted(out)

    def read_new(self) -> Iterator[pa.Table]:
        """Parts not read before by this process (all of them, the first time)."""
        # A concurrent compaction may delete a part we listed: list again and go on.
        for _attempt in range(5):
            missing = False
            for p in self.list():
                if p.name in self.seen:
                    continue
                try:
                    table = self._read(p)
                except FileNotFoundError:
                    missing = True
                    continue
                self.seen.add(p.name)
                if table is not None:
                    yield table
            if not missing:
                return

    def _read(self, path: Path) -> pa.Table | None:
        """The part's table, or None after quarantining a damaged one."""
        data = _read_verified(path)
        reason = "its bytes do not match the checksum in its name"
        if data is not None:
            try:
                return _parse_part(data)
            except (pa.ArrowException, OSError, ValueError) as exc:
                reason = f"it does not parse ({exc})"
        self._set_aside(path, reason)
        return None

    def _set_aside(self, path: Path, reason: str) -> None:
        if not path.exists():
            raise FileNotFoundError(path)
        target = self.quarantine / f"{path.parent.name}-{path.name}"
        try:
            self.quarantine.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError as exc:
            log.warning("damaged cache part %s (%s) could not be moved aside: %s", path, reason, exc.strerror)
            return
        log.warning("damaged cache part %s: %s; moved to %s, its rows will be recomputed", path, reason, target)

    def remove_stale_temps(self, *, older_than_s: float = 3600.0) -> None:
        """Delete temp files left by a killed writer (a live one renames within seconds)."""
        if not self.folder.is_dir():
            return
        cutoff = time.time() - older_than_s
        for p in self.folder.glob(".part-*.tmp"):
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()

    def write(self, table: pa.Table) -> Path:
        tmp = self.folder / f".part-{uuid.uuid4().hex[:12]}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                # No dictionary encoding: float features and hashes hardly repeat,
                # so it costs 60 % of the write time and makes parts 40 % larger.
                pq.write_table(table, tmp, compression="zstd", use_dictionary=False)
                with open(tmp, "rb") as fh:
                    data = fh.read()
                    os.fsync(fh.fileno())
                digest = hashlib.sha256(data).hexdigest()[:32]
                final = self.folder / f"part-{time.time_ns():020d}-{os.getpid()}-{digest}.parquet"
                os.replace(tmp, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            fsync_dir(self.folder)
        except OSError as exc:
            raise CacheError(
                f"cannot write to the feature cache {self.folder}: {exc.strerror or exc}"
                f"{' (the disk is full)' if exc.errno == errno.ENOSPC else ''}"
            ) from None
        self.seen.add(final.name)
        return final

    def compact(self, *, min_parts: int) -> None:
        """Merge all parts into one when there are at least ``min_parts``.

        Held under an exclusive lock so two jobs never compact at once; the
        merged part is renamed in before the old ones are removed, and readers
        drop duplicate keys, so a reader in between sees every row. A damaged
        part is quarantined, not merged.
        """
        parts = self.list()
        if len(parts) < min_parts:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another job is compacting
            parts = self.list()
            if len(parts) < min_parts:
                return
            tables, merged_parts = [], []
            for p in parts:
                with contextlib.suppress(FileNotFoundError):
                    table = self._read(p)
                    if table is not None:
                        tables.append(table)
                        merged_parts.append(p)
            if not tables:
                return
            merged = self.write(pa.concat_tables(tables, promote_options="default"))
            self.seen.add(merged.name)
            for p in merged_parts:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            log.info("compacted %d parts in %s", len(merged_parts), self.folder)


def _dead_here(claim_file: Path) -> bool:
    """Whether a claim file's job ran on this host under a pid that no longer exists.

    Claim files are named ``<host>-<pid>-<random>.claims``. A job on another
    host, or one whose pid is alive (even if reused), counts as live until its
    heartbeat goes stale; at worst a file is then extracted twice.
    """
    parts = claim_file.stem.rsplit("-", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = parts[1]
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


class _Claims:
    """Which content hashes each running job is extracting, so others wait instead of repeating them.

    Each job appends the hashes it is about to extract to its own file in
    ``claims/<fingerprint>/`` and touches it every few seconds while it runs;
    a file not touched for ``stale_s`` belongs to a job that died, and its
    claims no longer count (at once when that job ran on this host and its
    process is gone). The file is removed when the job closes the store,
    after its last part is written.
    """

    def __init__(self, folder: Path, *, heartbeat_s: float = 2.0, stale_s: float = CLAIM_STALE_S) -> None:
        self.folder = folder
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.own = folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.claims"
        self._fh: IO[str] | None = None
        self._offsets: dict[Path, int] = {}
        self._owner: dict[str, Path] = {}  # hash -> claim file of another job
        self._beats: dict[Path, tuple[float, float]] = {}  # claim file -> (mtime, when we saw it change)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _open(self) -> IO[str]:
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.own, "a", encoding="ascii")  # noqa: SIM115 - kept open for the job's life
            self._beat = threading.Thread(target=self._heartbeat, name="batchser-claims", daemon=True)
            self._beat.start()
        return self._fh

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(self.own)

    def add(self, content_hash: str) -> None:
        try:
            fh = self._open()
            fh.write(content_hash + "\n")
            fh.flush()
        except OSError as exc:
            raise CacheError(
                f"cannot write the claim file {self.own}: {exc.strerror or exc}"
                f"{' (the disk is full)' if exc.errno == errno.ENOSPC else ''}"
            ) from None

    def read_others(self) -> None:
        if not self.folder.is_dir():
            return
        for p in self.folder.glob("*.claims"):
            if p == self.own:
                continue
            with contextlib.suppress(OSError), open(p, encoding="ascii") as fh:
                fh.seek(self._offsets.get(p, 0))
                chunk = fh.read()
                complete = chunk[: chunk.rfind("\n") + 1]  # a line being written is read next time
                self._offsets[p] = self._offsets.get(p, 0) + len(complete)
                for h in complete.split():
                    self._owner.setdefault(h, p)

    def held_by_live_job(self, content_hash: str) -> bool:
        owner = self._owner.get(content_hash)
        if owner is None:
            return False
        if _dead_here(owner):
            return False  # killed on this machine: no need to wait for its heartbeat to go stale
        try:
            mtime = owner.stat().st_mtime
        except FileNotFoundError:
            return False  # its job finished (its parts are written) or was cleaned up
        # Staleness on our own clock: the heartbeat must *move* the mtime. Comparing it with
        # our wall clock alone fails when the other host's clock is ahead (a claim that
        # looks fresh forever) or behind.
        now = time.monotonic()
        seen = self._beats.get(owner)
        if seen is None or seen[0] != mtime:
            self._beats[owner] = (mtime, now)
            seen = self._beats[owner]
        old_by_wall = 0 <= time.time() - mtime >= self.stale_s
        unchanged = now - seen[1] >= self.stale_s
        return not (old_by_wall or unchanged)

    def waiting_for(self) -> list[Path]:
        """The claim files of other jobs this job has seen, for a message saying what it waits for."""
        return sorted(set(self._owner.values()))

    def remove_stale(self, *, older_than_s: float = 3600.0) -> None:
        if self.folder.is_dir():
            cutoff = time.time() - older_than_s
            for p in self.folder.glob("*.claims"):
                with contextlib.suppress(OSError):
                    if p.stat().st_mtime < cutoff:
                        p.unlink()

    def release(self) -> None:
        self._stop.set()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            with contextlib.suppress(FileNotFoundError):
                self.own.unlink()


class FeatureStore:
    """Feature rows and the path→hash index, for one :class:`FeatureSpec`.

    Parameters
    ----------
    root : Path
        The cache folder (``cache:`` in the manifest), shared by jobs.
    spec : FeatureSpec
    flush_rows : int
        Buffered rows that trigger writing a part. ``flush_seconds`` usually
        comes first; a high bound keeps parts few (each costs a file write,
        and 64 of them a compaction that reads every part back).
    flush_seconds : float
        Age of the oldest buffered row that triggers writing a part, so that an
        interrupted job loses at most this much work.
    compact_parts : int
        On close, merge the parts when there are at least this many.
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
        self.key = spec.fingerprint() + (f"-seg{segments.fingerprint()}" if segments is not None else "")
        quarantine = self.root / "quarantine"
        self._features = _Parts(self.root / "features" / self.key, quarantine)
        self._segments = _Parts(self.root / "segments" / self.key, quarantine)
        self._claims = _Claims(self.root / "claims" / self.key)
        self._segment_rows: dict[str, Segments] = {}
        self._hashes = _Parts(self.root / "hashes", quarantine)
        self.flush_rows, self.flush_seconds, self.compact_parts = flush_rows, flush_seconds, compact_parts
        self._records: dict[str, FeatureRecord] = {}
        self._path_hash: dict[tuple[str, int, int, int], str] = {}
        self._pending: list[FeatureRecord] = []
        self._pending_hashes: list[tuple[str, int, int, int, str]] = []
        self._oldest_pending = 0.0
        self._last_refresh = 0.0
        self._claims_read = 0.0
        # joblib may pull the next tasks (and so call lookup) from its dispatch
        # thread while the main thread adds results.
        self._lock = threading.RLock()
        for parts in (self._features, self._segments, self._hashes):
            parts.remove_stale_temps()
        self._claims.remove_stale()
        self.refresh()
        log.debug("cache %s: %d feature rows, %d known paths", self.root, len(self._records), len(self._path_hash))

    # -- reading -------------------------------------------------------------
    def refresh(self) -> int:
        """Read parts written since the last call (by other jobs sharing the cache).

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
        for table in self._hashes.read_new():
            d = table.to_pydict()
            if "ctime_ns" not in d:
                continue  # written before the index knew ctimes: not enough to trust
            for p, s, m, c, h in zip(
                d["path"], d["size"], d["mtime_ns"], d["ctime_ns"], d["content_hash"], strict=True
            ):
                self._path_hash.setdefault((p, s, m, c), h)
        before = len(self._records)
        # Segments first: they are written before the rows that refer to them.
        for table in self._segments.read_new():
            self._segment_rows.update(self._segments_from_table(table))
        for table in self._features.read_new():
            self._records.update(self._from_table(table))
        return len(self._records) - before

    def lookup(self, content_hash: str, *, refresh_after_s: float = 0.25) -> FeatureRecord | None:
        """Like :meth:`get`, but on a miss looks for new parts (at most every ``refresh_after_s``).

        A job about to extract a file asks this first, so that two jobs on
        one cache do not both compute what one of them already wrote.
        """
        with self._lock:
            rec = self._records.get(content_hash)
            if rec is None and time.monotonic() - self._last_refresh >= refresh_after_s:
                self._refresh()
                rec = self._records.get(content_hash)
            return rec

    def _from_table(self, table: pa.Table) -> Iterator[tuple[str, FeatureRecord]]:
        meta = table.select([c for c in _META_COLUMNS if c in table.column_names]).to_pydict()
        meta.setdefault("warning", [""] * table.num_rows)
        matrix = np.column_stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in self.columns]
        )
        n_segments = meta.get("n_segments") or [0] * table.num_rows
        for i, h in enumerate(meta["content_hash"]):
            if h in self._records:
                continue
            ok = meta["status"][i] == "ok"
            segs = self._segment_rows.get(h) if n_segments[i] else None
            if n_segments[i] and (segs is None or len(segs) != n_segments[i]):
                log.warning("cache row %s lacks its %d segments; it will be recomputed", h[:12], n_segments[i])
                continue
            yield (
                h,
                FeatureRecord(
                    content_hash=h,
                    status=meta["status"][i],
                    error=meta["error"][i] or "",
                    warning=meta["warning"][i] or "",
                    orig_sample_rate=int(meta["orig_sample_rate"][i] or 0),
                    channels=int(meta["channels"][i] or 0),
                    duration_s=float(meta["duration_s"][i] or 0.0),
                    vector=matrix[i] if ok else None,
                    segments=segs,
                ),
            )

    def _segments_from_table(self, table: pa.Table) -> Iterator[tuple[str, Segments]]:
        d = table.select(["content_hash", "start_s", "end_s", "voiced"]).to_pydict()
        matrix = np.column_stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in self.columns]
        )
        rows: dict[str, list[int]] = {}
        for i, h in enumerate(d["content_hash"]):
            rows.setdefault(h, []).append(i)
        for h, idx in rows.items():
            if h in self._segment_rows:
                continue  # a duplicate written by a concurrent job
            order = sorted(idx, key=lambda i: d["start_s"][i])
            yield (
                h,
                Segments(
                    start_s=np.array([d["start_s"][i] for i in order], dtype=np.float64),
                    end_s=np.array([d["end_s"][i] for i in order], dtype=np.float64),
                    voiced=np.array([d["voiced"][i] for i in order], dtype=bool),
                    vectors=matrix[order],
                ),
            )

    def _segments_table(self, records: list[FeatureRecord]) -> pa.Table:
        segs = [(r.content_hash, r.segments) for r in records if r.segments is not None]
        matrix = np.concatenate([g.vectors for _, g in segs]).astype(np.float32)
        cols: dict[str, pa.Array] = {
            "content_hash": pa.array([h for h, g in segs for _ in range(len(g))], pa.string()),
            "start_s": pa.array(np.concatenate([g.start_s for _, g in segs]), pa.float64()),
            "end_s": pa.array(np.concatenate([g.end_s for _, g in segs]), pa.float64()),
            "voiced": pa.array(np.concatenate([g.voiced for _, g in segs]), pa.bool_()),
        }
        for j, name in enumerate(self.columns):
            cols[name] = pa.array(matrix[:, j], pa.float32())
        return pa.table(cols)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, content_hash: str) -> FeatureRecord | None:
        return self._records.get(content_hash)

    def known_hash(self, path: str, stamp: tuple[int, int, int]) -> str | None:
        """Content hash seen before for this exact path and (size, mtime_ns, ctime_ns)."""
        return self._path_hash.get((path, *stamp))

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
            self._claims.add(content_hash)
            return True

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
                    continue  # a per-run failure, or a concurrent job wrote it first
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
        """Write buffered rows as new parts (hashes first: features refer to them)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._pending_hashes:
            p, s, m, c, h = zip(*self._pending_hashes, strict=True)
            self._hashes.write(
                pa.table(
                    {
                        "path": pa.array(p, pa.string()),
                        "size": pa.array(s, pa.int64()),
                        "mtime_ns": pa.array(m, pa.int64()),
                        "ctime_ns": pa.array(c, pa.int64()),
                        "content_hash": pa.array(h, pa.string()),
                    }
                )
            )
            self._pending_hashes = []
        if self._pending:
            self._write_spec()
            if any(r.segments is not None for r in self._pending):
                self._segments.write(self._segments_table(self._pending))  # before the rows naming them
            self._features.write(self._to_table(self._pending))
            self._pending = []
        self._oldest_pending = 0.0

    def _write_spec(self) -> None:
        spec_file = self._features.folder / "_spec.json"  # "_": pyarrow dataset readers skip it
        if not spec_file.exists():
            info = self.spec.to_dict() | {"key": self.key}
            if self.segment_spec is not None:
                info["segments"] = asdict(self.segment_spec)
            try:
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
            "content_hash": pa.array([r.content_hash for r in records], pa.string()),
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
        self.flush()
        self._claims.release()
        self._hashes.compact(min_parts=self.compact_parts)
        self._segments.compact(min_parts=self.compact_parts)
        self._features.compact(min_parts=self.compact_parts)

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        # Flush even on Ctrl-C: what was extracted is kept for the resumed run.
        try:
            self.flush()
            if exc[0] is None:
                self.close()
        finally:
            self._claims.release()
