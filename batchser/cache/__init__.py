"""The feature cache shared by all jobs (see :mod:`batchser.cache.store` for its layout).

Modules: ``store`` (the :class:`FeatureStore` jobs use), ``parts`` (immutable,
checksummed Parquet parts: the source of truth), ``index`` (the per-host
SQLite index over them), ``claims`` (which job extracts what), ``maintain``
(sync, compaction, gc and stats, also as ``batchser cache``).
"""

from batchser.cache.claims import CLAIM_STALE_S
from batchser.cache.errors import CacheError
from batchser.cache.store import NO_SPEECH, FeatureRecord, FeatureStore, FileChangedError, hash_file

__all__ = [
    "CLAIM_STALE_S",
    "NO_SPEECH",
    "CacheError",
    "FeatureRecord",
    "FeatureStore",
    "FileChangedError",
    "hash_file",
]
