"""What a person's answers buy, and whether the review's estimates tell the truth: leave one corpus out,
answers simulated from the held-out corpus's labels.

    python bench/review.py                    # ../shared/corpora; about 20 minutes on 2 cores with a warm cache
    python bench/review.py --draws 3 --coverage-draws 10   # fewer repeated draws (faster, noisier)

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

Coverage (the second table): an archive where some recordings hold none of the model's
emotions, as real archives do. Each held-out corpus keeps every file of its other emotions
(fearful, calm, disgust, surprised), which the person answers "none of these"; the sample is
batchser's own (stratified by predicted label, interleaved at random), and the estimates are
those ``batchser annotate --reviewed`` writes (batchser.review.estimate). Truth is counted
over every file nobody answered, "none" files counted wrong. The share of draws whose 95 %
interval holds the truth is reported for accuracy before and after learning and for the
share of "none" files; and for a person who stops after 10 answers, how often every label
had an answer (else no archive-wide figure is given) and, when it had, the coverage.
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
from batchser.model.learn import AFTER_WIDEN, FOLDS, Rows, learn
from batchser.review import choose, estimate

KS = (0, 10, 20, 40)
COVERAGE_KS = (10, 20)
EARLY = 10  # answers given before stopping, for the stop-early rows
STRATEGIES = {"random (ships)": 1.0, "least sure": 0.0, "half and half": 0.5}
SHIPS = 1.0


def _rows(X: np.ndarray, corpora: np.ndarray, speakers: np.ndarray, ok: np.ndarray, mode: str) -> Rows:
    g = group_rows(
        X, mode=mode, corpora=corpora, speakers=speakers if mode == "speaker" else None, speaker_ok=ok, min_files=10
    )
    Xn, covered = g.stats(X).transform(X, g.keys)
    return Rows(X, Xn, covered)


def _fitted(data: tuple[np.ndarray, ...], train: np.ndarray) -> tuple[object, object, Rows]:
    """The shipped recipe's two networks fitted on the ``train`` rows, and those rows as the networks saw them."""
    X, y, corpora, speakers, ok = data
    plain, norm = fit_normalized(
        X[train], y[train], corpora=corpora[train], speakers=speakers[train], speaker_ok=ok[train], min_files=10,
        fit_kw=SHIPPED_FIT,
    )  # fmt: skip
    return plain, norm, _rows(X[train], corpora[train], speakers[train], ok[train], "speaker")


def _adapted(plain: object, norm: object, data: tuple[np.ndarray, ...], te: np.ndarray, classes: list[str]):  # type: ignore[no-untyped-def]
    """(mode, probabilities, rows) of the held-out files: standardised by corpus, and by speaker where named."""
    X, _, corpora, speakers, ok = data
    for mode in ("corpus", "speaker"):
        if mode == "speaker" and not all(speakers[te]):
            continue
        proba, _ = predict_adapted(
            plain, norm, X[te], mode=mode, corpora=corpora[te], speakers=speakers[te] if mode == "speaker" else None,
            speaker_ok=ok[te], min_files=10, classes=classes,
        )  # fmt: skip
        yield mode, proba, _rows(X[te], corpora[te], speakers[te], ok[te], mode)


def _relabel(got: object, rows: Rows, classes: list[str]) -> np.ndarray:
    """The labels the relearned networks give ``rows``."""
    p = np.zeros((len(rows), len(classes)))
    for net, mask, data in ((got.plain, ~rows.covered, rows.X), (got.norm, rows.covered, rows.Xn)):  # type: ignore[attr-defined]
        if net is not None and mask.any():
            p[mask] = net.predict_proba(data[mask])
    return np.asarray(classes, dtype=object)[p.argmax(1)]


def _held_out(held: str, data: tuple[np.ndarray, ...], draws: int) -> list[dict[str, object]]:
    _, y, corpora, _, _ = data
    tr, te = corpora != held, corpora == held
    plain, norm, base = _fitted(data, tr)
    classes = sorted(EMOTIONS)
    out = []
    for mode, proba, rows in _adapted(plain, norm, data, te, classes):
        pred, conf, truth = np.asarray(classes)[proba.argmax(1)], proba.max(1), y[te]
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
                    after = _relabel(got, rows.take(rest), classes)
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


