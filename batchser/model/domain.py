"""How far a job's recordings are from what the model was trained on.

Each file's distance is the root-mean-square z-score of its raw features
under the training data's standardisation (the plain network's scaler): about
1 for a file like the training files, larger the further out it lies. A job's
median distance is compared with what the held-out corpora showed in the
leave-one-corpus-out evaluation (each measured under a network that never
heard it): a job further out than the furthest of them is outside anything
the model's published scores describe, and the summary says so. A model
trained on one corpus has no held-out corpus to draw that line: whether a
job lies outside its domain is then unknown, and the summary says that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NO_LIMIT", "distances", "domain_reference", "scaler_of"]

# Why a model has no limit: its evaluation held no corpus out.
NO_LIMIT = (
    "the model was not evaluated on a corpus held out from its training (it was trained on one), so nothing "
    "says how far from its training data is too far; train it on two or more corpora (inputs with a corpus: "
    "name) to know"
)


def scaler_of(estimator: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the standardisation in front of a fitted network (sklearn or numpy)."""
    arrays = getattr(estimator, "arrays", None)
    if arrays is not None:  # NumpyNetwork
        return arrays["mean"], arrays["scale"]
    pipe = estimator
    if hasattr(estimator, "calibrated_classifiers_"):
        pipe = estimator.calibrated_classifiers_[0].estimator
    scaler = pipe.named_steps["scale"]
    return scaler.mean_, scaler.scale_


def distances(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Root-mean-square z-score of each row."""
    z = (np.asarray(X, dtype=np.float64) - mean) / scale
    return np.sqrt(np.mean(z * z, axis=1))


def domain_reference(training_median: float, held_out: dict[str, float]) -> dict[str, Any]:
    """What a model records about distances: its own data's median and each held-out corpus's.

    ``limit`` is the largest held-out median: a job beyond it is further from
    the training data than any corpus the published scores were measured on;
    None, with ``no_limit_why``, when no corpus was held out.
    """
    ref: dict[str, Any] = {
        "training_median": training_median,
        "held_out_medians": held_out,
        "limit": max(held_out.values()) if held_out else None,
    }
    if not held_out:
        ref["no_limit_why"] = NO_LIMIT
    return ref
