"""Scaling: does throughput hold, and memory stay flat, from 1,000 to 20,000 files?

    python bench/scaling.py                          # 1000, 5000, 20000 files
    python bench/scaling.py --sizes 1000,2000 --quiet

Each archive is made from RAVDESS clips (../shared/corpora/ravdess): file i is a
2-second excerpt of clip i mod 1440 at an offset that depends on i, with a
little noise, written as 16-bit WAV, so every file has distinct content (the
cache cannot collapse copies) and all archives have the same clip mix. For
each size, one cold `python -m batchser run` with an empty cache in a fresh
process, 2 workers; the job's own summary.json gives the feature stage.

Columns: files/s over the feature stage and over the whole run (relative to
the smallest size), peak RSS of the job's process tree (from /usr/bin/time)
relative to the smallest size, and overhead: 1 - (files x in-process seconds
per file / workers) / feature-stage seconds, where the per-file time is
measured in this process on up to 1,000 files spread over the first archive,
one BLAS thread. It counts everything the job does beyond pure extraction,
split in two: "hashing" (the job's hash stage: SHA-256 of every new file, the
cache key) and "engine" (the rest: worker start-up, task dispatch and results
through joblib, cache writes, waiting on the slowest worker).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from _common import MODEL, RAVDESS, have, progress_log, shipped_features

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


def per_file_seconds(files: list[Path]) -> float:
    from threadpoolctl import threadpool_limits

    from batchser.engine import ExtractTask, extract_one, keep_freed_memory
    from batchser.features import FeatureSpec
    from batchser.segments import SegmentSpec

    spec = FeatureSpec(tuple(shipped_features()), SR)  # what the job below extracts
    keep_freed_memory()  # as in the job's workers
    with threadpool_limits(1):
        extract_one(ExtractTask(str(files[0]), "warm"), spec=spec, segments=SegmentSpec())
        t = time.perf_counter()
        for i, f in enumerate(files):
            extract_one(ExtractTask(str(f), str(i)), spec=spec, segments=SegmentSpec())
    return (time.perf_counter() - t) / len(files)


def run_job(folder: Path, work: Path, n_jobs: int) -> tuple[float, float, dict]:
    job = {
        "name": "scaling",
        "inputs": [{"path": str(folder)}],
        "emotions": ["angry", "sad", "neutral", "happy"],
        "cache": str(work / "cache"),
        "engine": {"backend": "loky", "n_jobs": n_jobs},
        "model": {"path": str(MODEL)},
        "output": {"dir": str(work / "out"), "formats": ["parquet"]},
    }
    manifest = work / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    t = time.perf_counter()
    res = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "batchser", "run", "-q", str(manifest)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(res.stderr)
    summary = json.loads((work / "out" / "summary.json").read_text())
    return wall, int(res.stderr.strip().splitlines()[-1]) / 1024, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--n-jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args()
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
    with tempfile.TemporaryDirectory(prefix="batchser-scaling-") as tmp:
        for n in sizes:
            folder, work = Path(tmp) / f"in-{n}", Path(tmp) / f"work-{n}"
            folder.mkdir()
            work.mkdir()
            log(f"{n} files: writing …")
            make_archive(folder, n, clips)
            if not rows:
                every = sorted(folder.rglob("*.wav"))
                sample = every[:: max(1, len(every) // 1000)]  # spread: clips differ in cost
                per_file = per_file_seconds(sample)
                log(f"in-process extraction: {per_file * 1000:.2f} ms per file")
            log(f"{n} files: cold run …")
            wall, rss, s = run_job(folder, work, args.n_jobs)
            assert s["extracted"] == n and s["failed"] == 0, s
            st = s["stage_seconds"]
            stage = sum(st[k] for k in ("discover", "open_cache", "hash", "features", "close_cache"))
            pure = n * per_file / args.n_jobs
            rows.append((n, wall, stage, rss, 1 - pure / stage, st["hash"] / stage))
            subprocess.run(["rm", "-rf", str(folder), str(work)], check=True)
    n0, _, st0, r0, _, _ = rows[0]
    print(f"machine: {os.cpu_count()} cores, {args.n_jobs} workers; in-process {per_file * 1000:.2f} ms per file")
    head = [
        "files",
        "wall s",
        "stage s",
        "files/s",
        "vs first",
        "peak RSS",
        "vs first",
        "overhead",
        "hashing",
        "engine",
    ]
    print(" ".join(f"{h:>9}" for h in head))
    for n, wall, stage, rss, over, hashing in rows:
        cells = [
            f"{n}",
            f"{wall:.1f}",
            f"{stage:.1f}",
            f"{n / stage:.0f}",
            f"{(n / stage) / (n0 / st0):.2f}x",
            f"{rss:.0f} MiB",
            f"{rss / r0:.2f}x",
            f"{over:.0%}",
            f"{hashing:.0%}",
            f"{over - hashing:.0%}",
        ]
        print(" ".join(f"{c:>9}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
