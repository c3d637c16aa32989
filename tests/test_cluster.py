"""A Dask cluster whose workers share no disk with the job: the archive is in object storage (moto's S3 server).

The scheduler and two workers are processes of their own, started from the
``dask scheduler`` and ``dask worker`` command lines, each with its own HOME,
TMPDIR and working folder. Where the machine allows it (user namespaces),
each worker also runs in mount and UTS namespaces of its own: a tmpfs is
mounted over /tmp, so the job's cache, reports and temporary files (all
under /tmp here) do not even exist for the workers, and each has its own
host name. The workers read the audio from S3; features come back to the
job's own cache; the reports equal a local run's to the last bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from batchser.job import run_job
from batchser.manifest import parse_manifest
from tests.conftest import PROJECT, SHIPPED_FEATURES, SHIPPED_MODEL, write_audio
from tests.s3 import S3, free_port, s3_server

distributed = pytest.importorskip("distributed", reason="needs dask.distributed: pip install -e '.[dask]'")
pytest.importorskip("s3fs", reason="needs s3fs: pip install -e '.[s3]'")

N = 160
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--uts"]
PROBS = ["label", "confidence", "status", "error", "p_angry", "p_sad", "p_neutral", "p_happy", "content_hash"]


def _namespaces() -> str:
    """ "" when separate mount and UTS namespaces (with a private /tmp) can be made here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "--uts",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /tmp && hostname x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "" if probe.returncode == 0 else f"unshare refused: {probe.stderr.strip()[:200]}"


