"""A 30-minute M4A against the same audio as FLAC: time, memory and labels, in one run.

    python bench/formats.py                       # 30 minutes, 3 repeats; about 15 minutes on 2 cores
    python bench/formats.py --minutes 1 --repeats 1 --quiet

The recording is the 120 original 48 kHz RAVDESS clips (../shared/corpora/ravdess-48k,
two actors, eight emotions), one after another as often as it takes, with 1 to 3 s
pauses of quiet room noise (-55 dBFS) between them: a phone's voice memo. It is
written block by block twice from the same samples: as 16-bit FLAC (libsndfile) and
as AAC-LC at --bit-rate in an M4A (PyAV's encoder; FFmpeg decodes it). Each is
labelled by `python -m batchser annotate FILE -j 2` with the shipped model and the
default speech segments, in a fresh process and with an empty cache (everything
decoded), --repeats times in alternation; the long file is split into parts across
the two workers either way (FLAC and the MP4 family seek to the sample).

Columns: wall time of the whole command (median); peak RSS as /usr/bin/time's %M
(the largest process of the job: the job itself or one worker) and as the sum over
the job's process tree, sampled from /proc every 50 ms (the most the job held at
once); both the largest over the repeats. Then the M4A's labels against the FLAC's:
the file's label, the speech segments each found (matched by overlap) and the share
of those whose labels agree, and UAR on the segments that lie on one of the four
emotions' clips (the clip the segment overlaps most gives its true label).

The project's goals: under 300 MB peak, within 10 % of FLAC's time, labels within 1 point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from _common import CORPORA, progress_log

from batchser.model.evaluate import _scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' PyAV writer
RATE = 48000
EMOTION = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}  # RAVDESS codes of the model's four


def build(flac: Path, m4a: Path, minutes: float, bit_rate: int) -> pd.DataFrame:
    """Both files from the same samples; the truth: (start_s, end_s, emotion) of each clip ("" for others)."""
    from tests.media import Kind, MediaWriter

    clips = sorted((CORPORA / "ravdess-48k").rglob("*.wav"))
    rng = np.random.default_rng(0)
    kind = Kind(".m4a", "ipod", "aac", RATE, bit_rate)
    rows, at, i = [], 0, 0
    with sf.SoundFile(flac, "w", RATE, 1, "PCM_16") as out, MediaWriter(m4a, kind) as coded:

        def put(x: np.ndarray) -> None:
            x = (np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32)  # what 16-bit FLAC holds
            out.write(x)
            coded.write(x)

        while at < minutes * 60 * RATE:
            pause = rng.normal(0, 10 ** (-55 / 20), int(rng.uniform(1.0, 3.0) * RATE)).astype(np.float32)
            put(pause)
            at += len(pause)
            y, sr = sf.read(clips[i % len(clips)], dtype="float32", always_2d=True)
            assert sr == RATE
            put(y.mean(axis=1))
            rows.append((at / RATE, (at + len(y)) / RATE, EMOTION.get(clips[i % len(clips)].name.split("-")[2], "")))
            at, i = at + len(y), i + 1
    return pd.DataFrame(rows, columns=["start_s", "end_s", "emotion"])


def _tree_rss_kib(pid: int) -> int:
    """RSS of ``pid`` and all its descendants, in KiB (0 for a process gone meanwhile)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS")), 0)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total


def label(audio: Path, out: Path, cache: Path) -> tuple[float, float, float]:
    """(wall s, largest process MiB, process tree MiB) of annotating ``audio`` with an empty cache."""
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "batchser", "annotate", str(audio),
           "--out", str(out), "--cache", str(cache), "-j", "2", "-q", "--overwrite"]  # fmt: skip
    peak, done = [0], threading.Event()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t
    done.set()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"the job failed: {err}")
    return wall, int(err.strip().splitlines()[-1]) / 1024, peak[0] / 1024


def _truth(segs: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """Each segment's true emotion: the clip it overlaps most, when that clip is one of the four."""
    starts, ends = truth["start_s"].to_numpy(), truth["end_s"].to_numpy()
    out = []
    for a, b in zip(segs["start_s"], segs["end_s"], strict=True):
        over = np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0, None)
        out.append(truth["emotion"].iloc[int(over.argmax())] if over.max() > 0 else "")
    return np.array(out)


