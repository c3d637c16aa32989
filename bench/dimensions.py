"""Arousal and valence on corpora the model never heard: every variant tried, leave one corpus out.

    python bench/dimensions.py           # ../shared/corpora; about 5 minutes on 2 cores with a warm cache
    python bench/dimensions.py --per-class 12 --cache /tmp/c --no-cost   # a smoke run on a few files

For each of the six shared corpora held out in turn, models are fitted on the other five and
score every held-out file whose emotion has a side (batchser.model.circumplex.CIRCUMPLEX:
arousal high for angry, happy, fearful, surprised; low for sad, neutral, calm, bored; disgust
has no arousal side; valence positive for happy and calm, negative for angry, sad, fearful,
disgust; neutral and surprise have no valence side). No speaker ids at test time: each
held-out corpus is standardised over its own files (the "corpus" adaptation); training rows
are standardised over their speaker (else corpus) as the shipped model's are, unless a
variant says otherwise. Balanced accuracy (the mean of the two sides' recalls, a file called
high when p >= 0.5) per held-out corpus, its mean and worst, and the expected calibration
error of the probability of the high (positive) side (15 bins of max(p, 1 - p) over [0.5, 1]).

Variants: read off the four-class model (p_angry + p_happy for arousal, p_happy for valence,
or p_happy over the sided classes); an own binary logistic model on the shipped features
(several C, class-balanced or not, per-corpus weights, training standardised like the test,
rank normalisation, feature groups), the same on the circumplex placement of every emotion
(soft targets), a multinomial model over all emotions summed by side, ridge regression on the
placement, a small MLP, gradient boosting, the mean of per-corpus models, self-training and
EM re-estimation of the class prior on the unlabelled held-out corpus (Saerens et al. 2002),
ensembles, and what ships (batchser.model.dimensions.evaluate_dimensions: the mean of the
soft-target model and the read-off, its temperature fitted leave one corpus out inside the
training corpora). Rows marked "diagnostic" use what a job does not have (the held-out
corpus's speaker ids, its speakers' gender, or its labels to choose a threshold) and bound
what such information would buy.

The last lines time TrainedModel.predict_dimensions on a warm labelling job's files against
the job itself (the shipped model, RAVDESS from the cache): what the dimensions add to a job.
Features come from the train job's cache (result/cache).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import CORPORA, EMOTIONS, MODEL, ROOT, have_pooled, progress_log, run_measured, shipped_job
from transfer import SHIPPED, SHIPPED_FIT, labelled_features

from batchser.features import FeatureSpec
from batchser.model.adapt import group_rows
from batchser.model.circumplex import placements, read_off, sides
from batchser.model.dimensions import balanced_accuracy, binary_ece, evaluate_dimensions
from batchser.model.evaluate import fit_normalized, predict_adapted

GROUPS = ("mfcc_stats", "logmel_stats", "spectral_stats", "prosody", "voice_stats")
GROUPS_AROUSAL = ("prosody", "spectral_stats", "logmel_stats")
HIGH = {"angry", "happy", "fearful", "surprised"}
LOW = {"sad", "neutral", "calm", "bored"}
POSITIVE = {"happy", "calm"}
NEGATIVE = {"angry", "sad", "fearful", "disgust"}
# ece = binary_ece, balanced_accuracy: the library's own definitions, which the train job's metrics use.
ece = binary_ece

Variant = Callable[[str, str], np.ndarray]  # (dimension, held-out corpus) -> p(high side) per held-out file


def _standardised(X: np.ndarray, corpora: np.ndarray, speakers: np.ndarray, ok: np.ndarray, mode: str) -> np.ndarray:
    g = group_rows(X, mode=mode, corpora=corpora, speakers=speakers, speaker_ok=ok, min_files=10)
    Xn, covered = g.stats(X).transform(X, g.keys)
    return np.where(covered[:, None], Xn, X)


def _rank_normal(X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each feature's rank within its group, mapped to a standard normal quantile."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    out = np.empty_like(X)
    for g in set(groups.tolist()):
        m = groups == g
        out[m] = ndtri((rankdata(X[m], axis=0) - 0.5) / m.sum())
    return out


def _logistic(C: float = 0.01, balanced: bool = True):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=C, max_iter=5000, class_weight="balanced" if balanced else None)
    return make_pipeline(StandardScaler(), clf)


def _fit(X: np.ndarray, y: np.ndarray, *, C: float, balanced: bool) -> object:
    return _logistic(C, balanced).fit(X, y)


def _fit_soft(X: np.ndarray, q: np.ndarray, C: float = 0.01):  # type: ignore[no-untyped-def]
    """Logistic regression on soft targets q: each row twice, weights q and 1 - q, both sides the same total."""
    n = len(q)
    w = np.concatenate([q / q.sum(), (1 - q) / (1 - q).sum()]) * (n / 2)
    return _logistic(C, balanced=False).fit(
        np.vstack([X, X]), np.r_[np.ones(n), np.zeros(n)], logisticregression__sample_weight=w
    )


def _sig(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _genders(paths: list[str], corpora: np.ndarray) -> np.ndarray:
    """Each file's speaker's gender from the corpora's own conventions (for a diagnostic row only)."""
    import csv

    nemo_tsv = CORPORA / "nemo" / "metadata.tsv"
    with nemo_tsv.open() as fh:
        nemo = {r["file_id"]: r["gender"][:1] for r in csv.DictReader(fh, delimiter="\t")}
    out = []
    for p, c in zip(paths, corpora, strict=True):
        name = Path(p).name
        if c == "ravdess":  # odd actors are male
            out.append("m" if int(re.search(r"-(\d\d)\.\w+$", name).group(1)) % 2 else "f")  # type: ignore[union-attr]
        elif c == "savee":  # four male speakers
            out.append("m")
        elif c == "emovo":  # f1-f3, m1-m3 folders
            out.append(Path(p).parent.name[0])
        elif c == "urdu":  # SM.. male, SF.. female
            out.append("m" if name.startswith("SM") else "f")
        elif c == "nemo":
            out.append(nemo.get(name, "?"))
        else:  # ased: the fourth field, 01 female, 02 male
            out.append("f" if name.split("-")[3] == "01" else "m")
    return np.array(out)


