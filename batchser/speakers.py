"""Per-speaker feature standardisation: each speaker measured against themselves.

A voice's register, timbre and loudness differ far more between people than
one person's differ between emotions, so a model that never heard a speaker
mistakes the voice for the emotion. Standardising each feature over the
speaker's own recordings (z = (x - speaker mean) / speaker std) removes most
of that: on RAVDESS, with unseen actors, 4-emotion accuracy goes from 68 % to
77 %. Only the speaker's own, unlabelled feature vectors enter their
statistics, during training and when labelling alike, so no label and no
other speaker's data can leak into a test fold.

It needs to know who speaks (labels' ``speaker``, or ``inputs[].speaker:
folder``) and enough of each speaker's recordings: statistics from 5 files
cost 10 points of accuracy, from 20 files almost none. And it assumes those
recordings span several emotions: a speaker heard only sad gets their sadness
subtracted (README, "Accuracy").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SpeakerNorm"]


@dataclass(frozen=True)
class SpeakerNorm:
    """Each covered speaker's feature mean and standard deviation.

    Build it with :meth:`fit`; speakers with fewer than ``min_files`` vectors
    are not covered, and their files go to the model without normalisation.
    """

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    count: dict[str, int]
    min_files: int

    @classmethod
    def fit(cls, X: np.ndarray, speakers: Sequence[str | None], *, min_files: int) -> SpeakerNorm:
        """Statistics of every speaker with at least ``min_files`` rows.

        Parameters
        ----------
        X : np.ndarray, shape (n, d)
            Feature vectors (a file's, or a window's of a long file).
        speakers : sequence of str or None, length n
            Who speaks in each row; None for unknown.
        min_files : int
            Fewest rows that give a speaker statistics of their own.
        """
        if min_files < 2:
            raise ValueError(f"min_files must be at least 2 to estimate a spread, got {min_files}")
        if len(speakers) != len(X):
            raise ValueError(f"{len(speakers)} speakers for {len(X)} rows")
        rows: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(speakers):
            if s:
                rows[s].append(i)
        mean, std, count = {}, {}, {}
        for s, idx in rows.items():
            if len(idx) < min_files:
                continue
            block = np.asarray(X[idx], dtype=np.float64)
            sd = block.std(axis=0)
            mean[s], std[s], count[s] = block.mean(axis=0), np.where(sd > 1e-12, sd, 1.0), len(idx)
        return cls(mean, std, count, min_files)

    def covers(self, speaker: str | None) -> bool:
        return speaker is not None and speaker in self.mean

    def transform(self, X: np.ndarray, speakers: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Standardise the rows of covered speakers.

        Returns
        -------
        X_norm : np.ndarray, shape (n, d), float64
            Rows of covered speakers standardised; the others unchanged.
        covered : np.ndarray, shape (n,), bool
        """
        out = np.array(X, dtype=np.float64, copy=True)
        covered = np.array([self.covers(s) for s in speakers], dtype=bool)
        for i in np.flatnonzero(covered):
            s = speakers[i]
            out[i] = (out[i] - self.mean[s]) / self.std[s]  # type: ignore[index]
        return out, covered
