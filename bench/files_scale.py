"""Archive scale: does a job over a million files cost ten times one over 100,000, and no more memory?

    python bench/files_scale.py                        # 100,000 and 1,000,000 files
    python bench/files_scale.py --sizes 20000,200000 --quiet

The archive is a tree of tiny WAV files (8 samples each, every one different),
1,000 to a folder, 100,000 to a top folder: the job over N files names the first
N/100,000 top folders. A cache gets a feature row for every file's content
(random vectors in the real schema, written as merged parts are), so that the
benchmark measures the job's own per-file work, discovery, hashing, cache lookups,
normalisation over the job's files, prediction and reports, not feature extraction.
Each size runs the shipped model's labelling job twice in fresh processes: "first"
hashes every file (the path index is cold), "again" finds each file's hash by its
listing stamp. Columns: wall seconds, files per second and peak RSS (the job's
process: VmHWM as it exits), with ratios against the smallest size of this run.

"reviewed" (with ``--reviewed``) runs the job a third time learning from 80 answers (20 per
label, paths from the reports, labels drawn at random): the refit on the model's training rows
plus those files, then every file relabelled from the cache.

The project's goals: with 1,000,000 files, a peak RSS under 1 GB and at most 1.2x that of
100,000 files, and files/s within 15 % of the 100,000-file job's; relabelling 100,000 files
after a review in under 2 minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import progress_log, run_measured, shipped_features, shipped_job, synthetic_rows

from batchser.cache import FeatureStore
from batchser.features import FeatureSpec
from batchser.segments import SegmentSpec

PER_FOLDER = 1000
PER_TOP = 100_000
N_SAMPLES = 8


def _header() -> bytes:
    data = N_SAMPLES * 2
    return (
        b"RIFF"
        + struct.pack("<I4s", 36 + data, b"WAVE")
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def make_tree(root: Path, n: int) -> list[str]:
    """``n`` distinct tiny WAV files under ``root``; their SHA-256 hashes."""
    header = _header()
    hashes = []
    for i in range(n):
        top, rest = divmod(i, PER_TOP)
        folder = root / f"a{top}" / f"d{rest // PER_FOLDER:03d}"
        if rest % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        samples = np.array([i & 0x7FFF, (i >> 15) & 0x7FFF, 7, -7, 100, -100, 0, 1], dtype="<i2").tobytes()
        data = header + samples
        (folder / f"f{i:07d}.wav").write_bytes(data)
        hashes.append(hashlib.sha256(data).hexdigest())
    return hashes


def _reviewed_run(manifest: Path, work: Path, n: int, log) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The job once more, learning from 80 answers (20 per label of its reports, labels at random)."""
    import pandas as pd
    import yaml

    report = pd.read_parquet(work / f"out-{n}" / "annotations.parquet", columns=["path", "label"])
    rng = np.random.default_rng(0)
    picked = report.groupby("label", group_keys=False).apply(lambda g: g.sample(min(20, len(g)), random_state=0))
    answers = work / f"answers-{n}.csv"
    labels = sorted(set(report["label"]))
    pd.DataFrame({"path": picked["path"], "label": rng.choice(labels, size=len(picked))}).to_csv(answers, index=False)
    job = yaml.safe_load(manifest.read_text())
    job["model"]["reviewed"] = str(answers)
    reviewed = manifest.with_name(manifest.stem + "-reviewed.yaml")
    reviewed.write_text(yaml.safe_dump(job))
    log(f"{n:,} files: learning from {len(picked)} answers …")
    got = run_measured(reviewed)
    log(f"  {got[0]:.1f} s, {got[1]:.0f} MiB")
    summary = json.loads((work / f"out-{n}" / "summary.json").read_text())
    if summary["extracted"] or (summary["review"] or {}).get("learned_from") != len(picked):
        raise SystemExit(f"expected a relabelling from the cache learning from {len(picked)} answers: {summary}")
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="files per job, multiples of 100,000 (or one smaller)")
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    ap.add_argument("--keep", type=Path, help="build (or reuse) the tree and cache here, not in a temp folder")
    ap.add_argument("--reviewed", action="store_true", help="also run each job learning from 80 answers")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if any(s > PER_TOP and s % PER_TOP for s in sizes):
        raise SystemExit("sizes above 100,000 must be multiples of 100,000")
    tmp_ctx = tempfile.TemporaryDirectory(prefix="batchser-files-scale-") if args.keep is None else None
    work = Path(tmp_ctx.name) if tmp_ctx else args.keep
    work.mkdir(parents=True, exist_ok=True)
    tree, cache = work / "tree", work / "cache"
    done = work / "tree.json"
    if not done.exists() or json.loads(done.read_text())["n"] < sizes[-1]:
        shutil.rmtree(tree, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        log(f"writing {sizes[-1]:,} files …")
        t = time.perf_counter()
        hashes = make_tree(tree, sizes[-1])
        log(f"  {time.perf_counter() - t:.0f} s; {len(hashes):,} cache rows …")
        spec = FeatureSpec(tuple(shipped_features()), 16000)
        with FeatureStore(cache, spec, segments=SegmentSpec()) as store:
            synthetic_rows(store, len(hashes), hashes=hashes)
        done.write_text(json.dumps({"n": sizes[-1]}))
    rows = []
    for n in sizes:
        if n < PER_TOP:
            inputs = [{"path": str(tree / "a0" / f"d{k:03d}")} for k in range(-(-n // PER_FOLDER))]
        else:
            inputs = [{"path": str(tree / f"a{k}")} for k in range(n // PER_TOP)]
        manifest = shipped_job(work / f"files-{n}.yaml", f"files-{n}", inputs, cache=cache, out=work / f"out-{n}")
        shutil.rmtree(cache / "index", ignore_errors=True)  # the path index: every file hashed again
        log(f"{n:,} files: first run …")
        first = run_measured(manifest)
        log(f"  {first[0]:.1f} s, {first[1]:.0f} MiB; again …")
        again = run_measured(manifest)
        log(f"  {again[0]:.1f} s, {again[1]:.0f} MiB")
        summary = json.loads((work / f"out-{n}" / "summary.json").read_text())
        if summary["files"] != n or summary["extracted"]:
            raise SystemExit(f"expected {n} files all from the cache, the job says {summary}")
        runs = [("first", first), ("again", again)]
        if args.reviewed:
            runs.append(("reviewed", _reviewed_run(manifest, work, n, log)))
        rows.append((n, runs))
    n0, runs0 = rows[0]
    print("labelling job, shipped model, every file's features in the cache; one run each")
    head = ("files", "run", "wall s", "files/s", "vs first", "peak RSS MiB", "vs first")
    print("{:>10} {:>8} {:>8} {:>8} {:>8} {:>12} {:>8}".format(*head))
    for n, runs in rows:
        for (name, (wall, rss)), (_, (wall0, rss0)) in zip(runs, runs0, strict=True):
            rate, rate0 = n / wall, n0 / wall0
            ratios = f"{rate:>8.0f} {rate / rate0:>7.2f}x {rss:>12.0f} {rss / rss0:>7.2f}x"
            print(f"{n:>10,} {name:>8} {wall:>8.1f} {ratios}")
    if tmp_ctx:
        tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
