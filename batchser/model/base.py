"""The model as jobs use it: metadata, the loaded networks, and the error type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from batchser.model.adapt import GroupStats
from batchser.model.circumplex import SIDE_NAMES, combine, read_off, temper

__all__ = ["PROBA_FLOOR", "Dimension", "ModelError", "ModelMeta", "TrainedModel"]

PROBA_FLOOR = 1e-6


class ModelError(RuntimeError):
    """A model that cannot be used for this job; the message says why and what to do."""


@dataclass(frozen=True)
class ModelMeta:
    """What a model file records about itself (stored inside it)."""

    classes: list[str]
    feature_spec: dict[str, Any]
    training_fingerprint: str
    n_train: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    sha256: str = ""  # of the .skops bytes: integrity (skops bytes differ on every save)
    weights_sha256: str = ""  # of the fitted numbers: identity, equal for retrains on the same data, versions and CPU
    arrays_sha256: str = ""  # of the .npz NumpyNetwork arrays jobs predict from ("" for older models)
    training_sha256: str = ""  # of the training rows a review refits on ("" when the file carries none)

    @property
    def feature_fingerprint(self) -> str:
        return str(self.feature_spec["fingerprint"])


# Adaptation rules a long recording's own groups stand for, where the temperatures were fitted.
_TEMPERATURE_OF = {"file": "corpus", "file-speaker": "speaker", "": "none"}


@dataclass(frozen=True)
class Dimension:
    """One dimension's networks (:mod:`batchser.model.dimensions`) and the temperatures on its answer.

    ``plain`` answers rows with no normalisation group, ``norm`` (None for a
    model that does not normalise) rows standardised within theirs.
    ``temperature`` maps an adaptation rule (``none``, ``speaker``,
    ``cluster``, ``corpus``: how the row was standardised) to the factor on
    the logit of the reported probability, fitted on predictions for corpora
    the networks never heard; a rule without one keeps factor 1.
    """

    name: str  # "arousal" | "valence"
    plain: Any
    norm: Any | None = None
    temperature: dict[str, float] = field(default_factory=dict)

    def own(self, X: np.ndarray, Xn: np.ndarray, use_norm: np.ndarray) -> np.ndarray:
        """The networks' probability of the high (positive) side: ``Xn`` rows where ``use_norm``, else ``X``."""
        use_norm = use_norm if self.norm is not None else np.zeros(len(X), dtype=bool)
        out = np.empty(len(X))
        for est, rows, data in ((self.plain, ~use_norm, X), (self.norm, use_norm, Xn)):
            if rows.any():
                classes = [str(c) for c in est.classes_]
                out[rows] = est.predict_proba(data[rows])[:, classes.index(SIDE_NAMES[self.name][1])]
        return out


