"""Scores of the recipe on held-out data: random split, speaker-wise, leave one corpus out."""

from __future__ import annotations

from typing import Any

import numpy as np

from batchser.model.adapt import Grouping, group_rows
from batchser.model.domain import distances, scaler_of
from batchser.model.train import fit_model

__all__ = ["calibration_groups", "calibration_table", "evaluate", "evaluate_corpora", "fit_normalized"]


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
        # Unweighted average recall, the field's headline: mean recall over the
        # classes present, so a model that never says "neutral" cannot hide it.
        "uar": float(np.mean([r[i] for i in range(len(classes)) if s[i] > 0])) if s.sum() else 0.0,
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
    classifier: str = "mlp",
    C: float = 0.01,
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
        ``random_split``: the librosa tutorial recipe's 75/25 split (random_state 7), no grouping.
        ``actor_wise``: GroupKFold, every speaker tested once in a fold that did
        not train on it; per-fold scores and scores of the pooled predictions.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GroupKFold, train_test_split

    classes = sorted(set(y.tolist()))
    out: dict[str, Any] = {}
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=7)
    g_tr = groups[idx_tr] if groups is not None else None
    kw: dict[str, Any] = {
        "params": params,
        "random_state": random_state,
        "calibration": calibration,
        "classifier": classifier,
        "C": C,
    }
    model = fit_model(X[idx_tr], y[idx_tr], g_tr, **kw)
    proba = model.predict_proba(X[idx_te])
    out["random_split"] = {
        "method": "train_test_split(test_size=0.25, random_state=7): speakers in both halves, which flatters a model",
        **_scores(y[idx_te], np.asarray(model.classes_)[proba.argmax(axis=1)], classes),
        "calibration": calibration_table(proba, y[idx_te], list(model.classes_)),
    }
    n_groups = len(set(groups.tolist())) if groups is not None else 0
    if n_groups < 2:
        return {
            "actor_wise": {"skipped": "needs speaker groups (RAVDESS names or a speaker column) with 2+ speakers"},
            **out,
        }
    folds = min(cv_folds, n_groups)
    pred = np.empty_like(y)
    proba = np.zeros((len(y), len(classes)))
    per_fold = []
    for k, (tr, te) in enumerate(GroupKFold(n_splits=folds).split(X, y, groups)):
        model = fit_model(X[tr], y[tr], groups[tr], **kw)
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
    # Speakers the model never heard first: the figure to expect on new speakers, where metrics.json opens.
    return {"actor_wise": out.pop("actor_wise"), **out}


def calibration_groups(corpora: np.ndarray, speakers: np.ndarray) -> np.ndarray | None:
    """Folds for calibration: corpora when there are 3+ (confidences fitted on corpora a
    network did not hear), else speakers when every row has one, else none (stratified)."""
    if len(set(corpora.tolist())) >= 3:
        return corpora
    return np.asarray(speakers) if len(speakers) and all(speakers) else None


def fit_normalized(
    X: np.ndarray,
    y: np.ndarray,
    *,
    corpora: np.ndarray,
    speakers: np.ndarray,
    speaker_ok: np.ndarray,
    min_files: int,
    fit_kw: dict[str, Any],
    grouping: Grouping | None = None,
) -> tuple[Any, Any]:
    """The two networks of an adapting model, fitted on ``X`` alone.

    Returns (plain, normalised): one on raw features, one on features
    standardised within each training speaker (where known, allowed and with
    ``min_files``) or else each training corpus, from those rows' own
    statistics (``grouping``, when the caller has it already). Calibration
    folds: :func:`calibration_groups`.
    """
    calib = calibration_groups(corpora, speakers)
    plain = fit_model(X, y, calib, **fit_kw)
    g = grouping or group_rows(
        X, mode="speaker", corpora=corpora, speakers=speakers, speaker_ok=speaker_ok, min_files=min_files
    )
    Xn, covered = g.stats(X).transform(X, g.keys)
    norm = fit_model(Xn[covered], y[covered], None if calib is None else calib[covered], **fit_kw)
    return plain, norm


def predict_adapted(
    plain: Any,
    norm: Any,
    X: np.ndarray,
    *,
    mode: str,
    corpora: np.ndarray,
    speakers: np.ndarray | None,
    speaker_ok: np.ndarray | None,
    min_files: int,
    classes: list[str],
) -> tuple[np.ndarray, list[str]]:
    """Probabilities (columns in ``classes`` order) for rows normalised over themselves by ``mode``.

    Returns the probabilities and, per row, the rule that normalised it ("" for the plain network).
    """
    g = group_rows(X, mode=mode, corpora=corpora, speakers=speakers, speaker_ok=speaker_ok, min_files=min_files)
    Xn, covered = g.stats(X).transform(X, g.keys)
    proba = np.zeros((len(X), len(classes)))
    for est, rows, data in ((plain, ~covered, X), (norm, covered, Xn)):
        if rows.any():
            p = est.predict_proba(data[rows])
            proba[np.ix_(rows, [classes.index(c) for c in est.classes_])] = p
    return proba, g.how


