"""A corpus of everything a messy archive holds, generated in code.

:func:`make_bad_corpus` writes the files and returns what batchser must do
with each: label it (status ok, maybe with a warning) or refuse it (status
error) with a reason containing the given text. Files that are not audio at
all (a directory named like one, a FIFO, a link loop) must not appear.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import speechlike


@dataclass(frozen=True)
class Expect:
    status: str  # ok | error
    text: str = ""  # must appear in the error (status error) or the warning (status ok)
    channels: int | None = None
    orig_sample_rate: int | None = None


LONG_NAME = "long-" + "x" * 240 + ".wav"  # 250 bytes: near the usual 255-byte limit
NON_UTF8 = b"caf\xe9-latin1.wav"  # a name written by an old Windows tool


def _wav(path: Path, y: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    sf.write(path, y, sr, subtype=subtype, format="WAV")
    return path.read_bytes()


def make_bad_corpus(root: Path, *, unreadable: bool = True) -> dict[str, Expect]:
    """Write the corpus under ``root``; keys are paths relative to ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    e: dict[str, Expect] = {}
    speech = speechlike("happy", sr=16000, seconds=1.0, seed=1)

    # -- not audio at all, or no samples ----------------------------------------
    (root / "zero-bytes.wav").write_bytes(b"")
    e["zero-bytes.wav"] = Expect("error", "cannot decode: empty file (0 bytes)")
    _wav(root / "header-only.wav", np.zeros(0, dtype=np.float32), 16000)
    e["header-only.wav"] = Expect("error", "no audio samples")
    (root / "random-bytes.wav").write_bytes(np.random.default_rng(0).bytes(20000))
    e["random-bytes.wav"] = Expect("error", "cannot decode")
    (root / "text.flac").write_text("This is a text file with an audio name.\n" * 20)
    e["text.flac"] = Expect("error", "cannot decode")
    (root / "id3-only.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10)  # a tag, no frames
    e["id3-only.mp3"] = Expect("error", "no audio data found")

    # -- lying or broken headers ------------------------------------------------
    full = _wav(root / "truncated.wav", speech, 16000)
    (root / "truncated.wav").write_bytes(full[: len(full) // 3])
    e["truncated.wav"] = Expect("ok", "truncated")
    bad_rate = bytearray(full)
    bad_rate[24:28], bad_rate[28:32] = struct.pack("<I", 1), struct.pack("<I", 2)
    (root / "rate-1hz.wav").write_bytes(bytes(bad_rate))
    e["rate-1hz.wav"] = Expect("error", "implausible sample rate 1 Hz")
    plausible_lie = bytearray(full)  # 16 kHz audio whose header says 8 kHz: cannot be told
    plausible_lie[24:28], plausible_lie[28:32] = struct.pack("<I", 8000), struct.pack("<I", 16000)
    (root / "rate-lie-8k.wav").write_bytes(bytes(plausible_lie))
    e["rate-lie-8k.wav"] = Expect("ok", orig_sample_rate=8000)

    # -- valid but unusual --------------------------------------------------------
    for subtype in ("PCM_U8", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        name = f"depth-{subtype.lower()}.wav"
        _wav(root / name, speech, 16000, subtype)
        e[name] = Expect("ok", orig_sample_rate=16000)
    six = np.stack([speech * (1 - 0.1 * c) for c in range(6)], axis=1)
    _wav(root / "six-channel.wav", six, 16000)
    e["six-channel.wav"] = Expect("ok", channels=6)
    for sr in (8000, 96000):
        _wav(root / f"rate-{sr}.wav", speechlike("sad", sr=sr, seed=2), sr)
        e[f"rate-{sr}.wav"] = Expect("ok", orig_sample_rate=sr)
    _wav(root / "ten-ms.wav", speech[:160], 16000)
    e["ten-ms.wav"] = Expect("error", "too short")
    _wav(root / "digital-silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    e["digital-silence.wav"] = Expect("error", "silent")
    square = np.sign(np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
    _wav(root / "clipped-square.wav", square, 16000)
    e["clipped-square.wav"] = Expect("ok", "clipped")
    for bad in ("nan", "inf"):
        y = speech.copy()
        y[500:510] = np.nan if bad == "nan" else np.inf
        _wav(root / f"{bad}-samples.wav", y, 16000, "FLOAT")
        e[f"{bad}-samples.wav"] = Expect("error", "non-finite")
    sf.write(root / "lossy.ogg", speech, 16000, format="OGG", subtype="VORBIS")
    e["lossy.ogg"] = Expect("ok")
    if "MP3" in sf.available_formats():
        sf.write(root / "lossy.mp3", speechlike("angry", sr=44100, seed=3), 44100, format="MP3")
        e["lossy.mp3"] = Expect("ok", orig_sample_rate=44100)

    # -- names and file-system oddities --------------------------------------------
    _wav(root / LONG_NAME, speech, 16000)
    e[LONG_NAME] = Expect("ok")
    with open(os.fsencode(root) + b"/" + NON_UTF8, "wb") as fh:
        fh.write(full)
    e["caf\\xe9-latin1.wav"] = Expect("ok")  # as the report writes it
    (root / "folder.wav").mkdir()  # a directory named like audio: not a file
    os.mkfifo(root / "pipe.wav")  # a FIFO: opening it would block; not a file
    (root / "loop").symlink_to(root, target_is_directory=True)  # a link loop: not followed
    (root / "dangling.wav").symlink_to(root / "gone.wav")
    e["dangling.wav"] = Expect("error", "cannot stat")
    if unreadable:
        _wav(root / "no-permission.wav", speech, 16000)
        (root / "no-permission.wav").chmod(0)
        e["no-permission.wav"] = Expect("error", "cannot read: Permission denied")
    return e
