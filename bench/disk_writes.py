"""Disk writes: how many bytes does a cold job send to the disk to keep its cache and reports?

    python bench/disk_writes.py                         # 20,000 clips and a 100,000-row cache fill
    python bench/disk_writes.py --before f5a5020        # ... and the same on another revision, in the same run
    python bench/disk_writes.py --quick --quiet         # 300 clips, a 3,000-row fill (the smoke test)

The clips are distinct 0.2 s WAV files (a tone and seeded noise: every content hash
differs), 1,000 to a folder. Each tree (this checkout, and with ``--before REV`` that
revision exported by ``git archive``) runs the shipped model's labelling job on them in a
fresh process with a cold cache (TMPDIR inside the run's folder, so the spools are
counted). Bytes written are the kernel's ``write_bytes`` of the job's process tree (the
benchmark is a child subreaper: the job and its loky workers are reaped into its
``/proc/self/io``), less ``cancelled_write_bytes`` (pages of files deleted before they
reached the disk); bytes kept are the blocks the cache and output folders hold after the job.
The job's own process also charges each write to the stage that made it (the counter read
around each call): spools, index (SQLite main file and WAL, checkpoints included), parts,
merges (a close's compaction: its parts and index updates), claims, reports and the rest.

The fill writes ``--fill`` distinct rows through the cache API as a job does at a given
rate (``--fill-flush``: rows per one-second flush; 400 is about the cold job's rate on the
2-core dev VM, 100 a slower job's), each file's path remembered and ``release`` every 4,096
files, then closes the store (its merge). Rows "fill 100000/400": 100,000 rows, 400 a flush.

The project's goal: a cold 20,000-clip job and the 100,000-row fill both write at most
2x the bytes they keep, with wall time no worse.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, progress_log, shipped_job

SR = 16000
N_SAMPLES = 3200  # 0.2 s
PER_FOLDER = 1000
_PR_SET_CHILD_SUBREAPER = 36

# Runs in the job's process (with the tree under test first on sys.path): charges each
# write to a stage by reading this process's counter around the calls that write,
# runs the job, and writes the per-stage bytes to argv[2].
_RUNNER = r"""
import contextlib, functools, json, sys, threading, time

def written():
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("write_bytes"):
                return int(line.split()[1])
    return 0

lock = threading.Lock()
stack, bytes_by, last = ["other"], {}, [written()]

def charge():
    now = written()
    bytes_by[stack[-1]] = bytes_by.get(stack[-1], 0) + now - last[0]
    last[0] = now

@contextlib.contextmanager
def stage(name):
    with lock:
        charge()
        stack.append(name)
    try:
        yield
    finally:
        with lock:
            charge()
            stack.pop()

def wrap(owner, attr, name, *, ctx=False):
    fn = getattr(owner, attr, None)
    if fn is None:
        return
    if ctx:  # a context manager: charge its body's writes to the caller's stage, not to this one
        @contextlib.contextmanager
        def w(*a, **k):
            with stage(name):
                cm = fn(*a, **k)
                value = cm.__enter__()
            try:
                yield value
            except BaseException:
                with stage(name):
                    if not cm.__exit__(*sys.exc_info()):
                        raise
            else:
                with stage(name):
                    cm.__exit__(None, None, None)
    else:
        @functools.wraps(fn)
        def w(*a, **k):
            with stage(name):
                return fn(*a, **k)
    setattr(owner, attr, w)

import batchser.spool as spool
import batchser.cache.index as index
import batchser.cache.parts as parts
import batchser.cache.maintain as maintain
import batchser.cache.claims as claims
import batchser.cache.store as store
import batchser.job as job

for attr in ("__init__", "append", "close", "chunks"):
    wrap(spool.Spool, attr, "spools")
for attr in ("_connect", "close", "add_part", "swap_parts", "forget_parts", "mark_used", "forget_rows",
             "remember_paths", "commit"):
    wrap(index.CacheIndex, attr, "index")
