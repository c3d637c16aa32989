"""Where each emotion sits on arousal and valence: the table the dimensional outputs are built on.

Two uses, two columns per dimension:

``side``
    The binary truth a file of that emotion is scored against, and what the
    four-class probabilities are read as: 1 high arousal (positive valence),
    0 low (negative), None no side (the file is not scored on that dimension).
``placement``
    The soft target in [0, 1] the dimension's own model is trained on, for
    every emotion, sided or not: an ordinal placement, so that angry counts
    as more activated than happy and neutral as less pleasant than calm.

Sides follow the usual circumplex placement (Russell 1980, *A circumplex
model of affect*, J. Pers. Soc. Psychol. 39(6); the same quadrants as
Scherer 2005's Geneva emotion wheel): anger, fear, joy and surprise are
activated, sadness, boredom, calm and a neutral voice are not; joy and calm
are pleasant, anger, sadness, fear and disgust are not. Disgust has no
arousal side (Russell's studies place it near the middle of the arousal
axis, and acted disgust in RAVDESS and SAVEE is spoken both ways); a
neutral voice and surprise have no valence side (surprise is pleasant or
not by its cause). The placements are ours, ordinal, in the order of those
quadrants and of the acoustic activation profiles of acted speech
(Banse & Scherer 1996; Juslin & Laukka 2003: anger and fear the most
activated, then joy; sadness and tenderness the least); docs/accuracy.md
has what they were measured against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALIASES",
    "CIRCUMPLEX",
    "DIMENSIONS",
    "SIDE_NAMES",
    "Place",
    "canonical",
    "circumplex_table_md",
    "combine",
    "placements",
    "read_off",
    "sides",
    "temper",
]

DIMENSIONS: tuple[str, ...] = ("arousal", "valence")
# What each dimension's two sides are called: (the 0 side, the 1 side).
SIDE_NAMES: dict[str, tuple[str, str]] = {"arousal": ("low", "high"), "valence": ("negative", "positive")}


@dataclass(frozen=True)
class Place:
    """One emotion on both dimensions: sides (1, 0 or None) and soft placements in [0, 1]."""

    arousal: int | None
    valence: int | None
    arousal_placement: float
    valence_placement: float

    def side(self, dim: str) -> int | None:
        return self.arousal if dim == "arousal" else self.valence

    def placement(self, dim: str) -> float:
        return self.arousal_placement if dim == "arousal" else self.valence_placement


CIRCUMPLEX: dict[str, Place] = {
    "angry": Place(1, 0, 1.0, 0.1),
    "fearful": Place(1, 0, 0.85, 0.15),
    "surprised": Place(1, None, 0.85, 0.6),
    "happy": Place(1, 1, 0.75, 1.0),
    "disgust": Place(None, 0, 0.5, 0.1),
    "neutral": Place(0, None, 0.2, 0.5),
    "sad": Place(0, 0, 0.15, 0.1),
    "bored": Place(0, None, 0.1, 0.3),
    "calm": Place(0, 1, 0.05, 0.85),
}
# Other names corpora and label maps use for the same emotions.
ALIASES: dict[str, str] = {
    "anger": "angry",
    "fear": "fearful",
    "surprise": "surprised",
    "happiness": "happy",
    "joy": "happy",
    "disgusted": "disgust",
    "sadness": "sad",
    "boredom": "bored",
}


def canonical(emotion: str) -> str | None:
    """The table's name for ``emotion`` (case-insensitive, aliases resolved); None when it has no place."""
    e = str(emotion).strip().lower()
    e = ALIASES.get(e, e)
    return e if e in CIRCUMPLEX else None


def sides(dim: str, emotions: Sequence[str] | np.ndarray) -> np.ndarray:
    """Each emotion's side on ``dim``: 1, 0, or -1 for none (not in the table, or no side)."""
    out = []
    for e in emotions:
        c = canonical(e)
        s = CIRCUMPLEX[c].side(dim) if c is not None else None
        out.append(-1 if s is None else s)
    return np.array(out, dtype=np.int8)


def placements(dim: str, emotions: Sequence[str] | np.ndarray) -> np.ndarray:
    """Each emotion's soft target on ``dim`` in [0, 1]; NaN for an emotion not in the table."""
    out = []
    for e in emotions:
        c = canonical(e)
        out.append(CIRCUMPLEX[c].placement(dim) if c is not None else np.nan)
    return np.array(out, dtype=np.float64)


def read_off(proba: np.ndarray, classes: Sequence[str], dim: str) -> np.ndarray | None:
    """``dim``'s high (positive) side read off class probabilities: its classes' share of the sided ones.

    For the shipped four emotions, arousal is p_angry + p_happy and valence
    p_happy / (p_happy + p_angry + p_sad) (neutral has no valence side).
    None when the classes do not include both sides.
    """
    s = sides(dim, list(classes))
    if not ((s == 1).any() and (s == 0).any()):
        return None
    hi = proba[:, s == 1].sum(axis=1)
    both = hi + proba[:, s == 0].sum(axis=1)
    return np.divide(hi, both, out=np.full(len(proba), 0.5), where=both > 0)


def combine(own: np.ndarray, read: np.ndarray | None) -> np.ndarray:
    """What a model reports before its temperature: the mean of its own network's probability and the read-off."""
    return own if read is None else (own + read) / 2


def temper(p: np.ndarray, beta: np.ndarray | float, *, floor: float = 1e-6) -> np.ndarray:
    """``p`` with its logit scaled by ``beta`` (> 1 sharper, < 1 softer), kept within [floor, 1 - floor]."""
    q = np.clip(np.asarray(p, dtype=np.float64), floor, 1 - floor)
    return np.clip(1.0 / (1.0 + np.exp(-np.asarray(beta) * np.log(q / (1 - q)))), floor, 1 - floor)


def circumplex_table_md() -> str:
    """The table as Markdown: each emotion's sides and placements (for the model card and docs)."""

    def cell(place: Place, dim: str) -> str:
        side = place.side(dim)
        name = "none" if side is None else SIDE_NAMES[dim][side]
        return f"{name} ({place.placement(dim):.2f})"

    lines = ["| emotion | arousal side (placement) | valence side (placement) |", "|---|---|---|"]
    lines += [f"| {e} | {cell(p, 'arousal')} | {cell(p, 'valence')} |" for e, p in CIRCUMPLEX.items()]
    return "\n".join(lines)
