"""Spools: a job's per-file lists kept on disk, so that memory holds a chunk, not the archive.

A job over a million files cannot keep a record per file in memory (about 4 KB
each with its hash, features and report row). Each stage instead appends its
results, a chunk of files at a time, to a Parquet file in the job's temporary
folder, and the next stage reads them back a chunk at a time, in the same order
(sorted by path). Text is stored as bytes (``surrogateescape``), so that file
names that are not valid UTF-8 come back exactly as they were found.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchser.cache import FeatureRecord
from batchser.discover import SourceFile, location
from batchser.labels import Label
from batchser.outcome import FileOutcome
from batchser.pids import OwnerLock, owner_state

__all__ = ["Listed", "Spool", "SpoolError", "listed_table", "work_folder"]

_WORK = "batchser-job-"


class SpoolError(RuntimeError):
    """The job's temporary folder (in TMPDIR) cannot be written: full, read-only or missing."""


def _tmpdir_advice(root: Path, exc: OSError) -> str:
    return (
        f"cannot write the job's temporary files in {root} (TMPDIR): {exc.strerror or exc}. "
        "A job keeps about 1 KB per file there while it runs; free space there, or point TMPDIR "
        "at a folder with room (TMPDIR=/path/with/space batchser ...). Nothing was written to the reports"
    )


@contextlib.contextmanager
def _tmp_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:  # pyarrow's ArrowIOError is one too
        raise SpoolError(_tmpdir_advice(path.parent.parent, exc)) from None