wrap(parts.Parts, "write", "parts")
wrap(maintain, "compact", "merges")
store.compact = maintain.compact
for attr in ("add", "release", "remove_stale", "read_others"):
    wrap(claims.Claims, attr, "claims")
# The report stage's calls, as job.py names them (older trees defined them there with a leading underscore).
for attr in ("_label_all", "_commit_reports", "_write_reports", "commit_reports", "write_reports"):
    wrap(job, attr, "reports")

from batchser.cli import main
t = time.perf_counter()
code = main(["run", "-q", sys.argv[1]])
wall = time.perf_counter() - t
with lock:
    charge()
json.dump({"wall": wall, "stages": bytes_by, "code": code}, open(sys.argv[2], "w"))
sys.exit(code)
"""

# The cache fill, through the API (argv: cache folder, rows, rows per flush, result file).
_FILL = r"""
import hashlib, json, sys, time
import numpy as np
from batchser.api import shipped_features
from batchser.cache import FeatureRecord, FeatureStore
from batchser.features import FeatureSpec

root, n, step, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
spec = FeatureSpec(tuple(shipped_features()), 16000)
rng = np.random.default_rng(0)
t = time.perf_counter()
with FeatureStore(root, spec) as store:
    for start in range(0, n, step):  # one flush per step rows: a job's one-second flush at step files/s
        recs = []
        for i in range(start, min(n, start + step)):
            h = hashlib.sha256(b"fill-%d" % i).hexdigest()
            store.remember_hash(f"/archive/d{i // 1000:04d}/f{i:07d}.wav", (6444, 10**18 + i, 10**18 + i), h)
            recs.append(FeatureRecord(h, "ok", "", 16000, 1, 0.2, rng.standard_normal(spec.dim).astype(np.float32)))
        store.add(recs)
        store.flush()
        if (start + step) % 4096 < step:
            store.release()
json.dump({"wall": time.perf_counter() - t}, open(out, "w"))
"""


def counters() -> dict[str, int]:
    with open("/proc/self/io") as fh:
        return {k: int(v) for k, v in (line.split(": ") for line in fh.read().splitlines())}


def disk_sectors() -> int:
    """Sectors written to the block devices (all of this host's writers: other sessions add noise)."""
    total = 0
    for dev in Path("/sys/block").iterdir():
        if dev.name.startswith(("loop", "ram", "zram")):
            continue
        stat = (dev / "stat").read_text().split()
        if len(stat) > 6:
            total += int(stat[6])
    return total


def kept(*folders: Path) -> int:
    """Bytes the folders hold on disk (allocated blocks)."""
    total = 0
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder):
            for f in files:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def make_clips(root: Path, n: int) -> None:
    """``n`` distinct 0.2 s clips: a tone of its own pitch plus seeded noise, 16-bit 16 kHz WAV."""
    data_len = N_SAMPLES * 2
    header = (
        b"RIFF"
        + struct.pack("<I4s", 36 + data_len, b"WAVE")
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, SR, SR * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_len)
    )
    t = np.arange(N_SAMPLES) / SR
    for i in range(n):
        folder = root / f"d{i // PER_FOLDER:03d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        y = 0.3 * np.sin(2 * np.pi * (100 + i % 3000) * t) + 0.05 * rng.standard_normal(N_SAMPLES)
        (folder / f"c{i:06d}.wav").write_bytes(header + (y * 32767).astype("<i2").tobytes())


def _subreaper() -> None:
    """Become the reaper of the job's orphans, so that their writes land in this process's counters."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _reap() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def measured(cmd: list[str], tree: Path, tmpdir: Path) -> dict[str, int]:
    """Run ``cmd`` with ``tree`` first on the path; its process tree's written bytes (and the devices')."""
    env = dict(os.environ, PYTHONPATH=str(tree), TMPDIR=str(tmpdir))
    subprocess.run(["sync"], check=True)
    before, sectors = counters(), disk_sectors()
    res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    _reap()
    subprocess.run(["sync"], check=True)
    after, sectors = counters(), disk_sectors() - sectors
    if res.returncode:
        raise SystemExit(f"{cmd[:3]} failed in {tree}: {res.stderr[-3000:]}")
    return {
        "written": after["write_bytes"] - before["write_bytes"],
        "cancelled": after["cancelled_write_bytes"] - before["cancelled_write_bytes"],
        "device": sectors * 512,
    }


def export(rev: str, into: Path) -> Path:
    """The tree of git revision ``rev`` of this checkout, extracted under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    tar = into / "tree.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as tf:
        tf.extractall(into / "tree", filter="data")
    tar.unlink()
    return into / "tree"