class Bench:
    """The features, the held-out predictions of the four-class model, and the variants over them."""

    def __init__(self, X, y, corpora, speakers, ok, paths, log) -> None:  # type: ignore[no-untyped-def]
        self.X, self.y, self.corpora, self.speakers, self.ok, self.paths = X, y, corpora, speakers, ok, paths
        self.names = sorted(set(corpora.tolist()))
        self.log = log
        cols = FeatureSpec.columns_of({"names": list(SHIPPED), "sample_rate": 16000})
        self.group_cols = {g: np.array([c.startswith(g) for c in cols]) for g in GROUPS}
        self.arousal_cols = np.array([any(c.startswith(g.split("_")[0]) for g in GROUPS_AROUSAL) for c in cols])
        self.Z = {m: _standardised(X, corpora, speakers, ok, m) for m in ("speaker", "corpus")}
        self.read = {}  # (mode, held) -> four-class probabilities of the held-out files
        for held in self.names:
            tr, te = corpora != held, corpora == held
            four = tr & np.isin(y, EMOTIONS)
            plain, norm = fit_normalized(
                X[four], y[four], corpora=corpora[four], speakers=speakers[four], speaker_ok=ok[four], min_files=10,
                fit_kw=SHIPPED_FIT,
            )  # fmt: skip
            for mode in ("corpus", "speaker"):
                self.read[mode, held], _ = predict_adapted(
                    plain, norm, X[te], mode=mode, corpora=corpora[te], speakers=speakers[te] if mode == "speaker"
                    else None, speaker_ok=ok[te], min_files=10, classes=sorted(EMOTIONS),
                )  # fmt: skip
        log(f"  four-class read-offs fitted ({len(self.names)} held-out corpora)")

    # -- building blocks ----------------------------------------------------------------------
    def side(self, dim: str) -> np.ndarray:
        return sides(dim, self.y).astype(int)

    def read_off(self, dim: str, held: str, *, renormalised: bool = False, mode: str = "corpus") -> np.ndarray:
        P, classes = self.read[mode, held], sorted(EMOTIONS)
        if renormalised or dim == "arousal":
            return read_off(P, classes, dim)  # type: ignore[return-value]
        return P[:, classes.index("happy")]

    def own(
        self,
        *,
        C: float = 0.01,
        balanced: bool = True,
        train: str = "speaker",
        test: str = "corpus",
        cols: np.ndarray | None = None,
        weights: str | None = None,
        Z: dict[str, np.ndarray] | None = None,
    ) -> Variant:
        """A binary logistic model on the sided files of the training corpora."""
        Z = Z or self.Z

        def fn(dim: str, held: str) -> np.ndarray:
            s = self.side(dim)
            tr, te = (self.corpora != held) & (s >= 0), self.corpora == held
            Xtr, Xte = Z[train][tr], Z[test][te]
            if cols is not None:
                Xtr, Xte = Xtr[:, cols], Xte[:, cols]
            model = _logistic(C, balanced and weights is None)
            kw = {}
            if weights == "corpus":  # each training corpus and side the same total weight
                w = np.ones(tr.sum())
                for c in set(self.corpora[tr].tolist()):
                    for v in (0, 1):
                        m = (self.corpora[tr] == c) & (s[tr] == v)
                        w[m] = 1 / max(m.sum(), 1)
                kw["logisticregression__sample_weight"] = w / w.mean()
            return model.fit(Xtr, s[tr], **kw).predict_proba(Xte)[:, 1]

        return fn

    def soft(self, *, train: str = "speaker", test: str = "corpus", C: float = 0.01) -> Variant:
        """Logistic regression on the circumplex placement of every emotion (soft targets)."""

        def fn(dim: str, held: str) -> np.ndarray:
            q = placements(dim, self.y)
            tr, te = (self.corpora != held) & ~np.isnan(q), self.corpora == held
            return _fit_soft(self.Z[train][tr], q[tr], C).predict_proba(self.Z[test][te])[:, 1]

        return fn

    def ridge(self, alpha: float) -> Variant:
        """Ridge regression on the placement, mapped to a probability by Platt scaling on the training rows."""
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        def fn(dim: str, held: str) -> np.ndarray:
            q, s = placements(dim, self.y), self.side(dim)
            tr, te = (self.corpora != held) & ~np.isnan(q), self.corpora == held
            reg = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(self.Z["speaker"][tr], q[tr])
            f_tr = reg.predict(self.Z["speaker"][tr])
            sided = s[tr] >= 0
            platt = LogisticRegression().fit(f_tr[sided, None], s[tr][sided])
            return platt.predict_proba(reg.predict(self.Z["corpus"][te])[:, None])[:, 1]

        return fn

    def multinomial(self, train: str = "speaker") -> Variant:
        """One logistic model over every emotion; a side's probability is its emotions' share of the sided ones."""

        def fn(dim: str, held: str) -> np.ndarray:
            tr, te = self.corpora != held, self.corpora == held
            model = _logistic().fit(self.Z[train][tr], self.y[tr])
            P, cl = model.predict_proba(self.Z["corpus"][te]), list(model.classes_)
            hi, lo = (HIGH, LOW) if dim == "arousal" else (POSITIVE, NEGATIVE)
            a = P[:, [cl.index(c) for c in cl if c in hi]].sum(1)
            return a / (a + P[:, [cl.index(c) for c in cl if c in lo]].sum(1))

        return fn

    def sklearn(self, make: Callable[[], object]) -> Variant:
        def fn(dim: str, held: str) -> np.ndarray:
            s = self.side(dim)
            tr, te = (self.corpora != held) & (s >= 0), self.corpora == held
            return make().fit(self.Z["speaker"][tr], s[tr]).predict_proba(self.Z["corpus"][te])[:, 1]  # type: ignore[attr-defined]

        return fn

    def per_corpus(self, dim: str, held: str) -> np.ndarray:
        """The mean logit of one model per training corpus."""
        s = self.side(dim)
        outs = []
        for c in self.names:
            tr = (self.corpora == c) & (s >= 0)
            if c == held or len(set(s[tr].tolist())) < 2:
                continue
            outs.append(
                _logistic().fit(self.Z["speaker"][tr], s[tr]).decision_function(self.Z["corpus"][self.corpora == held])
            )
        return _sig(np.mean(outs, axis=0))

    def self_trained(self, dim: str, held: str) -> np.ndarray:
        """Refit with the held-out files the model is surest of (25, 50, 75 %) labelled by its own guesses."""
        s = self.side(dim)
        tr, te = (self.corpora != held) & (s >= 0), self.corpora == held
        Xtr, Xte = self.Z["speaker"][tr], self.Z["corpus"][te]
        p = _logistic().fit(Xtr, s[tr]).predict_proba(Xte)[:, 1]
        for share in (0.25, 0.5, 0.75):
            z, n = _logit(p), int(share * len(p) / 2)
            hi, lo = np.argsort(-z)[:n], np.argsort(z)[:n]
            Xa, ya = np.vstack([Xtr, Xte[hi], Xte[lo]]), np.concatenate([s[tr], np.ones(n), np.zeros(n)])
            p = _logistic().fit(Xa, ya).predict_proba(Xte)[:, 1]
        return p


