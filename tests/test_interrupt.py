"""kill -9 in the middle of a job, and two jobs on one cache at once (real subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from tests.conftest import PROJECT

MODEL = PROJECT / "result" / "models" / "ravdess-4emo.skops"
N_FILES = 1200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N_FILES distinct 3-second clips: harmonic tones with noise, 4 kinds.

    Long enough that extraction takes a few seconds on 2 cores, so the job
    writes several cache parts (one a second) before it is killed.
    """
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    for i in range(N_FILES):
        f0 = 90 + 1.5 * i
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5)) * 0.2 + 0.02 * rng.standard_normal(t.size)
        sf.write(root / f"clip-{i:04d}.wav", y.astype(np.float32), 16000, subtype="PCM_16")
    return root


def manifest(tmp: Path, corpus: Path, *, name: str, cache: Path, out: str) -> Path:
    m = {
        "name": name,
        "inputs": [{"path": str(corpus)}],
        "emotions": ["angry", "sad", "neutral", "happy"],
        "cache": str(cache),
        "engine": {"backend": "loky", "n_jobs": 2, "batch_size": 8},
        "model": {"path": str(MODEL), "train": False},
        "output": {"dir": str(tmp / out)},
    }
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(m))
    return p


def start(job: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchser", "run", "-q", str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: kill the job with its workers
    )


def cached_rows(cache: Path) -> int:
    """Rows in every visible feature part; each must be a complete Parquet file."""
    parts = list((cache / "features").glob("*/part-*.parquet"))
    return sum(pq.read_metadata(p).num_rows for p in parts)


def group_gone(pgid: int, *, within_s: float) -> bool:
    """Whether every process of group ``pgid`` has exited within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_kill_9_then_resume_reuses_work_and_matches_an_uninterrupted_run(tmp_path: Path, corpus: Path) -> None:
    cache = tmp_path / "cache"
    job = manifest(tmp_path, corpus, name="interrupted", cache=cache, out="out")
    proc = start(job)
    deadline = time.monotonic() + 120
    done_at_kill = 0
    while time.monotonic() < deadline and proc.poll() is None:
        done_at_kill = cached_rows(cache)  # reading while the job writes: no partial part may show
        # The first part (flushed after a second) is enough: waiting for more risks
        # killing the job while it writes its reports, after its last flush.
        if done_at_kill >= N_FILES // 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the job finished before it could be killed: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "out").exists(), "a report appeared before the job finished"
    kept = cached_rows(cache)
    assert N_FILES // 4 <= kept < N_FILES

    res = subprocess.run([sys.executable, "-m", "batchser", "run", "-q", str(job)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    s = summary(tmp_path / "out")
    assert s["from_cache"] == kept and s["extracted"] == N_FILES - kept and s["failed"] == 0

    ref_job = manifest(tmp_path, corpus, name="reference", cache=tmp_path / "cache2", out="ref")
    assert subprocess.run([sys.executable, "-m", "batchser", "run", "-q", str(ref_job)]).returncode == 0
    a = pd.read_parquet(tmp_path / "out" / "annotations.parquet")
    b = pd.read_parquet(tmp_path / "ref" / "annotations.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_two_jobs_share_one_cache_at_once(tmp_path: Path, corpus: Path) -> None:
    cache = tmp_path / "cache"
    procs = [start(manifest(tmp_path, corpus, name=f"job{i}", cache=cache, out=f"out{i}")) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    s0, s1 = summary(tmp_path / "out0"), summary(tmp_path / "out1")
    assert s0["files"] == s1["files"] == N_FILES and s0["failed"] == s1["failed"] == 0
    # Work is shared through claims: about N in all, not the 2 x N of two jobs
    # ignoring each other (a claim is seen within 50 ms, so a few may overlap).
    assert s0["extracted"] + s1["extracted"] <= 1.05 * N_FILES, (s0, s1)
    feats = pd.read_parquet(next((cache / "features").iterdir()))
    assert feats["content_hash"].nunique() == N_FILES  # nothing lost
    a = pd.read_parquet(tmp_path / "out0" / "annotations.parquet")
    b = pd.read_parquet(tmp_path / "out1" / "annotations.parquet")
    pd.testing.assert_frame_equal(a, b)
    # A third run finds everything.
    res = subprocess.run([sys.executable, "-m", "batchser", "run", "-q", str(procs and tmp_path / "job0.yaml")])
    assert res.returncode == 0 and summary(tmp_path / "out0")["extracted"] == 0


def test_sigterm_stops_like_ctrl_c_and_leaves_nothing_running(tmp_path: Path, corpus: Path) -> None:
    cache = tmp_path / "cache"
    job = manifest(tmp_path, corpus, name="terminated", cache=cache, out="out")
    proc = start(job)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and cached_rows(cache) < N_FILES // 4:
        time.sleep(0.02)
    assert proc.poll() is None, f"the job finished before it could be stopped: {proc.communicate()}"
    proc.send_signal(signal.SIGTERM)  # to the job alone, as a service manager or `kill` would
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); finished features are cached, rerun to resume" in err
    assert not list((cache / "claims").glob("*/*.claims")), "a claim was left behind"
    kept = cached_rows(cache)
    assert kept >= N_FILES // 4
    if not group_gone(proc.pid, within_s=10):  # its workers go with it (same process group)
        pytest.fail("worker processes outlived the terminated job")
    res = subprocess.run([sys.executable, "-m", "batchser", "run", "-q", str(job)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert summary(tmp_path / "out")["from_cache"] >= kept


def test_workers_exit_when_their_job_is_killed(tmp_path: Path, corpus: Path) -> None:
    job = manifest(tmp_path, corpus, name="orphans", cache=tmp_path / "cache", out="out")
    proc = start(job)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and cached_rows(tmp_path / "cache") == 0:
        time.sleep(0.02)
    assert proc.poll() is None, f"the job finished before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)  # the job alone: its workers are not told
    proc.wait(timeout=30)
    if not group_gone(proc.pid, within_s=15):  # they notice within a second or two (loky's tracker follows)
        leftover = subprocess.run(["ps", "-o", "pid,args", "-g", str(proc.pid)], capture_output=True, text=True).stdout
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"worker processes outlived the killed job:\n{leftover}")