def _coverage(held: str, data: tuple[np.ndarray, ...], draws: int) -> list[dict[str, object]]:
    """Coverage of the review's intervals on ``held`` with its other emotions' files in, answered "none"."""
    _, y, corpora, _, _ = data
    classes = sorted(EMOTIONS)
    train = (corpora != held) & np.isin(y, classes)
    te = corpora == held
    plain, norm, base = _fitted(data, train)
    truth = np.where(np.isin(y[te], classes), y[te], "none").astype(object)
    out = []
    for mode, proba, rows in _adapted(plain, norm, data, te, classes):
        pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
        sizes = {c: int((pred == c).sum()) for c in classes}
        for k in COVERAGE_KS:
            for draw in range(draws):
                picked = choose(pred, proba.max(1), per_label=k, seed=1000 + draw)
                idx = np.array([i for i, _ in picked], dtype=np.intp)
                idx = idx[np.random.default_rng(draw).permutation(len(idx))]  # the page's interleaved order
                rest = np.setdiff1d(np.arange(len(truth)), idx)
                before = estimate(pred[idx], truth[idx], pred[idx], sizes, classes=classes)
                row: dict[str, object] = {"held": held, "mode": mode, "k": k, "draw": draw}
                row["true_before"] = float(np.mean(pred[rest] == truth[rest]))
                row["true_none"] = float(np.mean(truth[rest] == "none"))
                row["est_before"], row["est_none"] = before["accuracy"], before["none_share"]
                row["before_in"] = _holds(before["accuracy_ci"], row["true_before"])
                row["none_in"] = _holds(before["none_share_ci"], row["true_none"])
                learnt = np.array([j for j, i in enumerate(idx) if truth[i] != "none"], dtype=np.intp)
                got = learn(base, y[train], rows.take(idx[learnt]), truth[idx[learnt]].astype(str), classes=classes,
                            random_state=draw)  # fmt: skip
                after_pred = np.full(len(idx), "", dtype=object)
                after_pred[learnt] = np.asarray(classes, dtype=object)[got.oof_proba.argmax(1)]
                after = estimate(after_pred, truth[idx], pred[idx], sizes, classes=classes, widen=AFTER_WIDEN)
                relabelled = _relabel(got, rows.take(rest), classes)
                row["true_after"] = float(np.mean(relabelled == truth[rest]))
                row["est_after"] = after["accuracy"]
                row["after_in"] = _holds(after["accuracy_ci"], row["true_after"])
                early = idx[:EARLY]
                first = estimate(pred[early], truth[early], pred[early], sizes, classes=classes)
                unanswered = np.setdiff1d(np.arange(len(truth)), early)
                row["early_whole"] = first["accuracy"] is not None
                row["early_in"] = _holds(first["accuracy_ci"], float(np.mean(pred[unanswered] == truth[unanswered])))
                out.append(row)
    return out


def _holds(ci: list[float] | None, true: float) -> bool | None:
    return None if ci is None else bool(ci[0] <= true <= ci[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=5, help="repeated samples per setting (default 5)")
    ap.add_argument("--coverage-draws", type=int, default=25, help="repeated samples per coverage setting (25)")
    ap.add_argument("--only-coverage", action="store_true", help="the coverage table alone")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not have_pooled():
        return 2
    X, y, corpora, speakers, ok, _ = labelled_features(SHIPPED, log, other=True, cache="result/cache")
    four = np.isin(y, EMOTIONS)
    data = (X[four], y[four], corpora[four], speakers[four], ok[four])
    names = sorted(set(corpora.tolist()))
    import pandas as pd

    if not args.only_coverage:
        _answers_buy(names, data, args.draws, log)
    log(f"  coverage: {len(names)} held-out corpora with their other emotions, {args.coverage_draws} draws each")
    rows = [r for part in joblib.Parallel(n_jobs=2)(
        joblib.delayed(_coverage)(h, (X, y, corpora, speakers, ok), args.coverage_draws) for h in names)
        for r in part]  # fmt: skip
    cov = pd.DataFrame(rows)
    print("\n95 % intervals on archives with recordings of other emotions (answered \"none of these\"): share of "
          "draws holding the truth over the files nobody answered\n")  # fmt: skip
    print("| held out | none share | k | draws | accuracy before | none share | accuracy after | "
          f"whole figure after {EARLY} answers | its coverage |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for (held, k), g in cov.groupby(["held", "k"]):
        print(f"| {held} | {g.true_none.mean():.1%} | {k} | {len(g)} | {g.before_in.mean():.1%} | "
              f"{g.none_in.mean():.1%} | {g.after_in.mean():.1%} | {g.early_whole.mean():.0%} | "
              f"{g.early_in.dropna().astype(float).mean():.1%} |")  # fmt: skip
    for k, g in cov.groupby("k"):
        print(f"| **all** | {g.true_none.mean():.1%} | {k} | {len(g)} | **{g.before_in.mean():.1%}** | "
              f"**{g.none_in.mean():.1%}** | **{g.after_in.mean():.1%}** | {g.early_whole.mean():.0%} | "
              f"{g.early_in.dropna().astype(float).mean():.1%} |")  # fmt: skip
    print("\nmean estimate against mean truth (all corpora and draws)\n")
    print("| k | accuracy before: estimate / truth | after: estimate / truth | none share: estimate / truth |")
    print("|---|---|---|---|")
    for k, g in cov.groupby("k"):
        print(f"| {k} | {g.est_before.mean():.1%} / {g.true_before.mean():.1%} | {g.est_after.mean():.1%} / "
              f"{g.true_after.mean():.1%} | {g.est_none.mean():.1%} / {g.true_none.mean():.1%} |")  # fmt: skip
    return 0


def _answers_buy(names: list[str], data: tuple[np.ndarray, ...], draws: int, log) -> None:  # type: ignore[no-untyped-def]
    """The first tables: UAR on the files not reviewed by strategy and answers, on the four emotions' files."""
    import pandas as pd

    log(f"  {len(names)} held-out corpora, {draws} draws each, on 2 processes")
    rows = [r for part in joblib.Parallel(n_jobs=2)(joblib.delayed(_held_out)(h, data, draws) for h in names)
            for r in part]  # fmt: skip
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


if __name__ == "__main__":
    sys.exit(main())
