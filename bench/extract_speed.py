"""Extraction speed: the seed's loop, the floor, and batchser cold and warm, in one run.

    python bench/extract_speed.py                      # both corpora in ../shared/corpora
    python bench/extract_speed.py --corpus ravdess-48k --repeats 3

Rows, all on the same files in this run:
  seed loop      the notebook: librosa.load(sr=16000), then mfcc(y), chroma_stft(S=|stft|),
                 melspectrogram(y), means over frames; one file after another, one process.
  floor (1 core) decode + resample + one STFT per file and nothing else, one process, one
                 BLAS thread: the work no extractor can skip.
  batchser cold  `python -m batchser run` on an empty cache (fresh process: interpreter,
                 worker start-up, hashing, cache writes, model, reports all included).
  batchser warm  the same job again: every feature from the cache.
  dask cold      the cold job with engine.backend dask on a LocalCluster of the same number
                 of single-threaded worker processes (when dask.distributed is installed).
  shipped cold   the cold job with the shipped model's features (speech-rate statistics and
                 pitch, 178 dims) instead of the seed's: what labelling with the default model costs.
The seed loop and the floor run with the allocator setting batchser's workers use
(batchser.engine.keep_freed_memory: freed arrays stay on the heap instead of being
page-faulted in again for every file), so neither baseline pays a cost batchser avoids.
The seed-feature rows label with a small model trained at the start on seed features (untimed),
since the shipped model uses the richer set; prediction costs the same either way.
Besides whole-process wall time, the "feature stage" lines give the part of the job that
turns files into features (discovery, cache open, hashing/lookup, extraction, cache
close) from the job's own summary.json: what a warm run saves is this stage; the rest
(interpreter start, importing scikit-learn and skops, model load, reports) is fixed.
"vs seed" is the seed's wall time over the row's (higher is better). "vs floor" is per-core
efficiency: floor time / (row wall time x workers). Peak RSS is the largest process of a
batchser job (main or worker); "-" for rows measured in-process.
Timings are medians over --repeats; the machine is shared, so compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from _common import (
    CORPORA,
    EMOTIONS,
    MODEL,
    SEED_FEATURES,
    feature_stage,
    have,
    progress_log,
    seed_features,
    shipped_features,
    train_seed_model,
)
from _common import run_job as run_job_in_process

try:
    import distributed  # noqa: F401

    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False


def floor_one(path: str) -> None:
    import soxr

    from batchser.features import power_spectrogram

    data, sr = sf.read(path, dtype="float32", always_2d=True)
    y = data.mean(axis=1)
    if sr != 16000:
        y = soxr.resample(y, sr, 16000, quality="HQ")
    power_spectrogram(y, n_fft=2048, hop_length=512)


def timed(fn, files: list[str]) -> tuple[float, list]:
    t = time.perf_counter()
    out = [fn(f) for f in files]
    return time.perf_counter() - t, out


def run_job(
    files_dir: Path,
    cache: Path,
    out: Path,
    n_jobs: int,
    backend: str = "loky",
    *,
    model: Path,
    features: list[str],
) -> tuple[float, float, dict]:
    job = {
        "name": "bench",
        "inputs": [{"path": str(files_dir), "labels": "none"}],
        "emotions": EMOTIONS,
        "features": features,
        "cache": str(cache),
        "engine": {"backend": backend, "n_jobs": n_jobs} | ({"scheduler": "local"} if backend == "dask" else {}),
        "model": {"path": str(model)},
        "output": {"dir": str(out)},
    }
    return run_job_in_process(job, out.parent / f"{out.name}.yaml")


def _mib(v: float) -> str:
    return "-" if v != v else f"{v:.0f} MiB"  # NaN: measured in-process, not a job


def bench_corpus(name: str, *, repeats: int, n_jobs: int, log) -> list[dict]:
    folder = CORPORA / name
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".wav", ".flac"))
    audio_s = sum(sf.info(f).duration for f in files)
    log(f"{name}: {len(files)} files, {audio_s / 60:.1f} min of audio")
    from threadpoolctl import threadpool_limits

    from batchser.cache import FeatureStore
    from batchser.features import FeatureSpec
    from batchser.segments import SegmentSpec

    rows: dict[str, list[float]] = {"seed": [], "floor": [], "cold": [], "warm": [], "shipped": []}
    stage: dict[str, list[float]] = {"cold": [], "warm": [], "dask": [], "shipped": []}
    model_dir = Path(tempfile.mkdtemp(prefix="batchser-bench-model-"))
    log(f"  training a seed-feature model on {CORPORA / 'ravdess-48k'} (untimed) …")
    seed_model = train_seed_model(model_dir)
    seed_job = {"model": seed_model, "features": SEED_FEATURES}
    if HAVE_DASK:
        rows["dask"] = []
    rss: dict[str, float] = {}
    seed_vectors = None
    # Untimed first calls: librosa compiles its numba kernels and both fill their caches
    # on first use, which would charge one repeat's seed row with seconds of set-up.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seed_features(files[0])
    floor_one(files[0])
    for r in range(repeats):
        log(f"  repeat {r + 1}/{repeats}: seed loop …")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t, vecs = timed(seed_features, files)
        rows["seed"].append(t)
        seed_vectors = seed_vectors or vecs
        log("  floor …")
        with threadpool_limits(1):
            rows["floor"].append(timed(floor_one, files)[0])
        with tempfile.TemporaryDirectory(prefix="batchser-bench-") as tmp:
            tmp_p = Path(tmp)
            log("  batchser cold …")
            wall, rss["cold"], s = run_job(folder, tmp_p / "cache", tmp_p / "cold", n_jobs, **seed_job)
            assert s["extracted"] == len(files) and s["failed"] == 0, s
            rows["cold"].append(wall)
            stage["cold"].append(feature_stage(s))
            log("  batchser warm …")
            wall, rss["warm"], s = run_job(folder, tmp_p / "cache", tmp_p / "warm", n_jobs, **seed_job)
            assert s["extracted"] == 0 and s["from_cache"] == len(files), s
            rows["warm"].append(wall)
            stage["warm"].append(feature_stage(s))
            if HAVE_DASK:
                log("  batchser cold on a dask LocalCluster …")
                wall, rss["dask"], s = run_job(folder, tmp_p / "cache-dask", tmp_p / "dask", n_jobs, "dask", **seed_job)
                assert s["extracted"] == len(files) and s["failed"] == 0, s
                rows["dask"].append(wall)
                stage["dask"].append(feature_stage(s))
            log("  batchser cold with the shipped model's features …")
            wall, rss["shipped"], s = run_job(
                folder, tmp_p / "cache-shipped", tmp_p / "shipped", n_jobs, model=MODEL, features=shipped_features()
            )
            assert s["extracted"] == len(files) and s["failed"] == 0, s
            rows["shipped"].append(wall)
            stage["shipped"].append(feature_stage(s))
            if r == 0:
                spec = FeatureSpec(tuple(SEED_FEATURES), 16000)
                store = FeatureStore(tmp_p / "cache", spec, segments=SegmentSpec())  # the job's default key
                rep = pd.read_parquet(tmp_p / "cold" / "annotations.parquet")
                ours = np.stack([store.get(h).vector for h in rep.sort_values("path")["content_hash"]])
                ref = np.stack(seed_vectors)
                scale = np.maximum(np.abs(ref), 1e-6 * np.abs(ref).max(axis=1, keepdims=True))
                rel = np.abs(ours - ref) / scale
                over = rel > 1e-3
                parity = (
                    float(rel.max()),
                    int(over.sum()),
                    ours.size,
                    float(np.abs(ours - ref)[over].max(initial=0.0)),
                )
    med = {k: statistics.median(v) for k, v in rows.items()}
    out = []
    for key, label, workers in (
        ("seed", "seed loop", 1),
        ("floor", "floor (1 core)", 1),
        ("cold", "batchser cold", n_jobs),
        ("warm", "batchser warm", n_jobs),
        *((("dask", "dask cold", n_jobs),) if HAVE_DASK else ()),
        ("shipped", "shipped cold", n_jobs),
    ):
        out.append(
            {
                "corpus": name,
                "row": label,
                "files": len(files),
                "audio_s": audio_s,
                "wall_s": med[key],
                "x_realtime": audio_s / med[key],
                "vs_seed": med["seed"] / med[key],
                "vs_floor": med["floor"] / (med[key] * workers),
                "peak_rss_mib": rss.get(key, float("nan")),
            }
        )
    out[3]["warm_vs_cold"] = med["cold"] / med["warm"]
    out[3]["stage_cold"] = statistics.median(stage["cold"])
    out[3]["stage_warm"] = statistics.median(stage["warm"])
    if HAVE_DASK:
        out[4]["stage_dask"] = statistics.median(stage["dask"])
        out[4]["stage_cold"] = out[3]["stage_cold"]
    out[0]["parity_max_rel"] = parity
    out[-1]["stage_shipped"] = statistics.median(stage["shipped"])
    out[-1]["stage_cold"] = out[3]["stage_cold"]
    shutil.rmtree(model_dir, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=["ravdess-48k", "ravdess", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--n-jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args()
    if not have(CORPORA, "the corpora"):
        return 2
    log = progress_log(args.quiet)

    from batchser.engine import keep_freed_memory

    keep_freed_memory()  # the in-process baselines get what batchser's workers get
    names = ["ravdess-48k", "ravdess"] if args.corpus == "both" else [args.corpus]
    rows = [row for n in names for row in bench_corpus(n, repeats=args.repeats, n_jobs=args.n_jobs, log=log)]
    print(f"machine: {os.cpu_count()} cores; batchser with {args.n_jobs} workers; medians of {args.repeats} run(s)")
    print(
        f"{'corpus':<12} {'row':<15} {'files':>5} {'audio s':>8} {'wall s':>7} {'x real':>7} "
        f"{'vs seed':>7} {'vs floor':>8} {'peak RSS':>9}"
    )
    for r in rows:
        print(
            f"{r['corpus']:<12} {r['row']:<15} {r['files']:>5} {r['audio_s']:>8.0f} {r['wall_s']:>7.2f} "
            f"{r['x_realtime']:>7.0f} {r['vs_seed']:>6.1f}x {r['vs_floor']:>7.0%} {_mib(r['peak_rss_mib']):>9}"
        )
    for r in rows:
        if "warm_vs_cold" in r:
            print(
                f"{r['corpus']}: warm run {r['warm_vs_cold']:.1f}x faster than cold end to end; feature stage "
                f"{r['stage_cold']:.2f} s cold, {r['stage_warm']:.3f} s warm: {r['stage_cold'] / r['stage_warm']:.0f}x"
            )
        if "stage_dask" in r:
            print(
                f"{r['corpus']}: dask LocalCluster vs loky, same {r['files']} files cold: feature stage "
                f"{r['stage_dask']:.2f} s vs {r['stage_cold']:.2f} s ({r['stage_dask'] / r['stage_cold']:.2f}x; "
                "cluster start-up included)"
            )
        if "stage_shipped" in r:
            print(
                f"{r['corpus']}: shipped model's features vs the seed's, same {r['files']} files cold: feature stage "
                f"{r['stage_shipped']:.2f} s vs {r['stage_cold']:.2f} s ({r['stage_shipped'] / r['stage_cold']:.2f}x)"
            )
        if "parity_max_rel" in r:
            worst, n_over, n_all, abs_over = r["parity_max_rel"]
            print(
                f"{r['corpus']}: features vs seed loop: max relative difference {worst:.1e}; {n_over} of {n_all} "
                f"values above 1e-3 relative, their largest absolute difference {abs_over:.1e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
