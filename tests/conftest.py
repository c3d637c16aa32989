"""Shared fixtures: generated audio, manifests, and the RAVDESS corpus when present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from batchser.model import read_meta

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "corpora"
RAVDESS = SHARED / "ravdess"
RAVDESS_48K = SHARED / "ravdess-48k"
SHIPPED_MODEL = PROJECT / "result" / "models" / "ravdess-4emo.skops"
# Jobs that load the shipped model must ask for the features it was trained on.
SHIPPED_FEATURES: list[str] = read_meta(SHIPPED_MODEL).feature_spec["names"]


def _need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(
            f"needs the RAVDESS corpus at {path} (../shared beside the repo; present in CI, absent in a fresh clone)"
        )
    return path


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    return _need(RAVDESS)


@pytest.fixture(scope="session")
def ravdess48_dir() -> Path:
    return _need(RAVDESS_48K)


def tone(freq: float, *, sr: int, seconds: float = 1.0, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    """A sine at ``freq`` with a short fade, shape (n,) or (n, channels)."""
    t = np.arange(int(sr * seconds)) / sr
    y = amp * np.sin(2 * np.pi * freq * t)
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    y = (y * fade).astype(np.float32)
    return y if channels == 1 else np.stack([y * (1 - 0.1 * c) for c in range(channels)], axis=1)


def speechlike(kind: str, *, sr: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Four easily told apart signal families standing in for four classes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    if kind == "angry":  # loud broadband bursts
        env = (np.sin(2 * np.pi * 6 * t) > 0).astype(float)
        y = 0.8 * rng.standard_normal(t.size) * env
    elif kind == "sad":  # quiet low hum with harmonics
        f0 = 110 * (1 + 0.02 * rng.standard_normal())
        y = 0.1 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 4))
    elif kind == "neutral":  # steady mid tone
        y = 0.3 * np.sin(2 * np.pi * 440 * (1 + 0.02 * rng.standard_normal()) * t)
    else:  # happy: rising chirp
        f = 600 + 1500 * t / seconds
        y = 0.4 * np.sin(2 * np.pi * np.cumsum(f) / sr)
    y = y + 0.003 * rng.standard_normal(t.size)
    return np.clip(y, -1, 1).astype(np.float32)


SENTENCES = [
    "Kids are talking by the door.",
    "Dogs are sitting by the door, and nobody seems to mind at all.",
    "I never said she stole my money.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather is lovely today.",
    "Where did you put the keys?",
]


def espeak_sentences(sentences: list[str], folder: Path, *, sr: int = 16000) -> list[np.ndarray]:
    """espeak-ng saying each of ``sentences`` (untrimmed), float32 at ``sr``, at half scale; skips without espeak-ng."""
    import shutil
    import subprocess

    import librosa

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (apt-get install espeak-ng; .ci/run installs it)")
    out = []
    for k, text in enumerate(sentences):
        wav = folder / f"espeak-{k}.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), text], check=True, capture_output=True)
        y, native = sf.read(wav, dtype="float32")
        out.append(librosa.resample(y, orig_sr=native, target_sr=sr).astype(np.float32) * 0.5)
    return out


@pytest.fixture(scope="session")
def say(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``say(text, voice="en", pitch=50)``: espeak-ng speech, trimmed, float32 at 16 kHz (each made once)."""
    import shutil
    import subprocess

    import librosa

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (apt-get install espeak-ng; .ci/run installs it)")
    folder = tmp_path_factory.mktemp("espeak")
    made: dict[tuple[str, str, int], np.ndarray] = {}

    def speak(text: str, voice: str = "en", pitch: int = 50) -> np.ndarray:
        key = (text, voice, pitch)
        if key not in made:
            wav = folder / f"{len(made)}.wav"
            cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", "150", "-w", str(wav), text]
            subprocess.run(cmd, check=True, capture_output=True)
            y, sr = sf.read(wav, dtype="float32")
            y, _ = librosa.effects.trim(y, top_db=40)  # espeak's own leading and trailing silence
            made[key] = (librosa.resample(y, orig_sr=sr, target_sr=16000) * 0.5).astype(np.float32)
        return made[key]

    return speak


def room_noise(seconds: float, *, sr: int = 16000, db: float = -50.0, seed: int = 0) -> np.ndarray:
    """Quiet noise, like a room between utterances (``db`` dBFS RMS)."""
    return (np.random.default_rng(seed).normal(0, 1, round(seconds * sr)) * 10 ** (db / 20)).astype(np.float32)


def write_audio(path: Path, y: np.ndarray, sr: int, *, subtype: str | None = None, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr, subtype=subtype, format=fmt)
    return path


@pytest.fixture
def labelled_set(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of 4 classes x 6 generated clips in mixed formats, and a CSV labelling them."""
    root = tmp_path / "audio"
    rows = ["path,label,speaker"]
    formats = [("wav", "PCM_16", 16000), ("flac", "PCM_24", 22050), ("wav", "FLOAT", 44100), ("flac", "PCM_16", 8000)]
    for ci, kind in enumerate(["angry", "sad", "neutral", "happy"]):
        for k in range(6):
            ext, subtype, sr = formats[(ci + k) % len(formats)]
            rel = f"{kind}/{kind}-{k}.{ext}"
            write_audio(root / rel, speechlike(kind, sr=sr, seed=100 * ci + k), sr, subtype=subtype)
            rows.append(f"audio/{rel},{kind},spk{k % 3}")
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return root, csv


def manifest_dict(tmp_path: Path, **over: Any) -> dict[str, Any]:
    """A valid manifest rooted at ``tmp_path`` with everything written inside it."""
    m: dict[str, Any] = {
        "name": "t",
        "inputs": [{"path": "audio", "labels": "csv:labels.csv"}],
        "emotions": ["angry", "sad", "neutral", "happy"],
        "features": SHIPPED_FEATURES,
        "audio": {"sample_rate": 16000},
        "cache": "cache",
        "engine": {"backend": "sequential", "n_jobs": 1},
        "model": {"path": "models/m.skops", "train": True, "mlp": {"max_iter": 300}},
        "output": {"dir": "reports", "formats": ["csv", "parquet"]},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(m.get(k), dict):
            m[k] = {**m[k], **v}
        else:
            m[k] = v
    return m


def write_manifest(tmp_path: Path, name: str = "job.yaml", **over: Any) -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(manifest_dict(tmp_path, **over), sort_keys=False))
    return p
