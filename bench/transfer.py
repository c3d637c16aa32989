"""Labels on corpora the model never heard: every feature set, classifier and adaptation tried,
leave one corpus out over the four shared corpora, with each feature set's extraction cost.

    python bench/transfer.py             # ../shared/corpora, about 10 minutes on 2 cores (ComParE is the slow part)
    python bench/transfer.py --quick     # without openSMILE's ComParE_2016 (2 minutes)

Every row is batchser.model.evaluate.evaluate_corpora: for each of nemo, ravdess, savee and
urdu, fit on the other three, label the fourth; UAR (unweighted average recall) on 4 emotions.
Adaptation: none (raw features), corpus (each held-out corpus standardised over its own
files), cluster (pseudo-speakers found by k-means), speaker (its speaker ids; urdu, whose
speakers each show one emotion, by corpus). Training groups are always speakers (urdu: the
corpus). Features come through batchser's own extraction and cache (result/bench-cache).

The MLP is left out on ComParE's 6,373 dimensions (32 fits of a 300-unit network on that
input would take hours on 2 cores).

The cost column times the extractor alone on the same 120 files (30 per corpus), decoded
once, in this process on one core: the median of 3 passes, and the ratio against openSMILE's
ComParE_2016 functionals measured in the same run (the issue asks for at least 5x).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import numpy as np
import yaml
from _common import ROOT, have_pooled, progress_log
from accuracy import PARAMS

from batchser.audio import load
from batchser.cache import FeatureStore
from batchser.discover import discover
from batchser.features import FeatureSpec, extract
from batchser.featurize import Executors, file_features
from batchser.inputs import input_paths
from batchser.job import JobSummary, _segment_spec
from batchser.manifest import parse_manifest
from batchser.model.evaluate import evaluate_corpora
from batchser.recipe import SHIPPED as RECIPE

JOB = ROOT / "jobs" / "train-pooled.yaml"
DEFAULT = ("mfcc_stats", "logmel_stats", "spectral_stats", "prosody")
SETS: dict[str, tuple[str, ...]] = {
    "previous default (178)": DEFAULT,
    "voice_stats alone (36)": ("voice_stats",),
    "default + voice_stats (214, shipped)": RECIPE.features,
    "eGeMAPSv02 (88, openSMILE)": ("egemaps",),
    "default + eGeMAPSv02 (266)": (*DEFAULT, "egemaps"),
    "ComParE_2016 (6373, openSMILE)": ("compare",),
}
CLASSIFIERS = {
    "logistic C=0.01": {"classifier": RECIPE.classifier, "C": RECIPE.C},  # the shipped model's
    "MLP (tutorial)": {"classifier": "mlp", "C": 0.01},
}
MLP = PARAMS  # the librosa tutorial recipe's
SHIPPED = SETS["default + voice_stats (214, shipped)"]


def fit_kw(classifier: dict[str, object]) -> dict[str, object]:
    """fit_model keywords for a row: the tutorial recipe's MLP parameters, temperature calibration, ``classifier``."""
    return {"params": MLP, "random_state": RECIPE.random_state, "calibration": RECIPE.calibration, **classifier}


SHIPPED_FIT = fit_kw(CLASSIFIERS["logistic C=0.01"])  # the shipped model's classifier
MODES = ("none", "corpus", "cluster", "speaker")


def labelled_features(  # type: ignore[no-untyped-def]
    names: tuple[str, ...],
    log,
    *,
    other: bool = False,
    cache: str = "result/bench-cache",
    per_class: int | None = None,
) -> tuple[np.ndarray, ...]:
    """(X, y, corpora, speakers, speaker_ok, paths) of the pooled job's labelled files for ``names``.

    ``other``: keep files labelled with an emotion outside the job's (fearful,
    calm, disgust, surprised: what "none of these" must catch) as well.
    ``per_class``: only the first that many files (by path) of each corpus and
    emotion, before any extraction (smoke tests).
    """
    job = yaml.safe_load(JOB.read_text())
    job |= {"features": list(names), "cache": cache}
    m = parse_manifest(yaml.safe_dump(job), base_dir=JOB.parent, source=str(JOB))
    spec = FeatureSpec(names, m.audio.sample_rate)
    paths, fns = input_paths(m)
    files = discover(paths)
    labels = [fns[f.input_index](f.path) for f in files]
    if per_class is not None:
        seen: dict[tuple[str | None, str | None], int] = {}
        keep_files = []
        for i in sorted(range(len(files)), key=lambda i: str(files[i].path)):
            key = (labels[i].corpus, labels[i].emotion)
            seen[key] = seen.get(key, 0) + 1
            if labels[i].emotion and seen[key] <= per_class:
                keep_files.append(i)
        files, labels = [files[i] for i in keep_files], [labels[i] for i in keep_files]
    log(f"  extracting {', '.join(names)} for {len(files)} files (cached after the first run)")
    with contextlib.ExitStack() as stack, FeatureStore(m.cache_dir, spec, segments=_segment_spec(m)) as store:
        out = file_features(m, files, store, JobSummary(m.name), executors=Executors(stack, m))
    keep = [
        i
        for i, (o, lab) in enumerate(zip(out, labels, strict=True))
        if o.ok and lab.emotion and (other or lab.emotion in m.emotions)
    ]
    allowed = {i.corpus_name: i.speaker_normalization for i in m.inputs}
    return (
        np.nan_to_num(np.stack([out[i].record.vector for i in keep]).astype(np.float64)),
        np.array([labels[i].emotion for i in keep]),
        np.array([labels[i].corpus for i in keep]),
        np.array([labels[i].group or "" for i in keep], dtype=object),
        np.array([allowed[labels[i].corpus] for i in keep]),
        [str(files[i].path) for i in keep],
    )


