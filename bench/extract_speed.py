"""Extraction speed: the librosa tutorial recipe's loop, the floor, and batchser cold and warm, in one run.

    python bench/extract_speed.py                      # both corpora in ../shared/corpora
    python bench/extract_speed.py --corpus ravdess-48k --repeats 3

Rows, all on the same files in this run:
  tutorial loop  the notebook: librosa.load(sr=16000), then mfcc(y), chroma_stft(S=|stft|),
                 melspectrogram(y), means over frames; one file after another, one process.
  floor (1 core) decode + resample + one STFT per file and nothing else, one process, one
                 BLAS thread: the work no extractor can skip.
  batchser 1 core  batchser's extractor (engine._extract_batch: decode, resample, features,
                 records) over the same files in this process, one BLAS thread: its "vs
                 floor" is the per-core efficiency of the extraction itself.
  pinned 1 core  the same with chroma's tuning pinned at 0.0 (manifest chroma_tuning: 0.0).
  batchser cold  `python -m batchser run` on an empty cache (fresh process: interpreter,
                 worker start-up, hashing, cache writes, model, reports all included).
  batchser warm  the same job again: every feature from the cache.
  dask cold      the cold job with engine.backend dask on a LocalCluster of the same number
                 of single-threaded worker processes (when dask.distributed is installed).
  shipped cold   the cold job with the shipped model's features (speech-rate statistics and
                 pitch, 178 dims) instead of the librosa tutorial recipe's: what labelling with the default model costs.
  pinned cold    the cold job with chroma_tuning: 0.0 (and a model trained so).
The tutorial loop and the floor run with the allocator setting batchser's workers use
(batchser.engine.keep_freed_memory: freed arrays stay on the heap instead of being
page-faulted in again for every file), so neither baseline pays a cost batchser avoids.
The rows on the tutorial recipe's features label with a small model trained at the start on them (untimed),
since the shipped model uses the richer set; prediction costs the same either way.
Parity: the cold job's vectors against the tutorial loop's; the pinned job's against the tutorial
loop's with chroma_stft(tuning=0.0).
Besides whole-process wall time, the "feature stage" lines give the part of the job that
turns files into features (discovery, cache open, hashing/lookup, extraction, cache
close) from the job's own summary.json: what a warm run saves is this stage; the rest
(interpreter start, importing scikit-learn and skops, model load, reports) is fixed.
"vs tutorial" is the librosa tutorial recipe's wall time over the row's (higher is better). "vs floor" is per-core
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
    TUTORIAL_FEATURES,
    feature_stage,
    have,
    progress_log,
    shipped_features,
    train_tutorial_model,
    tutorial_chroma,
    tutorial_features,
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
    chroma_tuning: float | None = None,
) -> tuple[float, float, dict]:
    job = {
        "name": "bench",
        "chroma_tuning": chroma_tuning,
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


def _parity(ours: np.ndarray, ref: np.ndarray) -> tuple[float, int, int, float]:
    """Worst relative difference, how many values exceed 1e-3, of how many, their worst absolute difference."""
    scale = np.maximum(np.abs(ref), 1e-6 * np.abs(ref).max(axis=1, keepdims=True))
    rel = np.abs(ours - ref) / scale
    over = rel > 1e-3
    return float(rel.max()), int(over.sum()), ours.size, float(np.abs(ours - ref)[over].max(initial=0.0))


def _job_vectors(cache: Path, report: Path, spec) -> np.ndarray:
    from batchser.cache import FeatureStore
    from batchser.segments import SegmentSpec

    store = FeatureStore(cache, spec, segments=SegmentSpec())  # the job's default key
    rep = pd.read_parquet(report)
    return np.stack([store.get(h).vector for h in rep.sort_values("path")["content_hash"]])


def bench_corpus(name: str, *, repeats: int, n_jobs: int, log, limit: int | None = None, tmp: Path) -> list[dict]:
    folder = CORPORA / name
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".wav", ".flac"))
    if limit is not None and limit < len(files):  # the first files, copied to a folder of their own for the jobs
        folder = tmp / name
        for f in files[:limit]:
            dest = folder / Path(f).relative_to(CORPORA / name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        files = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".wav", ".flac"))
    audio_s = sum(sf.info(f).duration for f in files)
    log(f"{name}: {len(files)} files, {audio_s / 60:.1f} min of audio")
    from threadpoolctl import threadpool_limits

    from batchser.engine import ExtractTask, _extract_batch
    from batchser.features import FeatureSpec
    from batchser.segments import SegmentSpec

    spec = FeatureSpec(tuple(TUTORIAL_FEATURES), 16000)
    pinned = FeatureSpec(tuple(TUTORIAL_FEATURES), 16000, chroma_tuning=0.0)
    tasks = [ExtractTask(f, str(i)) for i, f in enumerate(files)]

    keys = ["tutorial", "floor", "extractor", "extractor_a440", "cold", "warm", "shipped", "a440"]
    keys += ["dask"] if HAVE_DASK else []
    rows: dict[str, list[float]] = {k: [] for k in keys}
    stage: dict[str, list[float]] = {k: [] for k in ("cold", "warm", "dask", "shipped", "a440")}
    rss: dict[str, float] = {}
    parity: dict[str, tuple[float, int, int, float]] = {}

    def job(work: Path, key: str, cache: str, **kw) -> dict:
        log(f"  batchser {key} …")
        wall, rss[key], summary = run_job(folder, work / cache, work / key, n_jobs, **kw)
        rows[key].append(wall)
        stage[key].append(feature_stage(summary))
        return summary

    with tempfile.TemporaryDirectory(prefix="batchser-bench-model-") as md:
        log(f"  training models on the tutorial recipe's features on {CORPORA / 'ravdess-48k'} (untimed) …")
        tutorial_job = {"model": train_tutorial_model(Path(md) / "est"), "features": TUTORIAL_FEATURES}
        a440_job = {"model": train_tutorial_model(Path(md) / "a440", chroma_tuning=0.0), "features": TUTORIAL_FEATURES}
        # Untimed first calls: librosa compiles its numba kernels and every row fills its
        # caches on first use, which would charge one repeat with seconds of set-up.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tutorial_features(files[0])
        floor_one(files[0])
        with threadpool_limits(1):
            _extract_batch(tasks[:1], spec, SegmentSpec())
        for r in range(repeats):
            log(f"  repeat {r + 1}/{repeats}: tutorial loop …")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t, tutorial_vectors = timed(tutorial_features, files)
            rows["tutorial"].append(t)
            log("  floor and batchser's extractor in this process …")
            with threadpool_limits(1):
                rows["floor"].append(timed(floor_one, files)[0])
                for key, s in (("extractor", spec), ("extractor_a440", pinned)):
                    t = time.perf_counter()
                    _extract_batch(tasks, s, SegmentSpec())
                    rows[key].append(time.perf_counter() - t)
            with tempfile.TemporaryDirectory(prefix="batchser-bench-") as tmp:
                tmp_p = Path(tmp)

                s = job(tmp_p, "cold", "cache", **tutorial_job)
                assert s["extracted"] == len(files) and s["failed"] == 0, s
                s = job(tmp_p, "warm", "cache", **tutorial_job)
                assert s["extracted"] == 0 and s["from_cache"] == len(files), s
                if HAVE_DASK:
                    s = job(tmp_p, "dask", "cache-dask", backend="dask", **tutorial_job)
                    assert s["extracted"] == len(files) and s["failed"] == 0, s
                s = job(tmp_p, "shipped", "cache-shipped", model=MODEL, features=shipped_features())
                assert s["extracted"] == len(files) and s["failed"] == 0, s
                s = job(tmp_p, "a440", "cache-a440", chroma_tuning=0.0, **a440_job)
                assert s["extracted"] == len(files) and s["failed"] == 0, s
                if r == 0:
                    ref = np.stack(tutorial_vectors)
                    parity["tutorial"] = _parity(
                        _job_vectors(tmp_p / "cache", tmp_p / "cold" / "annotations.parquet", spec), ref
                    )
                    # Pinned: the tutorial's chroma_stft at the same tuning (mfcc and mel as the tutorial's).
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ref[:, 40:52] = np.stack([tutorial_chroma(f, tuning=0.0) for f in files])
                    ours = _job_vectors(tmp_p / "cache-a440", tmp_p / "a440" / "annotations.parquet", pinned)
                    parity["a440"] = _parity(ours, ref)
    med = {k: statistics.median(v) for k, v in rows.items()}
    labels = {
        "tutorial": "tutorial loop",
        "floor": "floor (1 core)",
        "extractor": "batchser 1 core",
        "extractor_a440": "pinned 1 core",
        "cold": "batchser cold",
        "warm": "batchser warm",
        "dask": "dask cold",
        "shipped": "shipped cold",
        "a440": "pinned cold",
    }
    out: dict[str, dict] = {}
    for key in keys:
        workers = n_jobs if key in stage else 1
        out[key] = {
            "corpus": name,
            "row": labels[key],
            "files": len(files),
            "audio_s": audio_s,
            "wall_s": med[key],
            "x_realtime": audio_s / med[key],
            "vs_tutorial": med["tutorial"] / med[key],
            "vs_floor": med["floor"] / (med[key] * workers),
            "peak_rss_mib": rss.get(key, float("nan")),
        }
    cold = statistics.median(stage["cold"])
    out["warm"] |= {
        "warm_vs_cold": med["cold"] / med["warm"],
        "stage_cold": cold,
        "stage_warm": statistics.median(stage["warm"]),
    }
    if HAVE_DASK:
        out["dask"] |= {"stage_dask": statistics.median(stage["dask"]), "stage_cold": cold}
    out["shipped"] |= {"stage_shipped": statistics.median(stage["shipped"]), "stage_cold": cold}
    out["tutorial"]["parity"] = ("features vs tutorial loop", parity["tutorial"])
    out["a440"]["parity"] = ("tuning pinned at 0.0 vs tutorial loop with chroma_stft(tuning=0.0)", parity["a440"])
    return list(out.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=["ravdess-48k", "ravdess", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--n-jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    ap.add_argument("--files", type=int, default=None, help="only the first N files of each corpus (a smoke test)")
    args = ap.parse_args()
    if not have(CORPORA, "the corpora"):
        return 2
    log = progress_log(args.quiet)

    from batchser.engine import keep_freed_memory

    keep_freed_memory()  # the in-process baselines get what batchser's workers get
    names = ["ravdess-48k", "ravdess"] if args.corpus == "both" else [args.corpus]
    with tempfile.TemporaryDirectory(prefix="batchser-bench-files-") as tmp:
        rows = []
        for n in names:
            rows += bench_corpus(n, repeats=args.repeats, n_jobs=args.n_jobs, log=log, limit=args.files, tmp=Path(tmp))
    print(f"machine: {os.cpu_count()} cores; batchser with {args.n_jobs} workers; medians of {args.repeats} run(s)")
    print(
        f"{'corpus':<12} {'row':<15} {'files':>5} {'audio s':>8} {'wall s':>7} {'x real':>7} "
        f"{'vs tutorial':>11} {'vs floor':>8} {'peak RSS':>9}"
    )
    for r in rows:
        print(
            f"{r['corpus']:<12} {r['row']:<15} {r['files']:>5} {r['audio_s']:>8.0f} {r['wall_s']:>7.2f} "
            f"{r['x_realtime']:>7.0f} {r['vs_tutorial']:>10.1f}x {r['vs_floor']:>7.0%} {_mib(r['peak_rss_mib']):>9}"
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
                f"{r['corpus']}: shipped model's features vs the tutorial's, {r['files']} files cold: feature stage "
                f"{r['stage_shipped']:.2f} s vs {r['stage_cold']:.2f} s ({r['stage_shipped'] / r['stage_cold']:.2f}x)"
            )
        if "parity" in r:
            what, (worst, n_over, n_all, abs_over) = r["parity"]
            print(
                f"{r['corpus']}: {what}: max relative difference {worst:.1e}; {n_over} of {n_all} "
                f"values above 1e-3 relative, their largest absolute difference {abs_over:.1e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
