"""A job streams its archive in chunks: the same reports whatever the chunk size, memory flat in the file count."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import batchser.job
from batchser.cache import FeatureStore
from batchser.features import FeatureSpec
from batchser.job import run_job
from batchser.manifest import ManifestError, load_manifest
from batchser.pids import OwnerLock
from batchser.segments import SegmentSpec
from batchser.spool import work_folder

from .conftest import speechlike, write_audio, write_manifest

CLASSES = ["angry", "sad", "neutral", "happy"]
BENCH = Path(__file__).resolve().parents[1] / "bench"


def _report(tmp_path: Path, out: str) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / out / "annotations.parquet")


@pytest.fixture
def trained(tmp_path: Path, labelled_set: tuple[Path, Path]) -> Path:
    """A speaker-normalising model trained on labelled_set, and 30 unlabelled clips in two folders."""
    model = {"path": "models/s.skops", "train": True, "mlp": {"max_iter": 200}, "normalize": "speaker"}
    model["min_speaker_files"] = 5
    run_job(load_manifest(write_manifest(tmp_path, "train.yaml", model=model)), progress=False)
    for i in range(30):
        kind = CLASSES[i % 4]
        folder = "low" if i % 2 else "high"
        y = speechlike(kind, sr=16000, seed=500 + i) * (0.3 if folder == "low" else 0.9)
        write_audio(tmp_path / "new" / folder / f"{kind}-{i:02d}.wav", y.astype(np.float32), 16000)
    (tmp_path / "new" / "broken.wav").write_bytes(b"RIFF not audio")
    return tmp_path


@pytest.mark.parametrize("adapt", ["speaker", "cluster", "corpus"])
def test_labels_do_not_depend_on_the_chunk_size(trained: Path, monkeypatch: pytest.MonkeyPatch, adapt: str) -> None:
    """Group statistics are measured over the whole job before any file is labelled, in every mode."""
    tmp_path = trained
    model = {"path": "models/s.skops", "train": False, "adapt": adapt, "min_speaker_files": 5}
    inputs = [{"path": "new", "speaker": "folder"}]
    run_job(load_manifest(write_manifest(tmp_path, "whole.yaml", inputs=inputs, model=model, output={"dir": "whole"})))
    monkeypatch.setattr(batchser.job, "CHUNK", 4)  # 31 files: 8 chunks
    s = run_job(load_manifest(write_manifest(tmp_path, "chunks.yaml", inputs=inputs, model=model, output={"dir": "c"})))
    whole, chunked = _report(tmp_path, "whole"), _report(tmp_path, "c")
    assert s.n_files == 31 and s.n_failed == 1 and s.failures[0][0] == "new/broken.wav"
    assert list(chunked.path) == sorted(chunked.path) == list(whole.path)
    assert chunked.normalized_by.tolist() == whole.normalized_by.tolist()
    assert adapt in set(whole.normalized_by.dropna()) <= {adapt, "corpus"}
    probs = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(chunked[probs].to_numpy(), whole[probs].to_numpy(), rtol=1e-9, atol=1e-12)
    assert chunked.label.tolist() == whole.label.tolist()


def test_a_train_job_in_chunks_trains_the_same_model(
    tmp_path: Path, labelled_set: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = {"path": "models/a.skops", "train": True, "mlp": {"max_iter": 200}, "normalize": "speaker"}
    model["min_speaker_files"] = 5
    a = run_job(load_manifest(write_manifest(tmp_path, "a.yaml", model=model, output={"dir": "a"})), progress=False)
    monkeypatch.setattr(batchser.job, "CHUNK", 5)
    model["path"] = "models/b.skops"
    b = run_job(load_manifest(write_manifest(tmp_path, "b.yaml", model=model, output={"dir": "b"})), progress=False)
    assert a.model_id.split("@")[1] == b.model_id.split("@")[1]  # the same weights
    ra, rb = _report(tmp_path, "a"), _report(tmp_path, "b")
    assert rb.used_for_training.tolist() == ra.used_for_training.tolist() and rb.used_for_training.any()
    assert rb.label.tolist() == ra.label.tolist() and rb.normalized_by.tolist() == ra.normalized_by.tolist()


def test_a_table_naming_no_file_is_refused_before_any_hashing(tmp_path: Path, labelled_set: tuple[Path, Path]) -> None:
    _root, csv = labelled_set
    csv.write_text("path,label\nelsewhere/x.wav,angry\n")
    with pytest.raises(ManifestError, match="match no file"):
        run_job(load_manifest(write_manifest(tmp_path)), progress=False)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "reports").exists()


# A job in a fresh interpreter that prints its own peak RSS (KiB).
_MEASURED = textwrap.dedent(
    """
    import sys
    from batchser.cli import main
    code = main(["run", "-q", sys.argv[1]])
    print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    sys.exit(code)
    """
)


def test_memory_stays_flat_as_the_archive_grows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 and 20,000 cached files: peak RSS within 1.2x (the job held about 10 KB per file: 1.5x here)."""
    monkeypatch.syspath_prepend(str(BENCH))
    from _common import MODEL, shipped_features, synthetic_rows
    from files_scale import make_tree

    tree = tmp_path / "tree"
    hashes = make_tree(tree, 20_000)  # a0/d000 … a0/d019, 1,000 files each
    spec = FeatureSpec(tuple(shipped_features()), 16000)
    with FeatureStore(tmp_path / "cache", spec, segments=SegmentSpec()) as store:
        synthetic_rows(store, len(hashes), hashes=hashes)
    peaks = {}
    for n in (5_000, 20_000):
        job = {
            "name": f"n{n}",
            "inputs": [{"path": str(tree / "a0" / f"d{k:03d}")} for k in range(n // 1000)],
            "cache": str(tmp_path / "cache"),  # features: the model's
            "model": {"path": str(MODEL)},
            "output": {"dir": str(tmp_path / f"out{n}")},
        }
        manifest = tmp_path / f"n{n}.yaml"
        manifest.write_text(yaml.safe_dump(job))
        res = subprocess.run([sys.executable, "-c", _MEASURED, str(manifest)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        peaks[n] = int(res.stdout.split()[-1]) / 1024
        rows = pd.read_parquet(tmp_path / f"out{n}" / "annotations.parquet", columns=["status", "normalized_by"])
        assert len(rows) == n and (rows.status == "ok").all() and (rows.normalized_by == "corpus").all()
    print("peak RSS MiB", peaks)
    assert peaks[20_000] <= 1.2 * peaks[5_000], peaks


def test_spools_of_killed_jobs_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "batchser-job-999999999-abc"  # its owner lock is free: a killed job's
    live = tmp_path / "batchser-job-999999999-def"  # its owner lock is held, whatever the pid says
    other = tmp_path / "batchser-job-x"  # no lock at all and young: may be a job starting, left alone
    for d in (dead, live, other):
        d.mkdir()
    OwnerLock(dead).acquire().release()
    with OwnerLock(live), work_folder() as work:
        assert work.is_dir() and work.parent == tmp_path
        assert not dead.exists() and live.exists() and other.exists()
    assert not work.exists()
