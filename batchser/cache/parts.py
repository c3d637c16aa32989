"""Immutable, checksummed Parquet parts: the cache's source of truth.

A part is written whole to a dot-temp file, fsynced and renamed to
``part-<time ns>-<pid>-<checksum>.parquet``, so readers never see a partial
one and its SHA-256 travels with it. :func:`read_rows` reads only the row
groups holding the rows asked for and checks each against the checksum the
index recorded for it when the whole part was verified.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchser.atomic import fsync_dir
from batchser.cache.errors import CacheError
from batchser.cache.index import Group

__all__ = ["CacheError", "DamagedPartError", "Parts", "read_rows", "read_verified"]

log = logging.getLogger(__name__)


class DamagedPartError(Exception):
    """A row group's bytes do not match the checksum the index holds for them, or do not parse."""


# part-<time ns>-<pid>-<first 32 hex of the SHA-256 of the file's bytes>.parquet:
# the checksum travels with the part in the one rename that publishes it.
# Parquet pages carry no checksum, so without it a flipped bit is a wrong label.
_PART_NAME = re.compile(r"^part-\d{20}-\d+-(?P<sha>[0-9a-f]{32})\.parquet$")
_MAX_PART_BYTES = 4 << 30  # far above any part this store writes (4,096 rows)


def read_verified(path: Path) -> bytes | None:
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


class Parts:
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
        self.seen: set[str] = set()  # names of files not ours, warned about once

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

    def read(self, path: Path) -> tuple[pa.Table, bytes] | None:
        """The part's table and bytes, or None after quarantining a damaged one.

        Raises
        ------
        FileNotFoundError
            The part is gone (a concurrent compaction removed it).
        """
        data = read_verified(path)
        reason = "its bytes do not match the checksum in its name"
        if data is not None:
            try:
                return _parse_part(data), data
            except (pa.ArrowException, OSError, ValueError) as exc:
                reason = f"it does not parse ({exc})"
        self.set_aside(path, reason)
        return None

    def set_aside(self, path: Path, reason: str) -> None:
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

    def write(self, table: pa.Table, *, row_group_size: int | None = None) -> tuple[Path, bytes]:
        """Publish ``table`` as a new part (temp file, fsync, rename); its path and bytes."""
        tmp = self.folder / f".part-{uuid.uuid4().hex[:12]}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                # No dictionary encoding: float features and hashes hardly repeat,
                # so it costs 60 % of the write time and makes parts 40 % larger.
                # No column statistics (no reader filters on them) and no Arrow schema
                # in the footer (the Parquet types say it all): a part of 100 rows of the
                # shipped features is 20 % smaller, most of its footer gone.
                pq.write_table(
                    table,
                    tmp,
                    compression="zstd",
                    use_dictionary=False,
                    row_group_size=row_group_size,
                    write_statistics=False,
                    store_schema=False,
                )
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
        return final, data


def read_rows(path: Path, groups: Sequence[Group], spans: Sequence[tuple[int, int]], *, footer: Group) -> pa.Table:
    """Rows ``[row, row + n)`` of part ``path`` for each ``(row, n)`` in ``spans``, in that order.

    Only the row groups holding them are read, and each, with the footer that
    describes them, is checked against its checksum from the index first.

    Raises
    ------
    DamagedPartError
        A needed row group's bytes are not what the index recorded, or the part does not parse.
    FileNotFoundError
        The part is gone (a concurrent compaction removed it).
    """
    firsts = [g.first for g in groups]

    def group_of(row: int) -> int:
        return bisect.bisect_right(firsts, row) - 1

    need = sorted({k for row, n in spans for k in range(group_of(row), group_of(row + n - 1) + 1)})
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DamagedPartError(f"{path} is not a regular file")
        for what, g in [(f"row group {k}", groups[k]) for k in need] + [("the footer", footer)]:
            data = os.pread(fd, g.length, g.offset)
            if len(data) != g.length or hashlib.sha256(data).hexdigest()[:32] != g.sha:
                raise DamagedPartError(f"{what} does not match its checksum")
        try:
            with pq.ParquetFile(fh) as f:
                table = f.read_row_groups(need)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DamagedPartError(f"it does not parse ({exc})") from None
    base, pos = {}, 0
    for k in need:
        base[k], pos = pos, pos + groups[k].n
    take = [base[(k := group_of(r))] + r - groups[k].first for row, n in spans for r in range(row, row + n)]
    return table.take(take)
