"""The hash stage: each discovered file's content hash, from the path index or by reading it.

Threads overlap I/O and hashing (hashlib releases the GIL on large buffers); a
file whose size, mtime or ctime moves while it is read gets no hash, so no
cache row can ever be filed under bytes that were not hashed.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from batchser.archive import hash_members, member_name
from batchser.cache import FeatureStore, FileChangedError, hash_file
from batchser.discover import SourceFile
from batchser.engine import CHANGED, VANISHED
from batchser.longfile import hashed_on_read
from batchser.storage import ObjectChangedError, ObjectNotFoundError, StorageError, storage_for

__all__ = ["content_hashes", "display_path", "path_from_text", "progress_bar", "shown_text", "text_path"]


# What a report path escapes: the backslash itself (so that every escape is
# unambiguous), C0 controls and DEL (a carriage return would split a CSV line;
# an ESC would drive a terminal), and the lone surrogates that stand for bytes
# that are not UTF-8.
_ESCAPED = re.compile(r"[\\\x00-\x1f\x7f\udc80-\udcff]")
_ESCAPE = re.compile(r"\\(\\|x([0-9a-f]{2}))")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c == "\\":
        return "\\\\"
    code = ord(c)
    return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"


def text_path(path: Path | str) -> str:
    """A file name as one line of valid UTF-8 text, one-to-one with the name's bytes.

    Bytes that are not UTF-8, control characters and DEL become ``\\xNN``
    escapes and a backslash becomes ``\\\\``, so two names never show alike:
    the byte 0xFF shows as ``x\\xff.wav``, a name written with a backslash
    and ``xff`` as ``x\\\\xff.wav``. :func:`path_from_text` inverts it.
    (Parquet, CSV and JSON need real Unicode; Python keeps undecodable bytes
    as lone surrogates, which cannot be encoded.)
    """
    text = os.fsdecode(os.fsencode(path))
    if "\\" not in text and text.isprintable():
        return text  # nearly every name: nothing to escape
    return _ESCAPED.sub(_escape, text)


# Unicode's bidirectional controls (embeddings, overrides, isolates, marks): inside a name they
# reorder what is shown around them ("clip\u202evaw.exe" reads "clipexe.wav"). Text keeps them;
# a person is shown their escapes.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown_text(text: str) -> str:
    """``text`` as shown to a person (a page, the console): each bidirectional control written as its
    escape, e.g. ``\\u202e``, so that a name cannot reorder what is read around it."""
    if text.isascii():
        return text
    return _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def path_from_text(text: str) -> bytes:
    """The file name's bytes from a report path written by :func:`text_path`.

    Raises
    ------
    ValueError
        When ``text`` holds a backslash that starts no escape :func:`text_path` writes.
    """
    out = bytearray()
    pos = 0
    for m in [*_ESCAPE.finditer(text), None]:
        plain = text[pos : m.start() if m else len(text)]
        if "\\" in plain:
            raise ValueError(f"{text!r} is not a report path: a backslash must start \\\\ or \\xNN")
        out += plain.encode("utf-8")
        if m:
            out += b"\\" if m.group(1) == "\\" else bytes([int(m.group(2), 16)])
            pos = m.end()
    return bytes(out)


def display_path(source: SourceFile, root: str) -> str:
    """The report's path: relative to ``root`` (a folder, with its trailing slash) when inside it."""
    if source.remote:  # an object keeps its URL (an https address without its query)
        return text_path(source.name)
    # Strings, not Path.relative_to: the same lexical test at a tenth of the cost
    # (paths are absolute and normalised by discovery), once per file per report.
    full = str(source.path)
    shown = full[len(root) :] if full.startswith(root) else full
    return text_path(member_name(shown, source.member) if source.member else shown)