def agreement(m4a: pd.DataFrame, flac: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """The M4A's speech segments against the FLAC's (matched by overlap), and each one's UAR."""
    a, b = (s[s["label"].notna()].reset_index(drop=True) for s in (m4a, flac))
    match = []
    for s, e in zip(a["start_s"], a["end_s"], strict=True):
        over = np.clip(np.minimum(b["end_s"], e) - np.maximum(b["start_s"], s), 0, None).to_numpy()
        match.append(int(over.argmax()) if over.max() > 0 else -1)
    same = [j >= 0 and a["label"].iloc[i] == b["label"].iloc[j] for i, j in enumerate(match)]
    moved = [abs(a["start_s"].iloc[i] - b["start_s"].iloc[j]) for i, j in enumerate(match) if j >= 0]
    uar = {}
    for name, s in (("m4a", a), ("flac", b)):
        true = _truth(s, truth)
        known = true != ""
        uar[name] = _scores(true[known], s["label"].to_numpy()[known], list(EMOTION.values()))["uar"]
    return {"segments_m4a": len(a), "segments_flac": len(b), "same_label": float(np.mean(same)),
            "start_moved_median_s": float(np.median(moved)) if moved else float("nan"),
            "uar_m4a": uar["m4a"], "uar_flac": uar["flac"]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bit-rate", type=int, default=96_000, help="AAC bit rate of the M4A (a voice memo's: 64-128k)")
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not (CORPORA / "ravdess-48k").is_dir():
        print(f"needs the 48 kHz RAVDESS clips in {CORPORA / 'ravdess-48k'}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="batchser-formats-") as tmp_s:
        tmp = Path(tmp_s)
        files = {"flac": tmp / "memo.flac", "m4a": tmp / "memo.m4a"}
        log(f"writing a {args.minutes:g}-minute recording as FLAC and as M4A …")
        truth = build(files["flac"], files["m4a"], args.minutes, args.bit_rate)
        seconds = truth["end_s"].iloc[-1]
        runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in files}
        for r in range(args.repeats):
            for fmt, path in files.items():
                log(f"repeat {r + 1}/{args.repeats}: {fmt} …")
                runs[fmt].append(label(path, tmp / f"out-{fmt}", tmp / f"cache-{fmt}-{r}"))
        segs = {fmt: pd.read_csv(tmp / f"out-{fmt}" / "segments.csv") for fmt in files}
        ann = {fmt: pd.read_csv(tmp / f"out-{fmt}" / "annotations.csv").iloc[0] for fmt in files}
        sizes = {fmt: path.stat().st_size / 2**20 for fmt, path in files.items()}
    agree = agreement(segs["m4a"], segs["flac"], truth)
    wall = {fmt: statistics.median(w for w, _, _ in v) for fmt, v in runs.items()}
    print(
        f"{seconds / 60:.1f} min of RAVDESS at {RATE} Hz with pauses; AAC at {args.bit_rate // 1000} kbit/s; "
        f"annotate -j 2, empty cache; medians of {args.repeats}"
    )
    head = f"{'file':<5} {'MiB':>6} {'wall s':>7} {'vs flac':>7} {'largest proc':>12} {'process tree':>12}"
    print(f"{head} {'status':>6}")
    for fmt in files:
        largest = max(m for _, m, _ in runs[fmt])
        tree = max(t for _, _, t in runs[fmt])
        print(
            f"{fmt:<5} {sizes[fmt]:>6.1f} {wall[fmt]:>7.1f} {wall[fmt] / wall['flac']:>6.2f}x "
            f"{largest:>8.0f} MiB {tree:>8.0f} MiB {ann[fmt]['status']:>6}"
        )
    same_file = ann["m4a"]["label"] == ann["flac"]["label"]
    print(
        f"file label: m4a {ann['m4a']['label']}, flac {ann['flac']['label']} ({'same' if same_file else 'differs'}); "
        f"speech segments: m4a {agree['segments_m4a']}, flac {agree['segments_flac']}, "
        f"same label {agree['same_label']:.1%}, starts moved {agree['start_moved_median_s'] * 1000:.0f} ms (median)"
    )
    print(
        f"segment UAR on the four emotions' clips: m4a {agree['uar_m4a']:.1%}, flac {agree['uar_flac']:.1%}, "
        f"difference {100 * (agree['uar_m4a'] - agree['uar_flac']):+.1f} points"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
