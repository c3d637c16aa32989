"""Arousal and valence: their own models, fitted on every placed emotion, and how they are scored.

Each dimension has a pair of networks like the four-class model's: one on raw
features, for files with no normalisation group, and one on features
standardised within each speaker (else corpus). Each is a logistic
regression on the dimension's soft target (:data:`~batchser.model.circumplex.CIRCUMPLEX`
placements: every file of a placed emotion counts, fear, surprise, disgust
and calm included), fitted as the weighted two-row form of soft-label
logistic regression, each side carrying the same total weight.

What a model reports for a file is the mean of that network's probability
and the one read off the four-class probabilities
(:func:`~batchser.model.circumplex.read_off`), its logit scaled by a
temperature per adaptation rule fitted on predictions for corpora the
networks never heard (:func:`evaluate_dimensions`). Of every variant measured
leave one corpus out, this held up best on the worst corpora with honest
confidences (docs/accuracy.md, ``python bench/dimensions.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batchser.model.adapt import Grouping, group_rows
from batchser.model.base import Dimension
from batchser.model.circumplex import DIMENSIONS, SIDE_NAMES, combine, placements, read_off, sides, temper
from batchser.model.evaluate import fit_normalized, predict_adapted

__all__ = [
    "DIMENSION_C",
    "balanced_accuracy",
    "binary_ece",
    "evaluate_dimensions",
    "fit_dimension",
    "fit_dimension_pair",
    "fit_temperature",
    "fittable",
    "fold_predictions",
    "high_proba",
]

DIMENSION_C = 0.01  # the four-class model's C; 0.001-0.03 all within a point leave one corpus out


def fittable(dim: str, emotions: np.ndarray) -> bool:
    """Whether ``emotions`` hold both sides of ``dim`` (else no model of it can be fitted)."""
    s = sides(dim, emotions)
    return bool((s == 1).any() and (s == 0).any())


def fit_dimension(X: np.ndarray, emotions: np.ndarray, dim: str, *, random_state: int = 0) -> Any:
    """StandardScaler → LogisticRegression(C=DIMENSION_C) on ``dim``'s soft target.

    Rows of emotions without a placement are left out. Each kept row enters
    twice, as the high (positive) side with weight q and as the low side with
    weight 1 - q (q its placement); the two sides' weights are scaled to equal
    totals (the class balancing the field uses for a binary target).

    Returns
    -------
    Pipeline
        Classes are ``SIDE_NAMES[dim]`` (e.g. ``["high", "low"]``, sorted).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    q = placements(dim, emotions)
    keep = ~np.isnan(q)
    if not fittable(dim, emotions[keep]):
        raise ValueError(f"{dim}: the training files need emotions on both sides ({' and '.join(SIDE_NAMES[dim])})")
    Xk, qk = np.asarray(X, dtype=np.float64)[keep], q[keep]
    n = len(qk)
    lo, hi = SIDE_NAMES[dim]
    Xa = np.vstack([Xk, Xk])
    ya = np.array([hi] * n + [lo] * n)
    # Each side's weights sum to n / 2: the total of a hard-label fit on the n files, so C means what it does there.
    w = np.concatenate([qk / qk.sum(), (1 - qk) / (1 - qk).sum()]) * (n / 2)
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("logistic", LogisticRegression(C=DIMENSION_C, max_iter=5000, random_state=random_state)),
        ]
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one BLAS thread: faster on a few thousand rows, as in batchser.model.learn
        return pipe.fit(Xa, ya, logistic__sample_weight=w)


def fit_dimension_pair(
    X: np.ndarray,
    emotions: np.ndarray,
    dim: str,
    *,
    grouping: Grouping | None,
    random_state: int = 0,
) -> tuple[Any, Any | None]:
    """(plain, normalised) networks of ``dim``: on raw rows, and on rows standardised within ``grouping``.

    ``grouping`` None (a model that does not normalise) gives no normalised network.
    """
    plain = fit_dimension(X, emotions, dim, random_state=random_state)
    if grouping is None:
        return plain, None
    Xn, covered = grouping.stats(X).transform(X, grouping.keys)
    if not fittable(dim, emotions[covered]):
        return plain, None
    return plain, fit_dimension(Xn[covered], emotions[covered], dim, random_state=random_state)