def run_job(tree: Path, clips: Path, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    (work / "tmp").mkdir()
    cache, out = work / "cache", work / "out"
    manifest = shipped_job(work / "job.yaml", "disk-writes", [{"path": str(clips)}], cache=cache, out=out)
    result = work / "stages.json"
    m = measured([sys.executable, "-c", _RUNNER, str(manifest), str(result)], tree, work / "tmp")
    info = json.loads(result.read_text())
    return m | {"wall": info["wall"], "stages": info["stages"], "kept": kept(cache, out)}


def run_fill(tree: Path, n: int, step: int, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    (work / "tmp").mkdir()
    result = work / "fill.json"
    cmd = [sys.executable, "-c", _FILL, str(work / "cache"), str(n), str(step), str(result)]
    m = measured(cmd, tree, work / "tmp")
    return m | {"wall": json.loads(result.read_text())["wall"], "kept": kept(work / "cache")}


STAGES = ("spools", "index", "parts", "merges", "claims", "reports", "other")


def mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=20000)
    ap.add_argument("--fill", type=int, default=100000, help="rows of the cache fill (0: none)")
    ap.add_argument(
        "--fill-flush",
        default="400,100",
        help="rows per flush of the fill, comma-separated (400: about the cold job's rate here)",
    )
    ap.add_argument("--before", metavar="REV", help="also measure this git revision (e.g. main), in the same run")
    ap.add_argument("--quick", action="store_true", help="300 clips and a 3,000-row fill")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.clips, args.fill = 300, 3000
    log = progress_log(args.quiet)
    _subreaper()
    with tempfile.TemporaryDirectory(prefix="disk-writes-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        trees = [("this tree", ROOT)]
        if args.before:
            trees.insert(0, (args.before, export(args.before, work / "before")))
        log(f"writing {args.clips:,} clips")
        make_clips(work / "clips", args.clips)
        results: list[tuple[str, str, dict[str, Any]]] = []
        for name, tree in trees:
            slug = "".join(c if c.isalnum() else "-" for c in name)
            log(f"{name}: cold job over {args.clips:,} clips")
            results.append((f"job {args.clips}", name, run_job(tree, work / "clips", work / f"job-{slug}")))
            for step in [int(x) for x in args.fill_flush.split(",")] if args.fill else []:
                log(f"{name}: cache fill of {args.fill:,} rows, {step} a flush")
                fill = run_fill(tree, args.fill, step, work / f"fill-{slug}-{step}")
                results.append((f"fill {args.fill}/{step}", name, fill))
    print("MB written (write_bytes less cancelled, process tree) against MB kept (cache and output blocks)")
    print(f"{'what':<16} {'tree':<10} {'written':>8} {'kept':>7} {'ratio':>6} {'wall s':>7} {'device':>7}")
    for what, name, r in results:
        net = r["written"] - r["cancelled"]
        print(
            f"{what:<16} {name:<10} {mb(net):>8} {mb(r['kept']):>7} {net / r['kept']:>5.2f}x "
            f"{r['wall']:>7.1f} {mb(r['device']):>7}"
        )
    print("job's own process, MB written per stage:")
    print(f"{'tree':<10} " + " ".join(f"{s:>7}" for s in STAGES))
    for _what, name, r in results:
        if "stages" in r:
            print(f"{name:<10} " + " ".join(f"{mb(r['stages'].get(s, 0)):>7}" for s in STAGES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
