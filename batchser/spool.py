"""Spools: a job's per-file lists, compressed, so that memory holds a chunk, not the archive.

A job over a million files cannot keep a record per file in memory (about 4 KB
each with its hash, features and report row). Each stage instead appends its
results, a chunk of files at a time, to a zstd-compressed Parquet stream, and
the next stage reads them back a chunk at a time, in the same order (sorted by
path). The stream is held in memory up to :data:`MEMORY_BYTES` (a spool holds
about 100 bytes per file: 150,000 files) and only then moved to a file in the
job's temporary folder, so a job of ordinary size writes no spool to the disk.
A spool holds no feature vectors: they are read back from the cache, which
holds them already. Text is stored as bytes (``surrogateescape``), so that file
names that are not valid UTF-8 come back exactly as they were found.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchser.cache import FeatureRecord
from batchser.discover import SourceFile, location
from batchser.labels import Label
from batchser.outcome import FileOutcome
from batchser.pids import OwnerLock, owner_state

__all__ = ["MEMORY_BYTES", "Listed", "Spool", "SpoolError", "listed_table", "work_folder"]

_WORK = "batchser-job-"
MEMORY_BYTES = 16 << 20  # a spool's compressed bytes held in memory before it moves to its file


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
        # none, and the feature record (null if none) without its vector or a long
        # file's windows, which the cache keeps (``n_segments`` says how many).
        ("content_hash", pa.string()),
        ("hash_error", pa.binary()),
        ("status", pa.string()),
        ("record_error", pa.binary()),
        ("warning", pa.binary()),
        ("orig_sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("duration_s", pa.float64()),
        ("n_segments", pa.int32()),
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

    An outcome's record lacks its vector (None even when "ok"), and when
    ``n_segments[i]`` > 0 (a long file) its windows: both are read back from
    the cache (:func:`batchser.job._outcomes`).
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
                rec = FeatureRecord(
                    c["record_key"][j] or h,
                    status,
                    _s(c["record_error"][j]) or "",
                    c["orig_sample_rate"][j],
                    c["channels"][j],
                    c["duration_s"][j],
                    None,  # read back from the cache
                    _s(c["warning"][j]) or "",
                )
            outcomes.append(FileOutcome(f, h, rec, _s(c["hash_error"][j]) or ""))
    return Listed(files, labels, outcomes, c["n_segments"])


class _Sink(io.RawIOBase):
    """Where a spool's Parquet stream goes: memory up to ``limit`` bytes, then its file.

    The file is created (never through a link) only when the stream outgrows
    the limit, with what memory held so far.
    """

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__()
        self.path, self.limit = path, limit
        self.memory: io.BytesIO | None = io.BytesIO()
        self._file: io.BufferedWriter | None = None
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.memory is not None and self._size + len(data) > self.limit:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            self._file = os.fdopen(fd, "wb")
            self._file.write(self.memory.getbuffer())
            self.memory = None
        n = (self.memory or self._file).write(data)  # type: ignore[union-attr]
        self._size += n
        return n

    def tell(self) -> int:
        return self._size

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


class Spool:
    """Spool rows appended chunk by chunk to one Parquet stream, and read back in order.

    Parameters
    ----------
    path : Path
        Its file, in a temporary folder the job removes: written only when
        the stream grows past ``memory_bytes``.
    memory_bytes : int
        Compressed bytes held in memory before the stream moves to ``path``.
    """

    def __init__(self, path: Path, *, memory_bytes: int = MEMORY_BYTES) -> None:
        self.path = path
        self._sink = _Sink(path, memory_bytes)
        self._data: bytes | None = None  # the closed stream, when it stayed in memory
        with _tmp_errors(path):
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self._sink, _SCHEMA, compression="zstd")
        self._rows = 0

    @property
    def on_disk(self) -> bool:
        """Whether the stream outgrew memory and moved to its file."""
        return self._sink.memory is None

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
                if self._sink.memory is not None:
                    self._data = self._sink.memory.getvalue()
                self._sink.close()

    def __len__(self) -> int:
        return self._rows

    def chunks(self, size: int, *, found: bool = False) -> Iterator[Listed]:
        """The rows, ``size`` at a time (the last chunk may be shorter); closes the writer first.

        ``found``: the rows hold outcomes (a spool written after the features stage).
        """
        self.close()
        pf = pq.ParquetFile(self.path if self._data is None else pa.BufferReader(self._data))
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
