"""The recipe: StandardScaler → MLPClassifier, optionally calibrated; what identifies a training run."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = ["build_pipeline", "fit", "fit_model", "training_fingerprint", "versions"]

log = logging.getLogger(__name__)


def build_pipeline(params: dict[str, Any], *, random_state: int, classifier: str = "mlp", C: float = 0.01) -> Pipeline:
    """StandardScaler → the classifier.

    Parameters
    ----------
    params : dict
        MLPClassifier parameters (the librosa tutorial recipe's by default).
    random_state : int
    classifier : {"mlp", "logistic"}
        ``mlp``: MLPClassifier(**params), the librosa tutorial recipe's. ``logistic``: a strongly
        regularised multinomial LogisticRegression(C), which transfers better
        to corpora it has not heard (docs/accuracy.md: leave one corpus out).
    C : float
        Inverse regularisation strength of the logistic classifier.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if classifier == "logistic":
        from sklearn.linear_model import LogisticRegression

        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("logistic", LogisticRegression(C=C, max_iter=5000, random_state=random_state)),
            ]
        )
    if classifier != "mlp":
        raise ValueError(f"classifier must be 'mlp' or 'logistic', got {classifier!r}")
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(
        **{**params, "hidden_layer_sizes": tuple(params["hidden_layer_sizes"])}, random_state=random_state
    )
    return Pipeline([("scale", StandardScaler()), ("mlp", mlp)])


@contextlib.contextmanager
def _expected_fit_warnings() -> Iterator[None]:
    # max_iter is the recipe's budget, so non-convergence is not news; and a
    # batch_size above a small training set's size is clipped to it, as meant.
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Got `batch_size` less than 1 or larger than sample size")
        yield


def fit(pipe: Pipeline, X: np.ndarray, y: np.ndarray) -> Pipeline:
    """Fit ``pipe``, without the warnings the recipe expects (see :func:`_expected_fit_warnings`)."""
    with _expected_fit_warnings():
        return pipe.fit(X, y)


def fit_model(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    *,
    params: dict[str, Any],
    random_state: int,
    calibration: str = "none",
    classifier: str = "mlp",
    C: float = 0.01,
) -> Any:
    """The recipe's pipeline, fitted, optionally wrapped in probability calibration.

    Parameters
    ----------
    X, y : arrays
    groups : array or None
        Speakers. Calibration is fitted on predictions for speakers each inner
        model did not train on (3-fold GroupKFold), as the model will meet
        new speakers; without groups, stratified 3-fold.
    params : dict
        MLPClassifier parameters.
    random_state : int
    classifier, C : see :func:`build_pipeline`.
    calibration : {"none", "sigmoid", "isotonic"}
        ``CalibratedClassifierCV`` method; "none" is the plain librosa tutorial recipe.
        The network is fitted once on all rows; the calibrator on its inner
        cross-validated predictions.

    Returns
    -------
    estimator
        With ``predict_proba`` and ``classes_``.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    pipe = build_pipeline(params, random_state=random_state, classifier=classifier, C=C)
    fewest = min(np.unique(y, return_counts=True)[1]) if len(y) else 0
    if calibration != "none" and fewest < 3:
        # A calibrator is fitted on three held-out folds: with fewer files of a class it cannot be.
        log.warning("calibration %s skipped: an emotion has %d training files (3 needed)", calibration, fewest)
        calibration = "none"
    if calibration == "none":
        return fit(pipe, X, y)
    n_classes = len(set(y.tolist()))
    cv: Any = StratifiedKFold(n_splits=3, shuffle=True, random_state=random_state)
    if groups is not None and len(set(groups.tolist())) >= 3:
        splits = list(GroupKFold(n_splits=3).split(X, y, groups))
        # Speakers who each voice only some emotions can leave a class out of an
        # inner training split, which calibration cannot handle; then stratify.
        if all(len(set(y[tr].tolist())) == n_classes for tr, _ in splits):
            cv = splits
    with _expected_fit_warnings():
        # ensemble=False: one network fitted on all the data, calibrated on the
        # inner folds' held-out predictions. An ensemble of the fold networks
        # calibrates slightly better (ECE 0.034 vs 0.050 actor-wise on RAVDESS)
        # but each member sees a third less data: 70 % vs 76 % on the random split.
        return CalibratedClassifierCV(pipe, method=calibration, cv=cv, ensemble=False).fit(X, y)


def training_fingerprint(content_hashes: list[str], labels: list[str]) -> str:
    """Hash of the (content, label) pairs a model was trained on, order-free."""
    h = hashlib.sha256()
    for ch, lab in sorted(zip(content_hashes, labels, strict=True)):
        h.update(f"{ch}\t{lab}\n".encode())
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    import librosa
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "skops": skops.__version__,
    }
