"""A person's answers: checked at the door, written the moment they are given, never lost, never leaked.

The review page appends each answer to ``review/answers.csv`` in the job's
output folder (:class:`AnswersFile`); ``--reviewed`` reads that file, or any
CSV with ``path`` and ``label`` columns (:func:`read_answers`). The latest
answer for a file counts; an ``undo`` row takes back the latest answer still
standing for its file, so the file only ever grows.

The file is opened without following links and refused unless it is a
regular file of the user's own with one name (a FIFO, a directory, a link,
another user's file: a clear message, nothing written). Every write is
checked for its full length; a line cut short by a crash or a full disk is
moved to ``answers.torn`` and the file cut back to its last complete line
before the next answer, so that every answer acknowledged is on disk, whole.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import logging
import math
import os
import re
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batchser.report import guard_cell, unguard_cell
from batchser.review.lines import complete_lines, rows

__all__ = [
    "ANSWERS",
    "ANSWER_COLUMNS",
    "DIMENSION_ANSWERS",
    "NONE",
    "SKIP",
    "TORN",
    "UNDO",
    "Answer",
    "AnswerLog",
    "AnswerNotSavedError",
    "Answers",
    "AnswersError",
    "AnswersFile",
    "canonical_label",
    "read_answers",
    "review_folder",
]

log = logging.getLogger(__name__)

REVIEW = "review"
ANSWERS = Path(REVIEW) / "answers.csv"
TORN = Path(REVIEW) / "answers.torn"  # cut-off last lines, kept for a person to look at
NONE = "none"  # "none of these": the file holds none of the model's emotions
SKIP = "skip"  # the person could not tell; asked again at the end
UNDO = "undo"  # takes back the latest answer still standing for the same file
# When a person cannot name an emotion but hears how activated or how pleasant a recording sounds.
DIMENSION_ANSWERS = {"arousal:high": ("arousal", 1), "arousal:low": ("arousal", 0),
                     "valence:positive": ("valence", 1), "valence:negative": ("valence", 0)}  # fmt: skip
_DIMENSION_WORDS = {
    **{w: "arousal:high" for w in ("high", "high arousal", "arousal high", "aroused", "activated")},
    **{w: "arousal:low" for w in ("low", "low arousal", "arousal low", "calm voice", "deactivated")},
    **{w: "valence:positive" for w in ("positive", "positive valence", "valence positive", "pleasant")},
    **{w: "valence:negative" for w in ("negative", "negative valence", "valence negative", "unpleasant")},
}
ANSWER_COLUMNS = ["path", "content_hash", "label", "answered_at", "model_label", "confidence", "start_s", "end_s"]
_NONE_WORDS = {NONE, "none of these", "none of them", "other"}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TAIL = 1 << 16  # bytes read at a time when looking back for the last complete line


class AnswersError(ValueError):
    """Answers that cannot be used as they are: the message names the file, the rows and the fix."""


class AnswerNotSavedError(RuntimeError):
    """An answer that did not reach the disk whole; ``str()`` says why. Nothing of it stays in the file."""


@dataclass(frozen=True)
class Answer:
    """One answer: the file (its report path and content hash), the label given, and when.

    ``label`` is one of the model's emotions, :data:`NONE` or :data:`SKIP`.
    ``start_s``/``end_s`` are None for a whole file.
    """

    path: str
    content_hash: str
    label: str
    answered_at: float = 0.0
    model_label: str = ""
    confidence: float = math.nan
    start_s: float | None = None
    end_s: float | None = None
    line: int = 0  # the row's line in its file (1: the header)

    @property
    def key(self) -> tuple[str, float | None, float | None]:
        """What an answer is about: a later answer with the same key replaces it."""
        return (self.path, self.start_s, self.end_s)


def canonical_label(text: str, classes: Sequence[str]) -> str | None:
    """``text`` as one of ``classes``, :data:`NONE`, :data:`SKIP`, :data:`UNDO` or a side of arousal or valence
    (:data:`DIMENSION_ANSWERS`, e.g. ``arousal:high``); None when it is none of them.

    Case and spaces do not matter (``" Angry "`` is ``angry``); "none of
    these" and "other" are :data:`NONE`; "high", "high arousal" are ``arousal:high``.
    """
    t = " ".join(text.split()).casefold()
    for c in classes:
        if t == " ".join(c.split()).casefold():
            return c
    if t in _NONE_WORDS:
        return NONE
    if t in DIMENSION_ANSWERS:
        return t
    if t in _DIMENSION_WORDS:
        return _DIMENSION_WORDS[t]
    return t if t in (SKIP, UNDO) else None


def review_folder(out_dir: Path, *, create: bool = False) -> Path:
    """``out_dir/review``, refused unless a real folder (not a link) of the user's own.

    Raises
    ------
    AnswersError
        A link, a file or another user's folder there.
    """
    folder = out_dir / REVIEW
    try:
        st = folder.lstat()
    except FileNotFoundError:
        if not create:
            return folder
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile (a link, say): checked below
            pass
        except OSError as exc:
            raise AnswersError(_unwritable(out_dir, folder, exc)) from None
        st = folder.lstat()
    except OSError as exc:
        raise AnswersError(f"cannot look at {folder}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        what = "a link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise AnswersError(
            f"{folder} is {what}; a review keeps its sample and answers in a real folder there, never through a "
            f"link: move it away (nothing was written)"
        )
    if st.st_uid != os.geteuid():
        raise AnswersError(f"{folder} belongs to another user (uid {st.st_uid}); nothing was written")
    return folder


def _unwritable(out_dir: Path, target: Path, exc: OSError) -> str:
    return (
        f"cannot write {target}: {exc.strerror or exc}. A review keeps its sample and answers in "
        f"{out_dir / REVIEW}: make {out_dir} writable, or copy the job's reports to a folder you can write "
        "and review that copy"
    )


def _check_regular(fd: int, where: Path) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else "not a file"
        raise AnswersError(f"{where} is {kind}, not a regular file; move it away (nothing was read or written)")
    if st.st_uid != os.geteuid():
        raise AnswersError(f"{where} belongs to another user (uid {st.st_uid}); nothing was written")
    if st.st_nlink != 1:
        raise AnswersError(
            f"{where} has {st.st_nlink} names (a hard link to another file?); answers are never written through a "
            "link: move it away"
        )
    return st


@contextlib.contextmanager
def _open_in(folder: Path, name: str, flags: int, mode: int = 0o600) -> Iterator[int]:
    """``folder/name`` opened with ``flags``, following no link at either step (a FIFO neither: no hang)."""
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dfd)
        except OSError as exc:
            what = {40: "a link", 6: "a FIFO", 21: "a folder"}.get(exc.errno or 0)  # ELOOP, ENXIO, EISDIR
            if what:
                raise AnswersError(
                    f"{folder / name} is {what}, not a regular file; answers are never written through one: move it "
                    "away (nothing was written)"
                ) from None
            raise
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(28, "the disk accepted no more bytes")
        view = view[n:]


def _last_newline(fd: int, size: int) -> int:
    """The offset just after the last ``\\n`` in the file's first ``size`` bytes (0 when there is none)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL)
        block = os.pread(fd, end - start, start)
        k = block.rfind(b"\n")
        if k >= 0:
            return start + k + 1
        end = start
    return 0


