"""Audio inside .zip and .tar (.tar.gz, .tgz) archives, read in place, never extracted to disk.

A member is named ``<archive path>::<member name>`` in reports. Members are
read one at a time: into memory up to :data:`IN_MEMORY_BYTES`, larger ones
into an anonymous temporary file (deleted when closed, never named after the
member), so memory stays bounded whatever the member's size and a member name
like ``../../etc/x.wav`` is just a name. Members over the input's
``max_member_mb`` (default :data:`MAX_MEMBER_BYTES`) get an error row at
discovery. A compressed tar can only be read from the start: readers here take
a whole list of wanted members and make one pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from batchser.storage import ObjectChangedError, is_url, shown_url, storage_for

__all__ = [
    "ARCHIVE_SUFFIXES",
    "IN_MEMORY_BYTES",
    "MAX_MEMBER_BYTES",
    "MAX_MEMBER_RATIO",
    "RATIO_CHECK_BYTES",
    "ArchiveError",
    "Member",
    "MemberData",
    "hash_members",
    "is_archive",
    "list_members",
    "member_name",
    "read_members",
]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
# The default size limit of a member (a zip bomb, or hours of audio better
# stored as a plain file); inputs[].max_member_mb changes it.
MAX_MEMBER_BYTES = 1 << 30
# The default limit of how many times larger a member is read than packed.
# Audio deflates by 1.1 to 3 times, long pauses a little more; a member past
# this is mostly one repeated byte (a zip bomb of silence): refused at discovery
# before it costs minutes of decoding. inputs[].max_member_ratio changes it.
MAX_MEMBER_RATIO = 100.0
# Members smaller than this are read whatever their ratio: they cost little.
RATIO_CHECK_BYTES = 16 << 20
# Members up to this size are decoded from memory; larger ones from a temp file.
IN_MEMORY_BYTES = 64 << 20
SEPARATOR = "::"
_CHUNK = 1 << 20


# What a damaged archive raises while reading: bad headers or CRC, cut-off
# data, corrupt compressed streams.
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError, zlib.error)


class ArchiveError(Exception):
    """The archive as a whole cannot be read; ``str()`` is the reason."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    link: str = ""  # a tar symbolic or hard link: its target (links are reported, never followed)
    # Bytes it takes in the archive: a zip records each member's; a compressed
    # tar only its whole, so each member gets its share of it.
    packed: int = -1

    @property
    def ratio(self) -> float:
        """How many times smaller the member is packed than read (1 when unknown or stored)."""
        return self.size / self.packed if self.packed > 0 else 1.0


_OPEN_ZIPS = 4
_zips: OrderedDict[tuple[str, int, int], zipfile.ZipFile] = OrderedDict()
_zips_lock = threading.Lock()


Stamp = tuple[int, int, int]


def _open_object(path: Path | str, stamp: Stamp | None) -> IO[bytes]:
    """An archive in object storage, opened for ranged reads checked against its listed time and ETag.

    ``stamp`` is the archive's or one of its members' (whose size is the
    member's): its time and ETag digest must be the object's now, and every
    read is checked against them.

    Raises
    ------
    batchser.storage.ObjectChangedError
        The archive was replaced since it was listed.
    """
    store = storage_for(str(path))
    info = store.stat(str(path))
    if stamp is not None and info.stamp[1:] != stamp[1:]:
        raise ObjectChangedError(f"{shown_url(str(path))} changed since it was listed", transient=False)
    return store.open(str(path), size=info.size, stamp=info.stamp)


def _check_read(fh: object) -> None:
    """Raise what an object-storage reader kept (a failed or changed read reads as the end of the data)."""
    err = getattr(getattr(fh, "raw", None), "error", None)
    if err is not None:
        raise err


@contextlib.contextmanager
def _zip(path: Path | str, stamp: Stamp | None = None) -> Iterator[zipfile.ZipFile]:
    """The archive, opened once per process while it is unchanged.

    Opening a zip parses its whole central directory: a job that reopened a
    100,000-member archive for every batch of files did quadratic work.
    """
    if is_url(path):
        key = (str(path), *(stamp or (-1, -1, -1))[1:])  # a member's stamp carries its own size
    else:
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)
    with _zips_lock:
        zf = _zips.pop(key, None)  # type: ignore[call-overload]
        if zf is not None and getattr(getattr(zf.fp, "raw", None), "error", None) is not None:
            zf.close()  # an object whose read failed: open it afresh
            zf = None
        if zf is None:
            zf = zipfile.ZipFile(_open_object(path, stamp) if is_url(path) else path)
        _zips[key] = zf  # type: ignore[index]  # most recently used last
        while len(_zips) > _OPEN_ZIPS:
            _zips.popitem(last=False)[1].close()
    yield zf


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def member_name(archive: str | Path, member: str) -> str:
    """How a member is named in reports, labels CSVs and the hash index."""
    return f"{archive}{SEPARATOR}{member}"


def _is_zip(path: Path) -> bool:
    return str(path).lower().endswith(".zip")


def _tar(path: Path | str, stack: contextlib.ExitStack, stamp: Stamp | None) -> tarfile.TarFile:
    if is_url(path):
        fh = stack.enter_context(_open_object(path, stamp))
        return stack.enter_context(tarfile.open(fileobj=fh, mode="r:*"))
    return stack.enter_context(tarfile.open(path, mode="r:*"))


