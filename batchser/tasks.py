"""What the engine is asked to do: one :class:`ExtractTask` per file (or part of a long file).

Also the records of failures that are this run's, not the bytes' (``retry``),
and of files the bytes decide cannot be analysed (``error``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from batchser.audio import Audio
from batchser.cache import FeatureRecord
from batchser.storage import is_url

__all__ = ["CHANGED", "VANISHED", "ExtractTask", "ReadHashed", "decoded_by", "error_record", "retry_record"]


@dataclass(frozen=True, slots=True)
class ExtractTask:
    """One file to decode and analyse; ``content_hash`` keys its cache row."""

    path: str
    content_hash: str
    member: str = ""  # name inside the archive at ``path``
    size: int = 0  # bytes, to judge whether starting workers pays (0: unknown)
    # Check that the bytes decoded are the ones ``content_hash`` names (the
    # job's tasks do; a cache row must describe what its key says).
    verify: bool = False
    # (size, mtime_ns, ctime_ns) when listed: lets a part of a long file check
    # it reads the bytes hashed without hashing the whole file once per part.
    stamp: tuple[int, int, int] | None = None
    # A long file is analysed in n_parts stretches of part_windows windows
    # each, one task per part (see plan_parts).
    part: int = 0
    n_parts: int = 1
    part_windows: int = 0  # windows (or, for speech segments, 32 ms frames) per part
    # Speech segments, second pass: (start_s, end_s, speech probability) of the
    # segments that start in this part, whose features it extracts. None: first pass.
    spans: tuple[tuple[float, float, float], ...] | None = None
    # Where speaker turns change (seconds): speech segments crossing one are cut there.
    # ``content_hash`` is then the key of the cut segments (segments.cut_key) and
    # ``source_hash`` the bytes' own hash, which the decoded bytes are checked against.
    cuts: tuple[float, ...] = ()
    source_hash: str = ""
    # An object in storage whose hash is taken where its bytes are read (a worker),
    # so that a cold job reads it once: ``content_hash`` is then a placeholder naming
    # the task, and the worker answers with a :class:`ReadHashed`.
    read_hash: bool = False

    @property
    def bytes_hash(self) -> str:
        """The SHA-256 of the bytes this task reads."""
        return self.source_hash or self.content_hash


@dataclass(frozen=True, slots=True)
class ReadHashed:
    """The record of a ``read_hash`` task, filed under the hash of the bytes read; ``key``: the task's placeholder."""

    key: str
    record: FeatureRecord


VANISHED = "vanished: the file was removed or renamed after it was listed; rerun to label it"
CHANGED = "changed during the job: its bytes are not those hashed when it was listed; rerun to label the new content"


def retry_record(task: ExtractTask, reason: str) -> FeatureRecord:
    """A failure of this run, not of the bytes: reported, never cached, retried next run."""
    if reason.startswith("cannot read") and not is_url(task.path) and not os.path.lexists(task.path):
        reason = VANISHED
    return FeatureRecord(task.content_hash, "retry", reason, 0, 0, 0.0, None)


def error_record(task: ExtractTask, reason: str, audio: Audio | None = None) -> FeatureRecord:
    if audio is None:
        return FeatureRecord(task.content_hash, "error", reason, 0, 0, 0.0, None)
    return FeatureRecord(
        task.content_hash,
        "error",
        reason,
        audio.orig_sample_rate,
        audio.channels,
        audio.duration_s,
        None,
        "; ".join(audio.warnings),
    )


def decoded_by(record: FeatureRecord, decoder: str) -> FeatureRecord:
    """``record`` marked as the verdict of ``decoder`` (see :attr:`FeatureRecord.decoder`; "" is libsndfile)."""
    if not decoder or record.status == "retry" or record.decoder == decoder:
        return record
    return dataclasses.replace(record, decoder=decoder)
