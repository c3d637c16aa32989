"""Archive scale: does a small warm job cost the same whatever the shared cache holds?

    python bench/cache_scale.py                       # caches of 4,000, 100,000 and 1,000,000 rows
    python bench/cache_scale.py --sizes 4000,300000 --repeats 5 --quiet

For each size, a cache folder gets the features of the 6 demo files (data/demo, one
cold run of the job with the shipped model) plus synthetic rows in the real schema
(random hashes and vectors, written as merged parts are: sorted by hash, row groups
of 1,024 rows, indexed as they are written). Then the same warm job (every file from
the cache) runs --repeats times in fresh processes; the table gives the medians of
its wall time and of its peak RSS (the job's own process: VmHWM, read as it exits),
each against the smallest cache measured in the same run. "index rebuild" is one
more run after deleting the cache's SQLite index, as a new host sharing the cache
pays once: it reads every part to rebuild it.

Targets (issue J): with 1,000,000 rows, at most 1.2x the wall time of a 4,000-row
cache and a peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, progress_log, run_measured, shipped_features, shipped_job, synthetic_rows

from batchser.cache import FeatureStore
from batchser.features import FeatureSpec
from batchser.segments import SegmentSpec

DEMO = ROOT / "data" / "demo"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4000,100000,1000000", help="rows in the cache, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="batchser-cache-scale-") as tmp_s:
        tmp = Path(tmp_s)
        audio = tmp / "demo"
        shutil.copytree(DEMO, audio)
        for size in sizes:
            cache = tmp / f"cache-{size}"
            manifest = shipped_job(
                tmp / f"scale-{size}.yaml",
                f"scale-{size}",
                [{"path": str(audio)}],
                cache=cache,
                out=tmp / f"out-{size}",
            )
            log(f"{size:,} rows: the demo files, cold …")
            run_measured(manifest)
            n_demo = 6
            log(f"{size:,} rows: {size - n_demo:,} synthetic rows …")
            t = time.perf_counter()
            spec = FeatureSpec(tuple(shipped_features()), 16000)
            with FeatureStore(cache, spec, segments=SegmentSpec()) as store:
                synthetic_rows(store, max(0, size - n_demo), seed=size)
            build = time.perf_counter() - t
            runs = []
            for r in range(args.repeats):
                log(f"{size:,} rows: warm job {r + 1}/{args.repeats} …")
                runs.append(run_measured(manifest))
            shutil.rmtree(cache / "index")
            log(f"{size:,} rows: warm job with its index rebuilt …")
            rebuild = run_measured(manifest)[0]
            wall = statistics.median(w for w, _ in runs)
            rss = statistics.median(m for _, m in runs)
            rows.append((size, wall, rss, rebuild, build))
            shutil.rmtree(cache)
    base_wall, base_rss = rows[0][1], rows[0][2]
    print(f"warm job over the {len(list(DEMO.iterdir()))} demo files, shipped model; medians of {args.repeats}")
    head = ("rows in cache", "wall s", "vs first", "peak RSS MiB", "vs first", "index rebuild s")
    print("{:>13} {:>7} {:>8} {:>12} {:>8} {:>15}".format(*head))
    for size, wall, rss, rebuild, _build in rows:
        print(
            f"{size:>13,} {wall:>7.2f} {wall / base_wall:>7.2f}x {rss:>12.0f} {rss / base_rss:>7.2f}x {rebuild:>15.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
