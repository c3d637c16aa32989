"""What the benchmark scripts share: where the corpora and the shipped model are, and their console."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from batchser.api import default_model_path, shipped_features

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
RAVDESS = CORPORA / "ravdess"
MODEL = default_model_path()  # the model batchser ships and labels with by default
TUTORIAL_FEATURES = ["mfcc", "chroma", "mel"]
EMOTIONS = ["angry", "sad", "neutral", "happy"]


def have(folder: Path, what: str) -> bool:
    """Whether ``folder`` exists; if not, say so on stderr (the caller exits 2)."""
    if folder.is_dir():
        return True
    print(f"needs {what} in {folder}", file=sys.stderr)
    return False


POOLED = ("ravdess", "savee", "nemo", "urdu", "emovo", "ased")  # the corpora of the pooled train job


def have_pooled() -> bool:
    """Whether the six corpora of the leave-one-corpus-out benchmarks are there (else says which is not)."""
    return all(have(CORPORA / c, c) for c in POOLED)


def shipped_job(manifest: Path, name: str, inputs: list[dict[str, Any]], *, cache: Path, out: Path) -> Path:
    """Write a labelling manifest for the shipped model (2 loky workers) to ``manifest``; returns it."""
    job = {
        "name": name,
        "inputs": inputs,
        "emotions": EMOTIONS,
        "features": shipped_features(),
        "cache": str(cache),
        "engine": {"backend": "loky", "n_jobs": 2},
        "model": {"path": str(MODEL)},
        "output": {"dir": str(out)},
    }
    manifest.write_text(yaml.safe_dump(job))
    return manifest


def progress_log(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr, so that stdout holds only the table; none with ``--quiet``."""

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


def tutorial_features(path: str) -> np.ndarray:
    """The notebook's extract_feature: librosa.load(sr=16000), mfcc(y), chroma_stft(S=|stft|), melspectrogram(y)."""
    import librosa

    y, sr = librosa.load(path, sr=16000)
    stft = np.abs(librosa.stft(y))
    return np.concatenate(
        [
            np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).T, axis=0),
            np.mean(librosa.feature.chroma_stft(S=stft, sr=sr).T, axis=0),
            np.mean(librosa.feature.melspectrogram(y=y, sr=sr).T, axis=0),
        ]
    )


def tutorial_chroma(path: str, *, tuning: float | None = None) -> np.ndarray:
    """The tutorial recipe's chroma means, with ``tuning`` given to chroma_stft (None: estimated, as the recipe)."""
    import librosa

    y, sr = librosa.load(path, sr=16000)
    return np.mean(librosa.feature.chroma_stft(S=np.abs(librosa.stft(y)), sr=sr, tuning=tuning).T, axis=0)


def run_job(job: dict[str, Any], manifest: Path) -> tuple[float, float, dict[str, Any]]:
    """Run ``job`` as ``python -m batchser run -q`` in a fresh process.

    Returns wall seconds, peak RSS in MiB (/usr/bin/time's %M: the largest
    process of the job's tree, reaped workers included, since Linux folds a
    reaped child's peak into its parent's) and the job's summary.json.
    """
    manifest.write_text(yaml.safe_dump(job))
    t = time.perf_counter()
    res = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "batchser", "run", "-q", str(manifest)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(res.stderr)
    rss_mib = int(res.stderr.strip().splitlines()[-1]) / 1024
    summary = json.loads((Path(job["output"]["dir"]) / "summary.json").read_text())
    return wall, rss_mib, summary


# A job in a fresh interpreter, reporting its own peak RSS (ru_maxrss of a child
# would include its parent's, from before exec).
_RUN_MEASURED = """
import sys
from batchser.cli import main
code = main(["run", "-q", sys.argv[1]])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
print(hwm, file=sys.stderr)
sys.exit(code)
"""


def run_measured(manifest: Path) -> tuple[float, float]:
    """(wall s, peak RSS MiB of the job's own process: VmHWM as it exits) of ``batchser run -q manifest``."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _RUN_MEASURED, str(manifest)], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"the job failed: {res.stderr}")
    return wall, int(res.stderr.split()[-1]) / 1024


def feature_stage(summary: dict[str, Any]) -> float:
    """Seconds the job spent turning files into features (from discovery to closing the cache)."""
    st = summary["stage_seconds"]
    return sum(st[k] for k in ("discover", "open_cache", "hash", "features", "close_cache"))


def train_tutorial_model(work: Path, *, chroma_tuning: float | None = None) -> Path:
    """A 4-emotion model on the librosa tutorial recipe's features, trained on the 120 48 kHz RAVDESS files (untimed).

    The rows on the tutorial recipe's features label with it, so that they compare like with like
    (the shipped model uses the speech-rate features).
    """
    work.mkdir(parents=True, exist_ok=True)
    model = work / "tutorial.skops"
    job = {
        "name": "tutorial-model",
        "chroma_tuning": chroma_tuning,
        "inputs": [{"path": str(CORPORA / "ravdess-48k"), "labels": "ravdess"}],
        "emotions": EMOTIONS,
        "features": TUTORIAL_FEATURES,
        "cache": str(work / "tutorial-cache"),
        "model": {"path": str(model), "train": True},
        "output": {"dir": str(work / "tutorial-train")},
    }
    run_job(job, work / "tutorial-train.yaml")
    return model


def synthetic_rows(
    store: Any, n: int, *, seed: int = 0, per_part: int | None = None, hashes: list[str] | None = None
) -> None:
    """``n`` random rows in ``store``'s real schema, written and indexed as merged parts are.

    Random vectors under random hashes (or under ``hashes``, the first ``n``), sorted by
    hash, in row groups of ``ROW_GROUP``: a large cache in seconds, for the cache-size and
    file-count benchmarks and the bounded-memory test.
    """
    import pyarrow as pa

    from batchser.cache.maintain import BIG_ROWS, ROW_GROUP

    rng = np.random.default_rng(seed)
    per_part = per_part or BIG_ROWS
    for start in range(0, n, per_part):
        k = min(per_part, n - start)
        cols: dict[str, Any] = {
            "content_hash": pa.array(
                sorted(hashes[start : start + k] if hashes else [rng.bytes(32).hex() for _ in range(k)]), pa.string()
            ),
            "status": pa.array(["ok"] * k, pa.string()),
            "error": pa.array([""] * k, pa.string()),
            "warning": pa.array([""] * k, pa.string()),
            "orig_sample_rate": pa.array(np.full(k, 16000, np.int32)),
            "channels": pa.array(np.ones(k, np.int32)),
            "duration_s": pa.array(np.full(k, 2.0)),
            "n_segments": pa.array(np.zeros(k, np.int32)),
        }
        matrix = rng.standard_normal((k, len(store.columns)), dtype=np.float32)
        for j, name in enumerate(store.columns):
            cols[name] = pa.array(matrix[:, j])
        path, data = store._features.write(pa.table(cols), row_group_size=ROW_GROUP)
        store._index.add_part(store._fkey, path.name, data)
