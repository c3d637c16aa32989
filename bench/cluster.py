"""Two Dask workers with one core each against one: a cold job of 5,000 clips, files per second.

    python bench/cluster.py                      # 5,000 generated 1-s clips, 3 repeats
    python bench/cluster.py --files 500 --repeats 1

A scheduler and its workers are started from the ``dask scheduler`` and
``dask worker`` command lines, each worker single-threaded and pinned to a
core of its own (``taskset``) in a folder (HOME, TMPDIR) of its own; the job
is a whole ``batchser run -q`` process with an empty cache each time, which
hashes, writes the cache and labels in its own process while the workers
extract. Medians; the ratio of two workers' files/s to one's, and beside it
the workers' CPU per file and how many cores they kept busy during the
feature stage (on a machine shared with other work, fewer than asked). The
clips lie on this machine's disk (moto's server would take a core from the
workers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import soundfile as sf
from _common import MODEL, ROOT, progress_log, run_job

from batchser.api import shipped_features


def _clips(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for i in range(n):
        y = 0.3 * np.sin(2 * np.pi * (100 + i % 400) * t) + 0.02 * rng.standard_normal(t.size)
        (folder / f"s{i % 20}").mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"s{i % 20}" / f"c{i:05d}.wav", y.astype(np.float32), 16000, subtype="PCM_16")
    return folder


def _cpu() -> float:
    """This process's CPU seconds (run on each worker)."""
    t = os.times()
    return t.user + t.system


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def cluster(n_workers: int, root: Path) -> Iterator[str]:
    """A scheduler and ``n_workers`` single-threaded workers, worker i pinned to core i; yields the address."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BATCHSER_QUIET": "1"}
    procs = []
    try:
        for name, cmd in [("scheduler", [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                         "--no-dashboard"])] + [
            (f"w{i}", (["taskset", "-c", str(i % (os.cpu_count() or 1))] if shutil.which("taskset") else [])
             + [*dask, "worker", address, "--name", f"w{i}", "--nthreads", "1", "--nworkers", "1", "--no-nanny",
                "--no-dashboard"])
            for i in range(n_workers)
        ]:  # fmt: skip
            home = root / name
            (home / "tmp").mkdir(parents=True, exist_ok=True)
            e = {**env, "HOME": str(home), "TMPDIR": str(home / "tmp")}
            procs.append(subprocess.Popen(cmd, cwd=home, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if name == "scheduler":
                deadline = time.monotonic() + 60
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    walls: dict[int, list[float]] = {1: [], 2: []}
    stage: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}  # the workers' CPU seconds during the job
    per_worker: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="batchser-bench-cluster-") as tmp:
        work = Path(tmp)
        log(f"writing {args.files} clips")
        audio = _clips(work / "audio", args.files)
        for r in range(args.repeats):
            for n in (1, 2):
                with cluster(n, work / f"hosts-{n}-{r}") as address, distributed.Client(address) as client:
                    job = {
                        "name": "cluster",
                        "inputs": [{"path": str(audio)}],
                        "features": shipped_features(),
                        "cache": str(work / f"cache-{n}-{r}"),
                        "engine": {"backend": "dask", "scheduler": address},
                        "model": {"path": str(MODEL)},
                        "output": {"dir": str(work / f"out-{n}"), "formats": ["parquet"], "page": False},
                    }
                    before = client.run(_cpu)
                    wall, _, summary = run_job(job, work / "job.yaml")
                    after = client.run(_cpu)
                cpu[n].append(sum(after[w] - before[w] for w in after))
                walls[n].append(wall)
                stage[n].append(summary["stage_seconds"].get("features", wall))
                per_worker[n] = summary["workers"]
                log(f"{n} worker(s) #{r + 1}: {wall:.2f} s, workers' CPU {cpu[n][-1]:.1f} s, {summary['workers']}")
    med = {n: statistics.median(v) for n, v in walls.items()}
    feat = {n: statistics.median(v) for n, v in stage.items()}
    print(
        f"{args.files} clips of 1 s, cold; medians of {args.repeats}; {os.cpu_count()} cores, each worker pinned to one"
    )
    busy = {n: statistics.median(c / f for c, f in zip(cpu[n], stage[n], strict=True)) for n in (1, 2)}
    head = f"{'workers':<9}{'wall s':>8}{'files/s':>9}{'features s':>12}{'files/s':>9}"
    print(f"{head}{'ms CPU/file':>13}{'cores busy':>12}")
    for n in (1, 2):
        ms = 1000 * statistics.median(cpu[n]) / args.files
        print(
            f"{n:<9}{med[n]:>8.2f}{args.files / med[n]:>9.0f}{feat[n]:>12.2f}{args.files / feat[n]:>9.0f}"
            f"{ms:>13.2f}{busy[n]:>12.2f}"
        )
    print(f"two workers / one: {med[1] / med[2]:.2f}x files/s (whole job), {feat[1] / feat[2]:.2f}x (feature stage)")
    print(json.dumps({"files": args.files, "wall_s": walls, "features_s": stage, "worker_cpu_s": cpu,
                      "per_worker": per_worker}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
