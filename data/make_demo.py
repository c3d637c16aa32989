"""Regenerate data/demo/: synthetic speech made by espeak-ng (no RAVDESS audio).

The clips speak the two RAVDESS sentences in a few espeak-ng voices, with
pitch, speed and loudness varied to resemble calm, sad, cheerful and shouted
delivery. They are synthetic: the labels the model gives them are a demo of
the pipeline, not a measurement. Needs ``espeak-ng`` (Debian: apt-get install espeak-ng).

    python data/make_demo.py
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

OUT = Path(__file__).resolve().parent / "demo"
SENTENCES = {"kids": "Kids are talking by the door.", "dogs": "Dogs are sitting by the door."}
# name: (sentence, voice, words/min, pitch 0-99, amplitude 0-200, output format, output rate, channels)
CLIPS = {
    "kids-calm-en": ("kids", "en", 150, 45, 100, "FLAC", 22050, 1),
    "kids-shout-en-us": ("kids", "en-us", 210, 80, 200, "FLAC", 44100, 2),
    "kids-slow-low-en-gb": ("kids", "en-gb-x-rp", 105, 20, 60, "WAV", 16000, 1),
    "dogs-bright-en-us": ("dogs", "en-us+f3", 185, 70, 130, "FLAC", 22050, 1),
    "dogs-flat-en": ("dogs", "en+m2", 160, 35, 90, "OGG", 22050, 1),
    "dogs-fast-high-en-gb": ("dogs", "en-gb+f2", 230, 90, 170, "WAV", 48000, 1),
}


def speak(text: str, *, voice: str, wpm: int, pitch: int, amp: int) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-a", str(amp), "-w", str(wav), text],
            check=True,
        )
        y, sr = sf.read(wav, dtype="float32")
    return y, sr


def main() -> None:
    import librosa

    OUT.mkdir(parents=True, exist_ok=True)
    for name, (sentence, voice, wpm, pitch, amp, fmt, rate, channels) in CLIPS.items():
        y, sr = speak(SENTENCES[sentence], voice=voice, wpm=wpm, pitch=pitch, amp=amp)
        pad = np.zeros(int(0.25 * sr), dtype=np.float32)  # RAVDESS clips start and end in silence too
        y = np.concatenate([pad, y, pad])
        if rate != sr:
            y = librosa.resample(y, orig_sr=sr, target_sr=rate)
        if channels == 2:  # a slightly different right channel, as from a real stereo mic
            y = np.stack([y, 0.8 * np.roll(y, 20)], axis=1)
        ext = {"FLAC": "flac", "WAV": "wav", "OGG": "ogg"}[fmt]
        subtype = {"FLAC": "PCM_16", "WAV": "PCM_16", "OGG": "VORBIS"}[fmt]
        sf.write(OUT / f"{name}.{ext}", np.clip(y, -1, 1), rate, format=fmt, subtype=subtype)
        print(f"{name}.{ext}: {len(y) / rate:.2f} s at {rate} Hz, {channels} ch")


if __name__ == "__main__":
    main()
