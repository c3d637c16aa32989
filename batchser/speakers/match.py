"""Speaker turns matched to a job's recordings: where an input's turns are, and which recording each names.

An input's ``speakers`` names a turns file or a folder of them (searched
recursively), optionally with its format (``rttm:turns/``). A recording is
matched by the name the turns give it: its path relative to the input
without extension (``2024/interview-03``), else its file name without
extension (``interview-03``), the RTTM convention. The job matches files as
it lists them; afterwards :meth:`SpeakerTurns.check` refuses turns that
name no recording of the job, or a name two recordings share, before any
file is read.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from batchser.discover import SourceFile
from batchser.manifest import Manifest, ManifestError
from batchser.speakers.formats import FORMATS, format_of, read_turns_file
from batchser.speakers.turns import Turns, TurnsError

__all__ = ["InputTurns", "SpeakerTurns", "TurnsSource", "job_turns"]

log = logging.getLogger(__name__)

PREFIXES = tuple(sorted(set(FORMATS.values())))  # rttm, textgrid, eaf


@dataclass(frozen=True)
class TurnsSource:
    """Where one input's turns are: a file or a folder, and the format (None: each file's extension says)."""

    path: Path
    fmt: str | None = None

    @classmethod
    def parse(cls, spec: str, resolve: Callable[[str], Path]) -> TurnsSource:
        """``rttm:PATH``, ``textgrid:PATH``, ``eaf:PATH`` or a plain ``PATH``, resolved by ``resolve``."""
        prefix, sep, rest = spec.partition(":")
        if sep and prefix.lower() in PREFIXES and rest:
            return cls(resolve(rest), prefix.lower())
        return cls(resolve(spec), None)

    def files(self) -> list[tuple[Path, str, str]]:
        """``(file, format, recording name)`` of every turns file, in path order.

        Raises
        ------
        TurnsError
            The path does not exist, a file's format is unknown, or a folder holds no turns file.
        """
        p = self.path
        if p.is_file():
            fmt = self.fmt or format_of(p)
            if fmt is None:
                raise TurnsError(
                    f"speaker turns {p}: the extension {p.suffix or '(none)'} names no format; "
                    f"write rttm:, textgrid: or eaf: before the path"
                )
            return [(p, fmt, p.stem)]
        if not p.is_dir():
            raise TurnsError(f"speaker turns {p} does not exist")
        out = []
        for folder, dirs, names in os.walk(p):  # links to folders are not followed
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                f = Path(folder) / name
                fmt = format_of(f)
                if name.startswith(".") or fmt is None or (self.fmt is not None and fmt != self.fmt):
                    continue
                out.append((f, fmt, f.relative_to(p).with_suffix("").as_posix()))
        out.sort(key=lambda found: found[0].relative_to(p).parts)  # path order, as discovery lists
        if not out:
            kinds = f".{self.fmt}" if self.fmt else ", ".join(sorted(FORMATS))
            raise TurnsError(f"speaker turns folder {p} holds no {kinds} file")
        return out

    def load(self) -> dict[str, Turns]:
        """Every recording's turns, by the name the files give it.

        Raises
        ------
        TurnsError
            A file that cannot be read, or two files giving turns to one name.
        """
        out: dict[str, Turns] = {}
        for path, fmt, name in self.files():
            for turns in read_turns_file(path, fmt, recording=name):
                if turns.recording in out:
                    raise TurnsError(
                        f"{turns.source} and {out[turns.recording].source} both give turns for "
                        f"{turns.recording!r}; keep one"
                    )
                out[turns.recording] = turns
        return out


def _literal_root(path: Path) -> Path:
    """The folder recording names are relative to: the input folder, a glob's last literal folder, a file's folder."""
    parts = path.parts
    for k, part in enumerate(parts):
        if glob.has_magic(part):
            return Path(*parts[:k])
    return path if path.is_dir() else path.parent


@dataclass
class InputTurns:
    """One input's turns and the recordings matched to them so far."""

    where: str  # the manifest field, for messages: inputs[0].speakers
    source: TurnsSource
    root: Path
    by_name: dict[str, Turns]
    matched: dict[str, str] = field(default_factory=dict)  # name -> the first recording matched
    shared: dict[str, list[str]] = field(default_factory=dict)  # name -> every recording (2+) matched

    def names_of(self, f: SourceFile) -> list[str]:
        """What the turns may call ``f``: its path below the input without and with extension, then its file name."""
        if f.member:
            rel = PurePosixPath(f.member)
        else:
            try:
                rel = PurePosixPath(f.path.relative_to(self.root).as_posix())
            except ValueError:
                rel = PurePosixPath(f.path.name)
        return list(dict.fromkeys([rel.with_suffix("").as_posix(), rel.as_posix(), rel.stem, rel.name]))

    def find(self, f: SourceFile) -> tuple[str, Turns] | None:
        for name in self.names_of(f):
            hit = self.by_name.get(name)
            if hit is not None:
                return name, hit
        return None


