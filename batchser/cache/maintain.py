"""Keeping the cache in shape: index new parts, merge small ones, drop rows nobody uses.

Every operation here is safe while jobs run: parts are immutable, a merged
part is renamed in and indexed (one SQLite transaction moves its rows over)
before the parts it replaces are deleted, and a reader that finds a part gone
looks again. A ``kill -9`` at any point loses nothing: at worst some rows are
held twice until the next compaction, or rows a ``gc`` dropped come back.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchser.atomic import fsync_dir
from batchser.cache.index import CacheIndex, today
from batchser.cache.parts import Parts

__all__ = [
    "BIG_ROWS",
    "ROW_GROUP",
    "SMALL_ROWS",
    "FolderStats",
    "cache_folders",
    "compact",
    "folder_key",
    "gc",
    "stats",
    "sync",
]

log = logging.getLogger(__name__)

# A merged part holds about this many rows; smaller parts are merged when
# enough of them accumulate. Bounds both the memory of a merge and the
# number of parts a cache holds (a million rows: about sixteen).
BIG_ROWS = 65536
# A job's own merge (on close) takes only parts under this many rows: what a
# slow job or a trickle of files flushes each second. Merging every part under
# BIG_ROWS rewrote each part a job wrote, doubling its writes; parts of a few
# hundred rows are already cheap to look up, and ``batchser cache compact``
# still merges them.
SMALL_ROWS = 128
# Rows per row group of a merged part: a lookup reads (and checks) one group,
# about 1 MB with the default features, for each row it needs.
ROW_GROUP = 1024


def folder_key(root: Path, folder: Path) -> str:
    """How the index names a folder of parts: relative to the cache root."""
    return folder.relative_to(root).as_posix()


def sync(index: CacheIndex, parts: Parts, folder: str) -> int:
    """Bring the index up to date with the parts on disk; the rows it added.

    Parts that disappeared (merged by another job) are forgotten first, then
    new ones are read whole, verified against the checksum in their name, and
    indexed; a damaged one is quarantined.
    """
    on_disk = {p.name: p for p in parts.list()}
    known = index.part_names(folder)
    gone = known - on_disk.keys()
    if gone:
        index.forget_parts(folder, gone)
    added = 0
    for name in sorted(on_disk.keys() - known):
        try:
            got = parts.read(on_disk[name])
        except FileNotFoundError:
            continue  # merged away since we listed it; its rows are in the new part
        if got is not None:
            added += index.add_part(folder, name, got[1])
    return added


@contextlib.contextmanager
def _exclusive(folder: Path, *, wait: bool) -> Iterator[bool]:
    """Hold the folder's merge lock (True), or learn that another process does (False, without ``wait``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def _rewrite(index: CacheIndex, parts: Parts, folder: str, names: list[str], sizes: dict[str, int]) -> tuple[int, int]:
    """Write the live rows of parts ``names`` into new parts of about ``BIG_ROWS`` rows, sorted by hash.

    Returns (parts removed, rows dropped). Memory: one output part's rows.
    """
    removed = dropped = 0
    buffer: list[pa.Table] = []
    inputs: list[str] = []
    held = 0

    def emit() -> None:
        nonlocal removed, buffer, inputs, held
        new = ""
        if held:
            merged = pa.concat_tables(buffer, promote_options="default")
            # Stable: a long file's windows keep their order within its hash.
            merged = merged.take(pc.sort_indices(merged, sort_keys=[("content_hash", "ascending")]))
            path, data = parts.write(merged, row_group_size=ROW_GROUP)
            new = path.name
            index.swap_parts(folder, new, data, inputs)
        else:
            index.forget_parts(folder, inputs)
        for name in inputs:
            with contextlib.suppress(FileNotFoundError):
                (parts.folder / name).unlink()
        removed += len(inputs)
        buffer, inputs, held = [], [], 0

    for name in names:
        live = index.live_rows(folder, name)
        n_rows = sizes[name]
        if live:
            try:
                got = parts.read(parts.folder / name)
            except FileNotFoundError:
                continue  # another process merged it
            if got is None:
                index.forget_parts(folder, [name])  # quarantined: its rows will be recomputed
                continue
            take = [r for _h, row, n in live for r in range(row, row + n)]
            buffer.append(got[0].take(take))
            held += len(take)
            dropped += n_rows - len(take)
        else:
            dropped += n_rows
        inputs.append(name)
        if held >= BIG_ROWS:
            emit()
    if inputs:
        emit()
    with contextlib.suppress(OSError):
        fsync_dir(parts.folder)  # the unlinks, durable
    return removed, dropped


