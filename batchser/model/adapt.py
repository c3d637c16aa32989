"""Adaptation to recordings the model has never heard: standardise features within groups.

A voice, a microphone and a room shift every feature far more than an emotion
does, so a model that meets a new archive mistakes the recording for the
emotion. Standardising each feature within a group of files recorded alike
(z = (x - group mean) / group std) removes most of that shift. The groups,
from the best to the weakest, are:

``speaker``
    Each speaker's own files, when the speaker is known and has at least
    ``min_files`` of them (and the input allows it: a corpus whose speakers
    each show one emotion would have that emotion subtracted).
``cluster``
    Pseudo-speakers: files clustered by voice (register and timbre) within
    their corpus, when nobody says who speaks.
``corpus``
    All files of the input (corpus) in the job.

A row with no group of ``min_files`` goes to the network trained without
normalisation. Statistics come from the features alone, never from labels,
and only from the files being labelled (or, in training, each training
group's own files), so nothing leaks between a training and a test corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["ADAPT_MODES", "GroupStats", "Grouping", "RunningStats", "group_rows", "voice_columns"]

AdaptMode = Literal["none", "speaker", "cluster", "corpus"]
ADAPT_MODES: tuple[str, ...] = ("none", "speaker", "cluster", "corpus")


@dataclass(frozen=True)
class Grouping:
    """Which normalisation group each file belongs to, and by which rule it got there.

    ``keys[i]`` is None (and ``how[i]`` ``""``) for a file left unnormalised;
    ``members[key]`` are the files whose features give the group's statistics
    (for a corpus group, every file of the corpus).
    """

    keys: list[str | None]
    how: list[str]  # "speaker" | "cluster" | "corpus" | ""
    members: dict[str, np.ndarray]

    def stats(self, X: np.ndarray, owner: np.ndarray | None = None) -> GroupStats:
        """Each group's feature mean and standard deviation.

        Parameters
        ----------
        X : np.ndarray, shape (m, d)
            Rows to measure: one per file, or several (a long file's voiced windows).
        owner : np.ndarray of int, shape (m,), optional
            The file each row belongs to; default row ``i`` is file ``i``.
        """
        owner = np.arange(len(X)) if owner is None else np.asarray(owner)
        return GroupStats._measure(
            X, {key: np.flatnonzero(np.isin(owner, files)) for key, files in self.members.items()}
        )


@dataclass(frozen=True)
class GroupStats:
    """Feature mean and standard deviation per normalisation group."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    count: dict[str, int]

    @classmethod
    def fit(cls, X: np.ndarray, keys: Sequence[str | None], *, min_files: int) -> GroupStats:
        """Statistics of every group (speaker, corpus…) with at least ``min_files`` rows of its own.

        Parameters
        ----------
        X : np.ndarray, shape (n, d)
        keys : sequence of str or None, length n
            Each row's group; None for none.
        min_files : int
            Fewest rows that give a group statistics of its own (at least 2, to estimate a spread).
        """
        if min_files < 2:
            raise ValueError(f"min_files must be at least 2 to estimate a spread, got {min_files}")
        if len(keys) != len(X):
            raise ValueError(f"{len(keys)} group keys for {len(X)} rows")
        rows: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k:
                rows.setdefault(k, []).append(i)
        return cls._measure(X, {k: np.array(v) for k, v in rows.items() if len(v) >= min_files})

    @classmethod
    def _measure(cls, X: np.ndarray, rows: dict[str, np.ndarray]) -> GroupStats:
        mean, std, count = {}, {}, {}
        for key, idx in rows.items():
            block = np.asarray(X[idx], dtype=np.float64)
            if len(block) < 2:
                continue
            sd = block.std(axis=0)
            mean[key], std[key], count[key] = block.mean(axis=0), np.where(sd > 1e-12, sd, 1.0), len(block)
        return cls(mean, std, count)

    def covers(self, key: str | None) -> bool:
        return key is not None and key in self.mean

    def transform(self, X: np.ndarray, keys: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Rows standardised by their group's statistics.

        Returns
        -------
        X_norm : np.ndarray, float64
            Rows of a measured group standardised; the others unchanged.
        covered : np.ndarray of bool
        """
        out = np.array(X, dtype=np.float64, copy=True)
        covered = np.array([k is not None and k in self.mean for k in keys], dtype=bool)
        for key in {k for k, c in zip(keys, covered, strict=True) if c}:
            rows = np.array([k == key for k in keys])
            out[rows] = (out[rows] - self.mean[key]) / self.std[key]  # type: ignore[index]
        return out, covered


class RunningStats:
    """Per-group feature mean and spread, measured a block of rows at a time.

    For jobs too large to hold every vector: each block's mean and sum of
    squared deviations are merged into the group's (the pairwise update of
    Chan, Golub and LeVeque), which stays as exact as numpy's two-pass
    ``mean``/``std`` over the whole group (about 1e-12 apart), unlike a
    running sum of squares.
    """

    def __init__(self) -> None:
        self._n: dict[str, int] = {}
        self._mean: dict[str, np.ndarray] = {}
        self._m2: dict[str, np.ndarray] = {}

    def add(self, key: str, block: np.ndarray) -> None:
        """Fold ``block`` (rows of one group, shape (m, d)) into ``key``'s statistics."""
        m = len(block)
        if not m:
            return
        block = np.asarray(block, dtype=np.float64)
        mean_b = block.mean(axis=0)
        m2_b = ((block - mean_b) ** 2).sum(axis=0)
        n = self._n.get(key, 0)
        if not n:
            self._n[key], self._mean[key], self._m2[key] = m, mean_b, m2_b
            return
        total = n + m
        delta = mean_b - self._mean[key]
        self._mean[key] = self._mean[key] + delta * (m / total)
        self._m2[key] = self._m2[key] + m2_b + delta**2 * (n * m / total)
        self._n[key] = total

    def stats(self) -> GroupStats:
        """Every group of at least two rows, as :meth:`GroupStats.fit` would measure it."""
        mean, std, count = {}, {}, {}
        for key, n in self._n.items():
            if n < 2:
                continue
            sd = np.sqrt(self._m2[key] / n)
            mean[key], std[key], count[key] = self._mean[key], np.where(sd > 1e-12, sd, 1.0), n
        return GroupStats(mean, std, count)


def voice_columns(names: Sequence[str]) -> np.ndarray:
    """Indices of the columns that describe a voice more than a moment: register and timbre.

    Pitch level, and the means of the MFCCs and log-mel bands (a speaker's
    vocal tract and microphone); what the emotion moves most (spread, range,
    movement, loudness) is left out, so clusters follow speakers, not emotions.
    """
    keep = [i for i, n in enumerate(names) if n in ("prosody_0", "prosody_2", "prosody_3") or _is_mean_column(n)]
    return np.array(keep if keep else range(len(names)), dtype=np.intp)


def _is_mean_column(name: str) -> bool:
    group, _, idx = name.rpartition("_")
    if not idx.isdigit():
        return False
    i = int(idx)
    return (group == "mfcc_stats" and 1 <= i < 20) or (group == "logmel_stats" and i < 40)


def _clusters(X: np.ndarray, *, min_files: int, random_state: int) -> np.ndarray:
    """Pseudo-speaker id per row: k-means on standardised voice features, k from the count.

    k is the number of groups of ``2 * min_files`` the rows could form (at
    least 2): a speaker needs enough files, across emotions, to be its own
    reference, so it is better to merge two voices than to split one.
    """
    from sklearn.cluster import KMeans

    k = max(2, len(X) // (2 * min_files))
    if len(X) < 2 * min_files:
        return np.zeros(len(X), dtype=np.intp)
    mu, sd = X.mean(axis=0), X.std(axis=0)
    Z = (X - mu) / np.where(sd > 1e-12, sd, 1.0)
    return KMeans(n_clusters=k, n_init=4, random_state=random_state).fit_predict(Z)


def group_rows(
    X: np.ndarray,
    *,
    mode: str,
    corpora: Sequence[str | None],
    speakers: Sequence[str | None] | None = None,
    speaker_ok: Sequence[bool] | None = None,
    min_files: int,
    voice: np.ndarray | None = None,
    random_state: int = 0,
) -> Grouping:
    """Assign each row a normalisation group by ``mode``, falling back to weaker rules.

    Parameters
    ----------
    X : np.ndarray, shape (n, d)
        The rows' features.
    mode : {"none", "speaker", "cluster", "corpus"}
        The strongest rule to try: ``speaker`` falls back to ``corpus``,
        ``cluster`` to ``corpus``; ``none`` groups nothing.
    corpora : sequence of str or None
        Each row's corpus (input).
    speakers : sequence of str or None, optional
        Each row's speaker, qualified by corpus; None where unknown.
    speaker_ok : sequence of bool, optional
        Whether the row's input allows speaker normalisation.
    min_files : int
        Fewest rows that give a group statistics of its own.
    voice : np.ndarray or None
        Column indices clustering looks at (:func:`voice_columns`); None: all.
    random_state : int
        Seed of the clustering.
    """
    n = len(X)
    keys: list[str | None] = [None] * n
    how = [""] * n
    members: dict[str, list[int]] = {}

    def put(i: int, key: str, rule: str) -> None:
        keys[i], how[i] = key, rule
        members.setdefault(key, []).append(i)

    if mode == "none":
        return Grouping(keys, how, {})
    by_corpus: dict[str | None, list[int]] = {}
    for i, c in enumerate(corpora):
        by_corpus.setdefault(c, []).append(i)
    if mode == "speaker" and speakers is not None:
        count: dict[str, int] = {}
        for i, s in enumerate(speakers):
            if s and (speaker_ok is None or speaker_ok[i]):
                count[s] = count.get(s, 0) + 1
        for i, s in enumerate(speakers):
            if s and count.get(s, 0) >= min_files:
                put(i, f"speaker:{s}", "speaker")
    if mode == "cluster":
        cols = voice if voice is not None else np.arange(X.shape[1])
        for c, files in by_corpus.items():
            idx = np.array(files, dtype=np.intp)
            if len(idx) < 2 * min_files:
                continue
            labels = _clusters(X[np.ix_(idx, cols)], min_files=min_files, random_state=random_state)
            sizes = np.bincount(labels)
            for i, lab in zip(idx.tolist(), labels.tolist(), strict=True):
                if sizes[lab] >= min_files:
                    put(i, f"cluster:{c}:{lab}", "cluster")
    for c, files in by_corpus.items():  # the fallback of every rule, measured on the whole corpus
        if len(files) < min_files:
            continue
        key = f"corpus:{c}"
        for i in files:
            if keys[i] is None:
                keys[i], how[i] = key, "corpus"
        members[key] = list(files)
    return Grouping(keys, how, {k: np.array(v, dtype=np.intp) for k, v in members.items()})
