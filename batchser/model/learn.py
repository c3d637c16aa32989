"""Learning an archive from a person's answers: refit on the training data plus the reviewed files.

A model trained on other corpora labels a new archive about half right; a
person who labels a few dozen of its files moves that more than any feature
or classifier did (docs/accuracy.md). :func:`learn` refits both networks of
a model (the plain one and the one on standardised features) on the model's
own training rows plus the reviewed rows, each reviewed row weighted
``weight`` times, then fits one temperature on the reviewed rows'
out-of-fold predictions, so confidences are calibrated on this archive.
:func:`batchser.review.estimate` says how often labels are right on the
archive, from the part of the sample drawn at random, with a 95 % interval.

What the refit needs from the training data travels inside the model file
(:class:`TrainingSet`, written by :func:`batchser.model.store.save_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchser.model.adapt import GroupStats
from batchser.model.network import NumpyNetwork, network_arrays

__all__ = ["AFTER_WIDEN", "Learned", "Rows", "TrainingSet", "learn"]

# The after-learning interval is widened by this factor: the out-of-fold models vary with the
# folds, which the sampling variance alone leaves out (at 1.0 the interval held the true
# accuracy in 82-93 % of draws on held-out corpora, bench/review.py; docs/accuracy.md).
AFTER_WIDEN = 1.5
REVIEW_WEIGHT = 1000.0  # each answer counts as this many training files: 10 to 3000 measured (docs/accuracy.md)
FOLDS = 10  # out-of-fold predictions of the answers: calibration, and the estimate after learning


@dataclass(frozen=True)
class TrainingSet:
    """A model's training rows, as the refit needs them.

    ``keys[i]`` is the normalisation group (speaker or corpus) row ``i`` was
    standardised within when the model was trained, ``""`` for none.
    """

    X: np.ndarray  # float32 (n, d): raw feature vectors
    y: np.ndarray  # str (n,)
    keys: np.ndarray  # str (n,)

    def rows(self) -> Rows:
        """The rows as both networks saw them: raw, and standardised within their group."""
        X = np.asarray(self.X, dtype=np.float64)
        keys = [k or None for k in self.keys.tolist()]
        stats = GroupStats.fit(X, keys, min_files=2)
        Xn, covered = stats.transform(X, keys)
        return Rows(X, Xn, covered)


@dataclass(frozen=True)
class Rows:
    """Feature rows as the networks see them: ``Xn`` (standardised) where ``covered``, else ``X``."""

    X: np.ndarray
    Xn: np.ndarray
    covered: np.ndarray

    def __len__(self) -> int:
        return len(self.X)

    def take(self, idx: np.ndarray) -> Rows:
        return Rows(self.X[idx], self.Xn[idx], self.covered[idx])

    @staticmethod
    def join(a: Rows, b: Rows) -> Rows:
        return Rows(np.vstack([a.X, b.X]), np.vstack([a.Xn, b.Xn]), np.concatenate([a.covered, b.covered]))


@dataclass(frozen=True)
class Learned:
    """The refitted networks (temperature-calibrated) and what the answers said of them."""

    plain: NumpyNetwork
    norm: NumpyNetwork | None
    temperature: float
    oof_proba: np.ndarray  # reviewed rows' probabilities from networks that did not see them
    classes: list[str]


def _fit(X: np.ndarray, y: np.ndarray, w: np.ndarray, *, C: float, random_state: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline(
        [("scale", StandardScaler()), ("logistic", LogisticRegression(C=C, max_iter=5000, random_state=random_state))]
    )
    return pipe.fit(X, y, logistic__sample_weight=w)


def _pair(rows: Rows, y: np.ndarray, w: np.ndarray, *, norm: bool, C: float, random_state: int) -> tuple[Any, Any]:
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a few thousand rows, threads cost more than they give (8x, measured on 2 cores).
    with threadpool_limits(1):
        plain = _fit(rows.X, y, w, C=C, random_state=random_state)
        if not norm or not rows.covered.any():
            return plain, None
        c = rows.covered
        return plain, _fit(rows.Xn[c], y[c], w[c], C=C, random_state=random_state)


def _logits(plain: Any, norm: Any | None, rows: Rows, classes: list[str]) -> np.ndarray:
    """Decision values (columns in ``classes`` order) from whichever network each row goes to."""
    out = np.zeros((len(rows), len(classes)))
    for est, mask, data in ((plain, ~rows.covered if norm is not None else np.ones(len(rows), bool), rows.X),
                            (norm, rows.covered, rows.Xn)):  # fmt: skip
        if est is None or not mask.any():
            continue
        d = est.decision_function(data[mask])
        order = [list(est.classes_).index(c) for c in classes]
        out[mask] = d[:, order]
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _temperature(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``y_idx`` under softmax(logits / T)."""
    from scipy.optimize import minimize_scalar

    def nll(t: float) -> float:
        p = _softmax(logits / t)
        return float(-np.mean(np.log(p[np.arange(len(y_idx)), y_idx] + 1e-12)))

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def _network(pipe: Any, temperature: float) -> NumpyNetwork:
    arrays, settings = network_arrays(pipe)
    arrays = {**arrays, "cal_beta": np.array([1.0 / temperature])}
    classes = arrays.pop("classes")
    return NumpyNetwork(classes_=classes, arrays=arrays, activation=settings["activation"], calibration="temperature")


