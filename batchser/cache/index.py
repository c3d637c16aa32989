"""The cache's index: which part and row hold a content hash, in SQLite, one file per host.

Opening a store used to read every part into memory, so a six-file job paid
for every file the organisation had ever labelled. The index maps
``(folder, content hash)`` to ``(part, first row, rows)`` and each part to the
byte ranges and SHA-256 of its row groups, so a lookup reads only the row
groups holding the rows asked for, and verifies exactly those bytes.

SQLite, not a home-made file format: it ships with Python, its B-tree gives
O(log M) lookups, its transactions survive ``kill -9`` and power cuts, and
its locking lets the jobs of one host share the file (WAL mode: readers never
wait for the writer). The parts stay the source of truth: the index is
rebuilt from them when it is missing, damaged or behind (parts written by
another host, or removed by a compaction). One file per host, named after
it, because SQLite's locks cannot be trusted on network file systems, where
a cache shared by several machines lives; each host indexes the shared parts
for itself.

A job's own parts are indexed in memory and written to SQLite in one
transaction per :data:`BATCH_ROWS` rows (and when the job ends): a commit per
part rewrote the B-tree pages its random hashes touch, a hundred times the
bytes of the rows. Nothing committed is at risk: the parts are fsynced before
they are indexed, and a part the index lacks after a ``kill -9`` is indexed
from its bytes by the next job (as a part from another host is).

The index also holds the path→hash table (a file's hash under its path and
(size, mtime_ns, ctime_ns): a rerun hashes nothing it has seen unchanged)
and the day each row was last used, for ``batchser cache gc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchser.cache.errors import CacheError
from batchser.locations import default_cache_dir

__all__ = ["DAY_S", "CacheIndex", "Group", "Location", "filesystem_type", "index_path", "row_groups", "today"]

log = logging.getLogger(__name__)

DAY_S = 86400
_IN_BATCH = 500  # hashes per "IN (...)" query: below SQLite's variable limit, few round trips
BATCH_ROWS = 65536  # rows of a job's own parts (and paths) indexed in memory before one transaction writes them

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    -- groups: [first row, rows, offset, length, sha256[:32]] of each row group, then of the footer
    folder TEXT NOT NULL, name TEXT NOT NULL, n_rows INTEGER NOT NULL, groups TEXT NOT NULL,
    PRIMARY KEY (folder, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    folder TEXT NOT NULL, hash TEXT NOT NULL, part TEXT NOT NULL, row INTEGER NOT NULL, n INTEGER NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (folder, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rows_by_part ON rows (folder, part);
CREATE TABLE IF NOT EXISTS paths (
    path TEXT NOT NULL PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL
) WITHOUT ROWID;
"""


def today() -> int:
    """Days since the epoch (UTC): the unit of a row's last use."""
    return int(time.time() // DAY_S)


@dataclass(frozen=True)
class Group:
    """One row group of a part: its rows, where its bytes are, and their SHA-256 (first 32 hex)."""

    first: int
    n: int
    offset: int
    length: int
    sha: str


@dataclass(frozen=True)
class Location:
    """Where a content hash's rows are: ``n`` consecutive rows from ``row`` of ``part``."""

    part: str
    row: int
    n: int


def row_groups(data: bytes) -> tuple[list[Group], Group]:
    """The row groups of a Parquet file held in ``data``, each with the checksum of its bytes, and its footer.

    A row group's column chunks are contiguous in the file; their span is
    what a reader of that group reads, so it is what the checksum covers.
    The footer (schema, column names, offsets: everything after the last row
    group) is read with every group, so it gets a checksum of its own.
    """
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    out, first = [], 0
    for k in range(meta.num_row_groups):
        rg = meta.row_group(k)
        starts, ends = [], []
        for j in range(rg.num_columns):
            c = rg.column(j)
            start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            starts.append(start)
            ends.append(start + c.total_compressed_size)
        lo, hi = min(starts), max(ends)
        out.append(Group(first, rg.num_rows, lo, hi - lo, hashlib.sha256(data[lo:hi]).hexdigest()[:32]))
        first += rg.num_rows
    end = max((g.offset + g.length for g in out), default=4)  # after the leading "PAR1"
    return out, Group(first, 0, end, len(data) - end, hashlib.sha256(data[end:]).hexdigest()[:32])


def _runs(hashes: Sequence[str]) -> Iterator[tuple[str, int, int]]:
    """(hash, first row, rows) for each run of equal consecutive hashes."""
    start = 0
    for i in range(1, len(hashes) + 1):
        if i == len(hashes) or hashes[i] != hashes[start]:
            yield hashes[start], start, i - start
            start = i


# File systems on which SQLite's locks and WAL shared memory cannot be trusted
# (mountinfo's type field, before any ".subtype").
NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse", "ceph", "lustre", "gpfs", "9p", "afs", "glusterfs"}
)


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The type of the file system holding ``path`` (Linux: from /proc/self/mountinfo), or "" if unknown."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return ""
    target, best, kind = os.path.realpath(path), "", ""
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, line.split(" - ", 1)[1].split()[0]
    return kind.split(".")[0]


