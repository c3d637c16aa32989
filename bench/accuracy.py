"""Accuracy on unseen speakers: the librosa tutorial recipe's features against the shipped ones, with and without
per-speaker normalisation, and how much speaker data the normalisation needs; and whether
pinning chroma's tuning (manifest chroma_tuning) costs the librosa tutorial recipe's features any accuracy.

    python bench/accuracy.py            # ../shared/corpora/ravdess, about 3 minutes on 2 cores

Every row is actor-wise GroupKFold(4) on RAVDESS speech (each actor tested once, by a
network that never heard them), the librosa tutorial recipe's MLP parameters, random_state 0, no calibration
(the train jobs report calibrated figures; calibration barely moves accuracy). "speaker"
rows standardise each actor's features over their own recordings (batchser.model.adapt); the
"stats from ..." rows compute a test actor's statistics from only some of their files, as
a user with few recordings per speaker, or with a skewed emotion mix, would.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import numpy as np
from _common import RAVDESS, have, progress_log
from joblib import Parallel, delayed
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GroupKFold

TUTORIAL = ("mfcc", "chroma", "mel")
SHIPPED = ("mfcc_stats", "logmel_stats", "spectral_stats", "prosody")
FOUR = ("angry", "sad", "neutral", "happy")
PARAMS = {
    "alpha": 0.01,
    "batch_size": 256,
    "epsilon": 1e-8,
    "hidden_layer_sizes": (300,),
    "learning_rate": "adaptive",
    "max_iter": 500,
}


def _features(paths: list[str], names: tuple[str, ...], chroma_tuning: float | None = None) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    from batchser.audio import load
    from batchser.features import FeatureSpec, extract

    spec = FeatureSpec(names, 16000, chroma_tuning=chroma_tuning)
    with threadpool_limits(1):
        return np.stack([extract(load(p, sample_rate=16000).samples, spec=spec) for p in paths])


def features(paths: list[str], names: tuple[str, ...], n_jobs: int, chroma_tuning: float | None = None) -> np.ndarray:
    chunks = [paths[i : i + 48] for i in range(0, len(paths), 48)]
    parts = Parallel(n_jobs=n_jobs)(delayed(_features)(c, names, chroma_tuning) for c in chunks)
    return np.concatenate(parts).astype(np.float64)


Picker = Callable[[np.ndarray], np.ndarray]  # a speaker's row indices -> the rows their statistics use


def standardise(X: np.ndarray, speakers: np.ndarray, pick: Picker | None = None) -> np.ndarray:
    from batchser.model.adapt import GroupStats

    out = np.empty_like(X)
    for s in np.unique(speakers):
        rows = np.flatnonzero(speakers == s)
        ref = rows if pick is None else pick(rows)
        norm = GroupStats.fit(X[ref], [s] * len(ref), min_files=2)
        out[rows] = norm.transform(X[rows], [s] * len(rows))[0]
    return out


def actor_wise(X_train: np.ndarray, X_test: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    from batchser.model import build_pipeline, fit

    pred = np.empty_like(y)
    for tr, te in GroupKFold(n_splits=4).split(X_train, y, groups):
        pred[te] = fit(build_pipeline(PARAMS, random_state=0), X_train[tr], y[tr]).predict(X_test[te])
    return float(accuracy_score(y, pred)), float(f1_score(y, pred, average="macro"))


def random_splits(X: np.ndarray, y: np.ndarray, *, n: int = 5) -> float:
    """Mean accuracy over ``n`` stratified 75/25 splits (the librosa tutorial recipe's evaluation: actors in both
    halves)."""
    from sklearn.model_selection import train_test_split

    from batchser.model import build_pipeline, fit

    accs = []
    for seed in range(n):
        tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=seed, stratify=y)
        accs.append(accuracy_score(y[te], fit(build_pipeline(PARAMS, random_state=0), X[tr], y[tr]).predict(X[te])))
    return float(np.mean(accs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args()
    if not have(RAVDESS, "the RAVDESS corpus"):
        return 2
    from batchser.labels import parse_ravdess

    log = progress_log(args.quiet)

    paths = sorted(str(p) for p in RAVDESS.rglob("*.flac"))
    names = [parse_ravdess(p) for p in paths]
    emotion = np.array([n.emotion for n in names])
    actor = np.array([f"actor{n.actor:02d}" for n in names])
    log(f"extracting the librosa tutorial recipe's and the shipped features of {len(paths)} files …")
    X = {"tutorial": features(paths, TUTORIAL, args.n_jobs), "shipped": features(paths, SHIPPED, args.n_jobs)}
    X["pinned"] = features(paths, TUTORIAL, args.n_jobs, chroma_tuning=0.0)
    four = np.isin(emotion, FOUR)
    rng = np.random.default_rng(0)

    rows: list[tuple[str, float, float]] = []

    def row(label: str, train: np.ndarray, test: np.ndarray, subset: np.ndarray) -> None:
        acc, f1 = actor_wise(train[subset], test[subset], emotion[subset], actor[subset])
        rows.append((label, acc, f1))
        log(f"  {label}: {acc:.1%}")

    for key in ("tutorial", "shipped"):
        Xk = X[key]
        row(f"{key} features, 4 emotions, no speaker normalisation", Xk, Xk, four)
        Xs = standardise(Xk[four], actor[four])
        full = np.empty_like(Xk)
        full[four] = Xs
        row(f"{key} features, 4 emotions, speaker normalisation", full, full, four)
    row(
        "tutorial features, chroma tuning pinned at 0.0, 4 emotions, no speaker normalisation",
        X["pinned"],
        X["pinned"],
        four,
    )
    splits = {k: random_splits(X[k][four], emotion[four]) for k in ("tutorial", "pinned")}
    Xk = X["shipped"]
    X4 = np.zeros_like(Xk)
    X4[four] = standardise(Xk[four], actor[four])  # training speakers: all their 4-emotion files

    def test_stats(label: str, pick: Picker) -> None:
        Xt = np.zeros_like(Xk)
        Xt[four] = standardise(Xk[four], actor[four], pick)
        row(f"shipped, speaker normalisation, test speaker's stats from {label}", X4, Xt, four)

    for k in (5, 10, 20):
        test_stats(f"{k} random files", lambda rows, k=k: rng.choice(rows, k, replace=False))
    sub = emotion[four]
    test_stats("their sad and neutral files only", lambda rows: rows[np.isin(sub[rows], ["sad", "neutral"])])
    test_stats("their angry and happy files only", lambda rows: rows[np.isin(sub[rows], ["angry", "happy"])])
    all8 = standardise(Xk, actor)  # each actor's 60 files, all 8 emotions, as a whole archive would give
    row("shipped, speaker normalisation, stats from all 60 files (8 emotions)", all8, all8, four)
    everything = np.ones(len(paths), dtype=bool)
    row("shipped features, 8 emotions, no speaker normalisation", Xk, Xk, everything)
    row("shipped features, 8 emotions, speaker normalisation", all8, all8, everything)

    print(
        "RAVDESS speech, actor-wise GroupKFold(4), the tutorial recipe's MLP, "
        f"random_state 0 ({len(paths)} files, 24 actors)"
    )
    print(f"{'variant':<92} {'accuracy':>8} {'macro-F1':>8}")
    for label, acc, f1 in rows:
        print(f"{label:<92} {acc:>8.1%} {f1:>8.1%}")
    print(
        f"random 75/25 splits (the librosa tutorial recipe's evaluation), 4 emotions, mean of 5: "
        f"the tutorial's features {splits['tutorial']:.1%}, "
        f"chroma tuning pinned at 0.0 {splits['pinned']:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
