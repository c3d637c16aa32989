"""Does self-training on the held-out corpus help labels hold on corpora the model never heard?

    python bench/selftrain.py        # ../shared/corpora; about 3 minutes on 2 cores

The shipped configuration (default + voice_stats features, logistic C=0.01, temperature
calibration), leave one corpus out over the four shared corpora as bench/transfer.py does.
After the usual prediction on the held-out corpus (normalised per corpus, or per speaker
where its speaker ids are used), the normalised network is refitted on the training
corpora plus the held-out files it is most confident about, class by class: in round k,
up to q_k of the corpus's files per class (q = 0.25, 0.5, 0.75, 1.0 of an even share), each
round starting from the previous round's labels. Transductive: only the held-out files'
features and the model's own guesses are used, never their labels; a labelling job could
do the same with its own files.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import have_pooled, progress_log
from sklearn.metrics import balanced_accuracy_score  # UAR: recall averaged over the classes
from transfer import SHIPPED, SHIPPED_FIT, labelled_features

from batchser.model.adapt import group_rows
from batchser.model.evaluate import calibration_table, fit_normalized
from batchser.model.train import fit_model

NAMES = SHIPPED  # default + voice_stats
MODES = ("corpus", "speaker")
FIT = SHIPPED_FIT  # logistic C=0.01, temperature-calibrated
ROUNDS = (0.25, 0.5, 0.75, 1.0)


def normalised(
    X: np.ndarray, mode: str, corpora: np.ndarray, speakers: np.ndarray | None, ok: np.ndarray
) -> np.ndarray:
    g = group_rows(X, mode=mode, corpora=corpora, speakers=speakers, speaker_ok=ok, min_files=10)
    Xn, covered = g.stats(X).transform(X, g.keys)
    assert covered.all(), "every held-out corpus has at least 10 files"
    return Xn


def pseudo_labelled(proba: np.ndarray, q: float) -> np.ndarray:
    """Rows whose guess is among the ``q`` share of an even split most confident of their class."""
    guess, conf = proba.argmax(axis=1), proba.max(axis=1)
    take = int(q * len(proba) / proba.shape[1])
    rows = [np.flatnonzero(guess == k)[np.argsort(-conf[guess == k])][:take] for k in range(proba.shape[1])]
    return np.concatenate(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not have_pooled():
        return 2
    X, y, c, s, ok, _ = labelled_features(NAMES, log)
    held_out = sorted(set(c.tolist()))
    # scores[mode][round] = [(uar, ece) per held-out corpus]; round 0 is the plain prediction.
    scores: dict[str, list[list[tuple[float, float]]]] = {m: [[] for _ in range(len(ROUNDS) + 1)] for m in MODES}
    for held in held_out:
        log(f"held out: {held}")
        tr, te = c != held, c == held
        _, norm = fit_normalized(
            X[tr], y[tr], corpora=c[tr], speakers=s[tr], speaker_ok=ok[tr], min_files=10, fit_kw=FIT
        )
        g = group_rows(X[tr], mode="speaker", corpora=c[tr], speakers=s[tr], speaker_ok=ok[tr], min_files=10)
        Xtr, covered = g.stats(X[tr]).transform(X[tr], g.keys)
        Xtr, ytr = Xtr[covered], y[tr][covered]
        for mode in MODES:
            Xte = normalised(X[te], mode, c[te], s[te] if mode == "speaker" else None, ok[te])
            model = norm
            for r in range(len(ROUNDS) + 1):
                proba = model.predict_proba(Xte)
                pred = np.asarray(model.classes_)[proba.argmax(axis=1)]
                ece = calibration_table(proba, y[te], list(model.classes_))["ece"]
                scores[mode][r].append((balanced_accuracy_score(y[te], pred), ece))
                if r < len(ROUNDS):
                    rows = pseudo_labelled(proba, ROUNDS[r])
                    Xa = np.concatenate([Xtr, Xte[rows]])
                    ya = np.concatenate([ytr, np.asarray(model.classes_)[proba[rows].argmax(axis=1)]])
                    model = fit_model(Xa, ya, None, **FIT)
    print("Self-training on the held-out corpus: mean UAR over the held-out corpora (worst), mean ECE\n")
    print("| rounds | share of each class | " + " | ".join(f"{m} UAR | {m} ECE" for m in MODES) + " |")
    print("|---|---|" + "---|---|" * len(MODES))
    for r in range(len(ROUNDS) + 1):
        share = "none (the shipped prediction)" if r == 0 else f"{ROUNDS[r - 1]:.0%}"
        cells = []
        for m in MODES:
            uar = [u for u, _ in scores[m][r]]
            cells += [f"{np.mean(uar):.1%} ({min(uar):.1%})", f"{np.mean([e for _, e in scores[m][r]]):.3f}"]
        print(f"| {r} | {share} | " + " | ".join(cells) + " |")
    last = {m: dict(zip(held_out, (u for u, _ in scores[m][-1]), strict=True)) for m in MODES}
    print(
        "\nper held-out corpus after the last round (UAR): "
        + "; ".join(f"{m}: " + ", ".join(f"{k} {v:.1%}" for k, v in last[m].items()) for m in MODES)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