def _first_line(fd: int) -> bytes:
    return os.pread(fd, _TAIL, 0).split(b"\n", 1)[0]


class AnswersFile:
    """The append-only answers file of a review (``OUT/review/answers.csv``): each answer on disk before
    :meth:`add` returns. Safe to share between the web server's threads."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / ANSWERS
        self._lock = threading.Lock()

    def add(
        self,
        path: str,
        content_hash: str,
        label: str,
        *,
        model_label: str = "",
        confidence: float = math.nan,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> Answer:
        """Append one answer (``label``: an emotion, ``none``, ``skip`` or ``undo``), flushed and synced.

        Raises
        ------
        AnswersError
            The file or its folder is a link, a FIFO, a folder or another user's.
        AnswerNotSavedError
            The answer did not reach the disk whole (full disk, read-only folder…): the file is as before.
        """
        answer = Answer(path, content_hash, label, time.time(), model_label, confidence, start_s, end_s)
        values = {
            "path": guard_cell(path),
            "content_hash": content_hash,
            "label": label,
            "answered_at": f"{answer.answered_at:.3f}",
            "model_label": model_label,
            "confidence": "" if math.isnan(confidence) else f"{confidence:.6g}",
            "start_s": "" if start_s is None else f"{start_s:.3f}",
            "end_s": "" if end_s is None else f"{end_s:.3f}",
        }
        with self._lock:
            folder = review_folder(self.out_dir, create=True)
            try:
                with _open_in(folder, self.path.name, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd:
                    _check_regular(fd, self.path)
                    self._append(fd, values)
            except AnswersError:
                raise
            except OSError as exc:
                raise AnswerNotSavedError(f"{self.path}: {exc.strerror or exc}") from None
        return answer

    def _append(self, fd: int, values: dict[str, str]) -> None:
        size = os.fstat(fd).st_size
        if size:
            keep = _last_newline(fd, size)
            if keep < size:  # a torn last line: kept aside, never glued to the next answer
                self._set_aside(os.pread(fd, size - keep, keep))
                os.ftruncate(fd, keep)
                os.fsync(fd)
                size = keep
        header = b""
        if size:
            columns = next(csv.reader([_first_line(fd).decode("utf-8-sig", "replace")]), [])
            if "path" not in columns or "label" not in columns:
                raise AnswersError(
                    f"{self.path} is not a review's answers file (its first line names {', '.join(columns) or 'no'} "
                    "columns, not path and label): move it away to start a new one"
                )
            if values.get("start_s") and not {"start_s", "end_s"} <= set(columns):
                # Written without its times, a segment's answer would read back as the whole file's.
                raise AnswersError(
                    f"{self.path} has no start_s and end_s columns (an answers file from an older batchser?), so "
                    "an answer about a stretch of a recording cannot be kept in it: move it away to start a new one"
                )
        else:
            columns = ANSWER_COLUMNS
            header = (",".join(columns) + "\n").encode()
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([values.get(c, "") for c in columns])
        data = header + buf.getvalue().encode("utf-8")
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # leave the file as it was: no half answer
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise

    def _set_aside(self, torn: bytes) -> None:
        log.warning("%s ended in a cut-off line (%d bytes); it is kept in %s", self.path, len(torn), TORN.name)
        with _open_in(self.path.parent, TORN.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
            _check_regular(fd, self.out_dir / TORN)
            _write_all(fd, torn + b"\n")
            os.fsync(fd)


@dataclass
class Answers:
    """What an answers file says: the latest answer standing per file, and what could not be used.

    ``unknown`` maps each label that is none of the model's emotions,
    ``none``, ``skip`` or ``undo`` to the lines carrying it; such rows are
    never answers. ``bad`` lists rows that could not be read at all.
    """

    path: Path
    standing: dict[tuple[str, float | None, float | None], list[Answer]] = field(default_factory=dict)
    history: list[Answer] = field(default_factory=list)  # in the order given; one taken back is dropped lazily
    unknown: dict[str, list[int]] = field(default_factory=dict)
    bad: list[tuple[int, str]] = field(default_factory=list)
    torn: bool = False
    _taken: set[int] = field(default_factory=set, repr=False)  # ids of answers in the history taken back

    @property
    def latest(self) -> dict[tuple[str, float | None, float | None], Answer]:
        return {k: v[-1] for k, v in self.standing.items() if v}

    def add(self, a: Answer) -> None:
        if a.label == UNDO:
            given = self.standing.get(a.key)
            if given:
                self._taken.add(id(given.pop()))  # not searched for in the history: 50,000 undos stay linear
            return
        self.standing.setdefault(a.key, []).append(a)
        self.history.append(a)

    def last_given(self) -> Answer | None:
        """The latest answer still standing (what "undo" takes back)."""
        while self.history and id(self.history[-1]) in self._taken:  # taken back: never standing again
            self._taken.discard(id(self.history.pop()))
        return self.history[-1] if self.history else None

    def unknown_message(self, classes: Sequence[str]) -> str:
        """The unknown labels, each with its rows and the closest emotion."""
        allowed = [*classes, NONE, SKIP, *_DIMENSION_WORDS]
        parts = []
        for text, lines in sorted(self.unknown.items(), key=lambda kv: -len(kv[1])):
            close = difflib.get_close_matches(text.casefold(), [c.casefold() for c in allowed], n=1, cutoff=0.6)
            hint = f" ({text} \u2192 {allowed[[c.casefold() for c in allowed].index(close[0])]}?)" if close else ""
            rows = ", ".join(map(str, lines[:5])) + (" \u2026" if len(lines) > 5 else "")
            parts.append(f"{text!r}: {len(lines)} row{'s' if len(lines) > 1 else ''} (line {rows}){hint}")
        return "; ".join(parts)

    def check(self, classes: Sequence[str], *, ignore_unknown: bool = False) -> None:
        """Refuse labels that are none of ``classes``, none or skip (unless ``ignore_unknown``: set aside).

        Raises
        ------
        AnswersError
            Naming each unknown label, how many rows carry it and the closest emotion.
        """
        if self.unknown and not ignore_unknown:
            raise AnswersError(
                f"{self.path}: answers whose label is none of the model's emotions ({', '.join(classes)}), "
                f"{NONE}, {SKIP}, or a side of arousal (high, low) or valence (positive, negative): "
                f"{self.unknown_message(classes)}. Correct them in the file, or pass "
                "--ignore-unknown-answers to set those rows aside; nothing was run"
            )
        if self.unknown:
            n = sum(map(len, self.unknown.values()))
            log.warning(
                "%s: %d answers set aside, their labels unknown: %s", self.path, n, self.unknown_message(classes)
            )


class _Rows:
    """Rows of an answers CSV turned into :class:`Answer` records, with the problems named by line."""

    def __init__(self, header: Sequence[str], where: Path, classes: Sequence[str]) -> None:
        # A header typed by hand or by a spreadsheet ("Path, Label"): case and spaces do not matter.
        self.columns = {name.strip().casefold(): i for i, name in enumerate(header)}
        self.where = where
        self.classes = classes
        names = [name.strip().casefold() for name in header]
        for twice in ("path", "label"):
            if names.count(twice) > 1:  # which one holds the answers is anyone's guess: never a silent pick
                at = ", ".join(str(i + 1) for i, n in enumerate(names) if n == twice)
                raise AnswersError(f"{where} has {names.count(twice)} {twice} columns (columns {at}); keep one")
        if "path" not in self.columns or "label" not in self.columns:
            one = ", ".join(header) or "none"
            hint = " (separated by semicolons: save it again as comma-separated CSV)" if ";" in one else ""
            raise AnswersError(
                f"{where} needs path and label columns (it has {one}){hint}; "
                "batchser review --list prints a sample with both"
            )
        if "status" in self.columns and any(c.startswith("p_") for c in self.columns):
            # Learning from it would teach the model its own labels and call every file reviewed.
            raise AnswersError(
                f"{where} is a job's report (status and p_* columns): its label column holds the model's labels, "
                "not a person's answers. Answer with batchser review, or fill in the label column of the CSV that "
                "batchser review --list writes"
            )

    def is_answer(self, cells: Sequence[str]) -> bool:
        """Whether ``cells`` alone read as an answer: a path and a label the model knows."""
        path, label = (
            cells[self.columns[c]].strip() if self.columns[c] < len(cells) else "" for c in ("path", "label")
        )
        return bool(path) and canonical_label(label, self.classes) is not None

    def parse(self, cells: Sequence[str], line: int, into: Answers) -> None:
        def cell(name: str) -> str:
            i = self.columns.get(name)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        path, text = unguard_cell(cell("path")), cell("label")
        if not path or not text:
            return  # a sample row not answered yet
        label = canonical_label(text, self.classes)
        if label is None:
            into.unknown.setdefault(text, []).append(line)
            return
        try:
            when = _seconds(cell("answered_at"), "answered_at", 0.0)
            start = _seconds(cell("start_s"), "start_s", None)
            end = _seconds(cell("end_s"), "end_s", None)
            confidence = float(cell("confidence")) if _is_number(cell("confidence")) else math.nan
            if (start is None) != (end is None) or (start is not None and not 0 <= start < end):  # type: ignore[operator]
                raise ValueError(f"start_s {cell('start_s')!r} and end_s {cell('end_s')!r} are no stretch of time")
        except ValueError as exc:
            into.bad.append((line, str(exc)))
            return
        digest = cell("content_hash").lower()
        if digest and not _HEX64.fullmatch(digest):
            log.warning(
                "%s line %d: content_hash %r is not 64 hex digits; matched by path alone", self.where, line, digest[:20]
            )
            digest = ""  # a cut or edited hash would match nothing, or the wrong bytes: the path decides
        into.add(Answer(path, digest, label, when, cell("model_label"), confidence, start, end, line))


def _seconds(text: str, name: str, default: float | None) -> float | None:
    if not text:
        return default
    if not _is_number(text):
        raise ValueError(f"{name} {text!r} is not a number of seconds")
    return float(text)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_answers(path: Path, classes: Sequence[str] = ()) -> Answers:
    """An answers file or any CSV with ``path`` and ``label`` columns.

    Labels are compared with ``classes`` (and none, skip, undo) case- and
    space-insensitively; others are collected in :attr:`Answers.unknown`
    (see :meth:`Answers.check`). A row that cannot be read is named in
    :attr:`Answers.bad` and left out; a last line cut short is left out.

    Raises
    ------
    FileNotFoundError
    AnswersError
        Not a regular file, a first line that is not UTF-8 CSV, or no path and label columns.
    """
    log_ = AnswerLog(path, classes)
    answers = log_.refresh()
    if answers.torn:  # a file saved without a last line break, or cut off as it was written: never half read
        why = (
            "has no line break at its end (cut off as it was written?): left out; if it is whole, end the file with one"
        )
        answers.bad.append((log_._line_no + 1, why))
        log.warning("%s line %d %s", path, log_._line_no + 1, why)
    return answers


class AnswerLog:
    """An answers file read incrementally: each :meth:`refresh` reads only what was appended since.

    The review server calls it on every request: a large file is read once, then only its new lines.
    """

    def __init__(self, path: Path, classes: Sequence[str]) -> None:
        self.path = path
        self.classes = list(classes)
        self.answers = Answers(path)
        self._offset = 0
        self._inode: tuple[int, int] | None = None
        self._rows: _Rows | None = None
        self._reported = 0  # bad rows already logged
        self._line_no = 0  # lines read so far
        self._lock = threading.Lock()  # the server's threads: two reading the same new lines would count them twice

    def refresh(self) -> Answers:
        """Read what was appended (see :meth:`_refresh`)."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> Answers:
        """Read what was appended; start again when the file was replaced or cut back.

        Raises
        ------
        FileNotFoundError
            Only when the file never existed to this log (a missing file is "no answers yet" after).
        AnswersError
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == 40:
                raise AnswersError(f"{self.path} is a link, not a regular file; move it away") from None
            if exc.errno == 21:
                raise AnswersError(f"{self.path} is a folder, not a regular file; move it away") from None
            raise
        with open(fd, "rb", closefd=True) as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise AnswersError(f"{self.path} is not a regular file (a FIFO? a folder?); move it away")
            inode = (st.st_dev, st.st_ino)
            if inode != self._inode or st.st_size < self._offset:
                self.answers, self._offset, self._rows, self._inode = Answers(self.path), 0, None, inode
                self._line_no, self._reported = 0, 0
            end = _last_newline(fh.fileno(), st.st_size) if st.st_size > self._offset else self._offset
            self.answers.torn = end < st.st_size
            if end == 0 and b"\r" in os.pread(fh.fileno(), _TAIL, 0):  # no line read: one line, or lines split by CR
                raise AnswersError(
                    f"{self.path}: its lines end in a carriage return alone (Excel's 'CSV (Macintosh)'); save it "
                    "again as 'CSV UTF-8 (Comma delimited)'"
                )
            if end <= self._offset:
                return self.answers
            lines = list(complete_lines(fh, self._offset, end))
            for n, cells, why in rows(
                lines, self._line_no + 1, lambda cells: bool(self._rows and self._rows.is_answer(cells))
            ):
                if self._rows is None:  # the header: a file whose first line cannot be read is no answers file
                    if cells is None:
                        raise AnswersError(f"{self.path} line {n} {why}")
                    self._rows = _Rows(cells, self.path, self.classes)
                elif cells is None:
                    self.answers.bad.append((n, why))
                elif any(c.strip() for c in cells):
                    self._rows.parse(cells, n, self.answers)
            self._line_no += len(lines)
            self._offset = end
        for line, why in self.answers.bad[self._reported :]:
            log.warning("%s line %d left out: %s", self.path, line, why)
        self._reported = len(self.answers.bad)
        return self.answers