def high_proba(estimator: Any, X: np.ndarray, dim: str) -> np.ndarray:
    """P(high arousal) or P(positive valence) from a network of :func:`fit_dimension` (sklearn or numpy)."""
    classes = [str(c) for c in estimator.classes_]
    return estimator.predict_proba(X)[:, classes.index(SIDE_NAMES[dim][1])]


def balanced_accuracy(side: np.ndarray, p: np.ndarray) -> float:
    """Mean of the two sides' recalls, a file called high (positive) when ``p >= 0.5``."""
    pred = p >= 0.5
    return float(np.mean([np.mean(pred[side == s] == s) for s in (0, 1) if (side == s).any()]))


def binary_ece(side: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the side called: confidence max(p, 1 - p) in equal bins over [0.5, 1]."""
    conf = np.maximum(p, 1 - p)
    right = (p >= 0.5) == (side == 1)
    which = np.clip(((conf - 0.5) * 2 * bins).astype(int), 0, bins - 1)
    return float(
        sum(
            abs(right[which == b].mean() - conf[which == b].mean()) * np.mean(which == b)
            for b in range(bins)
            if (which == b).any()
        )
    )


def _scores(side: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(side),
        "n_high": int((side == 1).sum()),
        "balanced_accuracy": balanced_accuracy(side, p),
        "ece": binary_ece(side, p),
    }


def fold_predictions(
    X: np.ndarray,
    y: np.ndarray,
    corpora: np.ndarray,
    speakers: np.ndarray,
    speaker_ok: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    classes: list[str],
    dims: tuple[str, ...],
    modes: tuple[str, ...],
    min_files: int,
    fit_kw: dict[str, Any],
) -> dict[str, dict[str, dict[str, np.ndarray | None]]]:
    """Fit every network on the ``train`` rows; predict the ``test`` rows under each adaptation mode.

    The four-class pair is fitted on the training rows of ``classes`` (with
    ``fit_kw``, as :func:`~batchser.model.evaluate.evaluate_corpora` fits it),
    each dimension's pair on the training rows of every placed emotion. The
    test rows are standardised over themselves by ``mode`` (``speaker`` uses
    their speaker ids, the others withhold them).

    Returns
    -------
    dict
        ``{dim: {mode: {"own": p, "read_off": p or None, "reported": p}}}``, one
        probability of the high (positive) side per test row.
    """
    four = train & np.isin(y, classes)
    plain4, norm4 = fit_normalized(
        X[four],
        y[four],
        corpora=corpora[four],
        speakers=speakers[four],
        speaker_ok=speaker_ok[four],
        min_files=min_files,
        fit_kw=fit_kw,
    )
    g_tr = group_rows(
        X[train],
        mode="speaker",
        corpora=corpora[train],
        speakers=speakers[train],
        speaker_ok=speaker_ok[train],
        min_files=min_files,
    )
    nets = {
        d: fit_dimension_pair(X[train], y[train], d, grouping=g_tr, random_state=fit_kw["random_state"])
        for d in dims
        if fittable(d, y[train])  # training corpora with one side of it: no network, no prediction
    }
    out: dict[str, dict[str, dict[str, np.ndarray | None]]] = {d: {} for d in nets}
    Xte = X[test]
    for mode in modes:
        kw: dict[str, Any] = {
            "mode": mode,
            "corpora": corpora[test],
            "speakers": speakers[test] if mode == "speaker" else None,
            "speaker_ok": speaker_ok[test],
            "min_files": min_files,
        }
        proba, _ = predict_adapted(plain4, norm4, Xte, classes=classes, **kw)
        g = group_rows(Xte, **kw)
        Xn, covered = g.stats(Xte).transform(Xte, g.keys)
        for d, (plain, norm) in nets.items():
            own = Dimension(d, plain, norm).own(Xte, Xn, covered)
            read = read_off(proba, classes, d)
            out[d][mode] = {"own": own, "read_off": read, "reported": combine(own, read)}
    return out


def fit_temperature(p: np.ndarray, side: np.ndarray) -> float:
    """The factor on the logit of ``p`` that minimises the log loss of ``side`` (1 or 0) over those rows."""
    from scipy.optimize import minimize_scalar

    q = np.clip(p, 1e-6, 1 - 1e-6)
    z = np.log(q / (1 - q))

    def loss(beta: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -beta * z) * side + np.logaddexp(0.0, beta * z) * (1 - side)))

    return float(minimize_scalar(loss, bounds=(0.05, 20.0), method="bounded").x)


def _fold(
    held: str,
    excluded: str | None,
    X: np.ndarray,
    y: np.ndarray,
    corpora: np.ndarray,
    speakers: np.ndarray,
    speaker_ok: np.ndarray,
    **kw: Any,
) -> dict[str, dict[str, dict[str, np.ndarray | None]]]:
    """Predictions for ``held`` from networks fitted on the other corpora but ``excluded``."""
    from threadpoolctl import threadpool_limits

    test = corpora == held
    train = ~test if excluded is None else ~test & (corpora != excluded)
    with threadpool_limits(1):  # as batchser.model.learn: threads cost more than they give on these few rows
        return fold_predictions(X, y, corpora, speakers, speaker_ok, train, test, **kw)


def _temperatures(
    preds: dict[str, dict[str, dict[str, dict[str, np.ndarray | None]]]], y: np.ndarray, corpora: np.ndarray
) -> dict[str, dict[str, float]]:
    """One temperature per dimension and mode, fitted on the pooled predictions of ``preds``' corpora."""
    out: dict[str, dict[str, float]] = {}
    dims = {d for p in preds.values() for d in p}
    for d in sorted(dims):
        modes = {m for p in preds.values() for m in p.get(d, {})}
        for mode in sorted(modes):
            ps, ss = [], []
            for c, p in preds.items():
                if mode not in p.get(d, {}):
                    continue
                side = sides(d, y[corpora == c])
                m = side >= 0
                ps.append(p[d][mode]["reported"][m])  # type: ignore[index]
                ss.append(side[m])
            side = np.concatenate(ss)
            if len(set(side.tolist())) == 2:
                out.setdefault(d, {})[mode] = fit_temperature(np.concatenate(ps), side)
    return out


def _scores_of(side: np.ndarray, p: dict[str, np.ndarray | None], beta: float) -> dict[str, Any]:
    read = p["read_off"]
    reported = temper(p["reported"], beta)  # type: ignore[arg-type]
    return {
        **_scores(side, reported),
        "temperature": beta,
        "ece_before_temperature": binary_ece(side, p["reported"]),  # type: ignore[arg-type]
        "own": _scores(side, p["own"]),  # type: ignore[arg-type]
        "read_off": _scores(side, read) if read is not None else None,
    }


def evaluate_dimensions(
    X: np.ndarray,
    y: np.ndarray,
    corpora: np.ndarray,
    speakers: np.ndarray,
    speaker_ok: np.ndarray,
    *,
    classes: list[str],
    dims: tuple[str, ...] = DIMENSIONS,
    modes: tuple[str, ...] = ("corpus", "speaker"),
    min_files: int = 10,
    fit_kw: dict[str, Any],
    n_jobs: int = 1,
    on_fold: Any = None,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Leave one corpus out for arousal and valence: the model's answer against the four-class read-off.

    For each corpus, every network is fitted on the other corpora
    (:func:`fold_predictions`) and the held-out corpus's files with a side are
    scored under each adaptation mode (``speaker`` uses its speaker ids, the
    others withhold them): balanced accuracy and ECE of the reported
    probability, of the dimension's own network alone, and of the read-off.
    The reported probability's temperature for a held-out corpus is fitted on
    the other corpora alone, each predicted in turn by networks that heard
    neither it nor the held-out one (leave one corpus out inside the training
    corpora; with fewer than three corpora, none: factor 1).

    Returns
    -------
    metrics : dict
        ``{"method", "reported", "corpora", "temperature", <dim>: {"modes": {mode:
        {"per_corpus": {corpus: scores}, "mean": {variant: {...}}}}}}``; a corpus with
        one side of a dimension is not scored on it.
    temperatures : dict
        ``{dim: {mode: factor}}`` for the model fitted on every corpus: fitted on all the
        held-out predictions.
    """
    import joblib

    names = sorted(set(corpora.tolist()))
    speakers = np.array([s or "" for s in speakers], dtype=object)
    kw = {"classes": classes, "dims": dims, "modes": modes, "min_files": min_files, "fit_kw": fit_kw}
    pairs: list[tuple[str, str | None]] = [(h, None) for h in names]
    if len(names) >= 3:
        pairs += [(i, h) for h in names for i in names if i != h]
    jobs = (joblib.delayed(_fold)(c, ex, X, y, corpora, speakers, speaker_ok, **kw) for c, ex in pairs)
    parallel = joblib.Parallel(n_jobs=min(n_jobs, len(pairs)), return_as="generator")
    preds: dict[tuple[str, str | None], Any] = {}
    for pair, fold in zip(pairs, parallel(jobs), strict=True):
        preds[pair] = fold
        if on_fold is not None:
            on_fold(pair[0] if pair[1] is None else f"{pair[0]} without {pair[1]}")
    outer = {h: preds[(h, None)] for h in names}
    final = _temperatures(outer, y, corpora)
    result: dict[str, Any] = {
        "method": (
            "leave one corpus out: networks fitted on the other corpora score the held-out corpus's files whose "
            "emotion has a side; balanced accuracy at p >= 0.5 and ECE (15 bins over [0.5, 1])"
        ),
        "reported": (
            "mean of the dimension's own network and the four-class read-off, its logit scaled by a temperature "
            "fitted leave one corpus out inside the training corpora"
        ),
        "corpora": names,
        "temperature": final,
    }
    for d in dims:
        per_mode: dict[str, Any] = {}
        for mode in modes:
            per: dict[str, Any] = {}
            for h in names:
                side = sides(d, y[corpora == h])
                m = side >= 0
                if len(set(side[m].tolist())) < 2 or mode not in outer[h].get(d, {}):
                    continue  # the held-out corpus has one side only (no balanced accuracy), or no network was fitted
                inner = {i: preds[(i, h)] for i in names if (i, h) in preds}
                beta = _temperatures(inner, y, corpora).get(d, {}).get(mode, 1.0) if inner else 1.0
                p = {k: (v[m] if v is not None else None) for k, v in outer[h][d][mode].items()}
                per[h] = _scores_of(side[m], p, beta)
            if per:
                per_mode[mode] = {"per_corpus": per, "mean": _means(per)}
        result[d] = {"modes": per_mode}
    return result, final


def _means(per: dict[str, Any]) -> dict[str, Any]:
    mean: dict[str, Any] = {}
    for variant in ("reported", "own", "read_off"):
        rows = [per[h] if variant == "reported" else per[h][variant] for h in per]
        if any(r is None for r in rows):
            continue
        bas = [r["balanced_accuracy"] for r in rows]
        eces = [r["ece"] for r in rows]
        mean[variant] = {
            "balanced_accuracy": float(np.mean(bas)),
            "worst": float(min(bas)),
            "ece": float(np.mean(eces)),
            "worst_ece": float(max(eces)),
        }
    return mean
