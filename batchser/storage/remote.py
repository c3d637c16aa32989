"""Object storage through fsspec: S3 (s3fs), Google Cloud Storage (gcsfs), Azure (adlfs), single HTTPS files.

Credentials come from each library's standard chain (environment, config
files, instance or workload identity); batchser passes none and keeps none.
Each request is retried here with exponential backoff and full jitter on
throttling and transient errors (the libraries' own retry loops are turned
down to one attempt, so the waits do not multiply), and its failure is
told without any credential (:func:`batchser.storage.urls.redact`).

S3 is spoken to directly through s3fs's client: ListObjectsV2 page by page
(keys arrive in key order, 1,000 at a time: the listing streams), and each
ranged GET's response (its size, ETag and Last-Modified) is checked against
the stamp the object was listed with. Other fsspec backends list folder by
folder (one folder's entries in memory, sorted as the local walk sorts) and
check a read by stating the object after it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from batchser.storage.base import (
    AccessDeniedError,
    MissingBackendError,
    ObjectChangedError,
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageError,
    count,
    describe,
    retrying,
)
from batchser.storage.local import UNLISTABLE
from batchser.storage.urls import EXTRAS, redact, scheme_of, shown_url

__all__ = ["FsspecStorage", "HttpStorage", "S3Storage", "remote_storage"]

log = logging.getLogger(__name__)

# Loggers that would print request headers (a session token) or addresses with their queries at
# debug level, which `batchser -vv` turns on for every logger: held at WARNING.
_CHATTY = ("botocore", "aiobotocore", "boto3", "s3fs", "fsspec", "urllib3", "aiohttp", "gcsfs", "adlfs", "azure",
           "google")  # fmt: skip

_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "403", "Forbidden"}  # fmt: skip
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_CHANGED = {"PreconditionFailed", "412"}


def _seconds_ns(value: Any) -> int:
    """A last-modified time (datetime, ISO or HTTP date text, epoch seconds) as whole seconds in ns; 0 if none."""
    if value is None or value == "":
        return 0
    if isinstance(value, (int, float)):
        return int(value) * 10**9
    if not isinstance(value, datetime):
        text = str(value)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                value = parsedate_to_datetime(text)
            except (TypeError, ValueError):
                return 0
    return int(value.timestamp()) * 10**9


def _client_error(exc: BaseException) -> tuple[str, str]:
    """(code, message) of a botocore ClientError behind ``exc`` (s3fs keeps it as the cause), else ("", "")."""
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            err = response["Error"]
            return str(err.get("Code", "")), str(err.get("Message", ""))
    return "", ""


def _classify(location: str, what: str) -> Any:
    def classify(exc: BaseException) -> StorageError:
        code, message = _client_error(exc)
        reason = redact(
            f"{what} {shown_url(location)}: {code + ': ' if code else ''}{message or describe(exc, location)}"
        )
        if code in _DENIED or (not code and isinstance(exc, PermissionError)):
            return AccessDeniedError(reason)
        if code in _MISSING or (not code and isinstance(exc, FileNotFoundError)):
            return ObjectNotFoundError(reason)
        if code in _CHANGED:
            return ObjectChangedError(reason, transient=False)
        return StorageError(reason, transient=True)  # throttling, server errors, timeouts, dropped connections

    return classify


def _check(location: str, stamp: tuple[int, int, int] | None, got: ObjectInfo) -> None:
    if stamp is not None and got.stamp != stamp:
        raise ObjectChangedError(
            f"{shown_url(location)} is no longer the object listed (size {got.size}, ETag {got.etag}): "
            "it was replaced during the job",
            transient=False,
        )


class S3Storage(Storage):
    """S3 and its compatibles through s3fs (its session, its credential chain, its event loop)."""

    def __init__(self) -> None:
        try:
            import s3fs
        except ImportError as exc:
            raise MissingBackendError(
                f"s3:// needs s3fs ({exc}); install it with: pip install 'batchser[s3]'"
            ) from None
        # One attempt in botocore and in s3fs: retrying() does the waiting, once.
        self.fs = s3fs.S3FileSystem(
            skip_instance_cache=True,
            config_kwargs={
                "retries": {"total_max_attempts": 1, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 60,
            },
        )
        self.fs.retries = 1

    def _call(self, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, coro_fn, *args, **kwargs)

    @staticmethod
    def _split(location: str) -> tuple[str, str]:
        body = location.split("://", 1)[1]
        bucket, _, key = body.partition("/")
        return bucket, key

    def walk(self, root: str, *, page: int = 1000) -> Iterator[tuple[str, ObjectInfo | None, str]]:
        bucket, prefix = self._split(root)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page}
        head = root.split("://", 1)[0]
        first = True
        while True:
            try:
                page = retrying(
                    lambda: self._call(self.fs._call_s3, "list_objects_v2", **kwargs),
                    what="list",
                    classify=_classify(root, "cannot list"),
                )
            except StorageError as exc:
                if first or not exc.transient:
                    raise
                yield root, None, f"{UNLISTABLE}: {exc}; the objects after the last one listed are not in this job"
                return
            count(list=1)
            first = False
            for c in page.get("Contents", ()):
                key = c["Key"]
                if key.endswith("/"):
                    continue  # a "folder" marker object
                url = f"{head}://{bucket}/{key}"
                yield (
                    url,
                    ObjectInfo(url, int(c["Size"]), str(c.get("ETag", "")), _seconds_ns(c.get("LastModified"))),
                    "",
                )
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def stat(self, location: str) -> ObjectInfo:
        bucket, key = self._split(location)
        head = retrying(
            lambda: self._call(self.fs._call_s3, "head_object", Bucket=bucket, Key=key),
            what="stat",
            classify=_classify(location, "cannot stat"),
        )
        count(stat=1)
        return ObjectInfo(
            location,
            int(head["ContentLength"]),
            str(head.get("ETag", "")),
            _seconds_ns(head.get("LastModified")),
            str(head.get("VersionId") or ""),
        )

    def fetch(self, location: str, start: int, end: int, *, stamp: tuple[int, int, int] | None) -> bytes:
        if end <= start:
            return b""
        bucket, key = self._split(location)

        async def get() -> tuple[dict[str, Any], bytes]:
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            try:
                return resp, await resp["Body"].read()
            finally:
                resp["Body"].close()

        resp, data = retrying(lambda: self._call(get), what="read", classify=_classify(location, "cannot read"))
        count(get=1, bytes=len(data))
        total = str(resp.get("ContentRange", "")).rpartition("/")[2]
        size = int(total) if total.isdigit() else int(resp.get("ContentLength", len(data)))
        _check(
            location,
            stamp,
            ObjectInfo(location, size, str(resp.get("ETag", "")), _seconds_ns(resp.get("LastModified"))),
        )
        return data


def _info_of(location: str, info: dict[str, Any]) -> ObjectInfo:
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("content_md5") or ""
    when = next(
        (info[k] for k in ("LastModified", "last_modified", "updated", "mtime", "Last-Modified") if k in info), None
    )
    version = info.get("generation") or info.get("version_id") or info.get("VersionId") or ""
    return ObjectInfo(location, int(info.get("size") or 0), str(etag), _seconds_ns(when), str(version))


class FsspecStorage(Storage):
    """Any other fsspec file system (gcsfs, adlfs, HTTP): folder-by-folder listing, reads checked by a stat."""

    def __init__(self, scheme: str) -> None:
        import fsspec

        try:
            self.fs = fsspec.filesystem(scheme, skip_instance_cache=True)
        except ImportError as exc:
            extra = EXTRAS.get(scheme, "cloud")
            raise MissingBackendError(
                f"{scheme}:// needs its fsspec backend ({exc}); install it with: pip install 'batchser[{extra}]'"
            ) from None
        self.scheme = scheme

    def _entries(self, folder: str) -> list[tuple[str, dict[str, Any]]]:
        got = retrying(
            lambda: self.fs.ls(folder, detail=True, refresh=True),
            what="list",
            classify=_classify(folder, "cannot list"),
        )
        count(list=1)
        out = []
        for e in got:
            name = str(e["name"]).rstrip("/")
            url = name if "://" in name else f"{self.scheme}://{name}"
            out.append((url + "/" if e.get("type") == "directory" else url, e))
        out.sort(key=lambda t: t[0])  # a folder's name sorts with its "/", as the local walk does
        return out

    def walk(self, root: str, *, page: int = 1000) -> Iterator[tuple[str, ObjectInfo | None, str]]:
        if self.scheme in ("http", "https"):
            raise StorageError(f"{shown_url(root)}: an {self.scheme}:// input names one file; list a folder in "
                               "object storage (s3://, gs://, az://) instead", transient=False)  # fmt: skip
        try:
            entries = self._entries(root)
        except StorageError as exc:
            if not exc.transient:
                raise
            yield root, None, f"{UNLISTABLE}: {exc}; the objects in it are not in this job"
            return
        for url, e in entries:
            if url.endswith("/"):
                yield from self.walk(url.rstrip("/"))
            else:
                yield url, _info_of(url, e), ""

    def stat(self, location: str) -> ObjectInfo:
        info = retrying(lambda: self.fs.info(location), what="stat", classify=_classify(location, "cannot stat"))
        count(stat=1)
        if info.get("type") == "directory":
            raise ObjectNotFoundError(f"{shown_url(location)} is a folder")
        return _info_of(location, info)

    def fetch(self, location: str, start: int, end: int, *, stamp: tuple[int, int, int] | None) -> bytes:
        if end <= start:
            return b""
        data = retrying(
            lambda: self.fs.cat_file(location, start=start, end=end),
            what="read",
            classify=_classify(location, "cannot read"),
        )
        count(get=1, bytes=len(data))
        if stamp is not None:  # the object, stated after its bytes were served, must still be the one listed
            self.fs.invalidate_cache(location)
            _check(location, stamp, self.stat(location))
        return data


class HttpStorage(FsspecStorage):
    """One file at an ``http(s)`` address (a presigned URL too): ranged GETs, each response checked against the stamp.

    A stat is a GET of the first byte (a presigned GET address refuses a
    HEAD): its Content-Range gives the size, with the ETag and Last-Modified.
    """

    def _get(self, location: str, start: int, end: int) -> tuple[dict[str, str], bytes]:
        async def get() -> tuple[dict[str, str], bytes]:
            session = await self.fs.set_session()
            async with session.get(location, headers={"Range": f"bytes={start}-{end - 1}"}) as r:
                data = await r.read()
                if r.status >= 400:
                    code = "AccessDenied" if r.status in (401, 403) else "NotFound" if r.status == 404 else ""
                    raise _HttpError(r.status, code)
                return dict(r.headers), data

        from fsspec.asyn import sync

        return retrying(lambda: sync(self.fs.loop, get), what="read", classify=_classify(location, "cannot read"))

    @staticmethod
    def _info(location: str, headers: dict[str, str], got: int) -> ObjectInfo:
        total = headers.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else int(headers.get("Content-Length", got))
        return ObjectInfo(location, size, headers.get("ETag", ""), _seconds_ns(headers.get("Last-Modified")))

    def stat(self, location: str) -> ObjectInfo:
        headers, data = self._get(location, 0, 1)
        count(stat=1)
        return self._info(location, headers, len(data))

    def fetch(self, location: str, start: int, end: int, *, stamp: tuple[int, int, int] | None) -> bytes:
        if end <= start:
            return b""
        headers, data = self._get(location, start, end)
        count(get=1, bytes=len(data))
        _check(location, stamp, self._info(location, headers, len(data)))
        return data


class _HttpError(OSError):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"HTTP {status}")
        self.response = {"Error": {"Code": code or str(status), "Message": f"HTTP {status}"}}


_backends: dict[tuple[str, int], Storage] = {}
_lock = threading.Lock()


def remote_storage(location: str) -> Storage:
    """The backend reading ``location``'s scheme, one per process (workers make their own).

    Raises
    ------
    MissingBackendError
        Its library is not installed (the message names the extra).
    """
    scheme = scheme_of(location)
    key = (scheme, os.getpid())
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            for name in _CHATTY:
                logger = logging.getLogger(name)
                if logger.getEffectiveLevel() < logging.WARNING:
                    logger.setLevel(logging.WARNING)
            if scheme == "s3":
                backend = S3Storage()
            elif scheme in ("http", "https"):
                backend = HttpStorage(scheme)
            else:
                backend = FsspecStorage({"gcs": "gs", "abfss": "abfs"}.get(scheme, scheme))
            _backends[key] = backend
        return backend