def index_path(root: Path, *, mountinfo: str | None = None) -> Path:
    """Where the index of the cache ``root`` lives for this host.

    ``<root>/index/<host>.sqlite`` on a local disk. On a network file system,
    where SQLite's locking is not safe, in this user's local cache folder
    instead, named after the cache's real path: each host keeps its own.
    """
    host = socket.gethostname()
    if filesystem_type(root, mountinfo) not in NETWORK_FS:
        return Path(root) / "index" / f"{host}.sqlite"

    key = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:16]
    return default_cache_dir() / "indexes" / f"{key}-{host}.sqlite"


LOCK_WAIT_S = 60.0  # how long a write waits for another process's transaction


def lock_holders(path: Path) -> list[str]:
    """``pid (command)`` of each process on this host (and pid namespace) that has ``path`` open.

    Read from ``/proc``; empty where that is not available or shows nothing.
    """
    target = os.path.realpath(path)
    found = []
    with contextlib.suppress(OSError):
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                if not any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue  # gone, or another user's
            found.append(f"{pid} ({cmd[:120]})")
    return found


def _locked_message(path: Path) -> str:
    holders = lock_holders(path)
    who = f"held by process {', '.join(holders)}" if holders else "held by another process (not one visible here)"
    return (
        f"the feature cache index {path} stayed locked for {LOCK_WAIT_S:.0f} s, {who}. Wait for that job to "
        f"finish, or stop it. The index is only a lookup table rebuilt from the cache's parts: if no batchser "
        f"job is running, deleting {path} (with its -wal and -shm files) is safe and the next job rebuilds it"
    )