_SCHEMA = pa.schema(
    [
        ("path", pa.binary()),
        ("member", pa.binary()),
        ("input_index", pa.int32()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("ctime_ns", pa.int64()),
        ("error", pa.binary()),
        ("emotion", pa.binary()),
        ("speaker", pa.binary()),
        ("corpus", pa.binary()),
        # Once the features are found: the content hash ("" if none), why there is
        # none, and the feature record (null if none) without a long file's windows,
        # which the cache keeps (``n_segments`` says how many to read back).
        ("content_hash", pa.string()),
        ("hash_error", pa.binary()),
        ("status", pa.string()),
        ("record_error", pa.binary()),
        ("warning", pa.binary()),
        ("orig_sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("duration_s", pa.float64()),
        ("n_segments", pa.int32()),
        ("vector", pa.binary()),  # float32 bytes: read back with one frombuffer
        # The record's cache key when it is not the content hash (segments cut at speaker turns).
        ("record_key", pa.string()),
    ]
)


def _b(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _s(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Listed:
    """A chunk of a spool: files and labels, and (once found) each file's outcome.

    ``n_segments[i]`` > 0: file ``i`` is long, and its outcome's record lacks
    its windows (read them back from the cache).
    """

    files: list[SourceFile]
    labels: list[Label]
    outcomes: list[FileOutcome] | None
    n_segments: list[int]

    def __len__(self) -> int:
        return len(self.files)


def listed_table(
    files: Sequence[SourceFile], labels: Sequence[Label], outcomes: Sequence[FileOutcome] | None = None
) -> pa.Table:
    """A chunk of files (with their labels, and outcomes once found) as spool rows."""
    n = len(files)
    recs = [o.record for o in outcomes] if outcomes is not None else [None] * n
    return pa.table(
        [
            [_b(str(f.path)) for f in files],
            [_b(f.member) for f in files],
            [f.input_index for f in files],
            [f.size for f in files],
            [f.mtime_ns for f in files],
            [f.ctime_ns for f in files],
            [_b(f.error) for f in files],
            [_b(lab.emotion) for lab in labels],
            [_b(lab.speaker) for lab in labels],
            [_b(lab.corpus) for lab in labels],
            [o.content_hash for o in outcomes] if outcomes is not None else [""] * n,
            [_b(o.error) for o in outcomes] if outcomes is not None else [b""] * n,
            [r.status if r is not None else None for r in recs],
            [_b(r.error) if r is not None else None for r in recs],
            [_b(r.warning) if r is not None else None for r in recs],
            [r.orig_sample_rate if r is not None else None for r in recs],
            [r.channels if r is not None else None for r in recs],
            [r.duration_s if r is not None else None for r in recs],
            [len(r.segments) if r is not None and r.segments is not None else 0 for r in recs],
            [r.vector.astype(np.float32).tobytes() if r is not None and r.vector is not None else None for r in recs],
            [
                r.content_hash if r is not None and o is not None and r.content_hash != o.content_hash else None
                for r, o in zip(recs, outcomes if outcomes is not None else [None] * n, strict=True)
            ],
        ],
        schema=_SCHEMA,
    )


def _listed(table: pa.Table | pa.RecordBatch, *, found: bool) -> Listed:
    c = table.to_pydict()
    files = [
        SourceFile(location(_s(p)), i, size, mtime, _s(err) or "", member=_s(m) or "", ctime_ns=ctime)  # type: ignore[arg-type]
        for p, m, i, size, mtime, ctime, err in zip(
            c["path"], c["member"], c["input_index"], c["size"], c["mtime_ns"], c["ctime_ns"], c["error"], strict=True
        )
    ]
    labels = [Label(_s(e), _s(s), _s(k)) for e, s, k in zip(c["emotion"], c["speaker"], c["corpus"], strict=True)]
    outcomes = None
    if found:
        outcomes = []
        for j, f in enumerate(files):
            h, status = c["content_hash"][j], c["status"][j]
            rec = None
            if status is not None:
                vec = c["vector"][j]
                rec = FeatureRecord(
                    c["record_key"][j] or h,
                    status,
                    _s(c["record_error"][j]) or "",
                    c["orig_sample_rate"][j],
                    c["channels"][j],
                    c["duration_s"][j],
                    None if vec is None else np.frombuffer(vec, dtype=np.float32),
                    _s(c["warning"][j]) or "",
                )
            outcomes.append(FileOutcome(f, h, rec, _s(c["hash_error"][j]) or ""))
    return Listed(files, labels, outcomes, c["n_segments"])


class Spool:
    """Spool rows appended chunk by chunk to one Parquet file, and read back in order.

    Parameters
    ----------
    path : Path
        The file, in a temporary folder the job removes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with _tmp_errors(path):
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(path, _SCHEMA, compression="zstd")
        self._rows = 0

    def append(self, table: pa.Table) -> None:
        if self._writer is None:
            raise RuntimeError(f"spool {self.path} is closed")
        if table.num_rows:
            with _tmp_errors(self.path):
                self._writer.write_table(table)
            self._rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with _tmp_errors(self.path):
                writer.close()

    def __len__(self) -> int:
        return self._rows

    def chunks(self, size: int, *, found: bool = False) -> Iterator[Listed]:
        """The rows, ``size`` at a time (the last chunk may be shorter); closes the writer first.

        ``found``: the rows hold outcomes (a spool written after the features stage).
        """
        self.close()
        pf = pq.ParquetFile(self.path)
        try:
            # Row group by row group (each append wrote one): iter_batches keeps
            # about a batch's worth of buffers per batch read, so a million-file
            # spool would be read into memory whole (pyarrow 2x, measured).
            for i in range(pf.num_row_groups):
                for batch in pf.read_row_group(i).to_batches(max_chunksize=size):
                    yield _listed(batch, found=found)
        finally:
            pf.close()


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    """A job's temporary folder for its spools (in TMPDIR), removed when the job ends.

    Named ``batchser-job-…`` and guarded by an :class:`~batchser.pids.OwnerLock`:
    the folders of jobs that were killed (``kill -9`` leaves them) are removed
    by the next job that shares TMPDIR, from any host or container; a live
    job's folder is never touched.
    """
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if entry.name.startswith(_WORK) and entry.is_dir() and owner_state(entry) == "dead":
                shutil.rmtree(entry, ignore_errors=True)
    try:
        folder = tempfile.TemporaryDirectory(prefix=f"{_WORK}{os.getpid()}-")
    except OSError as exc:
        raise SpoolError(_tmpdir_advice(root, exc)) from None
    with folder as name, OwnerLock(Path(name)):
        yield Path(name)
