"""Does training on augmented copies help labels hold on corpora the model never heard?

    python bench/augment.py          # ../shared/corpora; about 3 minutes on 2 cores

The shipped configuration (default + voice_stats features, logistic C=0.01, temperature
calibration), leave one corpus out over the four shared corpora as bench/transfer.py does,
with the training corpora's files also added as augmented copies: speed 0.9x and 1.1x
(soxr resampling: pitch and tempo move together; each copy of a speaker is a new
pseudo-speaker for normalisation) and white noise at 15 dB SNR. The held-out corpus is
never augmented and never trained on. The original files' features come from
result/bench-cache; the copies' are extracted here (not cached).
"""

from __future__ import annotations

import argparse
import sys
import time

import joblib
import numpy as np
import soxr
from _common import have_pooled, progress_log
from sklearn.metrics import balanced_accuracy_score  # UAR: recall averaged over the classes
from transfer import SHIPPED, SHIPPED_FIT, labelled_features

from batchser.audio import load
from batchser.features import FeatureSpec, extract
from batchser.model.evaluate import calibration_table, fit_normalized, predict_adapted

NAMES = SHIPPED  # default + voice_stats
KINDS = ("slow", "fast", "noise")
MODES = ("none", "corpus", "speaker")
FIT = SHIPPED_FIT  # logistic C=0.01, temperature-calibrated
VARIANTS = {"no augmentation": (), "noise": ("noise",), "speed": ("slow", "fast"), "speed + noise": KINDS}


def copies(path: str, seed: int, spec: FeatureSpec) -> np.ndarray:
    """Feature rows of the file's slow, fast and noisy copies."""
    x = load(path, sample_rate=spec.sample_rate).samples.astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, np.sqrt(np.mean(x**2) / 10**1.5), x.size)
    sr = spec.sample_rate
    made = (soxr.resample(x, sr, sr / 0.9), soxr.resample(x, sr, sr / 1.1), x + noise)
    return np.stack([extract(z.astype(np.float32), spec=spec) for z in made])


def fold(held: str, use: tuple[str, ...], data: dict[str, np.ndarray], classes: list[str]) -> dict[str, tuple]:
    X, A, y, c, s, ok = (data[k] for k in ("X", "A", "y", "c", "s", "ok"))
    tr, te = c != held, c == held
    parts = [(X[tr], s[tr])]
    for k in use:  # a speed-changed speaker is another speaker; noise keeps the voice
        renamed = np.array([f"{v}#{k}" if v and k != "noise" else v for v in s[tr]], dtype=object)
        parts.append((A[tr, KINDS.index(k)], renamed))
    n = len(parts)
    plain, norm = fit_normalized(
        np.concatenate([p[0] for p in parts]),
        np.tile(y[tr], n),
        corpora=np.tile(c[tr], n),
        speakers=np.concatenate([p[1] for p in parts]),
        speaker_ok=np.tile(ok[tr], n),
        min_files=10,
        fit_kw=FIT,
    )
    out = {}
    for mode in MODES:
        proba, _ = predict_adapted(
            plain, norm, X[te], mode=mode, corpora=c[te], speakers=s[te] if mode == "speaker" else None,
            speaker_ok=ok[te], min_files=10, classes=classes,
        )  # fmt: skip
        pred = np.asarray(classes)[proba.argmax(axis=1)]
        out[mode] = (balanced_accuracy_score(y[te], pred), calibration_table(proba, y[te], classes)["ece"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not have_pooled():
        return 2
    X, y, c, s, ok, paths = labelled_features(NAMES, log)
    spec = FeatureSpec(NAMES, 16000)
    log(f"augmenting {len(paths)} files three ways …")
    t = time.perf_counter()
    A = np.stack(
        joblib.Parallel(n_jobs=-1, batch_size=32)(joblib.delayed(copies)(p, i, spec) for i, p in enumerate(paths))
    )
    log(f"  {time.perf_counter() - t:.0f} s")
    data = {"X": X, "A": np.nan_to_num(A.astype(np.float64)), "y": y, "c": c, "ok": ok,
            "s": np.array([v or "" for v in s], dtype=object)}  # fmt: skip
    classes = sorted(set(y.tolist()))
    corpora = sorted(set(c.tolist()))
    print("Leave one corpus out, 4 emotions, shipped configuration: mean UAR (worst corpus; largest ECE)\n")
    print("| training copies | " + " | ".join(MODES) + " |")
    print("|---|" + "---|" * len(MODES))
    for name, use in VARIANTS.items():
        log(f"{name} …")
        folds = joblib.Parallel(n_jobs=2)(joblib.delayed(fold)(h, use, data, classes) for h in corpora)
        cells = []
        for mode in MODES:
            u = [f[mode][0] for f in folds]
            cells.append(f"{np.mean(u):.1%} ({min(u):.1%}; {max(f[mode][1] for f in folds):.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
