"""Ground-truth labels for training and evaluation: path patterns, CSV/TSV tables, RAVDESS names, none."""

from __future__ import annotations

import csv
import glob
import logging
import os
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchser.storage import is_url, shown_url, storage_for, url_join, url_parent

__all__ = [
    "Label",
    "RavdessName",
    "SpeakerFolders",
    "SubfolderHint",
    "TableLabels",
    "label_coverage",
    "label_source",
    "literal_base",
    "parse_ravdess",
    "read_table",
]

log = logging.getLogger(__name__)

RAVDESS_EMOTION_CODES = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@dataclass(frozen=True, slots=True)
class Label:
    """What is known about a file before the model sees it."""

    emotion: str | None = None
    speaker: str | None = None  # groups for actor-wise evaluation
    corpus: str | None = None  # the input's corpus (inputs[].corpus)

    @property
    def group(self) -> str | None:
        """The speaker, qualified by corpus: two corpora may both have a speaker "A"."""
        if self.speaker is None:
            return None
        return f"{self.corpus}/{self.speaker}" if self.corpus else self.speaker


@dataclass(frozen=True)
class RavdessName:
    """The seven fields of a RAVDESS file name ``MM-VC-EE-II-SS-RR-AA``."""

    modality: str  # 01 full-AV, 02 video-only, 03 audio-only
    vocal_channel: str  # 01 speech, 02 song
    emotion: str
    intensity: str  # normal | strong
    statement: int  # 1 "Kids are talking by the door", 2 "Dogs are sitting by the door"
    repetition: int
    actor: int  # odd male, even female

    @property
    def sex(self) -> str:
        return "male" if self.actor % 2 else "female"


def parse_ravdess(name: str) -> RavdessName:
    """Parse a RAVDESS file name (with or without folder and extension).

    Raises
    ------
    ValueError
        When the name does not follow the RAVDESS scheme.
    """
    stem = Path(name).name.split(".")[0]
    m = _RAVDESS_RE.match(stem)
    if not m or m.group(3) not in RAVDESS_EMOTION_CODES or m.group(4) not in ("01", "02"):
        raise ValueError(f"{Path(name).name!r} is not a RAVDESS name (MM-VC-EE-II-SS-RR-AA, emotion 01-08)")
    mod, vc, emo, inten, stmt, rep, actor = m.groups()
    return RavdessName(
        modality=mod,
        vocal_channel=vc,
        emotion=RAVDESS_EMOTION_CODES[emo],
        intensity="normal" if inten == "01" else "strong",
        statement=int(stmt),
        repetition=int(rep),
        actor=int(actor),
    )


def _ravdess(path: Path | str) -> Label:
    try:
        r = parse_ravdess(posixpath.basename(str(path)))
    except ValueError:
        return Label()
    return Label(emotion=r.emotion, speaker=f"actor{r.actor:02d}")


