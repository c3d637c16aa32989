"""What every storage backend is: the records, the errors, and reads in ranges with retries.

A backend (:class:`Storage`) lists a folder or prefix in key order, streamed
(one folder's listing, or one page of keys, in memory at a time), states an
object (:class:`ObjectInfo`: size, ETag, last change) and opens it for ranged,
streamed reads (:class:`RangedReader`), never downloading a whole recording
before it is analysed.

An object's *stamp* is what the path index trusts a content hash under, and
what every read is checked against: size, last modified (in whole seconds,
which listings and reads agree on) and a digest of its ETag (and version).
A read whose response says another stamp raises :class:`ObjectChangedError`,
so bytes of a replaced object never reach a cache row filed under the old
hash.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from batchser.storage.urls import redact, shown_url

__all__ = [
    "ATTEMPTS",
    "READ_BLOCK",
    "AccessDeniedError",
    "MissingBackendError",
    "ObjectChangedError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "RangedReader",
    "Storage",
    "StorageError",
    "etag_digest",
    "raise_read_error",
    "read_stats",
    "retrying",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Reads are asked for in blocks of at least this: a clip's header and samples in one request,
# a long file's parts block by block (libsndfile asks for 1 Mi samples at a time).
READ_BLOCK = 512 << 10
HASH_BLOCK = 8 << 20
# Attempts of one request: throttling (503 SlowDown) and transient errors are retried with
# exponential backoff and full jitter (AWS's advice), 0.1 s doubling up to 5 s.
ATTEMPTS = 5
BACKOFF_S, BACKOFF_CAP_S = 0.1, 5.0


class StorageError(OSError):
    """A storage request failed; ``str()`` says why without any credential.

    ``transient``: the failure may not happen again (throttling, a timeout,
    a server error), so a file it hit is a ``retry`` row, never a verdict.
    """

    def __init__(self, reason: str, *, transient: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient

    def __str__(self) -> str:
        return self.reason


class ObjectChangedError(StorageError):
    """The object is no longer the one listed (another size, ETag or time): it was replaced during the job."""


class AccessDeniedError(StorageError, PermissionError):
    """The credentials in use may not do this (list a bucket, read an object)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, transient=False)


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """No object (or bucket) at that address."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, transient=False)


class MissingBackendError(StorageError):
    """The library that reads this kind of URL is not installed; ``str()`` says which extra installs it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, transient=False)


def etag_digest(etag: str, version: str = "") -> int:
    """A stamp's third number: 63 bits of SHA-256 over the ETag (and version id), 0 when there is none."""
    if not etag and not version:
        return 0
    digest = hashlib.sha256(f"{etag}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object (or file) as a listing or a stat gives it."""

    url: str  # the address it is read by
    size: int
    etag: str = ""
    mtime_ns: int = 0  # last modified, whole seconds
    version: str = ""  # a versioned bucket's version id, when the listing gives it

    @property
    def stamp(self) -> tuple[int, int, int]:
        """(size, mtime_ns, ETag digest): the :attr:`batchser.discover.SourceFile.stamp` of an object."""
        return (self.size, self.mtime_ns, etag_digest(self.etag))


# What this process asked of object storage, for benchmarks and tests: requests by kind, bytes, retries.
_stats: Counter[str] = Counter()
_stats_lock = threading.Lock()


def count(**kinds: int) -> None:
    with _stats_lock:
        _stats.update(kinds)


def read_stats(*, reset: bool = False) -> dict[str, int]:
    """This process's storage requests (``list``, ``stat``, ``get``), ``bytes`` read and ``retries``."""
    with _stats_lock:
        out = dict(_stats)
        if reset:
            _stats.clear()
    return out


def retrying(call: Callable[[], T], *, what: str, classify: Callable[[BaseException], StorageError]) -> T:
    """``call()``, again after a backoff while it fails transiently (at most :data:`ATTEMPTS` times).

    ``classify`` turns a library's exception into a :class:`StorageError`;
    non-transient ones (denied, not found, changed) are raised at once.
    """
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - every library error is classified, none escapes raw
            err = exc if isinstance(exc, StorageError) else classify(exc)
            if not err.transient or attempt == ATTEMPTS - 1:
                raise err from None
            count(retries=1)
            log.debug("%s: %s; retrying", what, err)
            time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_S * 2**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


class RangedReader(io.RawIOBase):
    """A read-only, seekable file over ranged requests: ``fetch(start, end)`` gives those bytes.

    Wrapped in an :class:`io.BufferedReader` of :data:`READ_BLOCK` by
    :meth:`Storage.open`. A decoder reading through a callback (libsndfile
    through soundfile) cannot be handed an exception: a failed read is kept in
    :attr:`error` and reads as the end of the data, and whoever decoded must
    look at :attr:`error` before trusting what came out.
    """

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, name: str) -> None:
        super().__init__()
        self._fetch, self._size, self.name, self._pos = fetch, size, name, 0
        self.error: StorageError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        if n <= 0 or self.error is not None:
            return 0
        try:
            data = self._fetch(self._pos, self._pos + n)
        except StorageError as exc:
            self.error = exc
            return 0
        memoryview(buffer)[: len(data)] = data
        self._pos += len(data)
        return len(data)