def em_prior(p: np.ndarray, train_prior: float = 0.5, iters: int = 100) -> np.ndarray:
    """Saerens, Latinne and Decaestecker (2002): re-estimate the class prior on unlabelled rows, adjust p to it."""
    prior, q = train_prior, p
    for _ in range(iters):
        a, b = prior / train_prior * p, (1 - prior) / (1 - train_prior) * (1 - p)
        q = a / (a + b)
        if abs(q.mean() - prior) < 1e-6:
            break
        prior = float(q.mean())
    return q


def mean_of(*fns: Variant, logit: bool = False) -> Variant:
    def fn(dim: str, held: str) -> np.ndarray:
        ps = [f(dim, held) for f in fns]
        return _sig(np.mean([_logit(p) for p in ps], axis=0)) if logit else np.mean(ps, axis=0)

    return fn


def variants(b: Bench) -> dict[str, Variant]:
    """Every variant, in the order the tables print them."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, Variant] = {
        "read off the four-class model": lambda d, h: b.read_off(d, h),
        "read off, valence over the sided classes (happy / (happy + angry + sad))": lambda d, h: b.read_off(
            d, h, renormalised=True
        ),
    }
    for C in (0.001, 0.01, 0.1):
        for balanced in (False, True):
            out[f"own, C={C}{', balanced' if balanced else ''}"] = b.own(C=C, balanced=balanced)
    out["own, C=0.01, balanced, prosody+spectral+logmel"] = b.own(cols=b.arousal_cols)
    for g, cols in b.group_cols.items():
        out[f"own, C=0.01, balanced, {g} alone"] = b.own(cols=cols)
    out["own, C=0.01, balanced, without logmel_stats"] = b.own(cols=~b.group_cols["logmel_stats"])
    out["own, C=0.01, each training corpus and side weighted alike"] = b.own(weights="corpus")
    for C in (0.001, 0.003, 0.01):
        out[f"own, C={C}, balanced, training standardised by corpus (as the test)"] = b.own(C=C, train="corpus")
    spk_or_corpus = np.array(
        [f"s:{s}" if s and o else f"c:{c}" for s, c, o in zip(b.speakers, b.corpora, b.ok, strict=True)]
    )
    ranks = {"speaker": _rank_normal(b.X, spk_or_corpus), "corpus": _rank_normal(b.X, b.corpora)}
    out["own, rank-normal features, training by speaker"] = b.own(Z=ranks)
    out["own, rank-normal features, training by corpus"] = b.own(Z=ranks, train="corpus")
    out["multinomial over every emotion, summed by side"] = b.multinomial()
    out["multinomial over every emotion, training by corpus"] = b.multinomial("corpus")
    out["soft targets (circumplex placement of every emotion)"] = b.soft()
    out["soft targets, training by corpus"] = b.soft(train="corpus")
    for alpha in (100.0, 1000.0):
        out[f"ridge on the placement (alpha {alpha:g}), Platt on the training rows"] = b.ridge(alpha)
    out["MLP (32,), alpha 10"] = b.sklearn(
        lambda: make_pipeline(StandardScaler(), MLPClassifier((32,), alpha=10.0, max_iter=500, random_state=0))
    )
    out["gradient boosting (depth 3, 200 trees, balanced)"] = b.sklearn(
        lambda: HistGradientBoostingClassifier(max_depth=3, max_iter=200, learning_rate=0.05,
                                               class_weight="balanced", random_state=0)
    )  # fmt: skip
    out["mean logit of one model per training corpus"] = b.per_corpus
    out["self-training on the held-out corpus (25/50/75 % surest)"] = b.self_trained
    out["mean of read-off and own (C=0.01, balanced)"] = mean_of(out["read off the four-class model"], b.own())
    out["mean of own by speaker and own by corpus"] = mean_of(b.own(), b.own(train="corpus"))
    out["mean of own by speaker, by corpus, soft targets and read-off (logits)"] = mean_of(
        b.own(), b.own(train="corpus"), b.soft(), lambda d, h: b.read_off(d, h, renormalised=True), logit=True
    )
    shipped_untempered = mean_of(b.soft(), lambda d, h: b.read_off(d, h, renormalised=True))
    out["mean of soft targets and read-off, no temperature"] = shipped_untempered
    out["… its class prior re-estimated by EM on the held-out corpus"] = lambda d, h: em_prior(shipped_untempered(d, h))
    out["diagnostic: own, the held-out corpus standardised by its speaker ids"] = b.own(test="speaker")
    out["diagnostic: mean of soft targets and read-off, its threshold chosen on the held-out labels"] = best_threshold(
        b, shipped_untempered
    )
    return out


def best_threshold(b: Bench, fn: Variant) -> Variant:
    """Diagnostic: ``fn`` with the threshold that is best on the held-out corpus's own labels moved to 0.5."""

    def shifted(dim: str, held: str) -> np.ndarray:
        p, side = fn(dim, held), b.side(dim)[b.corpora == held]
        m = side >= 0
        best = max(np.linspace(0.02, 0.98, 97), key=lambda t: balanced_accuracy(side[m], (p[m] >= t).astype(float)))
        return _sig(_logit(p) - _logit(np.array(best)))

    return shifted