def compact(
    index: CacheIndex,
    parts: Parts,
    folder: str,
    *,
    min_small: int = 2,
    small_rows: int = BIG_ROWS,
    wait: bool = True,
    reclaim: bool = True,
    everything: bool = False,
) -> tuple[int, int]:
    """Merge small parts and rewrite parts holding rows the index no longer points to.

    Parameters
    ----------
    min_small : int
        Merge parts under ``small_rows`` rows only when there are at least this many.
    small_rows : int
        What a small part is: under this many rows.
    wait : bool
        Wait for another process's merge of this folder; otherwise skip.
    reclaim : bool
        Also rewrite parts, however large, that hold rows the index no
        longer points to (what ``cache compact`` and ``gc`` are for; a job's
        own merge on close leaves them, to cost only what it wrote).
    everything : bool
        Rewrite every part, whatever its size.

    Returns
    -------
    (int, int)
        Parts removed and rows dropped (duplicates, or rows ``gc`` forgot).
    """
    with _exclusive(parts.folder, wait=wait) as mine:
        if not mine:
            return 0, 0
        sync(index, parts, folder)
        sizes = index.part_rows(folder)  # name -> rows: one index row per part
        small = [n for n, rows in sizes.items() if rows < min(small_rows, BIG_ROWS)]
        dead: set[str] = set()
        if reclaim:  # parts holding rows the index no longer points to (duplicates, or rows gc forgot)
            dead = {n for n, (rows, live) in index.part_sizes(folder).items() if live < rows}
        chosen = sorted(sizes) if everything else sorted(dead | set(small if len(small) >= min_small else []))
        if not chosen:
            return 0, 0
        removed, dropped = _rewrite(index, parts, folder, chosen, sizes)
    if removed:
        log.info("compacted %s: %d parts merged, %d rows dropped", parts.folder, removed, dropped)
    return removed, dropped


def cache_folders(root: Path) -> list[tuple[Parts, str]]:
    """Every folder of parts under the cache ``root`` (all feature keys), with its index name."""
    quarantine = root / "quarantine"
    out = []
    for kind in ("features", "segments"):
        base = root / kind
        if base.is_dir():
            for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()):
                out.append((Parts(d, quarantine), folder_key(root, d)))
    return out


def gc(index: CacheIndex, root: Path, *, unused_days: float) -> int:
    """Forget the rows no job on this host has used for ``unused_days`` days and reclaim their space.

    Per feature key: a feature row and its long file's windows go together.
    Uses are recorded per host (each host keeps its own index): on a cache
    shared by several machines, a row another host uses is dropped unless
    this one used it too, and is simply recomputed there when next needed.

    Returns
    -------
    int
        Feature rows dropped.
    """
    cutoff = today() - int(unused_days)
    folders = dict((folder, parts) for parts, folder in cache_folders(root))
    dropped = 0
    for folder, parts in folders.items():
        if not folder.startswith("features/"):
            continue
        sync(index, parts, folder)
        stale = index.unused_since(folder, cutoff)
        windows = "segments/" + folder.removeprefix("features/")
        pairs = [(folder, parts)] + ([(windows, folders[windows])] if windows in folders else [])
        for name, where in pairs:
            sync(index, where, name)
            index.forget_rows(name, stale)
            compact(index, where, name)
        dropped += len(stale)
    return dropped


@dataclass(frozen=True)
class FolderStats:
    """One folder of parts, as ``batchser cache stats`` prints it."""

    folder: str
    parts: int
    rows: int  # in the parts on disk
    live: int  # rows the index points to (the rest: duplicates or dropped, reclaimed by compaction)
    bytes: int
    oldest_use: int | None  # days since the epoch
    newest_use: int | None


def stats(index: CacheIndex, root: Path) -> list[FolderStats]:
    """What each folder of parts under ``root`` holds (after indexing any new parts)."""
    out = []
    for parts, folder in cache_folders(root):
        sync(index, parts, folder)
        sizes = index.part_sizes(folder)
        size = 0
        for name in sizes:
            with contextlib.suppress(FileNotFoundError):
                size += (parts.folder / name).stat().st_size
        lo, hi = index.use_range(folder)
        out.append(
            FolderStats(
                folder,
                len(sizes),
                sum(r for r, _ in sizes.values()),
                sum(live for _, live in sizes.values()),
                size,
                lo,
                hi,
            )
        )
    return out
