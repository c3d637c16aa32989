"""Scores of the recipe on held-out data: random split, speaker-wise, leave one corpus out."""

from __future__ import annotations

from typing import Any

import numpy as np

from batchser.model.train import fit_model

__all__ = ["calibration_table", "evaluate"]


def calibration_table(proba: np.ndarray, y_true: np.ndarray, classes: list[str], *, n_bins: int = 15) -> dict[str, Any]:
    """Expected calibration error of the top label, and the reliability diagram's bins.

    ECE = sum over equal-width confidence bins of (share of predictions in the
    bin) x |accuracy in the bin - mean confidence in the bin|.
    """
    conf = proba.max(axis=1)
    correct = np.asarray(classes)[proba.argmax(axis=1)] == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        if not m.any():
            continue
        acc, mean_conf = float(correct[m].mean()), float(conf[m].mean())
        ece += m.mean() * abs(acc - mean_conf)
        bins.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(m.sum()),
                "confidence": mean_conf,
                "accuracy": acc,
            }
        )
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def _scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "labels": classes,
    }


def evaluate(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    *,
    params: dict[str, Any],
    random_state: int,
    cv_folds: int = 4,
    calibration: str = "none",
) -> dict[str, Any]:
    """Both evaluations of the recipe on labelled features.

    Parameters
    ----------
    X, y : arrays
        Features and labels.
    groups : array or None
        Speaker of each row; None skips the speaker-wise evaluation.
    params : dict
        MLPClassifier parameters.
    random_state : int
        Seed of the MLP.
    cv_folds : int
        GroupKFold folds over speakers.
    calibration : str
        See :func:`fit_model`; fitted inside each training fold only.

    Returns
    -------
    dict
        ``random_split``: the seed's 75/25 split (random_state 7), no grouping.
        ``actor_wise``: GroupKFold, every speaker tested once in a fold that did
        not train on it; per-fold scores and scores of the pooled predictions.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GroupKFold, train_test_split

    classes = sorted(set(y.tolist()))
    out: dict[str, Any] = {}
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=7)
    g_tr = groups[idx_tr] if groups is not None else None
    model = fit_model(X[idx_tr], y[idx_tr], g_tr, params=params, random_state=random_state, calibration=calibration)
    proba = model.predict_proba(X[idx_te])
    out["random_split"] = {
        "method": "train_test_split(test_size=0.25, random_state=7)",
        **_scores(y[idx_te], np.asarray(model.classes_)[proba.argmax(axis=1)], classes),
        "calibration": calibration_table(proba, y[idx_te], list(model.classes_)),
    }
    n_groups = len(set(groups.tolist())) if groups is not None else 0
    if n_groups < 2:
        out["actor_wise"] = {"skipped": "needs speaker groups (RAVDESS names or a speaker column) with 2+ speakers"}
        return out
    folds = min(cv_folds, n_groups)
    pred = np.empty_like(y)
    proba = np.zeros((len(y), len(classes)))
    per_fold = []
    for k, (tr, te) in enumerate(GroupKFold(n_splits=folds).split(X, y, groups)):
        model = fit_model(X[tr], y[tr], groups[tr], params=params, random_state=random_state, calibration=calibration)
        p = model.predict_proba(X[te])
        proba[np.ix_(te, [classes.index(c) for c in model.classes_])] = p
        pred[te] = np.asarray(model.classes_)[p.argmax(axis=1)]
        per_fold.append(
            {
                "fold": k,
                "test_speakers": sorted(set(groups[te].tolist())),
                "accuracy": float(accuracy_score(y[te], pred[te])),
                "macro_f1": float(f1_score(y[te], pred[te], average="macro", zero_division=0)),
            }
        )
    accs = [f["accuracy"] for f in per_fold]
    out["actor_wise"] = {
        "method": f"GroupKFold(n_splits={folds}) over speakers",
        **_scores(y, pred, classes),
        "fold_accuracy_mean": float(np.mean(accs)),
        "fold_accuracy_std": float(np.std(accs)),
        "folds": per_fold,
        "calibration": calibration_table(proba, y, classes),
    }
    return out
