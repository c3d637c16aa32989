"""What a person's answers buy: leave one corpus out, answers simulated from the held-out corpus's labels.

    python bench/review.py               # ../shared/corpora; a few minutes on 2 cores with a warm cache
    python bench/review.py --draws 3     # fewer repeated draws (faster, noisier)

For each shared corpus held out in turn: the shipped recipe is fitted on the other corpora
and labels the held-out one (standardised over the corpus, "corpus", or over each speaker
where the corpus names them, "speaker"); batchser's own sample chooser (batchser.review.choose)
picks k files per *predicted* emotion; the person is simulated by the true labels; the model
learns from the answers (batchser.model.learn.learn) and relabels the corpus. Scored on the
files not reviewed: UAR. Sample strategies: all at random, all the least sure, half and half
. Then, for what ships (at random): how often the 95 % intervals of the estimates
(batchser.model.learn.estimate) hold the true accuracy, before
learning (of the model's labels on the whole corpus) and after (of the relearned model's on
the files not reviewed). Features come from the train job's cache (result/cache).
"""

from __future__ import annotations

import argparse
import sys

import joblib
import numpy as np
from _common import EMOTIONS, have_pooled, progress_log
from transfer import SHIPPED, SHIPPED_FIT, labelled_features

from batchser.model.adapt import group_rows
from batchser.model.evaluate import _scores, fit_normalized, predict_adapted
from batchser.model.learn import AFTER_WIDEN, FOLDS, Rows, estimate, learn
from batchser.review import choose

KS = (0, 10, 20, 40)
STRATEGIES = {"random (ships)": 1.0, "least sure": 0.0, "half and half": 0.5}
SHIPS = 1.0


def _rows(X: np.ndarray, corpora: np.ndarray, speakers: np.ndarray, ok: np.ndarray, mode: str) -> Rows:
    g = group_rows(
        X, mode=mode, corpora=corpora, speakers=speakers if mode == "speaker" else None, speaker_ok=ok, min_files=10
    )
    Xn, covered = g.stats(X).transform(X, g.keys)
    return Rows(X, Xn, covered)


def _held_out(held: str, data: tuple[np.ndarray, ...], draws: int) -> list[dict[str, object]]:
    X, y, corpora, speakers, ok = data
    tr, te = corpora != held, corpora == held
    plain, norm = fit_normalized(
        X[tr], y[tr], corpora=corpora[tr], speakers=speakers[tr], speaker_ok=ok[tr], min_files=10, fit_kw=SHIPPED_FIT
    )
    base = _rows(X[tr], corpora[tr], speakers[tr], ok[tr], "speaker")  # as fit_normalized standardised them
    classes = sorted(EMOTIONS)
    out = []
    for mode in ("corpus", "speaker"):
        if mode == "speaker" and not all(speakers[te]):
            continue
        proba, _ = predict_adapted(
            plain, norm, X[te], mode=mode, corpora=corpora[te], speakers=speakers[te] if mode == "speaker" else None,
            speaker_ok=ok[te], min_files=10, classes=classes,
        )  # fmt: skip
        pred, conf, truth = np.asarray(classes)[proba.argmax(1)], proba.max(1), y[te]
        rows = _rows(X[te], corpora[te], speakers[te], ok[te], mode)
        sizes = {c: int((pred == c).sum()) for c in classes}
        for strategy, share in STRATEGIES.items():
            for k in KS:
                for draw in range(draws if k else 1):
                    picked = choose(pred, conf, per_label=k, random_share=share, seed=draw) if k else []
                    idx = np.array([i for i, _ in picked], dtype=np.intp)
                    rest = np.setdiff1d(np.arange(len(truth)), idx)
                    row: dict[str, object] = {"held": held, "mode": mode, "strategy": strategy, "k": k, "draw": draw}
                    if not k:
                        row["uar"] = _scores(truth, pred, classes)["uar"]
                        out.append(row)
                        continue
                    folds = FOLDS if share == SHIPS else 0
                    got = learn(
                        base, y[tr], rows.take(idx), truth[idx], classes=classes, folds=folds, random_state=draw
                    )
                    r = rows.take(rest)
                    p_rest = np.zeros((len(rest), len(classes)))
                    for net, mask, data_ in ((got.plain, ~r.covered, r.X), (got.norm, r.covered, r.Xn)):
                        if net is not None and mask.any():
                            p_rest[mask] = net.predict_proba(data_[mask])
                    after = np.asarray(classes)[p_rest.argmax(1)]
                    row["uar"] = _scores(truth[rest], after, classes)["uar"]
                    if folds:
                        rand = np.array([i for i, part in picked if part == "random"], dtype=np.intp)
                        at = {i: j for j, i in enumerate(idx.tolist())}
                        before = estimate(pred[rand], truth[rand], pred[rand], sizes, classes=classes)
                        oof = np.asarray(classes)[got.oof_proba[[at[i] for i in rand.tolist()]].argmax(1)]
                        later = estimate(oof, truth[rand], pred[rand], sizes, classes=classes, widen=AFTER_WIDEN)
                        true_before, true_after = float((pred == truth).mean()), float((after == truth[rest]).mean())
                        row["before_in"] = before["accuracy_ci"][0] <= true_before <= before["accuracy_ci"][1]
                        row["after_in"] = later["accuracy_ci"][0] <= true_after <= later["accuracy_ci"][1]
                        row["est_after"], row["true_after"] = later["accuracy"], true_after
                    out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=5, help="repeated samples per setting (default 5)")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not have_pooled():
        return 2
    X, y, corpora, speakers, ok, _ = labelled_features(SHIPPED, log, cache="result/cache")
    data = (X, y, corpora, speakers, ok)
    names = sorted(set(corpora.tolist()))
    log(f"  {len(names)} held-out corpora, {args.draws} draws each, on 2 processes")
    rows = [r for part in joblib.Parallel(n_jobs=2)(joblib.delayed(_held_out)(h, data, args.draws) for h in names)
            for r in part]  # fmt: skip
    import pandas as pd

    df = pd.DataFrame(rows)
    for mode in ("corpus", "speaker"):
        sub = df[df["mode"] == mode]
        print(f"\nUAR on the files not reviewed, standardised by {mode} (mean of the draws; mean over corpora last)\n")
        print("| strategy | k per predicted emotion | " + " | ".join(names) + " | mean | worst |")
        print("|---|---|" + "---|" * (len(names) + 2))
        for strategy in STRATEGIES:
            for k in KS:
                cell = sub[(sub.k == k) & ((sub.strategy == strategy) | (k == 0))].groupby("held")["uar"].mean()
                cells = [f"{cell.get(h, float('nan')):.1%}" for h in names]
                print(f"| {strategy} | {k} | " + " | ".join(cells) + f" | **{cell.mean():.1%}** | {cell.min():.1%} |")
    ships = df[df.strategy.str.endswith("(ships)") & (df.k > 0)]
    print("\n95 % intervals of the estimates (the random sample that ships): share holding the true accuracy\n")
    print(
        "| k per predicted emotion | draws | before learning | after learning | mean estimate after | mean true after |"
    )
    print("|---|---|---|---|---|---|")
    for k in KS[1:]:
        s = ships[ships.k == k]
        print(
            f"| {k} | {len(s)} | {s.before_in.mean():.1%} | {s.after_in.mean():.1%} | "
            f"{s.est_after.mean():.1%} | {s.true_after.mean():.1%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