def gender_variant(b: Bench) -> dict[str, Variant]:
    """Diagnostic: each corpus standardised within its speakers' gender (known here, not in a job)."""
    genders = _genders(b.paths, b.corpora)
    by_gender = _standardised(b.X, np.array([f"{c}:{g}" for c, g in zip(b.corpora, genders, strict=True)]),
                              b.speakers, b.ok, "corpus")  # fmt: skip
    Z = {"speaker": b.Z["speaker"], "corpus": by_gender}
    return {"diagnostic: own, the held-out corpus standardised within each gender": b.own(Z=Z)}


def score(b: Bench, fn: Variant) -> dict[str, dict[str, tuple[float, float, int]]]:
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for dim in ("arousal", "valence"):
        s = b.side(dim)
        for held in b.names:
            te = b.corpora == held
            truth = s[te]
            m = truth >= 0
            if len(set(truth[m].tolist())) < 2:
                continue
            p = fn(dim, held)[m]
            out.setdefault(dim, {})[held] = (balanced_accuracy(truth[m], p), ece(truth[m], p), int(m.sum()))
    return out


def shipped_rows(b: Bench, log) -> dict[str, dict[str, dict[str, tuple[float, float, int]]]]:  # type: ignore[no-untyped-def]
    """What ships, as the train job measures it (batchser.model.dimensions.evaluate_dimensions)."""
    ev, _ = evaluate_dimensions(
        b.X, b.y, b.corpora, b.speakers, b.ok, classes=sorted(EMOTIONS), modes=("corpus", "speaker"),
        min_files=10, fit_kw=SHIPPED_FIT, n_jobs=2, on_fold=lambda c: log(f"  shipped: {c}"),
    )  # fmt: skip
    rows: dict[str, dict[str, dict[str, tuple[float, float, int]]]] = {}
    for mode, what in (("corpus", "what ships"), ("speaker", "what ships, diagnostic: with speaker ids")):
        name = f"{what}: mean of soft targets and read-off, temperature fitted inside the training corpora"
        for dim in ("arousal", "valence"):
            per = ev[dim]["modes"][mode]["per_corpus"]
            rows.setdefault(name, {})[dim] = {h: (r["balanced_accuracy"], r["ece"], r["n"]) for h, r in per.items()}
    return rows