class SpeakerTurns:
    """The job's speaker turns, per input, and the recordings they were matched to.

    Parameters
    ----------
    inputs : dict
        Input index -> :class:`InputTurns`.
    """

    def __init__(self, inputs: dict[int, InputTurns]) -> None:
        self.inputs = inputs

    @classmethod
    def load(cls, specs: Sequence[tuple[int, str, Path, str]], resolve: Callable[[str], Path]) -> SpeakerTurns:
        """Read every input's turns: ``specs`` holds (input index, manifest field, input path, ``speakers`` value).

        Raises
        ------
        TurnsError
            Naming the field and the file.
        """
        inputs = {}
        for i, where, input_path, spec in specs:
            source = TurnsSource.parse(spec, resolve)
            try:
                by_name = source.load()
            except TurnsError as exc:
                raise TurnsError(f"{where}: {exc}") from None
            inputs[i] = InputTurns(where, source, _literal_root(input_path), by_name)
        return cls(inputs)

    def __bool__(self) -> bool:
        return bool(self.inputs)

    def match(self, f: SourceFile) -> Turns | None:
        """The turns of a file being listed, noting the match (for :meth:`check`)."""
        inp = self.inputs.get(f.input_index)
        found = inp.find(f) if inp is not None else None
        if found is None:
            return None
        name, turns = found
        first = inp.matched.setdefault(name, f.name)  # type: ignore[union-attr]
        if first != f.name:
            seen = inp.shared.setdefault(name, [first])  # type: ignore[union-attr]
            if len(seen) < 4:
                seen.append(f.name)
        return turns

    def for_file(self, f: SourceFile) -> Turns | None:
        """The turns of one of the job's files (None: none given)."""
        inp = self.inputs.get(f.input_index)
        found = inp.find(f) if inp is not None else None
        return found[1] if found is not None else None

    def refuse_unmatched(self, source: str) -> None:
        """After listing: warn of an RTTM's missing recordings; refuse turns that fit none, or two.

        Raises
        ------
        ManifestError
            Naming the field, the turns file and the fix (``source``: the manifest, for the message).
        """
        problems, notes = self.check()
        for note in notes:
            log.warning(note)
        if problems:
            raise ManifestError(source, problems)
        for inp in self.inputs.values():
            log.info("%s: speaker turns for %d recordings", inp.where, len(inp.matched))

    def check(self) -> tuple[list[str], list[str]]:
        """After listing: problems (turns naming no recording, a name two recordings share) and warnings.

        A turns file none of whose recordings is in the job is a problem; an
        RTTM file some of whose recordings are missing is a warning.
        """
        problems, notes = [], []
        for inp in self.inputs.values():
            for name, seen in inp.shared.items():
                problems.append(
                    f"{inp.where}: the turns for {name!r} ({inp.by_name[name].source}) fit {len(seen)} recordings "
                    f"({', '.join(seen[:3])}{' …' if len(seen) > 3 else ''}); name them by their path below the "
                    "input without extension (a folder of turns files mirroring the input's, or those RTTM file ids)"
                )
            by_file: dict[str, list[str]] = {}
            for name, turns in inp.by_name.items():
                by_file.setdefault(turns.source, []).append(name)
            for source, names in by_file.items():
                missing = [n for n in names if n not in inp.matched]
                if not missing:
                    continue
                shown = ", ".join(repr(n) for n in missing[:3]) + (" …" if len(missing) > 3 else "")
                if len(missing) == len(names):
                    problems.append(
                        f"{inp.where}: {source} names no recording of this input ({shown}); a recording is "
                        "matched by its path below the input or its file name, without extension"
                    )
                else:
                    notes.append(
                        f"{inp.where}: {len(missing)} of the recordings {source} names are not in the job ({shown})"
                    )
        return problems, notes


def job_turns(manifest: Manifest) -> SpeakerTurns:
    """Every input's speaker turns (``inputs[].speakers``), resolved and read once, before any audio is.

    Raises
    ------
    ManifestError
        A turns file that is missing or cannot be read, naming the field, the file (and line).
    """
    specs = [
        (i, f"inputs[{i}].speakers", manifest.resolve(inp.path), inp.speakers)
        for i, inp in enumerate(manifest.inputs)
        if inp.speakers
    ]
    try:
        return SpeakerTurns.load(specs, manifest.resolve)
    except TurnsError as exc:
        raise ManifestError(str(manifest.manifest_file or manifest.name), [str(exc)]) from None
