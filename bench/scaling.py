"""Scaling: does throughput hold, and memory stay flat, from 1,000 to 20,000 files?

    python bench/scaling.py                          # 1000, 5000, 20000 files
    python bench/scaling.py --sizes 1000,20000 --features tutorial
    python bench/scaling.py --sizes 1000,20000 --features tutorial --chroma-tuning 0.0
    python bench/scaling.py --sizes 1000,2000 --quiet

Each archive is made from RAVDESS clips (../shared/corpora/ravdess): file i is a
2-second excerpt of clip i mod 1440 at an offset that depends on i, with a
little noise, written as 16-bit WAV, so every file has distinct content (the
cache cannot collapse copies) and all archives have the same clip mix. For
each size, one cold `python -m batchser run` with an empty cache in a fresh
process, 2 workers; the job's own summary.json gives the feature stage.
`--features shipped` (default) extracts what a default job does; `--features
tutorial` the librosa tutorial recipe's groups, labelled with a model trained on them (untimed), and
adds the librosa tutorial recipe's librosa loop as a baseline; `--chroma-tuning 0.0` pins chroma's
tuning in the job (manifest chroma_tuning), the baseline staying the librosa tutorial recipe's loop.

Columns: files/s over the feature stage (relative to the smallest size); peak
RSS of the job's process tree (from /usr/bin/time), relative to the smallest
size and as KB per extra file; overhead: 1 - (files x in-process seconds per
file / workers) / feature-stage seconds, where the per-file time is measured
in this process on up to 1,000 files spread over the first archive, one BLAS
thread. It counts everything the job does beyond pure extraction, split in
two: "hashing" (the job's hash stage: SHA-256 of every new file, the cache
key) and "engine" (the rest: worker start-up, task dispatch and results
through joblib, cache writes, waiting on the slowest worker). "vs tutorial"
(tutorial features only): the tutorial loop's seconds per file, measured on the same
sample in this process, times the files, over the job's whole wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
from _common import (
    EMOTIONS,
    MODEL,
    RAVDESS,
    TUTORIAL_FEATURES,
    feature_stage,
    have,
    progress_log,
    shipped_features,
    train_tutorial_model,
    tutorial_features,
)
from _common import run_job as run_job_in_process

SR = 16000


def make_archive(folder: Path, n: int, clips: list[np.ndarray]) -> None:
    rng = np.random.default_rng(n)
    for i in range(n):
        clip = clips[i % len(clips)]
        span = 2 * SR
        off = (i // len(clips)) * 997 % max(1, len(clip) - span)
        y = clip[off : off + span] + rng.normal(0, 1e-4, span).astype(np.float32)
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        sf.write(sub / f"f{i:06d}.wav", y, SR, subtype="PCM_16")


def per_file_seconds(files: list[Path], features: list[str], chroma_tuning: float | None) -> float:
    from threadpoolctl import threadpool_limits

    from batchser.engine import ExtractTask, extract_one, keep_freed_memory
    from batchser.features import FeatureSpec
    from batchser.segments import SegmentSpec

    spec = FeatureSpec(tuple(features), SR, chroma_tuning=chroma_tuning)  # what the job below extracts
    keep_freed_memory()  # as in the job's workers
    with threadpool_limits(1):
        extract_one(ExtractTask(str(files[0]), "warm"), spec=spec, segments=SegmentSpec())
        t = time.perf_counter()
        for i, f in enumerate(files):
            extract_one(ExtractTask(str(f), str(i)), spec=spec, segments=SegmentSpec())
    return (time.perf_counter() - t) / len(files)


def run_job(
    folder: Path, work: Path, n_jobs: int, *, model: Path, features: list[str], chroma_tuning: float | None
) -> tuple[float, float, dict]:
    job = {
        "name": "scaling",
        "chroma_tuning": chroma_tuning,
        "inputs": [{"path": str(folder)}],
        "emotions": EMOTIONS,
        "features": features,
        "cache": str(work / "cache"),
        "engine": {"backend": "loky", "n_jobs": n_jobs},
        "model": {"path": str(model)},
        "output": {"dir": str(work / "out"), "formats": ["parquet"]},
    }
    return run_job_in_process(job, work / "job.yaml")


def tutorial_loop_seconds(files: list[Path]) -> float:
    """Seconds per file of the notebook's librosa loop, one process, after an untimed first call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tutorial_features(str(files[0]))  # numba compiles librosa's kernels on first use
        t = time.perf_counter()
        for f in files:
            tutorial_features(str(f))
    return (time.perf_counter() - t) / len(files)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--n-jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument(
        "--features",
        choices=["shipped", "tutorial"],
        default="shipped",
        help="the shipped model's features (a default job), or the librosa tutorial recipe's with its loop as baseline",
    )
    ap.add_argument(
        "--chroma-tuning", type=float, default=None, help="with --features tutorial: pin chroma's tuning (e.g. 0.0)"
    )
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args()
    if args.chroma_tuning is not None and args.features != "tutorial":
        ap.error("--chroma-tuning needs --features tutorial (the shipped features have no chroma)")
    if not have(RAVDESS, "the RAVDESS corpus"):
        return 2
    log = progress_log(args.quiet)
    sizes = [int(s) for s in args.sizes.split(",")]
    clips = []
    for p in sorted(RAVDESS.rglob("*.flac")):
        y, sr = sf.read(p, dtype="float32", always_2d=True)
        if sr == SR and len(y) > 2 * SR:
            clips.append(y.mean(axis=1))
    rows = []
    tutorial_pf = float("nan")
    with tempfile.TemporaryDirectory(prefix="batchser-scaling-") as tmp:
        if args.features == "tutorial":
            log("training a model on the tutorial recipe's features (untimed) …")
            features, model = TUTORIAL_FEATURES, train_tutorial_model(Path(tmp), chroma_tuning=args.chroma_tuning)
        else:
            features, model = shipped_features(), MODEL
        for n in sizes:
            folder, work = Path(tmp) / f"in-{n}", Path(tmp) / f"work-{n}"
            folder.mkdir()
            work.mkdir()
            log(f"{n} files: writing …")
            make_archive(folder, n, clips)
            if not rows:
                every = sorted(folder.rglob("*.wav"))
                sample = every[:: max(1, len(every) // 1000)]  # spread: clips differ in cost
                per_file = per_file_seconds(sample, features, args.chroma_tuning)
                log(f"in-process extraction: {per_file * 1000:.2f} ms per file")
                if args.features == "tutorial":
                    tutorial_pf = tutorial_loop_seconds(sample)
                    log(f"tutorial loop: {tutorial_pf * 1000:.2f} ms per file")
            log(f"{n} files: cold run …")
            wall, rss, s = run_job(
                folder, work, args.n_jobs, model=model, features=features, chroma_tuning=args.chroma_tuning
            )
            assert s["extracted"] == n and s["failed"] == 0, s
            stage = feature_stage(s)
            pure = n * per_file / args.n_jobs
            rows.append((n, wall, stage, rss, 1 - pure / stage, s["stage_seconds"]["hash"] / stage))
            subprocess.run(["rm", "-rf", str(folder), str(work)], check=True)
    n0, _, st0, r0, _, _ = rows[0]
    print(
        f"machine: {os.cpu_count()} cores, {args.n_jobs} workers; {args.features} features"
        + ("" if args.chroma_tuning is None else f" (chroma tuning pinned at {args.chroma_tuning})")
        + "; in-process "
        f"{per_file * 1000:.2f} ms per file"
        + (f"; tutorial loop {tutorial_pf * 1000:.2f} ms per file" if tutorial_pf == tutorial_pf else "")
    )
    head = ["files", "wall s", "stage s", "files/s", "vs first", "peak RSS", "vs first", "KB/file"]
    head += ["overhead", "hashing", "engine"] + (["vs tutorial"] if tutorial_pf == tutorial_pf else [])
    widths = [max(9, len(h)) for h in head]
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for n, wall, stage, rss, over, hashing in rows:
        cells = [
            f"{n}",
            f"{wall:.1f}",
            f"{stage:.1f}",
            f"{n / stage:.0f}",
            f"{(n / stage) / (n0 / st0):.2f}x",
            f"{rss:.0f} MiB",
            f"{rss / r0:.2f}x",
            f"{(rss - r0) * 1024 / (n - n0):.1f}" if n > n0 else "-",  # peak RSS growth per extra file
            f"{over:.0%}",
            f"{hashing:.0%}",
            f"{over - hashing:.0%}",
        ]
        if tutorial_pf == tutorial_pf:
            cells.append(f"{n * tutorial_pf / wall:.1f}x")  # the tutorial loop's time for these files over the job's
        print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
