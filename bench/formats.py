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
decoded), --repeats times in alternation. Either file is split into 5-minute parts
(FLAC and the MP4 family seek to the sample), each decoded twice (speech
probabilities, then the segments' features); under an hour of parts runs in the job's
own process (engine.PARTS_IN_PROCESS_S), so a 30-minute file uses one core.

Columns: wall time of the whole command and the CPU time of its process tree (user +
system, the less a busy machine moves it), medians; peak RSS as /usr/bin/time's %M
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
import contextlib
import os
import resource
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


def build(flac: Path, m4a: dict[int, Path], minutes: float) -> pd.DataFrame:
    """The FLAC and an M4A per bit rate from the same samples; the truth: (start_s, end_s, emotion) of each clip."""
    from tests.media import Kind, MediaWriter

    clips = sorted((CORPORA / "ravdess-48k").rglob("*.wav"))
    rng = np.random.default_rng(0)
    rows, at, i = [], 0, 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(sf.SoundFile(flac, "w", RATE, 1, "PCM_16"))
        coded = [stack.enter_context(MediaWriter(p, Kind(".m4a", "ipod", "aac", RATE, br))) for br, p in m4a.items()]

        def put(x: np.ndarray) -> None:
            x = (np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32)  # what 16-bit FLAC holds
            out.write(x)
            for c in coded:
                c.write(x)

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


def label(audio: Path, out: Path, cache: Path) -> tuple[float, float, float, float]:
    """(wall s, CPU s, largest process MiB, process tree MiB) of annotating ``audio`` with an empty cache."""
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "batchser", "annotate", str(audio),
           "--out", str(out), "--cache", str(cache), "-j", "2", "-q", "--overwrite"]  # fmt: skip
    peak, done = [0], threading.Event()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the job's tree, reaped workers included
    done.set()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"the job failed: {err}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, int(err.strip().splitlines()[-1]) / 1024, peak[0] / 1024


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
    uar, known_n = {}, 0
    for name, s in (("m4a", a), ("flac", b)):
        true = _truth(s, truth)
        known = true != ""
        uar[name] = _scores(true[known], s["label"].to_numpy()[known], list(EMOTION.values()))["uar"]
        known_n = int(known.sum())
    return {"segments_m4a": len(a), "segments_flac": len(b), "same_label": float(np.mean(same)),
            "start_moved_median_s": float(np.median(moved)) if moved else float("nan"),
            "uar_m4a": uar["m4a"], "uar_flac": uar["flac"], "scored_flac": known_n}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--bit-rates",
        default="96000,64000,192000",
        help="AAC bit rates, comma-separated: the first is timed against the FLAC, every one's labels compared",
    )
    ap.add_argument("--quiet", action="store_true", help="print only the tables")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    if not (CORPORA / "ravdess-48k").is_dir():
        print(f"needs the 48 kHz RAVDESS clips in {CORPORA / 'ravdess-48k'}", file=sys.stderr)
        return 2
    rates = [int(b) for b in args.bit_rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="batchser-formats-") as tmp_s:
        tmp = Path(tmp_s)
        m4a = {br: tmp / f"memo-{br // 1000}k.m4a" for br in rates}
        files = {"flac": tmp / "memo.flac", "m4a": m4a[rates[0]]}
        log(f"writing a {args.minutes:g}-minute recording as FLAC and as M4A at {args.bit_rates} bit/s …")
        truth = build(files["flac"], m4a, args.minutes)
        seconds = truth["end_s"].iloc[-1]
        runs: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in files}
        for r in range(args.repeats):
            for fmt, path in files.items():
                log(f"repeat {r + 1}/{args.repeats}: {fmt} …")
                runs[fmt].append(label(path, tmp / f"out-{fmt}", tmp / f"cache-{fmt}-{r}"))
        for br in rates[1:]:
            log(f"labels at {br // 1000} kbit/s …")
            label(m4a[br], tmp / f"out-{br}", tmp / f"cache-{br}")
        outs = {"flac": tmp / "out-flac", rates[0]: tmp / "out-m4a", **{br: tmp / f"out-{br}" for br in rates[1:]}}
        segs = {k: pd.read_csv(o / "segments.csv") for k, o in outs.items()}
        ann = {k: pd.read_csv(o / "annotations.csv").iloc[0] for k, o in outs.items()}
        sizes = {fmt: path.stat().st_size / 2**20 for fmt, path in files.items()}
    wall = {fmt: statistics.median(r[0] for r in v) for fmt, v in runs.items()}
    cpu = {fmt: statistics.median(r[1] for r in v) for fmt, v in runs.items()}
    print(
        f"{seconds / 60:.1f} min of RAVDESS at {RATE} Hz with pauses; annotate -j 2, empty cache; "
        f"medians of {args.repeats}; load average {os.getloadavg()[0]:.1f}"
    )
    head = f"{'file':<5} {'MiB':>6} {'wall s':>7} {'vs flac':>7} {'CPU s':>7} {'vs flac':>7}"
    print(f"{head} {'largest proc':>12} {'process tree':>12} {'status':>6}")
    for fmt in files:
        largest = max(r[2] for r in runs[fmt])
        tree = max(r[3] for r in runs[fmt])
        print(
            f"{fmt:<5} {sizes[fmt]:>6.1f} {wall[fmt]:>7.1f} {wall[fmt] / wall['flac']:>6.2f}x "
            f"{cpu[fmt]:>7.1f} {cpu[fmt] / cpu['flac']:>6.2f}x "
            f"{largest:>8.0f} MiB {tree:>8.0f} MiB {ann[fmt if fmt == 'flac' else rates[0]]['status']:>6}"
        )
    agree = {br: agreement(segs[br], segs["flac"], truth) for br in rates}
    print(
        f"labels against the FLAC's: its file label {ann['flac']['label']}, {agree[rates[0]]['segments_flac']} "
        f"speech segments, segment UAR {agree[rates[0]]['uar_flac']:.1%} on the {agree[rates[0]]['scored_flac']} "
        "that lie on one of the four emotions' clips"
    )
    print(f"{'AAC':<5} {'file label':>10} {'segments':>9} {'same label':>10} {'starts moved':>12} {'UAR':>6}", end="")
    print(f" {'vs flac':>8}")
    for br, a in agree.items():
        print(
            f"{br // 1000:>3}k  {ann[br]['label']:>10} {a['segments_m4a']:>9} "
            f"{a['same_label']:>10.1%} {a['start_moved_median_s'] * 1000:>9.0f} ms {a['uar_m4a']:>6.1%} "
            f"{100 * (a['uar_m4a'] - a['uar_flac']):>+6.1f} pt"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