def read_table(path: Path | str) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows of a CSV or TSV label table (a local file, or an object's URL).

    UTF-8 (a BOM is skipped); the delimiter is a tab for ``.tsv``/``.tab``,
    otherwise sniffed among ``,``, ``;`` and tab from the header line.

    Raises
    ------
    ValueError
        Unreadable, not UTF-8, or with duplicate column names; the message names the file.
    """
    try:
        if is_url(path):  # a table in object storage: a few hundred KB at most, read whole
            store = storage_for(path)
            data = store.read(str(path), size=store.stat(str(path)).size)
            text = data.decode("utf-8-sig")
            path = shown_url(str(path))
        else:
            text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"cannot read label table {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"label table {path} is not UTF-8 (byte {exc.start}); save it as UTF-8") from None
    header = text.split("\n", 1)[0]
    suffix = os.path.splitext(str(path))[1].lower()
    delimiter = "\t" if suffix in (".tsv", ".tab") else max((",", ";", "\t"), key=header.count)
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if len(set(columns)) != len(columns):
        raise ValueError(f"label table {path} has duplicate column names: {columns}")
    reader.fieldnames = columns
    return columns, [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def _table_key(table_path: Path | str, row_path: str) -> str:
    """The key a table row's path is looked up by: the rule discovery's paths follow (links resolved), or a URL."""
    if is_url(row_path):
        return shown_url(row_path)
    if is_url(table_path):
        return shown_url(url_join(url_parent(str(table_path)), row_path))
    return os.path.realpath(Path(table_path).parent / row_path)


def _table_source(
    table_path: Path | str,
    *,
    path_column: str = "path",
    emotion_column: str = "label",
    speaker_column: str | None = None,
    mapping: dict[str, str] | None = None,
) -> Callable[[Path], Label]:
    """Labels from a CSV/TSV table: one row per file, paths relative to the table's folder (or absolute, or URLs)."""
    columns, rows = read_table(table_path)
    if speaker_column is None and "speaker" in columns:
        speaker_column = "speaker"
    # A table of speakers alone (path,speaker) names the speakers of an unlabelled archive.
    wanted = [path_column] + ([emotion_column] if emotion_column in columns or not speaker_column else [])
    missing = [c for c in [*wanted, *([speaker_column] if speaker_column else [])] if c not in columns]
    if missing:
        raise ValueError(
            f"label table {table_path} lacks column(s) {missing}; it has {columns}. "
            "Name the columns with path_column, emotion_column and speaker_column "
            "(a table of speakers alone needs path and speaker columns)"
        )
    mapping = mapping or {}
    table: dict[str, Label] = {}
    line_of: dict[str, int] = {}
    twice: list[str] = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        emotion = row.get(emotion_column) or None
        key = _table_key(table_path, row[path_column])
        if key in line_of:
            twice.append(f"{row[path_column]} (lines {line_of[key]} and {line})")
        line_of[key] = line
        table[key] = Label(
            emotion=mapping.get(emotion, emotion) if emotion else None,
            speaker=(row.get(speaker_column) or None) if speaker_column else None,
        )
    if twice:
        log.warning(
            "label table %s lists %d path(s) more than once, the last row wins: %s",
            table_path,
            len(twice),
            "; ".join(twice[:3]) + (" …" if len(twice) > 3 else ""),
        )
    return TableLabels(table, table_path)


class TableLabels:
    """Labels looked up by path in a table; knows its rows, to say which matched no file."""

    def __init__(self, table: dict[str, Label], source: Path | str) -> None:
        self.table, self.source = table, source

    @property
    def speakers_only(self) -> bool:
        """Whether the table names speakers and no emotion (``path,speaker``, or an empty label column)."""
        labels = self.table.values()
        return any(lab.speaker for lab in labels) and not any(lab.emotion for lab in labels)

    def __call__(self, path: Path | str) -> Label:
        if is_url(path):
            return self.table.get(str(path), Label())
        hit = self.table.get(os.path.normpath(path))
        if hit is None:  # reached through a link, or named through one in the table
            hit = self.table.get(os.path.realpath(path), Label())
        return hit

    def unmatched(self, seen: set[str]) -> list[str]:
        """Table paths that are not among ``seen`` (normalised paths of the discovered files)."""
        return sorted(p for p in self.table if p not in seen)


def _pattern_source(pattern: str, mapping: dict[str, str], input_root: Path | str) -> Callable[[Path | str], Label]:
    """Labels from the file's path relative to its input: ``re.search`` with groups ``emotion``, ``speaker``."""
    rx = re.compile(pattern)
    if is_url(input_root):
        base: Path | str = str(literal_base(input_root)).rstrip("/") + "/"
    else:
        base = input_root if Path(input_root).is_dir() else Path(input_root).parent

    def label(path: Path | str) -> Label:
        text = str(path)
        if "::" in text:  # an archive member: match its name inside the archive
            text = text.split("::", 1)[1]
        elif isinstance(base, str):  # an object: its key below the input's prefix (or its name, named itself)
            text = text[len(base) :] if text.startswith(base) else posixpath.basename(text)
        elif Path(path).is_relative_to(base):
            text = Path(path).relative_to(base).as_posix()
        m = rx.search(text)
        if m is None:
            return Label()
        groups = m.groupdict()
        emotion = groups.get("emotion")
        return Label(emotion=mapping.get(emotion, emotion) if emotion else None, speaker=groups.get("speaker"))

    return label


def literal_base(input_root: Path | str) -> Path | str:
    """The folder an input's files lie under: the input itself, or a glob pattern's literal head."""
    if is_url(input_root):
        comps = str(input_root).split("/")
        first = next((i for i, c in enumerate(comps) if i > 2 and glob.has_magic(c)), len(comps))
        return "/".join(comps[:first])
    if os.path.lexists(input_root) or not glob.has_magic(str(input_root)):
        return input_root
    head = list(input_root.parts)
    first = next(i for i, part in enumerate(head) if glob.has_magic(part))
    return Path(*head[:first])


def _folder_speaker(fn: Callable[[Path], Label], root: Path, input_root: Path | None) -> Callable[[Path], Label]:
    """Labels whose speaker is the file's folder (shown relative to ``root``), when it has one of its own.

    A speaker folder is a folder *under* the input: a file lying directly in
    the input folder (a flat folder, a file named as the input, a glob's own
    folder, an archive's top level) is in no speaker's folder, and gets no
    speaker rather than one made of the whole input.
    """
    base = literal_base(input_root) if input_root is not None else None
    if base is not None and is_url(base):
        return _object_folder_speaker(fn, str(base))

    def label(path: Path) -> Label:
        parent = path.parent  # for an archive member "x.zip::dir/a.wav": "x.zip::dir"
        own = base is None or ((parent != base and parent.is_relative_to(base)) or str(parent).startswith(f"{base}::"))
        speaker = (os.path.relpath(parent, root) if parent.is_relative_to(root) else str(parent)) if own else None
        return Label(emotion=fn(path).emotion, speaker=speaker)

    return label


def _object_folder_speaker(fn: Callable[[Any], Label], base: str) -> Callable[[Any], Label]:
    """:func:`_folder_speaker` for objects: the speaker is the object's "folder" URL, below the input's prefix."""
    base = base.rstrip("/")

    def label(path: Path | str) -> Label:
        parent = url_parent(str(path))
        own = parent != base and (parent.startswith(base + "/") or parent.startswith(f"{base}::"))
        return Label(emotion=fn(path).emotion, speaker=parent if own else None)

    return label


def label_source(
    spec: Any,
    *,
    resolve: Callable[[str], Path | str],
    speaker: str = "labels",
    root: Path | None = None,
    input_root: Path | str | None = None,
    corpus: str | None = None,
) -> Callable[[Path], Label]:
    """A function giving each file's :class:`Label` for a manifest ``labels`` value.

    Parameters
    ----------
    spec : str or LabelSpec
        ``none``, ``ravdess``, ``csv:<file>``, or a mapping with ``pattern``
        (searched in the path relative to the input; named groups ``emotion``
        and ``speaker``) or ``table`` (a CSV/TSV with chosen columns), and a
        ``map`` from the corpus's emotion names to the job's.
    resolve : callable
        Turns a manifest-relative path into an absolute one.
    speaker : {"labels", "folder"}
        Where the speaker comes from: the label source, or the file's folder
        (shown relative to ``root``) when that is a folder under the input
        (a file directly in the input has no speaker).
    root : Path or None
        The job's root folder, for ``speaker="folder"``.
    input_root : Path or None
        The input's own path, that ``pattern`` matches relative to.
    corpus : str or None
        The input's corpus name, carried by every label.
    """
    if isinstance(spec, str):
        if spec == "none":
            unknown = Label(corpus=corpus)  # one shared record (frozen), not one per file
            fn: Callable[[Path], Label] = lambda path: unknown  # noqa: E731
        elif spec == "ravdess":
            fn = _ravdess
        else:
            fn = _table_source(resolve(spec.removeprefix("csv:")))
    elif spec.pattern is not None:
        fn = _pattern_source(spec.pattern, dict(spec.map), input_root or Path("/"))
    else:
        fn = _table_source(
            resolve(spec.table),
            path_column=spec.path_column,
            emotion_column=spec.emotion_column,
            speaker_column=spec.speaker_column,
            mapping=dict(spec.map),
        )
    speakers_only = (isinstance(fn, TableLabels) and fn.speakers_only) or (
        not isinstance(spec, str) and spec.pattern is not None and "emotion" not in re.compile(spec.pattern).groupindex
    )
    if speaker == "folder":
        fn = _folder_speaker(fn, root or Path("/"), input_root)
    table = fn if isinstance(fn, TableLabels) else None
    if corpus is None:
        return fn
    tagged: dict[Label, Label] = {}  # labels repeat: share one tagged record per distinct label

    def with_corpus(path: Path) -> Label:
        lab = fn(path)
        out = tagged.get(lab)
        if out is None:
            out = tagged[lab] = Label(emotion=lab.emotion, speaker=lab.speaker, corpus=corpus)
        return out

    with_corpus.table = table  # type: ignore[attr-defined]
    with_corpus.speakers_only = speakers_only  # type: ignore[attr-defined]
    return with_corpus


def label_coverage(
    name: str,
    n_files: int,
    n_labelled: int,
    table: TableLabels | None = None,
    seen: set[str] | None = None,
    *,
    what: str = "an emotion",
) -> tuple[str, bool]:
    """A line saying how many of an input's files got an emotion (``what``), and whether that is none at all.

    With ``table``, also how many of its rows matched no discovered file
    (``seen``: the normalised paths of the discovered files, or at least of
    those the table names), with examples. ``what="a speaker"`` counts the
    files a source of speakers alone named.
    """
    line = f"{name}: {what} for {n_labelled} of {n_files} file{'' if n_files == 1 else 's'}"
    if table is not None and seen is not None:
        missing = table.unmatched(seen)
        if missing:
            shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
            line += f"; {len(missing)} row(s) of {table.source} match no file (e.g. {shown})"
    return line, n_files > 0 and n_labelled == 0


@dataclass
class SpeakerFolders:
    """How the files of inputs whose speakers are their folders fall into folders, counted as they are listed.

    Flags an input whose "speaker folders" are not a speaker's each: files
    lying directly in the input (no folder under it: they are standardised
    over the whole input instead), or one folder holding every file (then
    per speaker is the same as over the whole input).

    Parameters
    ----------
    inputs : mapping
        Input index -> its path as given, for the inputs with ``speaker: folder``.
    """

    inputs: Mapping[int, str]
    files: Counter[int] = field(default_factory=Counter)
    loose: Counter[int] = field(default_factory=Counter)  # files in no folder under their input
    folders: dict[int, set[str]] = field(default_factory=dict)

    def add(self, index: int, label: Label) -> None:
        if index not in self.inputs:
            return
        self.files[index] += 1
        if label.speaker is None:
            self.loose[index] += 1
        else:
            self.folders.setdefault(index, set()).add(label.speaker)

    def findings(self) -> list[dict[str, Any]]:
        """Per flagged input: ``input``, ``files``, ``outside_folders``, ``folders``, ``why`` and ``what_to_do``."""
        out = []
        for i, given in self.inputs.items():
            n, loose, folders = self.files[i], self.loose[i], sorted(self.folders.get(i, ()))
            if not n or (loose == 0 and len(folders) != 1):
                continue
            if loose:
                why = (
                    f"{'all ' if loose == n else ''}{loose} of {n} files lie directly in {given}, in no folder under "
                    "it: they have no speaker, and are standardised over the whole input instead (10+ files) "
                    "or not at all"
                )
            else:
                why = (
                    f"one folder, {os.path.basename(folders[0])}, holds all {n} files of {given}, so per speaker is "
                    "the same as over the whole input"
                )
            out.append(
                {
                    "input": given,
                    "files": n,
                    "outside_folders": loose,
                    "folders": len(folders),
                    "why": why,
                    "what_to_do": f"put each speaker's recordings in a folder of their own under {given} (10+ files "
                    "each), or drop --speaker-folders (speaker: folder in a manifest)",
                }
            )
        return out


@dataclass
class SubfolderHint:
    """Inputs whose files fall into subfolders of 10+ recordings each, where nobody named speakers.

    Standardising each group of recordings made alike (a speaker, a source) over its own files is
    the largest lever on accuracy there is (docs/accuracy.md): an input whose subfolders may be
    speakers or sources, labelled as one group, is told so, with the option that does it.

    Parameters
    ----------
    inputs : mapping
        Input index -> (its folder, as given) for the labelling job's local folder inputs without speakers.
    min_files : int
        Recordings a group needs to be standardised over its own (the model's ``min_speaker_files``).
    """

    inputs: Mapping[int, tuple[Path, str]]
    min_files: int = 10
    files: Counter[int] = field(default_factory=Counter)
    named: set[int] = field(default_factory=set)  # inputs whose labels name a speaker: nothing to hint
    sub: dict[int, Counter[str]] = field(default_factory=dict)
    _MAX = 2000  # subfolders counted per input; the rest as one

    def add(self, index: int, path: Path, label: Label) -> None:
        if index not in self.inputs or index in self.named:
            return
        if label.speaker:
            self.named.add(index)
            return
        self.files[index] += 1
        folder = self.inputs[index][0]
        rel = os.path.relpath(path, folder)
        if os.sep in rel and not rel.startswith(".."):
            counts = self.sub.setdefault(index, Counter())
            top = rel.split(os.sep, 1)[0]
            counts[top if top in counts or len(counts) < self._MAX else "(other)"] += 1

    def findings(self) -> list[dict[str, Any]]:
        """Per input worth a hint: ``input``, ``folders``, ``files``, ``why``, ``what_to_do``."""
        out = []
        for i, (_, given) in self.inputs.items():
            counts = self.sub.get(i)
            if i in self.named or not counts:
                continue
            big = [k for k, n in counts.most_common() if n >= self.min_files]
            covered = sum(counts[k] for k in big)
            if len(big) < 2 or covered < 0.8 * self.files[i]:
                continue
            names = ", ".join(big[:4]) + (" …" if len(big) > 4 else "")
            out.append(
                {
                    "input": given,
                    "folders": len(big),
                    "files": covered,
                    "why": f"{covered} of the {self.files[i]} recordings under {given} lie in {len(big)} subfolders of "
                    f"{self.min_files} or more ({names}), all standardised over the input as one group",
                    "what_to_do": "if each subfolder is one speaker, or one source (a microphone, a room, a corpus), "
                    "--speaker-folders (speaker: folder in a manifest) standardises each over its own recordings: "
                    "worth about 6 points of accuracy, far more across sources (docs/accuracy.md)",
                }
            )
        return out
