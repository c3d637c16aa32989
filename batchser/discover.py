"""Expand manifest inputs into a stable, sorted list of audio files.

A file is audio when its extension is one libsndfile reads or one of the
recordings FFmpeg reads (:data:`batchser.decoders.FFMPEG_EXTENSIONS`: M4A, MP4,
MOV, WMA, AMR, WebM…), or, for any other extension, when libsndfile can open its
header or its first bytes are those of an MP4, ASF, Matroska or AMR container.
Files with an audio extension are always kept, even when broken: the report
must say why they failed. Other files under a folder (a ``.docx``, a labels
CSV, an archive, which is opened only when named) are no report rows, but
never silent either: :class:`Skipped` counts them by extension for the
summary ("3 .docx: no decoder reads them"). An input naming a
.zip/.tar/.tar.gz/.tgz (directly or through a glob) stands for the audio
members inside it (by extension); an unreadable archive is one entry with the
reason.
"""

from __future__ import annotations

import fnmatch
import glob
import heapq
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from batchser.archive import (
    MAX_MEMBER_BYTES,
    MAX_MEMBER_RATIO,
    RATIO_CHECK_BYTES,
    ArchiveError,
    is_archive,
    list_members,
    member_name,
)
from batchser.decoders import FFMPEG_EXTENSIONS, looks_like_ffmpeg_media
from batchser.storage import ObjectInfo, ObjectNotFoundError, is_url, shown_url, storage_for
from batchser.storage.local import UNLISTABLE, listing, unlistable, walk