class _FileBar(tqdm):
    """A bar of files that a long file advances part by part: shows 0.33/1, not 0.3333333333333333/1."""

    @staticmethod
    def format_meter(n: float, total: float, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        return tqdm.format_meter(round(n, 2) if n % 1 else int(n), total, *args, **kwargs)


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0) -> tqdm:
    return _FileBar(
        total=total, initial=initial, desc=desc, unit="file", disable=not enabled, dynamic_ncols=True, leave=True
    )


def _map_ahead(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterator[Any], *, ahead: int) -> Iterator:
    """``pool.map(fn, items)`` with at most ``ahead`` calls queued.

    ``Executor.map`` submits every item at once, and a future per file of a
    large archive weighs more than its hash.
    """
    queued: deque[Future[Any]] = deque()
    for item in items:
        queued.append(pool.submit(fn, item))
        if len(queued) >= ahead:
            yield queued.popleft().result()
    while queued:
        yield queued.popleft().result()


def content_hashes(
    files: Sequence[SourceFile], store: FeatureStore, *, progress: bool, bar: tqdm | None = None
) -> list[tuple[str, str]]:
    """(content_hash, error) per file: from the path index when its stamp matches, else hashed.

    An object in storage that its worker hashes as it reads it
    (:func:`~batchser.longfile.hashed_on_read`: read once, not twice) and the
    path index does not know gets ``("", "")``. An object is hashed from its
    bytes, never taken from its ETag (a multipart upload's is no hash of the
    content), in ranges checked against its listed stamp.

    ``bar``: a bar of the whole job's files to advance (every file of ``files``
    counts), instead of a bar of the files hashed here.
    """
    out: list[tuple[str, str]] = [("", f.error) if f.error else ("", "") for f in files]
    todo = []
    for i, f in enumerate(files):
        if f.error:
            continue
        known = store.known_hash(text_path(f.name), f.stamp)
        if known:
            out[i] = (known, "")
        elif not hashed_on_read(str(f.path), f.size, f.member):
            todo.append(i)
    if bar is not None:
        bar.update(len(files) - len(todo))
    if not todo:
        return out
    # Work units: a plain file, or every member wanted from one archive (one pass over it).
    units: dict[str, list[int]] = {}
    for i in todo:
        units.setdefault(str(files[i].path) if files[i].member else f"\0{i}", []).append(i)

    def one(idx: list[int]) -> list[tuple[int, str, str]]:
        f = files[idx[0]]
        if f.remote and not f.member:
            try:
                return [(idx[0], storage_for(f.path).hash(str(f.path), size=f.size, stamp=f.stamp), "")]
            except ObjectChangedError:
                return [(idx[0], "", CHANGED)]
            except ObjectNotFoundError:
                return [(idx[0], "", VANISHED)]
            except StorageError as exc:
                return [(idx[0], "", f"cannot read: {exc}; rerun to retry")]
        if f.remote:
            got = hash_members(f.path, [files[i].member for i in idx], stamp=f.stamp)
            return [(i, *got[files[i].member]) for i in idx]
        if not f.member:
            try:
                return [(idx[0], hash_file(f.path, expect=f.stamp), "")]
            except FileNotFoundError:
                return [(idx[0], "", VANISHED)]
            except FileChangedError:
                return [(idx[0], "", CHANGED)]
            except OSError as exc:
                return [(idx[0], "", f"cannot read: {exc.strerror or exc}")]
        got = hash_members(f.path, [files[i].member for i in idx])
        return [(i, *got[files[i].member]) for i in idx]

    # hashlib releases the GIL on large buffers: threads overlap I/O and hashing.
    with (
        ThreadPoolExecutor(max_workers=16 if any(files[i].remote for i in todo) else 4) as pool,
        contextlib.nullcontext(bar) if bar is not None else progress_bar(len(todo), "hashing", progress) as shown,
    ):
        for results in _map_ahead(pool, one, iter(units.values()), ahead=64):
            for i, h, err in results:
                out[i] = (h, err)
                if h:
                    f = files[i]
                    store.remember_hash(text_path(f.name), f.stamp, h)
            shown.update(len(results))
    return out