class CacheIndex:
    """The SQLite index of one cache folder, for this host.

    Parameters
    ----------
    root : Path
        The cache folder. The index is at :func:`index_path`; a damaged one is
        moved to ``<root>/quarantine/`` and rebuilt from the parts.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = index_path(self.root)
        self._lock = threading.RLock()  # one connection, shared by the job's threads
        self._groups: dict[tuple[str, str], tuple[list[Group], Group]] = {}
        # Indexed, not yet written (see the module's notes): parts with their rows, the rows
        # by hash (the first part indexed for a hash keeps it, as INSERT OR IGNORE does), paths.
        self._parts_due: dict[tuple[str, str], tuple[int, str, list[tuple[str, int, int]]]] = {}
        self._rows_due: dict[tuple[str, str], Location] = {}
        self._paths_due: dict[str, tuple[int, int, int, str]] = {}
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            try:
                with self._write_errors():
                    return self._connect()
            except sqlite3.DatabaseError as exc:
                if attempt:
                    raise
                self._set_aside(str(exc))
        raise AssertionError("unreachable")

    def _connect(self) -> sqlite3.Connection:
        # Two jobs opening a new index at the same moment: SQLite can answer "locked" at once,
        # without its busy wait, while the other switches the file to WAL or writes the schema
        # (seen once in about five runs of tests/test_interrupt.py). Wait and try again.
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            db = sqlite3.connect(self.path, timeout=LOCK_WAIT_S, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
                db.execute("PRAGMA synchronous=NORMAL")  # a commit survives a kill; a power cut may drop the last
                db.executescript(_SCHEMA)
                db.execute("SELECT count(*) FROM parts").fetchone()
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _set_aside(self, reason: str) -> None:
        target = self.root / "quarantine" / f"index-{self.path.name}-{time.time_ns()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{target}{suffix}")
        log.warning(
            "the cache index %s is damaged (%s); moved to %s and rebuilt from the parts", self.path, reason, target
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._write_errors():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    @contextlib.contextmanager
    def _write_errors(self) -> Iterator[None]:
        """A full disk or read-only folder as the CacheError every cache write raises, naming the file."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            msg = str(exc)
            if "locked" in msg:
                raise CacheError(_locked_message(self.path)) from None
            # SQLite says "disk I/O error" when it cannot grow its log on a full disk.
            with contextlib.suppress(OSError):
                st = os.statvfs(self.path.parent)
                if "full" in msg or st.f_bavail * st.f_frsize < 1 << 20:
                    msg = "No space left on device (the disk is full)"
            raise CacheError(f"cannot write to the feature cache {self.path}: {msg}") from None

    def close(self) -> None:
        with self._lock:
            try:
                self.commit()
            finally:
                self.db.close()

    def commit(self) -> None:
        """Write the rows indexed in memory (a job's own parts, remembered paths) in one transaction."""
        with self._lock:
            if not (self._parts_due or self._paths_due):
                return
            # A batch's pages held in memory until its commit (64 MiB), not spilled to the log early.
            self.db.execute("PRAGMA cache_size=-65536")
            try:
                self._commit_due()
            finally:
                self.db.execute("PRAGMA cache_size=-2000")  # SQLite's default: a job's lookups need no more

    def _commit_due(self) -> None:
        with self._lock:
            with self.transaction() as db:
                for (folder, name), (n_rows, groups, runs) in self._parts_due.items():
                    self._write_part(db, folder, name, n_rows, groups, runs, replace=False)
                db.executemany(
                    "INSERT OR REPLACE INTO paths (path, size, mtime_ns, ctime_ns, hash) VALUES (?, ?, ?, ?, ?)",
                    ((path, *rest) for path, rest in self._paths_due.items()),
                )
            self._parts_due.clear()
            self._rows_due.clear()
            self._paths_due.clear()

    def _due(self) -> int:
        return len(self._rows_due) + len(self._paths_due)

    # -- parts -----------------------------------------------------------------
    def part_names(self, folder: str) -> set[str]:
        with self._lock:
            names = {n for (n,) in self.db.execute("SELECT name FROM parts WHERE folder = ?", (folder,))}
            return names | {n for f, n in self._parts_due if f == folder}

    def groups(self, folder: str, name: str) -> tuple[list[Group], Group]:
        """The row groups of an indexed part and its footer, with their checksums."""
        with self._lock:
            got = self._groups.get((folder, name))
            if got is None and (folder, name) in self._parts_due:
                *groups, footer = (Group(*g) for g in json.loads(self._parts_due[(folder, name)][1]))
                got = self._groups[(folder, name)] = (groups, footer)
            if got is None:
                sql = "SELECT groups FROM parts WHERE folder = ? AND name = ?"
                row = self.db.execute(sql, (folder, name)).fetchone()
                if row is None:
                    raise FileNotFoundError(name)  # forgotten since it was located: look again
                *groups, footer = (Group(*g) for g in json.loads(row[0]))
                got = self._groups[(folder, name)] = (groups, footer)
            return got

    def part_rows(self, folder: str) -> dict[str, int]:
        """name -> rows, for each part of ``folder`` (no row of the rows table is read)."""
        with self._lock:
            self.commit()
            return dict(self.db.execute("SELECT name, n_rows FROM parts WHERE folder = ?", (folder,)).fetchall())

    def part_sizes(self, folder: str) -> dict[str, tuple[int, int]]:
        """name -> (rows in the part, rows the index points to) for each part of ``folder``."""
        with self._lock:
            self.commit()
            live = dict(
                self.db.execute("SELECT part, sum(n) FROM rows WHERE folder = ? GROUP BY part", (folder,)).fetchall()
            )
            cur = self.db.execute("SELECT name, n_rows FROM parts WHERE folder = ?", (folder,))
            return {name: (int(n), int(live.get(name, 0))) for name, n in cur}

    @staticmethod
    def _describe(data: bytes) -> tuple[int, str, list[tuple[str, int, int]]]:
        """A part's rows, its row groups and footer (as the parts table holds them) and its runs of hashes."""
        groups, footer = row_groups(data)
        with pq.ParquetFile(pa.BufferReader(data)) as f:
            hashes = f.read(columns=["content_hash"]).column(0).to_pylist()
        described = json.dumps([[g.first, g.n, g.offset, g.length, g.sha] for g in [*groups, footer]])
        return len(hashes), described, list(_runs(hashes))

    def _write_part(
        self,
        db: sqlite3.Connection,
        folder: str,
        name: str,
        n_rows: int,
        groups: str,
        runs: list[tuple[str, int, int]],
        *,
        replace: bool,
    ) -> int:
        day = today()
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        before = db.total_changes
        db.executemany(
            f"{verb} INTO rows (folder, hash, part, row, n, used) VALUES (?, ?, ?, ?, ?, ?)",
            ((folder, h, name, first, n, day) for h, first, n in runs),
        )
        added = db.total_changes - before
        db.execute(
            "INSERT OR REPLACE INTO parts (folder, name, n_rows, groups) VALUES (?, ?, ?, ?)",
            (folder, name, n_rows, groups),
        )
        return added

    def _insert(self, db: sqlite3.Connection, folder: str, name: str, data: bytes, *, replace: bool) -> int:
        return self._write_part(db, folder, name, *self._describe(data), replace=replace)

    def add_part(self, folder: str, name: str, data: bytes, *, batch: bool = False) -> int:
        """Index the part ``name`` whose (verified) bytes are ``data``; the hashes it added.

        A hash already indexed keeps its place (a duplicate written by a
        concurrent job, or the parts a merge replaced). ``batch``: a part this
        process just wrote, indexed in memory and written with the next
        :meth:`commit` (at the latest once :data:`BATCH_ROWS` rows wait).
        """
        if not batch:
            with self.transaction() as db:
                return self._insert(db, folder, name, data, replace=False)
        n_rows, groups, runs = self._describe(data)
        with self._lock:
            self._parts_due[(folder, name)] = (n_rows, groups, runs)
            self._groups.pop((folder, name), None)
            added = 0
            for h, first, n in runs:
                if (folder, h) not in self._rows_due:
                    self._rows_due[(folder, h)] = Location(name, first, n)
                    added += 1
            if self._due() >= BATCH_ROWS:
                self.commit()
            return added

    def swap_parts(self, folder: str, name: str, data: bytes, old: Iterable[str]) -> None:
        """In one transaction: index merged part ``name`` over the hashes it holds and forget ``old``."""
        self.commit()
        with self.transaction() as db:
            self._insert(db, folder, name, data, replace=True)
            self._forget(db, folder, old)

    def forget_parts(self, folder: str, names: Iterable[str]) -> None:
        """Drop parts (gone from disk, or set aside) and every row still pointing into them."""
        self.commit()
        with self.transaction() as db:
            self._forget(db, folder, names)

    def _forget(self, db: sqlite3.Connection, folder: str, names: Iterable[str]) -> None:
        for name in names:
            db.execute("DELETE FROM rows WHERE folder = ? AND part = ?", (folder, name))
            db.execute("DELETE FROM parts WHERE folder = ? AND name = ?", (folder, name))
            self._groups.pop((folder, name), None)

    def live_rows(self, folder: str, name: str) -> list[tuple[str, int, int]]:
        """(hash, first row, rows) of the rows of part ``name`` the index points to, in row order."""
        with self._lock:
            self.commit()
            cur = self.db.execute(
                "SELECT hash, row, n FROM rows WHERE folder = ? AND part = ? ORDER BY row", (folder, name)
            )
            return cur.fetchall()

    # -- rows ------------------------------------------------------------------
    def locate(self, folder: str, hashes: Iterable[str]) -> dict[str, Location]:
        """Where each of ``hashes`` that is indexed lives."""
        out: dict[str, Location] = {}
        wanted = list(dict.fromkeys(hashes))
        with self._lock:
            for i in range(0, len(wanted), _IN_BATCH):
                chunk = wanted[i : i + _IN_BATCH]
                marks = ",".join("?" * len(chunk))
                cur = self.db.execute(
                    f"SELECT hash, part, row, n FROM rows WHERE folder = ? AND hash IN ({marks})",
                    (folder, *chunk),
                )
                out.update((h, Location(p, r, n)) for h, p, r, n in cur)
            if self._rows_due:
                for h in wanted:
                    if h not in out and (loc := self._rows_due.get((folder, h))) is not None:
                        out[h] = loc
        return out

    def count(self, folder: str) -> int:
        with self._lock:
            self.commit()
            return int(self.db.execute("SELECT count(*) FROM rows WHERE folder = ?", (folder,)).fetchone()[0])

    def mark_used(self, folder: str, hashes: Iterable[str]) -> None:
        """Record that ``hashes`` were used today (one write per row per day; rows indexed in memory have it)."""
        day = today()
        with self.transaction() as db:
            db.executemany(
                "UPDATE rows SET used = ? WHERE folder = ? AND hash = ? AND used < ?",
                ((day, folder, h, day) for h in hashes),
            )

    def unused_since(self, folder: str, day: int) -> list[str]:
        with self._lock:
            self.commit()
            cur = self.db.execute("SELECT hash FROM rows WHERE folder = ? AND used < ?", (folder, day))
            return [h for (h,) in cur]

    def forget_rows(self, folder: str, hashes: Iterable[str]) -> None:
        self.commit()
        with self.transaction() as db:
            db.executemany("DELETE FROM rows WHERE folder = ? AND hash = ?", ((folder, h) for h in hashes))

    def use_range(self, folder: str) -> tuple[int | None, int | None]:
        """Oldest and newest last-use day of the rows of ``folder`` (None when it has none)."""
        with self._lock:
            self.commit()
            lo, hi = self.db.execute("SELECT min(used), max(used) FROM rows WHERE folder = ?", (folder,)).fetchone()
            return lo, hi

    # -- paths -----------------------------------------------------------------
    def path_hash(self, path: str, stamp: tuple[int, int, int]) -> str | None:
        """The hash recorded for ``path`` when it had this (size, mtime_ns, ctime_ns), else None."""
        with self._lock:
            due = self._paths_due.get(path)
            if due is not None:
                return due[3] if due[:3] == tuple(stamp) else None
            row = self.db.execute(
                "SELECT hash FROM paths WHERE path = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ?", (path, *stamp)
            ).fetchone()
            return None if row is None else str(row[0])

    def remember_paths(self, rows: Sequence[tuple[str, int, int, int, str]]) -> None:
        """Record each path's hash under its stamp, with the next :meth:`commit` (a kill loses only a rehash)."""
        with self._lock:
            for path, *rest in rows:
                self._paths_due[path] = tuple(rest)  # type: ignore[assignment]
            if self._due() >= BATCH_ROWS:
                self.commit()
