"""What the features stage hands on: each discovered file with its content hash and feature record."""

from __future__ import annotations

from dataclasses import dataclass

from batchser.cache import FeatureRecord
from batchser.discover import SourceFile

__all__ = ["FileOutcome"]


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """A discovered file with its content hash and feature record (or why it has none).

    ``record.content_hash`` is the record's cache key: the content hash, or
    for a long file whose speech segments speaker turns cut, a key of the
    content and the cuts (:func:`batchser.segments.cut_key`).
    """

    source: SourceFile
    content_hash: str = ""
    record: FeatureRecord | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.record is not None and self.record.ok
