"""Ground-truth labels for training and evaluation: RAVDESS file names, CSV, none."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Label", "RavdessName", "label_source", "parse_ravdess"]

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


def _ravdess(path: Path) -> Label:
    try:
        r = parse_ravdess(path.name)
    except ValueError:
        return Label()
    return Label(emotion=r.emotion, speaker=f"actor{r.actor:02d}")


def _csv_source(csv_path: Path) -> Callable[[Path], Label]:
    """Labels from a CSV with columns ``path,label`` (and optional ``speaker``).

    Paths in the CSV are relative to the CSV's folder, or absolute.
    """
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"path", "label"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"label CSV {csv_path} lacks column(s) {sorted(missing)}; it needs path,label")
            table = {
                os.path.normpath(csv_path.parent / row["path"]): Label(
                    emotion=(row["label"] or "").strip() or None, speaker=(row.get("speaker") or "").strip() or None
                )
                for row in reader
            }
    except OSError as exc:
        raise ValueError(f"cannot read label CSV {csv_path}: {exc.strerror}") from None
    return lambda path: table.get(os.path.normpath(path), Label())


def _folder_speaker(fn: Callable[[Path], Label], root: Path) -> Callable[[Path], Label]:
    def label(path: Path) -> Label:
        parent = path.parent  # for an archive member "x.zip::dir/a.wav": "x.zip::dir"
        speaker = os.path.relpath(parent, root) if parent.is_relative_to(root) else str(parent)
        return Label(emotion=fn(path).emotion, speaker=speaker)

    return label


def label_source(
    spec: str, *, resolve: Callable[[str], Path], speaker: str = "labels", root: Path | None = None
) -> Callable[[Path], Label]:
    """A function giving each file's :class:`Label` for a manifest ``labels`` value.

    Parameters
    ----------
    spec : str
        ``none``, ``ravdess`` or ``csv:<file>``.
    resolve : callable
        Turns a manifest-relative path into an absolute one.
    speaker : {"labels", "folder"}
        Where the speaker comes from: the label source, or the file's folder
        (shown relative to ``root``).
    root : Path or None
        The job's root folder, for ``speaker="folder"``.
    """
    if spec == "none":
        unknown = Label()  # one shared record (frozen), not one per file
        fn: Callable[[Path], Label] = lambda path: unknown  # noqa: E731
    elif spec == "ravdess":
        fn = _ravdess
    else:
        fn = _csv_source(resolve(spec.removeprefix("csv:")))
    return _folder_speaker(fn, root or Path("/")) if speaker == "folder" else fn
