"""Where inputs are read from: the local disk, or object storage through fsspec.

One small interface (:class:`Storage`): ``walk`` lists a folder or prefix in
key order, streamed; ``stat`` gives an object's size, ETag and last change;
``open`` reads it in ranges, checked against the stamp it was listed with.
:func:`storage_for` picks the backend by the address: a local path, or
``s3://``, ``gs://``, ``az://`` and ``https://`` (single files) through s3fs,
gcsfs, adlfs and fsspec's HTTP (extras ``s3``, ``gcs``, ``azure``, ``cloud``).
Modules: ``urls`` (addresses, shown without credentials), ``base`` (records,
errors, ranged reads and retries), ``local``, ``remote``.
"""

from __future__ import annotations

from batchser.storage.base import (
    AccessDeniedError,
    MissingBackendError,
    ObjectChangedError,
    ObjectInfo,
    ObjectNotFoundError,
    RangedReader,
    Storage,
    StorageError,
    etag_digest,
    raise_read_error,
    read_stats,
)
from batchser.storage.local import LocalStorage
from batchser.storage.urls import is_url, redact, scheme_of, shown_url, url_join, url_name, url_parent, url_problem

__all__ = [
    "AccessDeniedError",
    "LocalStorage",
    "MissingBackendError",
    "ObjectChangedError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "RangedReader",
    "Storage",
    "StorageError",
    "etag_digest",
    "is_url",
    "raise_read_error",
    "read_stats",
    "redact",
    "scheme_of",
    "shown_url",
    "storage_for",
    "url_join",
    "url_name",
    "url_parent",
    "url_problem",
]

LOCAL = LocalStorage()


def storage_for(location: object) -> Storage:
    """The backend of ``location``: the local disk for a path, else the object storage of its scheme.

    Raises
    ------
    MissingBackendError
        The scheme's library is not installed (the message names the extra).
    """
    if not is_url(location):
        return LOCAL
    from batchser.storage.remote import remote_storage  # fsspec is imported only for a URL

    return remote_storage(str(location))