def _held_out(
    held: str,
    X: np.ndarray,
    y: np.ndarray,
    corpora: np.ndarray,
    speakers: np.ndarray,
    speaker_ok: np.ndarray,
    *,
    modes: tuple[str, ...],
    classes: list[str],
    min_files: int,
    fit_kw: dict[str, Any],
) -> dict[str, Any]:
    from batchser.model.store import weights_digest

    tr, te = corpora != held, corpora == held
    plain, norm = fit_normalized(
        X[tr],
        y[tr],
        corpora=corpora[tr],
        speakers=speakers[tr],
        speaker_ok=speaker_ok[tr],
        min_files=min_files,
        fit_kw=fit_kw,
    )
    out: dict[str, Any] = {
        "trained_on": sorted(set(corpora[tr].tolist())),
        "weights": weights_digest({"g": plain, "s": norm}),
        "median_distance": float(np.median(distances(X[te], *scaler_of(plain)))),
    }
    for mode in modes:
        proba, how = predict_adapted(
            plain,
            norm,
            X[te],
            mode=mode,
            corpora=corpora[te],
            speakers=speakers[te] if mode == "speaker" else None,
            speaker_ok=speaker_ok[te],
            min_files=min_files,
            classes=classes,
        )
        pred = np.asarray(classes)[proba.argmax(axis=1)]
        out[mode] = {
            **_scores(y[te], pred, classes),
            "calibration": calibration_table(proba, y[te], classes),
            "mean_confidence": float(proba.max(axis=1).mean()),
            "normalized_by": {k: how.count(k) for k in sorted(set(how))},
            "proba": proba,
        }
    return out


def evaluate_corpora(
    X: np.ndarray,
    y: np.ndarray,
    corpora: np.ndarray,
    speakers: np.ndarray,
    speaker_ok: np.ndarray,
    *,
    modes: tuple[str, ...] = ("none", "corpus", "speaker"),
    min_files: int = 10,
    fit_kw: dict[str, Any],
    n_jobs: int = 1,
    on_fold: Any = None,
    keep_predictions: bool = False,
) -> dict[str, Any]:
    """Leave one corpus out: for each corpus, fit on the others and label it under each adaptation mode.

    Nothing fitted (scalers, the networks, normalisation statistics of the
    training groups, calibration) sees the held-out corpus: its rows enter
    only as the files being labelled, whose own features (never labels)
    give the test-time normalisation statistics, as in a job.

    Parameters
    ----------
    X, y : arrays
    corpora, speakers : arrays of str
        Corpus and corpus-qualified speaker per row ("" or None: unknown).
    speaker_ok : array of bool
        Whether each row's input allows speaker normalisation.
    modes : tuple of str
        Adaptation modes to score (see :mod:`batchser.model.adapt`); ``speaker``
        uses the held-out corpus's speaker ids, the others withhold them.
    min_files : int
    fit_kw : dict
        :func:`batchser.model.train.fit_model` keywords.
    n_jobs : int
        Held-out corpora fitted in parallel (joblib processes).
    on_fold : callable or None
        Called with each held-out corpus's name as it finishes (progress).
    keep_predictions : bool
        Keep each fold's probabilities (``proba``) in the result, for tests.

    Returns
    -------
    dict
        ``{"method", "corpora", "modes": {mode: {"per_corpus": {corpus: scores}, "mean": {...}}}, "folds"}``.
    """
    import joblib

    classes = sorted(set(y.tolist()))
    names = sorted(set(corpora.tolist()))
    speakers = np.array([s or "" for s in speakers], dtype=object)
    jobs = (
        joblib.delayed(_held_out)(
            held, X, y, corpora, speakers, speaker_ok, modes=modes, classes=classes, min_files=min_files, fit_kw=fit_kw
        )
        for held in names
    )
    folds: dict[str, dict[str, Any]] = {}
    parallel = joblib.Parallel(n_jobs=min(n_jobs, len(names)), return_as="generator")
    for held, fold in zip(names, parallel(jobs), strict=True):
        folds[held] = fold
        if on_fold is not None:
            on_fold(held)
    result: dict[str, Any] = {
        "method": "leave one corpus out: fit on the other corpora, label the held-out one",
        "corpora": names,
        "classes": classes,
        "modes": {},
        "folds": {
            h: {"trained_on": f["trained_on"], "weights": f["weights"], "median_distance": f["median_distance"]}
            for h, f in folds.items()
        },
    }
    for mode in modes:
        per = {}
        for h, f in folds.items():
            scores = dict(f[mode])
            proba = scores.pop("proba")
            if keep_predictions:
                scores["proba"] = proba
            per[h] = scores
        mean = {k: float(np.mean([per[h][k] for h in names])) for k in ("accuracy", "uar", "macro_f1")}
        mean["ece"] = float(np.mean([per[h]["calibration"]["ece"] for h in names]))
        mean["worst_uar"] = float(min(per[h]["uar"] for h in names))
        result["modes"][mode] = {"per_corpus": per, "mean": mean}
    return result
