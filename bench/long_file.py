"""Long recordings: throughput and memory of a 1-hour file against short clips, in one run.

    python bench/long_file.py                 # a 60-minute file made from RAVDESS clips
    python bench/long_file.py --minutes 20 --quiet

The long file is RAVDESS clips (../shared/corpora/ravdess) written back to back as
one 16 kHz 16-bit WAV in a temp dir. Rows, one process, one BLAS thread, the shipped
model's features (what `python -m batchser run` computes by default):

  clips            300 RAVDESS clips, one after another (each decoded whole)
  long, windows    the long file in 4 s windows every 2 s (segments.method: windows; every
                   second of audio is in two windows, which share the frames they have
                   in common; see batchser.features.SlidingExtractor)
  long, no overlap the same with hop_s = window_s (every second in one window)
  long, speech     the default: speech segments from Silero VAD, one vector each
  speech, N parts  the default as a job runs it: the file cut into parts of 5 minutes
                   (batchser.longfile.plan_parts), each part's frames through the VAD,
                   then each part's segments' features, on all cores (worker start-up
                   included; RSS growth is the job process's only)

"x real time" is audio seconds per wall second; "vs clips" divides it by the clips'
rate (the issue's target is 80 %). Peak RSS growth is this process's maximum RSS after
the row minus before it: the long file is decoded block by block, never held whole.
Medians over --repeats.

Then the labelling job itself (`batchser run`, a fresh process each, 2 workers, the
shipped model): the long file labelled as before file standardisation
(model.min_file_segments: null) and standardised over its own speech (the default), each
from an empty cache once (cold: extraction included) and from the warm cache --repeats
times; the job's own peak RSS (VmHWM) and its predict stage from summary.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import joblib
import soundfile as sf
import yaml
from _common import RAVDESS, have, progress_log, run_measured, shipped_features, shipped_job


def write_long(path: Path, clips: list[Path], seconds: float) -> float:
    """The clips back to back until ``seconds``; an RTTM beside it with a turn per clip, its actor speaking."""
    sr, total, i = 16000, 0, 0
    turns = []
    with sf.SoundFile(path, "w", sr, 1, "PCM_16") as out:
        while total < seconds * sr:
            clip = clips[i % len(clips)]
            y, clip_sr = sf.read(clip, dtype="float32", always_2d=True)
            assert clip_sr == sr
            out.write(y.mean(axis=1))
            turns.append(
                f"SPEAKER {path.stem} 1 {total / sr:.3f} {len(y) / sr:.3f} <NA> <NA> {clip.parent.name} <NA> <NA>"
            )
            total, i = total + len(y), i + 1
    path.with_suffix(".rttm").write_text("\n".join(turns) + "\n")
    return total / sr


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Each labelling job: its model keys, its input's keys, and whose cache it starts from. The turns job
# starts from the cache "over itself" filled: its first run is what giving turns later costs.
JOBS = {
    "job today": ({"min_file_segments": None}, {}, "job-today"),
    "job over itself": ({}, {}, "job-over-itself"),
    "job with turns": ({}, {"speakers": "rttm:long.rttm"}, "job-over-itself"),
}


def label_jobs(long: Path, tmp: Path, repeats: int, log) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Cold and warm runs of the labelling job on ``long``, per row of :data:`JOBS` (medians of the warm ones).

    The cold runs go in order (the turns job's starts from the cache the job before it filled); the
    warm runs take turns, row after row, ``repeats`` rounds, so that a busier moment of the machine
    falls on every row alike.
    """
    manifests, runs = {}, {}
    who = [line.split()[7] for line in long.with_suffix(".rttm").read_text().splitlines()]
    changes = sum(a != b for a, b in itertools.pairwise(who))
    for name, (model, inp, cache) in JOBS.items():
        stem = name.replace(" ", "-")
        manifest = shipped_job(tmp / f"{stem}.yaml", stem, [{"path": str(long)} | inp], cache=tmp / f"cache-{cache}",
                               out=tmp / f"out-{stem}")  # fmt: skip
        job = yaml.safe_load(manifest.read_text())
        job["model"] |= model
        job["root"] = str(tmp)
        manifest.write_text(yaml.safe_dump(job))
        log(f"{name}: cold …")
        cold, cold_rss = run_measured(manifest)
        manifests[name] = (manifest, tmp / f"out-{stem}" / "summary.json")
        runs[name] = {"cold": [cold], "warm": [], "predict": [], "rss": [cold_rss]}
    for r in range(repeats):
        log(f"warm round {r + 1}/{repeats} …")
        for name, (manifest, summary_path) in manifests.items():
            wall, peak = run_measured(manifest)
            summary = json.loads(summary_path.read_text())
            assert summary["files"] == 1 and summary["failed"] == 0, summary
            runs[name]["warm"].append(wall)
            runs[name]["rss"].append(peak)
            runs[name]["predict"].append(summary["stage_seconds"]["predict"])
    return {
        name: {
            "cold": r["cold"][0],
            "warm": statistics.median(r["warm"]),
            "predict": statistics.median(r["predict"]),
            "rss": max(r["rss"]),
            "changes": changes,
        }
        for name, r in runs.items()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    ap.add_argument("--no-jobs", action="store_true", help="leave out the labelling jobs")
    ap.add_argument("--job-repeats", type=int, help="warm runs of each labelling job (default: --repeats)")
    args = ap.parse_args()
    if not have(RAVDESS, "the RAVDESS corpus"):
        return 2
    log = progress_log(args.quiet)

    from threadpoolctl import threadpool_limits

    from batchser.cache import hash_file
    from batchser.engine import ExtractTask, extract_one, keep_freed_memory, plan_parts, run_tasks
    from batchser.features import FeatureSpec
    from batchser.segments import SegmentSpec

    keep_freed_memory()  # as in the job's workers
    names = shipped_features()
    spec = FeatureSpec(tuple(names), 16000)
    files = sorted(RAVDESS.rglob("*.flac"))
    mono16k = [f for f in files if (i := sf.info(f)).samplerate == 16000 and i.channels == 1]
    clips = mono16k[:300]
    clip_audio = sum(sf.info(f).duration for f in clips)
    default = SegmentSpec(method="windows")
    no_overlap = SegmentSpec(method="windows", hop_s=default.window_s)
    speech = SegmentSpec()  # the job's default: speech segments
    with tempfile.TemporaryDirectory(prefix="batchser-long-") as tmp, threadpool_limits(1):
        long = Path(tmp) / "long.wav"
        log(f"writing a {args.minutes:.0f}-minute file …")
        long_audio = write_long(long, mono16k, args.minutes * 60)
        st = long.stat()
        job_task = ExtractTask(
            str(long), hash_file(long), size=st.st_size, stamp=(st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        )
        n_parts = len(plan_parts(job_task, spec=spec, seg=speech))
        in_parts = f"speech, {n_parts} parts"
        rows: dict[str, list[float]] = {"clips": [], "long, windows": [], "long, no overlap": [], "long, speech": [],
                                        in_parts: []}  # fmt: skip
        growth: dict[str, float] = {}
        windows: dict[str, int] = {}
        for r in range(args.repeats):
            log(f"repeat {r + 1}/{args.repeats} …")
            before = peak_mib()
            t = time.perf_counter()
            for i, f in enumerate(clips):
                extract_one(ExtractTask(str(f), f"c{i}"), spec=spec, segments=default)
            rows["clips"].append(time.perf_counter() - t)
            growth["clips"] = max(growth.get("clips", 0.0), peak_mib() - before)
            for key, seg in (("long, windows", default), ("long, no overlap", no_overlap), ("long, speech", speech)):
                before = peak_mib()
                t = time.perf_counter()
                rec = extract_one(ExtractTask(str(long), "long"), spec=spec, segments=seg)
                rows[key].append(time.perf_counter() - t)
                assert rec.status == "ok" and rec.segments is not None, rec.error
                windows[key] = len(rec.segments)
                growth[key] = max(growth.get(key, 0.0), peak_mib() - before)
            before = peak_mib()
            t = time.perf_counter()
            (rec,) = [
                r for batch in run_tasks([job_task], spec=spec, segments=speech, in_process_below=0) for r in batch
            ]
            rows[in_parts].append(time.perf_counter() - t)
            assert rec.status == "ok" and rec.segments is not None, rec.error
            windows[in_parts] = len(rec.segments)
            growth[in_parts] = max(growth.get(in_parts, 0.0), peak_mib() - before)
        jobs = {} if args.no_jobs else label_jobs(long, Path(tmp), args.job_repeats or args.repeats, log)
    med = {k: statistics.median(v) for k, v in rows.items()}
    clip_rate = clip_audio / med["clips"]
    print(
        f"one BLAS thread; one process but for the parts row ({joblib.cpu_count()} workers); "
        f"features {', '.join(names)}; medians of {args.repeats}"
    )
    print(f"{'row':<17} {'audio s':>8} {'wall s':>7} {'x real':>7} {'vs clips':>8} {'pieces':>7} {'RSS growth':>10}")
    for key, audio in [("clips", clip_audio)] + [(k, long_audio) for k in rows if k != "clips"]:
        rate = audio / med[key]
        print(
            f"{key:<17} {audio:>8.0f} {med[key]:>7.2f} {rate:>7.0f} {rate / clip_rate:>7.0%} "
            f"{windows.get(key, len(clips)):>7} {growth[key]:>6.0f} MiB"
        )
    if jobs:
        n = args.job_repeats or args.repeats
        print(f"\nlabelling job (batchser run, a fresh process, 2 workers; warm: median of {n})")
        print(f"{'row':<17} {'cold s':>7} {'warm s':>7} {'predict s':>9} {'peak RSS':>9}")
        for key, j in jobs.items():
            print(f"{key:<17} {j['cold']:>7.2f} {j['warm']:>7.2f} {j['predict']:>9.3f} {j['rss']:>5.0f} MiB")
        a, b, t = jobs["job today"], jobs["job over itself"], jobs["job with turns"]
        print(
            f"standardising over itself: {b['cold'] / a['cold'] - 1:+.1%} cold, {b['warm'] / a['warm'] - 1:+.1%} "
            f"warm, predict stage {1000 * (b['predict'] - a['predict']):+.0f} ms, peak RSS "
            f"{b['rss'] - a['rss']:+.0f} MiB"
        )
        print(
            f"turns given after a run without them: the first run {t['cold']:.2f} s ({t['cold'] / b['cold']:.0%} of "
            f"a cold run: the recording is analysed again, cut where the speaker changes, {t['changes']:.0f} times), "
            f"then {t['warm']:.2f} s warm"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
