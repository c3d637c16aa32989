"""Arousal and valence on corpora the model never heard: every variant tried, leave one corpus out.

    python bench/dimensions.py           # ../shared/corpora; a few minutes on 2 cores with a warm cache

For each of the six shared corpora held out in turn, models are fitted on the other five and
score every held-out file whose emotion has a side (batchser.dimensions.CIRCUMPLEX: arousal
high for angry, happy, fearful, surprised; low for sad, neutral, calm, bored; disgust has no
arousal side; valence positive for happy and calm, negative for angry, sad, fearful,
disgust; neutral and surprise have no valence side). No speaker ids at test time: each
held-out corpus is standardised over its own files (the "corpus" adaptation); training rows
are standardised over their speaker (else corpus) as the shipped model's are. Balanced
accuracy (the mean of the two sides' recalls) per held-out corpus, its mean and worst, and
the expected calibration error of the probability of the high (positive) side.

Variants: read off the four-class model (p_angry + p_happy for arousal, p_happy for valence),
an own binary logistic model on the shipped features (several C, with and without balanced
class weights, on all features or the groups that carry arousal), and the mean of the two.
Features come from the train job's cache (result/cache).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import EMOTIONS, have_pooled, progress_log
from transfer import SHIPPED, SHIPPED_FIT, labelled_features

from batchser.features import FeatureSpec
from batchser.model.adapt import group_rows
from batchser.model.evaluate import fit_normalized, predict_adapted

# The circumplex placement of every emotion the corpora name: 1 high/positive, 0 low/negative, None no side.
AROUSAL = {"angry": 1, "happy": 1, "fearful": 1, "surprised": 1, "sad": 0, "neutral": 0, "calm": 0, "bored": 0}
VALENCE = {"happy": 1, "calm": 1, "angry": 0, "sad": 0, "fearful": 0, "disgust": 0}
GROUPS_AROUSAL = ("prosody", "spectral_stats", "logmel_stats")


def _standardised(X: np.ndarray, corpora: np.ndarray, speakers: np.ndarray, ok: np.ndarray, mode: str) -> np.ndarray:
    g = group_rows(X, mode=mode, corpora=corpora, speakers=speakers, speaker_ok=ok, min_files=10)
    Xn, covered = g.stats(X).transform(X, g.keys)
    return np.where(covered[:, None], Xn, X)


def _fit(X: np.ndarray, y: np.ndarray, *, C: float, balanced: bool) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=C, max_iter=5000, class_weight="balanced" if balanced else None)
    return make_pipeline(StandardScaler(), clf).fit(X, y)


def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    pred = p >= 0.5
    return float(np.mean([np.mean(pred[y == side] == side) for side in (0, 1) if (y == side).any()]))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    conf = np.maximum(p, 1 - p)
    right = (p >= 0.5) == (y == 1)
    which = np.clip(((conf - 0.5) * 2 * bins).astype(int), 0, bins - 1)
    return float(sum(abs(right[which == b].mean() - conf[which == b].mean()) * np.mean(which == b)
                     for b in range(bins) if (which == b).any()))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not have_pooled():
        return 2
    X, y, corpora, speakers, ok, _ = labelled_features(SHIPPED, log, other=True, cache="result/cache")
    names = sorted(set(corpora.tolist()))
    cols = FeatureSpec.columns_of({"names": list(SHIPPED), "sample_rate": 16000})
    arousal_cols = np.array([any(c.startswith(g.split("_")[0]) for g in GROUPS_AROUSAL) for c in cols])
    log(f"  {len(y)} files, {len(names)} corpora; arousal groups {arousal_cols.sum()} of {len(cols)} columns")
    rows: dict[tuple[str, str], dict[str, tuple[float, float, int]]] = {}
    for held in names:
        tr, te = corpora != held, corpora == held
        four = tr & np.isin(y, EMOTIONS)
        plain, norm = fit_normalized(
            X[four], y[four], corpora=corpora[four], speakers=speakers[four], speaker_ok=ok[four], min_files=10,
            fit_kw=SHIPPED_FIT,
        )  # fmt: skip
        classes = sorted(EMOTIONS)
        proba, _ = predict_adapted(plain, norm, X[te], mode="corpus", corpora=corpora[te], speakers=None,
                                   speaker_ok=ok[te], min_files=10, classes=classes)  # fmt: skip
        Xtr = _standardised(X[tr], corpora[tr], speakers[tr], ok[tr], "speaker")
        Xte = _standardised(X[te], corpora[te], speakers[te], ok[te], "corpus")
        for dim, table in (("arousal", AROUSAL), ("valence", VALENCE)):
            side_tr = np.array([table.get(e, -1) for e in y[tr]])
            side_te = np.array([table.get(e, -1) for e in y[te]])
            m_tr, m_te = side_tr >= 0, side_te >= 0
            if not m_te.any() or len(set(side_te[m_te])) < 2:
                continue
            truth = side_te[m_te]
            read = proba[:, [classes.index("angry"), classes.index("happy")]].sum(1) if dim == "arousal" else \
                proba[:, classes.index("happy")]  # fmt: skip
            out = {"read off the four-class model": read[m_te]}
            for C in (0.001, 0.01, 0.1):
                for balanced in (False, True):
                    model = _fit(Xtr[m_tr], side_tr[m_tr], C=C, balanced=balanced)
                    out[f"own, C={C}{', balanced' if balanced else ''}"] = model.predict_proba(Xte[m_te])[:, 1]
            model = _fit(Xtr[m_tr][:, arousal_cols], side_tr[m_tr], C=0.01, balanced=True)
            out["own, C=0.01, balanced, prosody+spectral+logmel"] = model.predict_proba(Xte[m_te][:, arousal_cols])[
                :, 1
            ]
            out["mean of read-off and own (C=0.01, balanced)"] = (read[m_te] + out["own, C=0.01, balanced"]) / 2
            for variant, p in out.items():
                rows.setdefault((dim, variant), {})[held] = (balanced_accuracy(truth, p), ece(truth, p), len(truth))
        log(f"  {held} done")
    for dim in ("arousal", "valence"):
        print(f"\n{dim}: balanced accuracy on each held-out corpus (ECE), no speaker ids\n")
        print("| variant | " + " | ".join(names) + " | mean | worst | mean ECE |")
        print("|---|" + "---|" * (len(names) + 3))
        for (d, variant), per in rows.items():
            if d != dim:
                continue
            ba = [per[h][0] for h in names if h in per]
            cells = [f"{per[h][0]:.1%} ({per[h][1]:.2f})" if h in per else "-" for h in names]
            eces = [per[h][1] for h in names if h in per]
            print(f"| {variant} | " + " | ".join(cells) + f" | **{np.mean(ba):.1%}** | {min(ba):.1%} | "
                  f"{np.mean(eces):.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
