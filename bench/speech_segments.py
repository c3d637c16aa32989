"""Long recordings: speech segments against fixed windows, on a recording whose speech is known.

    python bench/speech_segments.py            # ../shared/corpora/emovo; about a minute on 2 cores
    python bench/speech_segments.py --clips 40 --repeats 3 --quiet

Builds a long recording from EMOVO clips (known emotions) joined by pauses of 1 to 4 s, a
third each of room noise (-50 dBFS), music-like tones (two notes, -20 dBFS) and digital
silence, at known times. Labels it with the shipped model twice, `--segments windows` (4 s
windows every 2 s, "voiced" by the energy rule) and the default `--segments speech` (Silero
VAD segments), and the same clips one file each. Prints:

- the share of non-speech time given an emotion (windows: in any labelled window, and in a
  voiced one, whose labels make the file's; speech: in a labelled segment), per kind of pause;
- segment boundaries against the clips (a clip's first segment's start and last segment's
  end; how many clips are one segment), median, 90th percentile and the share within 0.25 s,
  against the clip's edges and against its speech (the clip trimmed of leading and trailing
  stretches 40 dB below its peak, librosa.effects.trim);
- UAR and accuracy per segment (each segment scored against the clip it overlaps most) and
  of the clips labelled one by one;
- the cost, in one process (median of --repeats): extracting the long file with windows,
  with speech segments, and the voice-activity model alone over the decoded audio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import soundfile as sf
from _common import CORPORA, MODEL, progress_log

from batchser.engine import ExtractTask, extract_one
from batchser.features import FeatureSpec
from batchser.model.evaluate import _scores
from batchser.model.store import read_meta
from batchser.segments import SegmentSpec
from batchser.vad import SpeechProbabilities

SR = 16000
CODE = {"rab": "angry", "gio": "happy", "neu": "neutral", "tri": "sad"}


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


def build(folder: Path, n_clips: int, rng: np.random.Generator) -> pd.DataFrame:
    """long/long.wav, clips/<each clip>.wav, and the truth: (start_s, end_s, kind, emotion, speech_s, speech_e)."""
    clips = sorted(p for p in (CORPORA / "emovo").rglob("*.flac") if p.name.split("-")[0] in CODE)
    pick = rng.choice(len(clips), size=n_clips, replace=False)
    (folder / "long").mkdir()
    (folder / "clips").mkdir()
    parts, rows, at = [], [], 0.0
    for k, i in enumerate(pick):
        y, sr = sf.read(clips[i], dtype="float32")
        assert sr == SR
        sf.write(folder / "clips" / f"{k:03d}-{clips[i].stem}.wav", y, SR, subtype="PCM_16")
        _, (a, b) = librosa.effects.trim(y, top_db=40)
        parts.append(y)
        rows.append((at, at + len(y) / SR, "speech", CODE[clips[i].name.split("-")[0]], at + a / SR, at + b / SR))
        at += len(y) / SR
        kind = ("noise", "tones", "silence")[k % 3]
        gap = _pause(kind, float(rng.uniform(1.0, 4.0)), rng)
        parts.append(gap)
        rows.append((at, at + len(gap) / SR, kind, "", np.nan, np.nan))
        at += len(gap) / SR
    sf.write(folder / "long" / "long.wav", np.concatenate(parts), SR, subtype="PCM_16")
    return pd.DataFrame(rows, columns=["start_s", "end_s", "kind", "emotion", "speech_s", "speech_e"])


def annotate(folder: Path, audio: Path, out: str, *extra: str) -> Path:
    cmd = [sys.executable, "-m", "batchser", "annotate", "-q", str(audio), "--out", str(folder / out),
           "--cache", str(folder / f"cache-{out}"), "-j", "1", *extra]  # fmt: skip
    subprocess.run(cmd, check=True)
    return folder / out


def overlap(a0: np.ndarray, a1: np.ndarray, b0: float, b1: float) -> np.ndarray:
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not (CORPORA / "emovo").is_dir():
        print(f"needs EMOVO in {CORPORA / 'emovo'}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="batchser-segments-") as tmp:
        folder = Path(tmp)
        truth = build(folder, args.clips, rng)
        total = float(truth["end_s"].iloc[-1])
        speech = truth[truth["kind"] == "speech"].reset_index(drop=True)
        log(f"  a {total:.0f} s recording of {len(speech)} clips; labelling it three ways")
        win = pd.read_parquet(
            annotate(folder, folder / "long", "windows", "--segments", "windows") / "segments.parquet"
        )
        seg_out = annotate(folder, folder / "long", "speech")
        seg = pd.read_parquet(seg_out / "segments.parquet")
        summary = json.loads((seg_out / "summary.json").read_text())
        one = pd.read_parquet(annotate(folder, folder / "clips", "one-by-one") / "annotations.parquet")

        print(f"recording: {total:.0f} s, {len(speech)} EMOVO clips ({speech.end_s.sub(speech.start_s).sum():.0f} s), "
              f"{len(win)} windows, {int(seg.label.notna().sum())} speech segments; "
              f"detector {summary['segmentation'].get('detector')}")  # fmt: skip
        grid = np.arange(0, total, 0.01)

        def covered(rows: pd.DataFrame) -> np.ndarray:
            m = np.zeros(len(grid), bool)
            for a, b in zip(rows["start_s"], rows["end_s"], strict=True):
                m[int(a * 100) : int(np.ceil(b * 100))] = True
            return m

        w_any, w_voiced = covered(win), covered(win[win["voiced"]])
        labelled = seg[seg["label"].notna()]
        s_lab = covered(labelled)
        print("\n| non-speech | seconds | windows: in a labelled window | windows: in a voiced window | "
              "speech segments: in a labelled segment |")  # fmt: skip
        print("|---|---|---|---|---|")
        for kind in ("noise", "tones", "silence", "all"):
            rows = truth[truth["kind"] != "speech"] if kind == "all" else truth[truth["kind"] == kind]
            m = covered(rows)
            print(f"| {kind} | {m.sum() / 100:.0f} | {w_any[m].mean():.1%} | {w_voiced[m].mean():.1%} | "
                  f"{s_lab[m].mean():.1%} |")  # fmt: skip
        sp = covered(speech)
        print(f"| (speech time in a labelled segment) | {sp.sum() / 100:.0f} | | | {s_lab[sp].mean():.1%} |")

        # Boundaries: each clip's first segment's start and last segment's end.
        s0, s1 = labelled["start_s"].to_numpy(), labelled["end_s"].to_numpy()
        err_edge, err_speech, pieces = [], [], []
        for c in speech.itertuples():
            ov = overlap(s0, s1, c.start_s, c.end_s)
            mine = np.flatnonzero(ov > 0.5 * (s1 - s0))  # segments mostly inside this clip
            pieces.append(len(mine))
            if not len(mine):
                err_edge.append(np.inf)
                err_speech.append(np.inf)
                continue
            a, b = s0[mine].min(), s1[mine].max()
            err_edge += [abs(a - c.start_s), abs(b - c.end_s)]
            err_speech += [abs(a - c.speech_s), abs(b - c.speech_e)]
        print("\n| boundaries (a clip's start and end) | median | 90th percentile | within 0.25 s |")
        print("|---|---|---|---|")
        for name, e in (("against the clip's edges", err_edge), ("against its speech (trimmed at 40 dB)", err_speech)):
            e = np.asarray(e)
            print(f"| {name} | {np.median(e):.2f} s | {np.percentile(e, 90):.2f} s | {(e <= 0.25).mean():.0%} |")
        pieces_a = np.asarray(pieces)
        print(f"clips in one segment: {(pieces_a == 1).mean():.0%}; in two or more: {(pieces_a > 1).mean():.0%}; "
              f"missed: {(pieces_a == 0).mean():.0%}")  # fmt: skip

        # UAR per segment against the clip it overlaps most; the clips labelled one by one.
        classes = sorted(CODE.values())
        seg_true = []
        for a, b in zip(s0, s1, strict=True):
            ov = overlap(speech.start_s.to_numpy(), speech.end_s.to_numpy(), a, b)
            seg_true.append(speech.emotion[int(np.argmax(ov))] if ov.max() > 0 else "")
        keep = np.array([t != "" for t in seg_true])
        by_seg = _scores(np.asarray(seg_true)[keep], labelled["label"].to_numpy()[keep], classes)
        one_true = [CODE[Path(p).name.split("-")[1]] for p in one["path"]]
        by_clip = _scores(np.asarray(one_true), one["label"].to_numpy(), classes)
        print("\n| labelled | n | UAR | accuracy |\n|---|---|---|---|")
        print(f"| per speech segment | {int(keep.sum())} | {by_seg['uar']:.1%} | {by_seg['accuracy']:.1%} |")
        print(f"| the clips one by one | {len(one)} | {by_clip['uar']:.1%} | {by_clip['accuracy']:.1%} |")
        print(f"difference: {100 * (by_seg['uar'] - by_clip['uar']):+.1f} points")

        # Cost, in this process.
        spec = FeatureSpec.from_dict(read_meta(MODEL).feature_spec)
        path = folder / "long" / "long.wav"
        task = ExtractTask(str(path), "h")
        times: dict[str, list[float]] = {"windows": [], "speech": [], "vad": []}
        y, _ = sf.read(path, dtype="float32")
        model_frames = 0
        for r in range(args.repeats):
            log(f"  timing, repeat {r + 1} of {args.repeats}")
            for name, s in (("windows", SegmentSpec(method="windows")), ("speech", SegmentSpec())):
                t = time.perf_counter()
                extract_one(task, spec=spec, segments=s)
                times[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            probe = SpeechProbabilities()
            for i in range(0, len(y), 1 << 20):
                probe.feed(y[i : i + (1 << 20)])
            probe.flush()
            times["vad"].append(time.perf_counter() - t)
            model_frames = probe.model_frames
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\ncost, one process, median of {args.repeats} (x real time):")
        print("| extraction of the long file | seconds | x real time |\n|---|---|---|")
        for k, what in (("windows", "fixed windows (4 s every 2 s)"), ("speech", "speech segments (VAD included)"),
                        ("vad", "the voice-activity model alone")):  # fmt: skip
            print(f"| {what} | {med[k]:.2f} | {total / med[k]:.0f} |")
        print(
            f"the model ran on {model_frames * 0.032:.0f} s of the {total:.0f} s (the rest was quieter than the gate)"
        )
        print(f"VAD share of the speech-segment extraction: {med['vad'] / med['speech']:.0%}; speech segments vs "
              f"windows: {med['speech'] / med['windows']:.2f}x the time (the VAD adds "
              f"{med['vad'] / med['windows']:.0%} of the windows' extraction time)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
