"""A job over object storage (moto's S3 server on this machine) against the same files on local disk.

    python bench/object_storage.py                  # RAVDESS (1,440 FLAC files) if ../shared has it
    python bench/object_storage.py --files 200      # generated 3-s clips instead

Each run is a whole ``batchser run -q`` process, interpreter start included:
a cold job (empty cache) and a warm one (every feature cached), over the
local folder and over ``s3://bench/…``, alternated, ``--repeats`` times;
medians and the ratios S3 / local. moto's server runs on the same cores as
the job (a real S3 runs elsewhere), so its own work per request is in the
S3 rows; its requests are counted beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from _common import RAVDESS, ROOT, progress_log, run_job, shipped_job

sys.path.insert(0, str(ROOT))
import yaml

from tests.s3 import s3_server  # moto's server, started as the tests start it


def _clips(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    for i in range(n):
        y = 0.3 * np.sin(2 * np.pi * (100 + i % 300) * t) + 0.02 * rng.standard_normal(t.size)
        (folder / f"s{i % 10}").mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"s{i % 10}" / f"c{i:05d}.flac", y.astype(np.float32), 16000)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=0, help="generated clips instead of RAVDESS (0: RAVDESS)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    with tempfile.TemporaryDirectory(prefix="batchser-bench-s3-") as tmp:
        work = Path(tmp)
        if args.files:
            src = _clips(work / "audio", args.files)
        elif RAVDESS.is_dir():
            src = RAVDESS
        else:
            print(f"needs RAVDESS in {RAVDESS}, or --files N", file=sys.stderr)
            return 2
        files = sorted(p for p in src.rglob("*") if p.is_file())
        with s3_server() as s3:
            os.environ.update(s3.env())
            client = s3.client()
            client.create_bucket(Bucket="bench")
            log(f"uploading {len(files)} files to moto")
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda p: client.upload_file(str(p), "bench", f"a/{p.relative_to(src)}"), files))
            times: dict[str, list[float]] = {k: [] for k in ("local cold", "s3 cold", "local warm", "s3 warm")}
            rows: dict[str, int] = {}
            for r in range(args.repeats):
                for where, path in (("local", str(src)), ("s3", "s3://bench/a/")):
                    cache = work / f"cache-{where}-{r}"
                    job = yaml.safe_load(
                        shipped_job(
                            work / "job.yaml", "bench", [{"path": path}], cache=cache, out=work / f"o-{where}"
                        ).read_text()
                    )
                    for kind in ("cold", "warm"):
                        wall, _, summary = run_job(job, work / "job.yaml")
                        times[f"{where} {kind}"].append(wall)
                        rows[where] = summary["files"]
                        log(f"{where} {kind} #{r + 1}: {wall:.2f} s ({summary['extracted']} extracted)")
    med = {k: statistics.median(v) for k, v in times.items()}
    n = rows["local"]
    print(f"{n} files, {'RAVDESS' if not args.files else 'generated 3-s clips'}; medians of {args.repeats}, "
          f"{os.cpu_count()} cores (moto's server on the same cores)")  # fmt: skip
    print(f"{'run':<12}{'wall s':>8}{'files/s':>10}{'S3 / local':>12}")
    for kind in ("cold", "warm"):
        for where in ("local", "s3"):
            key = f"{where} {kind}"
            ratio = med[key] / med[f"local {kind}"]
            print(f"{key:<12}{med[key]:>8.2f}{n / med[key]:>10.0f}{ratio:>11.2f}x")
    print(json.dumps({"files": n, "medians_s": med, "all_s": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
