"""The same jobs on a real Dask cluster (LocalCluster, worker processes on loopback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from batchser.job import run_job
from batchser.manifest import parse_manifest
from tests.conftest import PROJECT, manifest_dict

distributed = pytest.importorskip("distributed", reason="needs dask.distributed: pip install -e '.[dask]'")

MODEL = PROJECT / "result" / "models" / "ravdess-4emo.skops"
PROBS = ["label", "confidence", "p_angry", "p_sad", "p_neutral", "p_happy", "status", "error", "path"]


def _job(tmp: Path, **over: Any) -> Any:
    return parse_manifest(yaml.safe_dump(manifest_dict(tmp, **over)), base_dir=tmp)


def test_train_and_annotate_on_a_local_cluster_equal_loky(tmp_path: Path, labelled_set: tuple[Path, Path]) -> None:
    results = {}
    for backend in ("loky", "dask"):
        engine = {"backend": backend, "n_jobs": 2} | ({"scheduler": "local"} if backend == "dask" else {})
        train = _job(
            tmp_path,
            name=f"train-{backend}",
            cache=f"cache-{backend}",  # each backend extracts everything itself
            engine=engine,
            model={"path": f"models/{backend}.skops", "train": True, "mlp": {"max_iter": 300}},
            output={"dir": f"train-{backend}"},
        )
        s = run_job(train, progress=False)
        assert s.n_extracted == s.n_files == 24 and s.n_failed == 0
        annotate = _job(
            tmp_path,
            name=f"annotate-{backend}",
            inputs=[{"path": "audio"}],
            cache=f"cache-annotate-{backend}",
            engine=engine,
            model={"path": f"models/{backend}.skops", "train": False},
            output={"dir": f"annotate-{backend}"},
        )
        a = run_job(annotate, progress=False)
        assert a.n_extracted == 24
        results[backend] = (
            s.model_id,
            pd.read_parquet(tmp_path / f"train-{backend}" / "annotations.parquet")[PROBS],
            pd.read_parquet(tmp_path / f"annotate-{backend}" / "annotations.parquet")[PROBS],
        )
    (loky_id, loky_train, loky_ann), (dask_id, dask_train, dask_ann) = results["loky"], results["dask"]
    # Bit-identical features whatever the backend, so the same weights and the same numbers.
    assert loky_id.split("@")[1] == dask_id.split("@")[1]
    pd.testing.assert_frame_equal(loky_train, dask_train, check_exact=True)
    pd.testing.assert_frame_equal(loky_ann, dask_ann, check_exact=True)


def test_an_unreachable_scheduler_is_a_clear_fatal_error(tmp_path: Path, labelled_set: tuple[Path, Path]) -> None:
    m = manifest_dict(tmp_path, engine={"backend": "dask", "scheduler": "tcp://127.0.0.1:9", "connect_timeout_s": 1})
    m["model"] = {"path": str(MODEL), "train": False}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(m))
    res = subprocess.run(
        [sys.executable, "-m", "batchser", "run", "-q", str(tmp_path / "job.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in res.stderr


N_KILL = 240


def test_killing_a_worker_mid_job_still_gives_complete_reports(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(1)
    t = np.arange(3 * 16000) / 16000
    for i in range(N_KILL):
        y = 0.3 * np.sin(2 * np.pi * (120 + 2 * i) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(audio / f"c{i:03d}.wav", y.astype(np.float32), 16000, subtype="PCM_16")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        m = {
            "name": "killed",
            "inputs": [{"path": str(audio)}],
            "emotions": ["angry", "sad", "neutral", "happy"],
            "cache": str(tmp_path / "cache"),
            "engine": {"backend": "dask", "scheduler": cluster.scheduler_address, "batch_size": 4},
            "model": {"path": str(MODEL)},
            "output": {"dir": str(tmp_path / "out")},
        }
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(m))
        job = subprocess.Popen(
            [sys.executable, "-m", "batchser", "run", "-q", str(tmp_path / "job.yaml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pids = client.run(os.getpid)  # worker address -> process id
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and job.poll() is None:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                victim = pids[busy[0]]
                os.kill(victim, signal.SIGKILL)  # mid-task: the nanny restarts it, the scheduler reruns its tasks
            time.sleep(0.02)
        _, err = job.communicate(timeout=300)
        assert victim is not None, "the job finished before a worker could be killed"
        assert job.returncode == 0, err
        client.wait_for_workers(2, timeout=60)
        assert victim not in client.run(os.getpid).values()  # it really died and was replaced
    df = pd.read_parquet(tmp_path / "out" / "annotations.parquet")
    assert len(df) == N_KILL and (df["status"] == "ok").all()
    feats = pd.read_parquet(next((tmp_path / "cache" / "features").iterdir()))
    assert feats["content_hash"].nunique() == N_KILL