def learn(
    base: Rows,
    y_base: np.ndarray,
    reviewed: Rows,
    y_reviewed: np.ndarray,
    *,
    classes: Sequence[str],
    norm: bool = True,
    C: float = 0.01,
    weight: float = REVIEW_WEIGHT,
    folds: int = FOLDS,
    random_state: int = 0,
) -> Learned:
    """Refit on ``base`` plus ``reviewed`` (each reviewed row weighted ``weight``), calibrated on the answers.

    Parameters
    ----------
    base, y_base : Rows, array of str
        The model's training rows and labels (:meth:`TrainingSet.rows`).
    reviewed, y_reviewed : Rows, array of str
        The reviewed files, standardised as the job standardises them, and the person's answers.
    classes : sequence of str
        The model's classes; answers outside them must be left out by the caller.
    norm : bool
        Fit the network on standardised features too (the model has one).
    C, weight, folds, random_state
        Logistic regression's C; how many training rows an answer counts as;
        cross-validation folds over the reviewed rows for the out-of-fold
        predictions (calibration and the estimate after learning).

    Returns
    -------
    Learned
    """
    classes = list(classes)
    y_base, y_reviewed = np.asarray(y_base), np.asarray(y_reviewed)
    idx = np.array([classes.index(c) for c in y_reviewed], dtype=np.intp)
    oof = np.zeros((len(reviewed), len(classes)))
    k = min(folds, len(reviewed))
    if k >= 2:
        from sklearn.model_selection import KFold

        for tr, te in KFold(n_splits=k, shuffle=True, random_state=random_state).split(reviewed.X):
            rows = Rows.join(base, reviewed.take(tr))
            y = np.concatenate([y_base, y_reviewed[tr]])
            w = np.concatenate([np.ones(len(base)), np.full(len(tr), weight)])
            p, n = _pair(rows, y, w, norm=norm, C=C, random_state=random_state)
            oof[te] = _logits(p, n, reviewed.take(te), classes)
        temperature = _temperature(oof, idx)
    else:
        temperature = 1.0
    rows = Rows.join(base, reviewed)
    y = np.concatenate([y_base, y_reviewed])
    w = np.concatenate([np.ones(len(base)), np.full(len(reviewed), weight)])
    plain, normed = _pair(rows, y, w, norm=norm, C=C, random_state=random_state)
    return Learned(
        plain=_network(plain, temperature),
        norm=None if normed is None else _network(normed, temperature),
        temperature=temperature,
        oof_proba=_softmax(oof / temperature) if k >= 2 else np.full(oof.shape, 1.0 / len(classes)),
        classes=classes,
    )