def raise_read_error(source: object) -> None:
    """Raise what a :class:`RangedReader` under ``source`` kept: a failed or changed read reads as the end of data.

    Call it after decoding from :meth:`Storage.open`'s file, before trusting
    what came out (a decoder reading through a callback saw only an early end).
    """
    err = getattr(getattr(source, "raw", source), "error", None)
    if err is not None:
        raise err


class Storage(ABC):
    """A place files are listed and read from: the local disk, or an object store through fsspec."""

    @abstractmethod
    def walk(self, root: str, *, page: int = 1000) -> Iterator[tuple[str, ObjectInfo | None, str]]:
        """``(address, info, error)`` of every file under ``root`` in the order of their addresses, streamed.

        ``info`` is None where the backend leaves the stat to the caller (the
        local disk); ``error`` is set, with the folder's address, for a part
        that cannot be listed. ``page``: keys asked for per request, where
        the backend lists in pages (a probe asks for one).
        """

    @abstractmethod
    def stat(self, location: str) -> ObjectInfo:
        """The object at ``location``.

        Raises
        ------
        ObjectNotFoundError, AccessDeniedError, StorageError
        """

    @abstractmethod
    def fetch(self, location: str, start: int, end: int, *, stamp: tuple[int, int, int] | None) -> bytes:
        """Bytes ``[start, end)`` of an object, checked against ``stamp`` (None: unchecked).

        Raises
        ------
        ObjectChangedError
            The object is no longer the one ``stamp`` describes.
        StorageError
        """

    def open(self, location: str, *, size: int, stamp: tuple[int, int, int] | None = None) -> BinaryIO:
        """A buffered, seekable reader over ranged fetches of ``size`` bytes (see :class:`RangedReader`)."""
        raw = RangedReader(lambda a, b: self.fetch(location, a, b, stamp=stamp), size, shown_url(location))
        return io.BufferedReader(raw, buffer_size=READ_BLOCK)  # type: ignore[return-value]

    def read(self, location: str, *, size: int, stamp: tuple[int, int, int] | None = None) -> bytes:
        """The whole object, in as few requests as its size allows."""
        return b"".join(
            self.fetch(location, a, min(size, a + HASH_BLOCK), stamp=stamp) for a in range(0, size, HASH_BLOCK)
        )

    def hash(self, location: str, *, size: int, stamp: tuple[int, int, int] | None = None) -> str:
        """SHA-256 of the object's bytes, read in blocks of :data:`HASH_BLOCK` (never held whole)."""
        h = hashlib.sha256()
        for a in range(0, size, HASH_BLOCK):
            h.update(self.fetch(location, a, min(size, a + HASH_BLOCK), stamp=stamp))
        return h.hexdigest()


def describe(exc: BaseException, location: str) -> str:
    """A library error as a report's reason: the library's words, the address shown without secrets."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return redact(f"{text} ({shown_url(location)})" if shown_url(location) not in str(text) else str(text))