def list_members(path: Path | str, *, stamp: Stamp | None = None) -> list[Member]:
    """Regular-file and link members in archive order (directories left out; links carry their target).

    ``path``: a local path, or an object's URL (read in ranges, checked
    against ``stamp``).

    Raises
    ------
    ArchiveError
        Not a readable zip/tar, or a tar that ends early.
    """
    try:
        if _is_zip(path):
            with _zip(path, stamp) as zf:
                _check_read(zf.fp)
                return [
                    Member(i.filename, i.file_size, packed=i.compress_size) for i in zf.infolist() if not i.is_dir()
                ]
        with contextlib.ExitStack() as stack:
            tf = _tar(path, stack, stamp)
            members = [m for m in tf.getmembers() if m.isreg() or m.issym() or m.islnk()]
            _check_read(tf.fileobj)
        # A compressed tar's members share its compression: each is charged the
        # archive's overall ratio (a plain tar stores them: ratio 1).
        total = sum(m.size for m in members)
        size = storage_for(str(path)).stat(str(path)).size if is_url(path) else os.path.getsize(path)
        scale = min(1.0, size / total) if total else 1.0
        return [
            Member(m.name, m.size, m.linkname if m.issym() or m.islnk() else "", packed=math.ceil(m.size * scale))
            for m in members
        ]
    except _READ_ERRORS as exc:
        raise ArchiveError(f"cannot read archive: {getattr(exc, 'strerror', None) or exc}") from None


def _streams(
    path: Path | str, wanted: Collection[str], stamp: Stamp | None = None
) -> Iterator[tuple[str, IO[bytes] | Exception]]:
    """(name, open stream or why not) for each wanted member, in one pass over the archive."""
    left = set(wanted)
    try:
        if _is_zip(path):
            with _zip(path, stamp) as zf:
                for name in wanted:
                    try:
                        with zf.open(zf.getinfo(name)) as fh:
                            yield name, fh
                    except (KeyError, zipfile.BadZipFile, RuntimeError, NotImplementedError, ArchiveError) as exc:
                        yield name, exc  # encrypted, unsupported compression, bad header
                    left.discard(name)
            return
        with contextlib.ExitStack() as stack:
            tf = _tar(path, stack, stamp)
            for m in tf:
                if not left:
                    break
                if m.name not in left or not m.isreg():
                    continue
                left.discard(m.name)
                fh = tf.extractfile(m)
                yield m.name, fh if fh is not None else ArchiveError("not a regular file")
    except _READ_ERRORS as exc:
        err = ArchiveError(f"cannot read archive: {getattr(exc, 'strerror', None) or exc}")
        for name in sorted(left):
            yield name, err
        return
    for name in sorted(left):
        yield name, ArchiveError("member not found in the archive (did it change since discovery?)")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ArchiveError):
        return str(exc)
    return f"cannot read archive member: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class MemberData:
    """A member's bytes (``data``), or an open temporary file holding them (``spill``), and their SHA-256."""

    data: bytes | None
    spill: IO[bytes] | None
    sha256: str


def read_members(
    path: Path | str, wanted: Collection[str], *, in_memory: int = IN_MEMORY_BYTES, stamp: Stamp | None = None
) -> Iterator[tuple[str, MemberData | None, str]]:
    """(name, contents or None, error) for each wanted member, in one pass.

    A member over ``in_memory`` bytes is copied, 1 MiB at a time, into an
    anonymous temporary file, which the caller reads and closes before
    asking for the next member (it is deleted on close). A damaged member
    (bad CRC, truncated data) gives its error and the others are still read.
    An archive in object storage (``path`` a URL) is read in ranges checked
    against ``stamp``.
    """
    for name, stream in _streams(path, wanted, stamp):
        if isinstance(stream, Exception):
            yield name, None, _reason(stream)
            continue
        with contextlib.ExitStack() as stack:  # closes (and so deletes) a spill file
            try:
                got = _read_member(stream, stack, in_memory)
            except _READ_ERRORS as exc:
                yield name, None, _reason(exc)
                continue
            yield name, got, ""


def _read_member(stream: IO[bytes], stack: contextlib.ExitStack, in_memory: int) -> MemberData:
    h = hashlib.sha256()
    data = stream.read(in_memory + 1)
    h.update(data)
    if len(data) <= in_memory:
        return MemberData(data, None, h.hexdigest())
    spill = stack.enter_context(tempfile.TemporaryFile(prefix="batchser-member-"))  # noqa: SIM115 - the stack closes it
    spill.write(data)
    del data
    while chunk := stream.read(_CHUNK):
        spill.write(chunk)
        h.update(chunk)
    spill.seek(0)
    return MemberData(None, spill, h.hexdigest())


def hash_members(
    path: Path | str, wanted: Collection[str], *, stamp: Stamp | None = None
) -> dict[str, tuple[str, str]]:
    """SHA-256 of each wanted member's bytes (the same as the file's outside the archive), or the error."""
    out: dict[str, tuple[str, str]] = {}
    for name, stream in _streams(path, wanted, stamp):
        if isinstance(stream, Exception):
            out[name] = ("", _reason(stream))
            continue
        h = hashlib.sha256()
        try:
            while chunk := stream.read(_CHUNK):
                h.update(chunk)
        except _READ_ERRORS as exc:
            out[name] = ("", _reason(exc))
            continue
        out[name] = (h.hexdigest(), "")
    return out