@dataclass(frozen=True)
class TrainedModel:
    """A loaded model: the network for any file, and optionally one for speaker-normalised files.

    ``speaker_pipeline`` (``model.normalize: speaker``) was trained on features
    standardised per speaker or corpus (:mod:`batchser.model.adapt`); files
    whose speaker has too few recordings for such statistics go to ``pipeline``,
    trained on the same data without that step.
    """

    pipeline: Any
    meta: ModelMeta
    path: Path
    speaker_pipeline: Any | None = None
    # SHA-256 of the numbers actually loaded (store.loaded_digest); "" for a model just trained,
    # whose metadata's weights_sha256 was computed from the very objects in memory.
    loaded_sha256: str = ""
    # Arousal and valence (model.dimensions in a train job); none for models trained without them.
    dimensions: tuple[Dimension, ...] = ()

    @property
    def id(self) -> str:
        """Short id for reports: model file name and the start of its weights' hash.

        For a loaded model the hash is computed from the weights it predicts
        with, never read from its metadata: an edited network shows another id.
        """
        return f"{self.path.stem}@{(self.loaded_sha256 or self.meta.weights_sha256)[:12]}"

    def __repr__(self) -> str:  # the networks' own reprs run to pages
        extra = f", dimensions={list(self.dimension_names)}" if self.dimensions else ""
        per = ", by speaker" if self.speaker_pipeline is not None else ""
        return f"TrainedModel({self.id!r}, classes={list(self.meta.classes)}{extra}{per})"

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """The dimensions the model reports beside its classes (``arousal``, ``valence``), in order."""
        return tuple(d.name for d in self.dimensions)

    @property
    def min_speaker_files(self) -> int:
        return int(self.meta.params.get("min_speaker_files", 0))

    def _proba(self, estimator: Any, X: np.ndarray) -> np.ndarray:
        proba = estimator.predict_proba(X)
        order = [list(estimator.classes_).index(c) for c in self.meta.classes]
        # Never exactly 0 or 1: no model is that sure of a file it has not heard, and a
        # downstream log-loss or odds ratio must not blow up (calibration maps can give both).
        return (proba[:, order] + PROBA_FLOOR) / (1.0 + len(order) * PROBA_FLOOR)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities without speaker normalisation, columns in ``meta.classes`` order."""
        return self._proba(self.pipeline, X)

    def predict_proba_by_speaker(
        self, X: np.ndarray, keys: Sequence[str | None], norm: GroupStats | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities, normalised wherever ``norm`` covers the row's group (speaker, corpus…).

        Returns
        -------
        proba : np.ndarray, shape (n, n_classes)
        normalised : np.ndarray, shape (n,), bool
            Rows that went through the speaker-normalised network.
        """
        if self.speaker_pipeline is None or norm is None:
            return self.predict_proba(X), np.zeros(len(X), dtype=bool)
        Xn, covered = norm.transform(X, keys)
        return self.predict_proba_standardised(X, Xn, covered), covered

    def predict_proba_standardised(self, X: np.ndarray, Xn: np.ndarray, covered: np.ndarray) -> np.ndarray:
        """Class probabilities of rows standardised already: ``Xn`` through the normalised network where
        ``covered``, ``X`` through the plain one elsewhere (or everywhere, for a model without the former)."""
        if self.speaker_pipeline is None:
            return self.predict_proba(X)
        proba = np.empty((len(X), len(self.meta.classes)))
        if (~covered).any():
            proba[~covered] = self._proba(self.pipeline, X[~covered])
        if covered.any():
            proba[covered] = self._proba(self.speaker_pipeline, Xn[covered])
        return proba

    def predict_dimensions(
        self,
        X: np.ndarray,
        keys: Sequence[str | None],
        norm: GroupStats | None,
        *,
        proba: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """P(high arousal) and P(positive valence) per row, standardised as :meth:`predict_proba_by_speaker` does.

        Each is the mean of the dimension's own network and the share of the
        four-class probabilities on that side (:func:`batchser.model.circumplex.read_off`),
        its logit scaled by the temperature of the row's adaptation rule.

        Parameters
        ----------
        X : np.ndarray, shape (n, d)
        keys : sequence of str or None
            Each row's normalisation group (``speaker:…``, ``corpus:…``, ``cluster:…``) or None.
        norm : GroupStats or None
            The groups' statistics; None standardises nothing.
        proba : np.ndarray, optional
            The rows' class probabilities from :meth:`predict_proba_by_speaker`, when the
            caller has them already (saves computing them twice).

        Returns
        -------
        dict of str to np.ndarray, shape (n,)
            One entry per dimension the model has (``arousal``, ``valence``); empty
            for a model trained without them.
        """
        if not self.dimensions:
            return {}
        X = np.asarray(X, dtype=np.float64)
        if self.speaker_pipeline is None or norm is None:
            Xn, covered = X, np.zeros(len(X), dtype=bool)
        else:
            Xn, covered = norm.transform(X, keys)
        if proba is None:
            proba = self.predict_proba_standardised(X, Xn, covered)
        rules = [k.split(":", 1)[0] if c and k else "none" for k, c in zip(keys, covered, strict=True)]
        return self.predict_dimensions_standardised(X, Xn, covered, rules, proba)

    def predict_dimensions_standardised(
        self, X: np.ndarray, Xn: np.ndarray, covered: np.ndarray, rules: Sequence[str], proba: np.ndarray
    ) -> dict[str, np.ndarray]:
        """:meth:`predict_dimensions` of rows standardised already (``rules``: each row's adaptation rule,
        ``proba``: its class probabilities). A long recording's own groups take the temperature of the
        group they stand for: ``file`` a corpus's, ``file-speaker`` a speaker's."""
        out = {}
        for dim in self.dimensions:
            p = combine(dim.own(X, Xn, covered), read_off(proba, self.meta.classes, dim.name))
            beta = np.array([dim.temperature.get(_TEMPERATURE_OF.get(r, r), 1.0) for r in rules])
            out[dim.name] = temper(p, beta, floor=PROBA_FLOOR)
        return out
