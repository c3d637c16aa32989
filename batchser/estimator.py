"""A scikit-learn classifier over audio files, for pipelines, grid searches and cross-validation.

    >>> from sklearn.model_selection import GroupKFold, cross_val_score
    >>> clf = batchser.EmotionClassifier()                            # doctest: +SKIP
    >>> cross_val_score(clf, paths, labels, groups=speakers, cv=GroupKFold(4))  # doctest: +SKIP

``X`` is a sequence of audio file paths (features come from batchser's
extractor and the shared cache) or a 2-D array of feature rows already
extracted. Jobs (:func:`batchser.annotate`, ``batchser run``) remain the way
to label archives: they add adaptation, long files, archives and reports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from batchser.api import default_cache_dir
from batchser.cache import FeatureStore, hash_file
from batchser.engine import ExtractTask, run_tasks
from batchser.features import FeatureSpec
from batchser.manifest import MLPSpec
from batchser.model.train import fit_model
from batchser.recipe import SHIPPED

__all__ = ["EmotionClassifier", "extract_features"]


def extract_features(
    paths: Sequence[str | Path], *, spec: FeatureSpec, cache: str | Path | None = None, n_jobs: int = -1
) -> np.ndarray:
    """Feature rows of ``paths`` (files analysed whole), through the shared feature cache.

    Raises
    ------
    ValueError
        A file that cannot be labelled, named with the reason.
    """
    hashes = [hash_file(p) for p in paths]
    with FeatureStore(Path(cache) if cache is not None else default_cache_dir(), spec) as store:
        have = store.get_many(hashes)
        todo = {h: os.fspath(p) for p, h in zip(paths, hashes, strict=True) if h not in have}
        tasks = [ExtractTask(p, h, size=os.path.getsize(p), verify=True) for h, p in todo.items()]
        for batch in run_tasks(tasks, spec=spec, n_jobs=n_jobs):
            store.add(batch)
            have.update((r.content_hash, r) for r in batch)
    bad = [(p, have[h].error) for p, h in zip(paths, hashes, strict=True) if not have[h].ok]
    if bad:
        raise ValueError(f"{len(bad)} file(s) cannot be used; the first: {bad[0][0]}: {bad[0][1]}")
    return np.stack([have[h].vector for h in hashes]).astype(np.float64)  # type: ignore[misc]


class EmotionClassifier(ClassifierMixin, BaseEstimator):
    """Standardisation and a classifier over batchser's speech features, as a scikit-learn estimator.

    The defaults are the shipped model's recipe (:data:`batchser.recipe.SHIPPED`) but
    for speaker normalisation, which needs each file's speaker at fit and predict time
    (a job's ``model.normalize``): features, classifier, C and calibration.

    Parameters
    ----------
    features : sequence of str or None
        Feature groups; None: the shipped model's.
    sample_rate : int
        Audio is resampled to this rate before analysis.
    classifier : {"logistic", "mlp"}
        A regularised logistic regression (transfers best to new recordings)
        or the librosa tutorial recipe's MLP.
    C : float
        Inverse regularisation of the logistic regression.
    calibration : {"temperature", "sigmoid", "isotonic", "none"}
        Probability calibration on three inner folds; "temperature" rescales
        confidence and never changes a label.
    random_state : int
    cache : path or None
        The feature cache; None: the per-user one.
    n_jobs : int
        Extraction workers; -1: all cores.

    Attributes
    ----------
    classes_ : ndarray
    pipeline_ : estimator
        The fitted StandardScaler → classifier (in ``CalibratedClassifierCV`` when calibrated).
    """

    def __init__(
        self,
        *,
        features: Sequence[str] | None = None,
        sample_rate: int = SHIPPED.sample_rate,
        classifier: str = SHIPPED.classifier,
        C: float = SHIPPED.C,
        calibration: str = SHIPPED.calibration,
        random_state: int = SHIPPED.random_state,
        cache: str | Path | None = None,
        n_jobs: int = -1,
    ) -> None:
        self.features = features
        self.sample_rate = sample_rate
        self.classifier = classifier
        self.C = C
        self.calibration = calibration
        self.random_state = random_state
        self.cache = cache
        self.n_jobs = n_jobs

    def _spec(self) -> FeatureSpec:
        if self.features is not None:
            return FeatureSpec(tuple(self.features), self.sample_rate)
        return FeatureSpec(SHIPPED.features, self.sample_rate)

    def transform(self, X: Any) -> np.ndarray:
        """Feature rows of ``X``: paths are analysed (through the cache); a 2-D array is returned as floats."""
        if isinstance(X, np.ndarray) and X.ndim == 2 and np.issubdtype(X.dtype, np.number):
            return X.astype(np.float64)
        if isinstance(X, (str, Path)):
            raise ValueError("X must be a sequence of paths or a 2-D array of feature rows, not one path")
        return extract_features(list(X), spec=self._spec(), cache=self.cache, n_jobs=self.n_jobs)

    def fit(self, X: Any, y: Sequence[str]) -> EmotionClassifier:
        """Learn the emotions ``y`` of the files (or feature rows) ``X``."""
        self.pipeline_ = fit_model(
            self.transform(X),
            np.asarray(y),
            None,
            params=MLPSpec().model_dump(),
            random_state=self.random_state,
            calibration=self.calibration,
            classifier=self.classifier,
            C=self.C,
        )
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Each class's probability (columns in ``classes_`` order) for each file or row of ``X``."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict_proba(self.transform(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable emotion of each file or row of ``X``."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