@contextlib.contextmanager
def _cluster(s3: S3, root: Path, *, nanny: bool = False) -> Iterator[dict[str, Any]]:
    """A scheduler and workers w1, w2: separate processes, each in a folder (and namespaces, if allowed) of its own."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    hidden = _namespaces()
    procs: list[subprocess.Popen[bytes]] = []
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DASK_"))}
    env = {**base, "PYTHONPATH": str(PROJECT), "BATCHSER_QUIET": "1"}

    def start(name: str, cmd: list[str], worker_env: dict[str, str]) -> subprocess.Popen[bytes]:
        home = root / name
        (home / "tmp").mkdir(parents=True)
        e = {**env, **worker_env, "HOME": str(home), "TMPDIR": str(home / "tmp")}
        if name != "scheduler" and not hidden:
            # Its own /tmp (the job's cache and reports live in the test's, now out of sight) and host name.
            inner = (
                f"mount -t tmpfs tmpfs /tmp && mkdir -p /tmp/{name}/tmp && hostname {name} && cd /tmp/{name} && "
                f"HOME=/tmp/{name} TMPDIR=/tmp/{name}/tmp exec {' '.join(cmd)}"
            )
            cmd = [*UNSHARE, "sh", "-c", inner]
        log = open(home / "log.txt", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(cmd, cwd=home, env=e, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    dask = [sys.executable, "-m", "dask"]  # the `dask` command line of this interpreter
    try:
        start("scheduler", [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], {})
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (root / "scheduler" / "log.txt").read_text()
                time.sleep(0.1)
        for name in ("w1", "w2"):
            start(
                name,
                [*dask, "worker", address, "--name", name, "--nthreads", "1",
                 "--nworkers", "1", "--nanny" if nanny else "--no-nanny", "--no-dashboard"],
                s3.env(),  # each worker's own credential chain: the job hands it none
            )  # fmt: skip
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            yield {"address": address, "client": client, "hidden": hidden}
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3, Path]]:
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(5)
    t = np.arange(3 * 16000) / 16000
    for i in range(N):
        y = 0.3 * np.sin(2 * np.pi * (110 + 3 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * (2 + i % 5) * t))
        write_audio(root / "clips" / f"s{i % 4}" / f"c{i:03d}.wav", (y + 0.02 * rng.standard_normal(t.size)), 16000)
    with s3_server() as s3, pytest.MonkeyPatch.context() as mp:
        for k, v in s3.env().items():
            mp.setenv(k, v)
        from batchser.storage import remote

        mp.setattr(remote, "_backends", {})
        s3.upload(root / "clips", "archive", "clips/")
        yield s3, root


def _job(root: Path, name: str, engine: dict[str, Any], path: str) -> Any:
    m = {
        "name": name,
        "inputs": [{"path": path}],
        "features": SHIPPED_FEATURES,
        "audio": {"sample_rate": 16000},
        "cache": f"cache-{name}",
        "engine": engine,
        "model": {"path": str(SHIPPED_MODEL)},
        "output": {"dir": name, "formats": ["parquet"]},
    }
    (root / f"{name}.yaml").write_text(yaml.safe_dump(m))
    return parse_manifest(yaml.safe_dump(m), base_dir=root)


def _rows(root: Path, name: str, prefix: str) -> pd.DataFrame:
    df = pd.read_parquet(root / name / "annotations.parquet")
    return df.assign(path=df["path"].str.removeprefix(prefix)).set_index("path").sort_index()[PROBS]


def test_workers_that_share_no_disk_read_the_archive_from_object_storage(archive: tuple[S3, Path]) -> None:
    s3, root = archive
    local = _job(root, "local", {"backend": "sequential"}, "clips")
    run_job(local, progress=False)
    with tempfile.TemporaryDirectory(prefix="batchser-cluster-", dir="/tmp") as hosts, _cluster(s3, Path(hosts)) as c:
        where = c["client"].run(
            lambda: (socket.gethostname(), os.environ["HOME"], os.getcwd(), os.path.exists(str(root)))
        )
        if not c["hidden"]:
            assert sorted(h for h, *_ in where.values()) == ["w1", "w2"]  # UTS namespaces: hosts of their own
            assert not any(seen for *_, seen in where.values()), "a worker sees the job's folder"
        else:
            print(f"workers in separate folders only ({c['hidden']})")
        assert len({home for _, home, _, _ in where.values()}) == 2
        job = _job(
            root, "remote", {"backend": "dask", "scheduler": c["address"], "batch_size": 4}, "s3://archive/clips/"
        )
        s = run_job(job, progress=False)
    assert (s.n_files, s.n_extracted, s.n_failed) == (N, N, 0)
    assert sorted(s.per_worker) == ["w1", "w2"] and sum(s.per_worker.values()) == N and min(s.per_worker.values()) > 0
    summary = json.loads((root / "remote" / "summary.json").read_text())
    assert summary["workers"] == dict(s.per_worker)
    pd.testing.assert_frame_equal(
        _rows(root, "remote", "s3://archive/clips/"), _rows(root, "local", "clips/"), check_exact=True
    )
    # The features came back to the job's own cache (workers never write it).
    stored = pq.read_table(root / "cache-remote" / "features", columns=["content_hash"]).column(0).to_pylist()
    assert len(set(stored)) == N


def test_a_killed_worker_s_files_are_redone_on_the_other(archive: tuple[S3, Path]) -> None:
    s3, root = archive
    with tempfile.TemporaryDirectory(prefix="batchser-cluster-", dir="/tmp") as hosts, _cluster(s3, Path(hosts)) as c:
        client = c["client"]
        _job(root, "killed", {"backend": "dask", "scheduler": c["address"], "batch_size": 2}, "s3://archive/clips/")
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        job = subprocess.Popen(
            [sys.executable, "-m", "batchser", "run", "-q", str(root / "killed.yaml")],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        pids = client.run(os.getpid)  # address -> process id (no PID namespace: ids are this machine's)
        names = {a: i["name"] for a, i in client.scheduler_info()["workers"].items()}
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and job.poll() is None:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                victim = names[busy[0]]
                os.kill(pids[busy[0]], signal.SIGKILL)  # mid-task, no nanny: it is gone for good
            time.sleep(0.02)
        _, err = job.communicate(timeout=300)
    assert victim is not None, "the job finished before a worker could be killed"
    assert job.returncode == 0, err
    df = pd.read_parquet(root / "killed" / "annotations.parquet")
    assert len(df) == N and (df["status"] == "ok").all()
    workers = json.loads((root / "killed" / "summary.json").read_text())["workers"]
    survivor = "w2" if victim == "w1" else "w1"
    assert sum(workers.values()) == N and workers[survivor] > workers.get(victim, 0), workers
