"""'None of these': how well the shipped recipe sets aside files that hold none of its emotions.

    python bench/none_of_these.py            # ../shared/corpora; about a minute on 2 cores with a warm cache

Leave one corpus out over the shared corpora that hold files of other emotions (RAVDESS:
calm, fearful, disgust, surprised; SAVEE: disgust, fearful, surprised; nEMO: fearful,
surprised): fit on every other corpus, label the held-out one's 4-emotion *and* other-emotion
files together (standardised over the held-out corpus, as a job without speaker ids does),
and compare two ways of saying "none of these":

(a) a confidence threshold: a file whose top probability is under t is "uncertain";
(b) an extra class "other", trained on the training corpora's other-emotion files, with the
    same threshold on top.

For each: coverage (share of 4-emotion files given a label), accuracy on the labelled
4-emotion files, and leak (share of other-emotion files wrongly given one of the 4). Features
come from the train job's cache (result/cache; the first run extracts them).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import EMOTIONS, have_pooled, progress_log
from transfer import SHIPPED, SHIPPED_FIT, labelled_features

from batchser.model.evaluate import fit_normalized, predict_adapted

THRESHOLDS = (0.0, 0.4, 0.5, 0.6, 0.7)
OTHER = "other"


def _held_out(X, y, corpora, speakers, ok, held: str, *, with_other: bool) -> tuple[np.ndarray, list[str]]:  # type: ignore[no-untyped-def]
    """Probabilities for the held-out corpus's files, and the classes they are over."""
    train = corpora != held
    if not with_other:
        train &= np.isin(y, EMOTIONS)
    target = np.where(np.isin(y, EMOTIONS), y, OTHER)
    plain, norm = fit_normalized(
        X[train],
        target[train],
        corpora=corpora[train],
        speakers=speakers[train],
        speaker_ok=ok[train],
        min_files=10,
        fit_kw=SHIPPED_FIT,
    )
    te = corpora == held
    classes = sorted(set(target[train].tolist()))
    proba, _ = predict_adapted(
        plain, norm, X[te], mode="corpus", corpora=corpora[te], speakers=None, speaker_ok=ok[te], min_files=10,
        classes=classes,
    )  # fmt: skip
    return proba, classes


def _row(proba: np.ndarray, classes: list[str], y: np.ndarray, t: float) -> tuple[float, float, float]:
    """(coverage, accuracy on labelled 4-emotion files, leak) at threshold ``t``."""
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    labelled = (proba.max(axis=1) >= t) & (pred != OTHER)
    four = np.isin(y, EMOTIONS)
    coverage = float(labelled[four].mean())
    accuracy = float((pred[four & labelled] == y[four & labelled]).mean()) if (four & labelled).any() else float("nan")
    leak = float(labelled[~four].mean())
    return coverage, accuracy, leak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not have_pooled():
        return 2
    X, y, corpora, speakers, ok, _ = labelled_features(SHIPPED, log, other=True, cache="result/cache")
    held_out = [c for c in sorted(set(corpora.tolist())) if (~np.isin(y[corpora == c], EMOTIONS)).any()]
    print("| held out | way | threshold | coverage | accuracy on those labelled | leak of other emotions |")
    print("|---|---|---|---|---|---|")
    totals: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for held in held_out:
        log(f"  holding out {held}")
        yh = y[corpora == held]
        for way, with_other in (("threshold", False), ("extra class", True)):
            proba, classes = _held_out(X, y, corpora, speakers, ok, held, with_other=with_other)
            for t in THRESHOLDS:
                cov, acc, leak = _row(proba, classes, yh, t)
                totals.setdefault((way, t), []).append((cov, acc, leak))
                print(f"| {held} | {way} | {t:.1f} | {cov:.1%} | {acc:.1%} | {leak:.1%} |")
    for (way, t), rows in totals.items():
        cov, acc, leak = (float(np.mean([r[k] for r in rows])) for k in range(3))
        print(f"| **mean** | {way} | {t:.1f} | {cov:.1%} | {acc:.1%} | {leak:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