def cost_ms(names: tuple[str, ...], signals: list[np.ndarray]) -> float:
    """Median over 3 passes of the extractor's milliseconds per file, one core, audio already decoded."""
    spec = FeatureSpec(names, 16000)
    extract(signals[0], spec=spec)  # warm: filter banks, openSMILE's configuration
    passes = []
    for _ in range(3):
        t = time.perf_counter()
        for y in signals:
            extract(y, spec=spec)
        passes.append((time.perf_counter() - t) / len(signals) * 1e3)
    return statistics.median(passes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="leave out ComParE_2016 and the MLP rows")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not have_pooled():
        return 2
    try:
        import opensmile  # noqa: F401

        sets = dict(SETS)
    except ImportError:
        print("opensmile is not installed (pip install 'batchser[opensmile]'): its rows are left out", file=sys.stderr)
        sets = {k: v for k, v in SETS.items() if "openSMILE" not in k and "eGeMAPS" not in k}
    if args.quick:
        sets = {k: v for k, v in sets.items() if "compare" not in v}
    classifiers = {k: v for k, v in CLASSIFIERS.items() if not (args.quick and v["classifier"] == "mlp")}

    rows, costs = [], {}
    sample: list[np.ndarray] | None = None
    for label, names in sets.items():
        log(f"{label}")
        X, y, c, s, ok, paths = labelled_features(names, log)
        if sample is None:  # the same 120 files for every cost
            picks = [i for corpus in sorted(set(c.tolist())) for i in np.flatnonzero(c == corpus)[:30]]
            sample = [load(paths[i], sample_rate=16000).samples for i in picks]
        costs[label] = cost_ms(names, sample)
        for cname, ckw in classifiers.items():
            if ckw["classifier"] == "mlp" and X.shape[1] > 1000:
                log(f"  {cname} left out on {X.shape[1]} dims (hours of fitting on 2 cores)")
                continue
            r = evaluate_corpora(X, y, c, s, ok, modes=MODES, min_files=10, fit_kw=fit_kw(ckw), n_jobs=2)
            rows.append((label, X.shape[1], cname, r))
    compare_ms = next((v for k, v in costs.items() if "ComParE" in k), None)

    corpora = rows[0][3]["corpora"]
    print("\nLeave one corpus out, 4 emotions: mean UAR over the held-out corpora (worst corpus in brackets)\n")
    print("| features | dims | ms/file | vs ComParE | classifier | " + " | ".join(MODES) + " |")
    print("|---|---|---|---|---|" + "---|" * len(MODES))
    for label, dim, cname, r in rows:
        ms = costs[label]
        ratio = f"{compare_ms / ms:.1f}x faster" if compare_ms and "ComParE" not in label else "-"
        cells = [f"{r['modes'][m]['mean']['uar']:.1%} ({r['modes'][m]['mean']['worst_uar']:.1%})" for m in MODES]
        print(f"| {label} | {dim} | {ms:.1f} | {ratio} | {cname} | " + " | ".join(cells) + " |")
    best = max(rows, key=lambda t: t[3]["modes"]["speaker"]["mean"]["uar"])
    print(f"\nPer held-out corpus for the best row ({best[0]}, {best[2]}): UAR (ECE)\n")
    print("| adaptation | " + " | ".join(corpora) + " |")
    print("|---|" + "---|" * len(corpora))
    for m in MODES:
        per = best[3]["modes"][m]["per_corpus"]
        print(
            f"| {m} | "
            + " | ".join(f"{per[k]['uar']:.1%} ({per[k]['calibration']['ece']:.2f})" for k in corpora)
            + " |"
        )
    if compare_ms:
        shipped = costs["default + voice_stats (214, shipped)"]
        print(
            f"\nshipped features {shipped:.1f} ms/file, ComParE_2016 {compare_ms:.1f} ms/file: "
            f"{compare_ms / shipped:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