def print_tables(names: list[str], rows: dict[str, dict[str, dict[str, tuple[float, float, int]]]]) -> None:
    for dim in ("arousal", "valence"):
        print(f"\n{dim}: balanced accuracy on each held-out corpus (ECE), no speaker ids unless said\n")
        print("| variant | " + " | ".join(names) + " | mean | worst | mean ECE | worst ECE |")
        print("|---|" + "---|" * (len(names) + 4))
        for variant, by_dim in rows.items():
            per = by_dim.get(dim, {})
            if not per:
                continue
            ba, eces = [per[h][0] for h in names if h in per], [per[h][1] for h in names if h in per]
            cells = [f"{per[h][0]:.1%} ({per[h][1]:.2f})" if h in per else "-" for h in names]
            print(f"| {variant} | " + " | ".join(cells) + f" | **{np.mean(ba):.1%}** | {min(ba):.1%} | "
                  f"{np.mean(eces):.3f} | {max(eces):.3f} |")  # fmt: skip


def cost(X: np.ndarray, cache: Path, log) -> None:  # type: ignore[no-untyped-def]
    """Seconds of predict_dimensions on a warm job's files (``X``: RAVDESS) against the job's own wall time."""
    from batchser.model import load_model, read_meta

    meta = read_meta(MODEL)
    model = load_model(MODEL, feature_fingerprint=meta.feature_fingerprint, classes=meta.classes)
    if not model.dimensions:
        print(f"\n{MODEL.name} has no arousal and valence networks: no cost to measure")
        return
    with tempfile.TemporaryDirectory(prefix="batchser-dims-") as tmp:
        job = shipped_job(Path(tmp) / "job.yaml", "dims-cost", [{"path": str(CORPORA / "ravdess")}],
                          cache=cache, out=Path(tmp) / "out")  # fmt: skip
        run_measured(job)  # the cache warm for these files, and the page cache
        walls = [run_measured(job)[0] for _ in range(3)]
    g = group_rows(X, mode="corpus", corpora=np.full(len(X), "ravdess"), min_files=10)
    stats = g.stats(X)
    proba, _ = model.predict_proba_by_speaker(X, g.keys, stats)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        model.predict_dimensions(X, g.keys, stats, proba=proba)
        times.append(time.perf_counter() - t)
    job_s, dims_s = statistics.median(walls), statistics.median(times)
    log(f"  cost measured on {len(X)} files")
    print(
        f"\nwarm labelling job of {len(X)} RAVDESS files with {MODEL.name}: {job_s:.2f} s (median of 3); "
        f"predict_dimensions on its rows: {dims_s * 1e3:.1f} ms (median of 5), {dims_s / job_s:.2%} of the job"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default="result/cache", help="feature cache, from the project root (the train job's)")
    ap.add_argument("--per-class", type=int, default=None, help="only this many files per corpus and emotion")
    ap.add_argument("--no-cost", action="store_true", help="leave out the timing of predict_dimensions")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not have_pooled():
        return 2
    from threadpoolctl import threadpool_limits

    X, y, corpora, speakers, ok, paths = labelled_features(
        SHIPPED, log, other=True, cache=args.cache, per_class=args.per_class
    )
    log(f"  {len(y)} files, {len(set(corpora.tolist()))} corpora")
    with threadpool_limits(1):  # one BLAS thread: several times faster on these few thousand rows
        b = Bench(X, y, corpora, speakers, ok, paths, log)
        rows = shipped_rows(b, log)
        for name, fn in {**variants(b), **gender_variant(b)}.items():
            t = time.perf_counter()
            rows[name] = score(b, fn)
            log(f"  {name}: {time.perf_counter() - t:.1f} s")
    print_tables(b.names, rows)
    if not args.no_cost:
        cost(X[corpora == "ravdess"], ROOT / args.cache, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
