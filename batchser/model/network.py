"""A fitted pipeline's forward pass in numpy, so that labelling never imports scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from batchser.model.base import ModelError

__all__ = ["NumpyNetwork", "layers", "network_arrays"]


def _hidden(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0, out=x)
    if name == "tanh":
        return np.tanh(x, out=x)
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-x))
    return x  # identity


@dataclass(frozen=True)
class NumpyNetwork:
    """A fitted pipeline's numbers, predicting as scikit-learn does with numpy alone.

    Labelling needs only a forward pass: standardise, the MLP's layers, softmax,
    and for a calibrated model one isotonic or sigmoid map per class, then
    renormalisation. Importing scikit-learn and skops to do that costs about
    3 s, longer than a warm job's whole work, so :func:`save_model` also writes
    these arrays (inside the model file, with their hash) and jobs predict
    from them. ``tests/test_model.py`` checks equality with ``predict_proba``.

    ``arrays`` holds ``mean``, ``scale``, ``coef_<i>``, ``intercept_<i>``, and
    for calibration ``cal_x_<k>``/``cal_y_<k>`` (isotonic thresholds) or
    ``cal_ab`` (sigmoid a, b per class).
    """

    classes_: np.ndarray
    arrays: dict[str, np.ndarray]
    activation: str
    calibration: str  # none | isotonic | sigmoid | temperature
    calibrate_on: str = "proba"  # what isotonic/sigmoid calibrators read: proba (MLP) | decision (logistic)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        a = self.arrays
        h = (np.asarray(X, dtype=np.float64) - a["mean"]) / a["scale"]
        n_layers = sum(1 for k in a if k.startswith("coef_"))
        for i in range(n_layers):
            h = h @ a[f"coef_{i}"] + a[f"intercept_{i}"]
            if i < n_layers - 1:
                h = _hidden(self.activation, h)
        n_classes = len(self.classes_)
        if self.calibration == "temperature":  # one scale on the logits: the ranking, so the label, stays
            h = h * float(a["cal_beta"][0])
        proba = _softmax(h)
        if self.calibration in ("none", "temperature"):
            return proba
        # sklearn.calibration._CalibratedClassifier.predict_proba, one-vs-rest,
        # on the decision function where the classifier has one (logistic), else on probabilities.
        scores = h if self.calibrate_on == "decision" else proba
        out = np.zeros_like(proba)
        for k in range(1 if n_classes == 2 else n_classes):
            col = k + 1 if n_classes == 2 else k
            f = scores[:, 0 if n_classes == 2 and scores.shape[1] == 1 else col]
            if self.calibration == "isotonic":
                xs, ys = a[f"cal_x_{k}"], a[f"cal_y_{k}"]
                out[:, col] = np.interp(np.clip(f, xs[0], xs[-1]), xs, ys)
            else:
                ca, cb = a["cal_ab"][k]
                out[:, col] = 1.0 / (1.0 + np.exp(ca * f + cb))
        if n_classes == 2:
            out[:, 0] = 1.0 - out[:, 1]
        else:
            total = out.sum(axis=1, keepdims=True)
            out = np.divide(out, total, out=np.full_like(out, 1.0 / n_classes), where=total != 0)
        out[(out > 1.0) & (out <= 1.0 + 1e-5)] = 1.0
        return out


def network_arrays(estimator: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and settings of a fitted pipeline (optionally calibrated) for :class:`NumpyNetwork`."""
    from sklearn.calibration import CalibratedClassifierCV

    calibration, calibrators = "none", []
    pipe = estimator
    if isinstance(estimator, CalibratedClassifierCV):
        if len(estimator.calibrated_classifiers_) != 1:
            raise ModelError("only calibration with ensemble=False can be exported to arrays")
        cc = estimator.calibrated_classifiers_[0]
        pipe, calibrators, calibration = cc.estimator, cc.calibrators, cc.method
    scaler = pipe.named_steps["scale"]
    coefs, intercepts, activation = layers(pipe)
    arrays = {"mean": scaler.mean_, "scale": scaler.scale_}
    for i, (w, b) in enumerate(zip(coefs, intercepts, strict=True)):
        arrays[f"coef_{i}"], arrays[f"intercept_{i}"] = w, b
    if calibration == "isotonic":
        for k, cal in enumerate(calibrators):
            arrays[f"cal_x_{k}"], arrays[f"cal_y_{k}"] = cal.X_thresholds_, cal.y_thresholds_
    elif calibration == "sigmoid":
        arrays["cal_ab"] = np.array([[cal.a_, cal.b_] for cal in calibrators], dtype=np.float64)
    elif calibration == "temperature":
        arrays["cal_beta"] = np.array([calibrators[0].beta_], dtype=np.float64)
    arrays["classes"] = np.asarray(estimator.classes_).astype(str)
    calibrate_on = "decision" if hasattr(pipe.steps[-1][1], "decision_function") else "proba"
    return arrays, {"activation": activation, "calibration": calibration, "calibrate_on": calibrate_on}


def _softmax(h: np.ndarray) -> np.ndarray:
    """Class probabilities from output units: logistic for one unit (two classes), else softmax."""
    if h.shape[1] == 1:  # binary: logistic output for the second class
        p1 = 1.0 / (1.0 + np.exp(-h[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def layers(pipe: Any) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Weights, biases and hidden activation of a pipeline's classifier, as a network's layers.

    A logistic regression is a network without hidden layers: one weight
    matrix, then the softmax (or, for two classes, the logistic function).
    """
    clf = pipe.steps[-1][1]
    if hasattr(clf, "coefs_"):  # MLPClassifier
        return list(clf.coefs_), list(clf.intercepts_), clf.activation
    return [np.asarray(clf.coef_).T], [np.asarray(clf.intercept_)], "identity"