__all__ = [
    "AUDIO_EXTENSIONS",
    "UNLISTABLE",
    "Skipped",
    "SourceFile",
    "archives_under",
    "discover",
    "is_pattern",
    "iter_files",
    "location",
    "pattern_matches",
]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (
    frozenset(
        {f".{k.lower()}" for k in sf.available_formats()}
        | {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf"}
    )
    - {".raw"}  # headerless PCM cannot be told from any other bytes
) | FFMPEG_EXTENSIONS


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One discovered file, on this machine's disks or in object storage.

    ``size`` and ``mtime_ns`` are -1 and ``error`` says why when the file
    could not even be stat'ed (a dangling link, a permission problem). An
    object's ``path`` is its URL (a ``str``), its ``mtime_ns`` its last
    change to the second and its ``ctime_ns`` a digest of its ETag
    (:func:`batchser.storage.etag_digest`): the stamp its hash is trusted
    under and every read of it is checked against.
    """

    path: Path | str  # absolute; an object's URL; for an archive member, the archive
    input_index: int  # which manifest input found it
    size: int  # bytes (of the member, inside an archive)
    mtime_ns: int  # of the file (of the archive, for a member)
    error: str = ""
    member: str = ""  # name inside the archive at ``path``; "" for a plain file
    # Status-change time (of the archive, for a member): unlike mtime no program
    # can set it back, so a rewrite that restores size and mtime still shows.
    ctime_ns: int = 0

    @property
    def stamp(self) -> tuple[int, int, int]:
        """(size, mtime_ns, ctime_ns): what the path index trusts a content hash under."""
        return (self.size, self.mtime_ns, self.ctime_ns)

    @property
    def remote(self) -> bool:
        """Whether the file is an object in object storage (``path`` is its URL)."""
        return isinstance(self.path, str) and is_url(self.path)

    @property
    def name(self) -> str:
        """``path``, or ``archive::member``: how the file is named in reports and the hash index.

        An ``https`` address is named without its query (a signature or token).
        """
        where = shown_url(self.path) if self.remote else str(self.path)  # type: ignore[arg-type]
        return member_name(where, self.member) if self.member else where


def location(text: str) -> Path | str:
    """A spooled ``SourceFile.path`` back: a URL stays text, a local path becomes a Path."""
    return text if is_url(text) else Path(text)


NO_DECODER = "no decoder reads them"
NOT_OPENED = "archives inside a folder are not opened (name them as inputs to label their audio)"
NO_EXTENSION = "(no extension)"
MAX_KINDS = 100  # extensions counted one by one; the rest together


@dataclass
class Skipped:
    """The files discovery passed over (not audio to any decoder here), counted by extension.

    Hidden files, folders and FIFOs are not counted: they were never
    candidates. Memory is one counter per extension (at most ``MAX_KINDS``).
    """

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, name: str) -> None:
        ext = os.path.splitext(name)[1].lower() or NO_EXTENSION
        if ext in (".gz", ".tgz") and name.lower().endswith((".tar.gz", ".tgz")):
            ext = ".tar.gz" if name.lower().endswith(".tar.gz") else ".tgz"
        if ext not in self.counts and len(self.counts) >= MAX_KINDS:
            ext = "(other extensions)"
        self.counts[ext] += 1

    def __len__(self) -> int:
        return sum(self.counts.values())

    def rows(self) -> list[dict[str, object]]:
        """``{"extension", "files", "why"}`` per extension, most files first (``summary.json``'s ``skipped``)."""
        return [
            {"extension": ext, "files": n, "why": NOT_OPENED if is_archive(f"x{ext}") else NO_DECODER}
            for ext, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]


def skipped_lines(rows: Sequence[dict[str, object]]) -> list[str]:
    """``"3 .xyz: no decoder reads them"`` for each row of :meth:`Skipped.rows`."""
    return [f"{r['files']} {r['extension']}: {r['why']}" for r in rows]


def _looks_like_audio(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            if looks_like_ffmpeg_media(fh.read(16)):
                return True
        sf.info(path)
    except Exception:  # noqa: BLE001 - any failure means "not audio" for a probe
        return False
    return True


def _candidate(path: str, *, explicit: bool, probe: bool) -> bool:
    if explicit:  # the manifest named this very file: it is reported whatever it is
        return True
    name = os.path.basename(path)
    if name.startswith("."):  # hidden files and our own temp files
        return False
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS or (probe and _looks_like_audio(path))


def _stat(path: str, index: int) -> SourceFile | None:
    """``path`` (absolute and normalised) as a SourceFile; None when it is no regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return SourceFile(Path(path), index, -1, -1, f"cannot stat: {exc.strerror}")
    if not stat.S_ISREG(st.st_mode):
        return None  # a directory named like audio, a fifo, …
    return SourceFile(Path(path), index, st.st_size, st.st_mtime_ns, ctime_ns=st.st_ctime_ns)


def _members(
    path: str | ObjectInfo, index: int, max_member_bytes: int, max_ratio: float, skipped: Skipped | None
) -> Iterator[SourceFile]:
    """The audio members of the archive at ``path`` (a local path, or an object as listed)."""
    rec = _object(path, index) if isinstance(path, ObjectInfo) else _stat(os.path.abspath(path), index)
    if rec is None or rec.error:
        if rec is not None:
            yield rec
        return
    try:
        members = list_members(rec.path, stamp=rec.stamp)
    except ArchiveError as exc:
        yield SourceFile(rec.path, index, rec.size, rec.mtime_ns, str(exc), ctime_ns=rec.ctime_ns)
        return
    for m in members:
        if os.path.splitext(m.name)[1].lower() not in AUDIO_EXTENSIONS:
            if skipped is not None and not os.path.basename(m.name).startswith("."):
                skipped.add(m.name)
            continue
        error = f"a link inside the archive (to {m.link}): links are not followed" if m.link else ""
        if m.size > max_member_bytes:
            error = (
                f"archive member of {m.size / 2**20:.0f} MiB, over the input's limit of "
                f"{max_member_bytes / 2**20:.0f} MiB (raise inputs[].max_member_mb, or extract it)"
            )
        elif m.size > RATIO_CHECK_BYTES and m.ratio > max_ratio:
            error = (
                f"archive member of {m.size / 2**20:.0f} MiB packed into {m.packed / 2**20:.2f} MiB "
                f"({m.ratio:.0f} times smaller, over the input's limit of {max_ratio:g}): audio does not "
                "compress like that, so it is mostly one repeated value (silence); raise "
                "inputs[].max_member_ratio to read it anyway"
            )
        yield SourceFile(rec.path, index, m.size, rec.mtime_ns, error, member=m.name, ctime_ns=rec.ctime_ns)


def is_pattern(path: Path | str) -> bool:
    """Whether an input is a glob pattern: it has ``*?[`` and no file or folder has that very name.

    An existing path is always literal (``take[1]/`` is that folder, not
    ``take1/``); :func:`iter_files` warns when both readings would find files.
    """
    text = str(path)
    if is_url(text):  # an object's key with * ? or [ in it is rare; a pattern over keys is not
        return glob.has_magic(shown_url(text).split("://", 1)[1])  # an https address's query is no pattern
    return glob.has_magic(text) and not os.path.lexists(text)


def pattern_matches(pattern: Path | str) -> bool:
    """Whether a glob pattern (:func:`is_pattern`) matches any path, read as discovery reads it."""
    if is_url(pattern):
        return (
            next((rec for _, rec in _remote_found(str(pattern), 0, None, 0, 0.0, None) if not rec.error), None)
            is not None
        )
    return next((p for p, _, error in _glob(str(pattern)) if not error), None) is not None


def _expand(path: Path) -> Iterator[tuple[str, bool, str]]:
    text = str(path)
    if is_pattern(text):
        yield from _glob(text)
        return
    if glob.has_magic(text) and any(os.path.abspath(m) != os.path.abspath(text) for m in glob.iglob(text)):
        log.warning(
            "input %s exists and is read as that path; as a glob pattern it would also match other paths "
            "(escape the brackets, e.g. [[] for [, to make a pattern of it on purpose)",
            text,
        )
    if path.is_dir():
        yield from ((p, False, err) for p, err in walk(os.path.abspath(text)))
    elif path.exists() or path.is_symlink():
        yield text, True, ""
    else:
        raise FileNotFoundError(f"input {text} does not exist")


def _glob(pattern: str) -> Iterator[tuple[str, bool, str]]:
    """A glob's files in path order, streamed: a folder it matches stands for every file under it.

    ``glob.iglob`` yields in directory order, so its matches would have to be
    sorted in memory; this walks from the pattern's last literal folder as
    :func:`~batchser.storage.local.walk` does, matching one path component at a time (``*``, ``?``
    and ``[…]`` within a name, ``**`` for any number of folders, hidden names
    only by a pattern that starts with a dot) and skipping folders no match
    can lie under. A matched archive is opened like a named one.
    """
    parts = pattern.split(os.sep)
    # The walk starts below the longest leading run of folders that exist as
    # written: ``take[1]/*.wav`` lists the folder ``take[1]``, as the path says.
    first = 0
    while first < len(parts) - 1 and (
        not glob.has_magic(parts[first]) or os.path.isdir(os.sep.join(parts[: first + 1]) or os.sep)
    ):
        first += 1
    base = os.sep.join(parts[:first]) or os.sep
    if os.path.isdir(base):
        yield from _glob_walk(os.path.abspath(base), [], parts[first:])


def _glob_walk(folder: str, rel: list[str], pats: list[str]) -> Iterator[tuple[str, bool, str]]:
    try:
        entries = listing(folder)
    except OSError as err:
        yield folder, False, unlistable(folder, err)
        return
    for name, is_dir in entries:
        path, comps = os.path.join(folder, name), [*rel, name]
        if _glob_match(pats, comps):
            if is_dir:
                yield from ((p, False, err) for p, err in walk(path))
            else:
                yield path, is_archive(path), ""
        elif is_dir and _glob_prefix(pats, comps):
            yield from _glob_walk(path, comps, pats)


def _glob_name(pat: str, name: str) -> bool:
    return (pat.startswith(".") or not name.startswith(".")) and fnmatch.fnmatchcase(name, pat)


def _glob_match(pats: list[str], comps: list[str]) -> bool:
    if not pats:
        return not comps
    if pats[0] == "**":
        return any(_glob_match(pats[1:], comps[i:]) for i in range(len(comps) + 1))
    return bool(comps) and _glob_name(pats[0], comps[0]) and _glob_match(pats[1:], comps[1:])


def _glob_prefix(pats: list[str], comps: list[str]) -> bool:
    """Whether a path under the folder ``comps`` could match ``pats``."""
    if not comps:
        return True
    if not pats:
        return False
    if pats[0] == "**":
        return True
    return _glob_name(pats[0], comps[0]) and _glob_prefix(pats[1:], comps[1:])


def archives_under(paths: Sequence[Path], *, limit: int = 10) -> list[Path]:
    """Up to ``limit`` zip/tar archives inside the folders among ``paths`` (which discovery does not open)."""
    found: list[Path] = []
    for root in paths:
        if not root.is_dir():
            continue
        for path, error in walk(os.path.abspath(root)):
            if not error and is_archive(path):
                found.append(Path(path))
                if len(found) >= limit:
                    return found
    return found


def discover(
    paths: Sequence[Path],
    *,
    max_member_bytes: Sequence[int] | None = None,
    max_member_ratio: Sequence[float] | None = None,
    progress: bool = False,
    skipped: Skipped | None = None,
) -> list[SourceFile]:
    """Files under each input path, sorted by path, each listed once: ``list(iter_files(...))``."""
    return list(
        iter_files(
            paths,
            max_member_bytes=max_member_bytes,
            max_member_ratio=max_member_ratio,
            progress=progress,
            skipped=skipped,
        )
    )


def iter_files(
    paths: Sequence[Path],
    *,
    max_member_bytes: Sequence[int] | None = None,
    max_member_ratio: Sequence[float] | None = None,
    progress: bool = False,
    skipped: Skipped | None = None,
) -> Iterator[SourceFile]:
    """Files under each input path, in the order of their names, each once, as they are found.

    Folders and globs stream: memory holds one folder's listing per level,
    not the tree. An archive's members are listed and sorted in memory.

    Parameters
    ----------
    paths : sequence of Path
        Directories (recursive), files or glob patterns, absolute.
    max_member_bytes : sequence of int or None
        Per path, the largest archive member read; larger ones are listed
        with an error. None: :data:`~batchser.archive.MAX_MEMBER_BYTES`.
    max_member_ratio : sequence of float or None
        Per path, how many times larger than packed an archive member may be
        read (past :data:`~batchser.archive.RATIO_CHECK_BYTES`); others are
        listed with an error. None: :data:`~batchser.archive.MAX_MEMBER_RATIO`.
    progress : bool
        Count the entries looked at on a tqdm bar (stderr): a tree of 100,000
        files takes a while to list and probe.
    skipped : Skipped or None
        Counts the files under folders (and inside archives) that are not
        audio, by extension, as they are passed over.

    Yields
    ------
    SourceFile
        Sorted by name (``path``, or ``archive::member``); a file reachable
        from two inputs belongs to the first.

    Raises
    ------
    FileNotFoundError
        When an input path (not a glob) does not exist (before anything of it is yielded).
    """
    bar = tqdm(desc="discovering", unit=" files", disable=not progress, dynamic_ncols=True, mininterval=0.5)
    limits = [MAX_MEMBER_BYTES] * len(paths) if max_member_bytes is None else max_member_bytes
    ratios = [MAX_MEMBER_RATIO] * len(paths) if max_member_ratio is None else max_member_ratio
    for root in paths:
        if not is_url(root) and not is_pattern(root) and not os.path.lexists(root):
            raise FileNotFoundError(f"input {root} does not exist")
    # Each input's files come sorted; merging them keeps the order, and ties
    # (one file under two inputs) come first from the first input.
    streams = [_found(root, index, bar, limits[index], ratios[index], skipped) for index, root in enumerate(paths)]
    last = None
    with bar:
        for key, rec in heapq.merge(*streams, key=lambda item: item[0]):
            if key != last:
                last = key
                yield rec


def _found(
    root: Path | str, index: int, bar: tqdm, max_member_bytes: int, max_ratio: float, skipped: Skipped | None
) -> Iterator[tuple[str, SourceFile]]:
    """(name, file) of one input, in name order."""
    if is_url(root):
        yield from _remote_found(str(root), index, bar, max_member_bytes, max_ratio, skipped)
        return
    for path, explicit, error in _expand(root):
        bar.update()
        if error:  # a folder that could not be listed: a row says so, where its files would sort
            key = os.path.abspath(path)
            yield os.path.join(key, ""), SourceFile(Path(key), index, -1, -1, error)
            continue
        if explicit and is_archive(path):  # its members, listed and sorted in memory
            yield from sorted(
                ((rec.name, rec) for rec in _members(path, index, max_member_bytes, max_ratio, skipped)),
                key=lambda t: t[0],
            )
            continue
        key = os.path.abspath(path)
        # stat before any probe: opening a FIFO named like audio would block forever.
        rec = _stat(key, index)
        if rec is not None and _candidate(path, explicit=explicit, probe=not rec.error):
            yield key, rec
        elif rec is not None and skipped is not None and not os.path.basename(path).startswith("."):
            skipped.add(path)  # a regular file no decoder reads: counted, never silent


def _object(info: ObjectInfo, index: int) -> SourceFile:
    return SourceFile(info.url, index, info.size, info.mtime_ns, ctime_ns=info.stamp[2])


def _split_pattern(url: str) -> tuple[str, list[str]]:
    """A URL pattern's literal folder (ending in /) and the patterns of the key components below it."""
    head, _, key = url.partition("://")
    bucket, _, rest = key.partition("/")
    comps = rest.split("/")
    first = next(i for i, c in enumerate(comps) if glob.has_magic(c))
    base = "/".join([bucket, *comps[:first]])
    return f"{head}://{base}/", comps[first:]


def _remote_found(
    root: str, index: int, bar: tqdm | None, max_member_bytes: int, max_ratio: float, skipped: Skipped | None
) -> Iterator[tuple[str, SourceFile]]:
    """(address, file) of one object-storage input in key order: one object, a prefix's objects, or a pattern's.

    A prefix is read as a folder (``s3://b/x`` lists the keys under
    ``x/``); its objects are audio by extension alone (asking each object's
    first bytes would cost a request per object). Keys with a hidden
    component are passed over, as hidden files are.

    Raises
    ------
    FileNotFoundError
        Nothing at ``root``: no object, and no object under it.
    batchser.storage.StorageError
        The listing is refused (access denied) or fails on its first page.
    """
    store = storage_for(root)
    pats: list[str] | None = None
    if is_pattern(root):
        base, pats = _split_pattern(root)
    else:
        if not root.endswith("/"):
            try:
                info = store.stat(root)
            except ObjectNotFoundError:
                info = None
            if info is not None:  # named as itself: reported whatever it is
                if bar is not None:
                    bar.update()
                if is_archive(root):
                    yield from sorted(
                        ((rec.name, rec) for rec in _members(info, index, max_member_bytes, max_ratio, skipped)),
                        key=lambda t: t[0],
                    )
                else:
                    yield shown_url(root), _object(info, index)
                return
        base = root.rstrip("/") + "/"
    found = False
    for url, info, error in store.walk(base):
        if bar is not None:
            bar.update()
        if error:  # a listing that failed part way: a row says so, after what was listed
            yield url, SourceFile(url, index, -1, -1, error)
            continue
        found = True
        comps = url[len(base) :].split("/")
        if pats is not None:
            if not _glob_match(pats, comps):
                continue
        elif any(c.startswith(".") for c in comps):
            continue
        name = comps[-1]
        if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
            yield url, _object(info, index)  # type: ignore[arg-type]  # a listed object has its info
        elif skipped is not None:
            skipped.add(name)
    if not found and pats is None:
        raise FileNotFoundError(f"input {shown_url(root)} does not exist (no object there, and none under it)")
