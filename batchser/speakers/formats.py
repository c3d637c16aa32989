"""Readers of the speaker-turn files people already have: RTTM, Praat TextGrid, ELAN.

- **RTTM** (NIST; what pyannote, whisperX and NeMo write): one ``SPEAKER`` line
  per turn, ``SPEAKER <file id> <channel> <start> <duration> <NA> <NA> <name> …``.
  One file may hold many recordings (file ids); other line types are skipped.
- **Praat TextGrid** (read with ``praatio``): every interval tier is a speaker
  (its name), and its labelled intervals are that speaker's turns; a tier named
  ``speaker`` or ``speakers`` holds the speakers' names as its labels instead.
  The Montreal Forced Aligner's tiers (``Alice - words``, ``Alice - phones``)
  are Alice's. Point tiers are skipped.
- **ELAN** ``.eaf`` (read with ``pympi-ling``): every time-aligned tier is a
  speaker, its ``PARTICIPANT`` if set, else its name; its annotations are the
  turns. Dependent (reference) tiers are skipped.

A TextGrid or ELAN file describes one recording, named by the file.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from batchser.speakers.turns import Turn, Turns, TurnsError

__all__ = ["FORMATS", "MAX_TURNS_BYTES", "format_of", "read_eaf", "read_rttm", "read_textgrid", "read_turns_file"]

FORMATS = {".rttm": "rttm", ".textgrid": "textgrid", ".eaf": "eaf"}  # suffix (lower case) -> format
MAX_TURNS_BYTES = 64 << 20  # a day of turns is a few MB; more is a mistake or an attack
_SPEAKER_TIERS = ("speaker", "speakers")
_MFA_SUFFIXES = (" - words", " - phones")


def format_of(path: Path) -> str | None:
    """The turns format a file's extension names, or None."""
    return FORMATS.get(path.suffix.lower())


def _check_file(path: Path) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TurnsError(f"cannot read speaker turns {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TurnsError(f"speaker turns {path} is not a regular file")
    if st.st_size > MAX_TURNS_BYTES:
        raise TurnsError(f"speaker turns {path} is {st.st_size / 2**20:.0f} MiB, over {MAX_TURNS_BYTES >> 20} MiB")


def read_rttm(path: Path) -> list[Turns]:
    """Every recording's turns in an RTTM file, in order of first appearance.

    Raises
    ------
    TurnsError
        Unreadable, not UTF-8, or a ``SPEAKER`` line with too few fields or a
        time that is not a number (naming the line).
    """
    _check_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TurnsError(f"speaker turns {path} is not UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise TurnsError(f"cannot read speaker turns {path}: {exc.strerror or exc}") from None
    by_file: dict[str, list[Turn]] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":  # comments (;;), blank lines, SPKR-INFO, LEXEME …
            continue
        where = f"{path} line {line_no}"
        if len(fields) < 8:
            raise TurnsError(
                f"{where}: a SPEAKER line needs 8 or more fields (SPEAKER file channel start duration <NA> <NA> "
                f"name …), got {len(fields)}"
            )
        try:
            start, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise TurnsError(f"{where}: start {fields[3]!r} and duration {fields[4]!r} must be seconds") from None
        if not duration >= 0:
            raise TurnsError(f"{where}: duration {fields[4]} must not be negative")
        by_file.setdefault(fields[1], []).append(Turn(start, start + duration, fields[7]))
    if not by_file:
        raise TurnsError(f"speaker turns {path} holds no SPEAKER line; is it an RTTM file?")
    return [Turns.of(name, str(path), turns) for name, turns in by_file.items()]


def _speaker_of_tier(name: str) -> str:
    for suffix in _MFA_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_textgrid(path: Path, recording: str) -> Turns:
    """The turns of a Praat TextGrid (see the module's notes for how tiers name speakers).

    Raises
    ------
    TurnsError
        Unreadable, or not a TextGrid praatio can parse.
    """
    from praatio import textgrid
    from praatio.utilities.constants import INTERVAL_TIER

    _check_file(path)
    try:
        tg = textgrid.openTextgrid(os.fspath(path), includeEmptyIntervals=False, reportingMode="silence")
    except Exception as exc:  # noqa: BLE001 - praatio raises many kinds for a malformed file
        raise TurnsError(f"cannot read {path} as a Praat TextGrid: {type(exc).__name__}: {exc}") from None
    tiers = [tg.getTier(name) for name in tg.tierNames]
    tiers = [t for t in tiers if t.tierType == INTERVAL_TIER]
    named = [t for t in tiers if t.name.strip().lower() in _SPEAKER_TIERS]
    turns: list[Turn] = []
    if named:
        turns = [Turn(float(e.start), float(e.end), e.label.strip()) for t in named for e in t.entries]
    else:
        for t in tiers:
            who = _speaker_of_tier(t.name.strip())
            turns += [Turn(float(e.start), float(e.end), who) for e in t.entries if e.label.strip()]
    if not turns:
        raise TurnsError(f"{path}: no interval tier with labelled intervals; name a tier per speaker")
    return Turns.of(recording, str(path), turns)


def read_eaf(path: Path, recording: str) -> Turns:
    """The turns of an ELAN file: each time-aligned tier is a speaker (its participant, else its name).

    Raises
    ------
    TurnsError
        Unreadable, or not an EAF file pympi can parse.
    """
    from pympi.Elan import Eaf

    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Parsing unknown version of ELAN spec": the tiers still read
            eaf = Eaf(os.fspath(path), suppress_version_warning=True)
    except Exception as exc:  # noqa: BLE001 - pympi raises bare Exception and KeyError for a malformed file
        raise TurnsError(f"cannot read {path} as an ELAN file: {type(exc).__name__}: {exc}") from None
    turns: list[Turn] = []
    for tier, (aligned, _refs, attributes, _order) in eaf.tiers.items():
        if not aligned:  # a dependent tier (translations, glosses): its times are its parent's
            continue
        who = (attributes.get("PARTICIPANT") or "").strip() or str(tier).strip()
        for slot_a, slot_b, _value, _svg in aligned.values():
            a, b = eaf.timeslots.get(slot_a), eaf.timeslots.get(slot_b)
            if a is None or b is None:  # an unaligned time slot: no time to use
                continue
            turns.append(Turn(a / 1000, b / 1000, who))
    if not turns:
        raise TurnsError(f"{path}: no time-aligned annotation; give each speaker a tier")
    return Turns.of(recording, str(path), turns)


def read_turns_file(path: Path, fmt: str, *, recording: str) -> list[Turns]:
    """The turns in ``path`` read as ``fmt``; ``recording`` names a TextGrid's or ELAN file's recording.

    Raises
    ------
    TurnsError
    """
    if fmt == "rttm":
        return read_rttm(path)
    if fmt == "textgrid":
        return [read_textgrid(path, recording)]
    if fmt == "eaf":
        return [read_eaf(path, recording)]
    raise TurnsError(f"unknown speaker-turns format {fmt!r}; use rttm, textgrid or eaf")
