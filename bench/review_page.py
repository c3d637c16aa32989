"""How fast the review page answers over a 100,000-row report, and plays a segment of a 3-hour recording.

    python bench/review_page.py              # about two minutes (writing the 3-hour FLAC is most of it)
    python bench/review_page.py --rows 1000 --long-hours 0.1  # the baseline size alone, a short long file

Writes an annotations report of N rows (the shipped model's columns, labels drawn at random)
and a summary.json, opens the review as `batchser review` does (reading the report, drawing
and saving the sample) and serves it on 127.0.0.1; each sampled file is a real 1-second WAV.
Then times, over real HTTP, 20 requests of each kind: the page, its state, an answer (written
and synced to review/answers.csv) and a clip (decoded and encoded as WAV). Prints the median
and the 90th percentile per kind, and each median's ratio to the same run over 1,000 rows
measured first (the cost of size). The report also holds one long recording (a FLAC of
``--long-hours`` hours, 3 by default) with a speech segment every 30 s; its segments are review
units, and the last row times the clip of a segment from its second half: seek, decode the
segment and a second of context on each side, encode a WAV.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from _common import EMOTIONS, progress_log

from batchser.web.review import ReviewSession, create_app

REQUESTS = 20


LONG = "audio/long.flac"


def _long_file(path: Path, hours: float) -> float:
    """A FLAC of ``hours`` of a quiet, slowly changing tone at 16 kHz, written a minute at a time; its seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n, block = round(hours * 3600 * 16000), 60 * 16000
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, format="FLAC", subtype="PCM_16") as fh:
        for at in range(0, n, block):
            t = np.arange(at, min(n, at + block)) / 16000
            fh.write((0.2 * np.sin(2 * np.pi * (200 + 50 * np.sin(t / 7)) * t)).astype(np.float32))
    return n / 16000


def _job(folder: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    out, audio = folder / "out", folder / "audio"
    out.mkdir()
    p = rng.dirichlet(np.ones(len(EMOTIONS)), size=rows)
    table = pd.DataFrame(
        {
            "path": [f"audio/{i // 1000:03d}/clip-{i:06d}.wav" for i in range(rows)],
            "status": "ok",
            "label": np.asarray(EMOTIONS)[p.argmax(axis=1)],
            "confidence": p.max(axis=1),
            **{f"p_{c}": p[:, k] for k, c in enumerate(EMOTIONS)},
            "content_hash": [f"{i:064x}" for i in range(rows)],
            "segments": 0,
        }
    )
    table.to_parquet(out / "annotations.parquet")
    summary = {"job": "bench", "files": rows, "inputs": [str(audio)], "paths_relative_to": str(folder)}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _time(url: str, data: bytes | None = None) -> float:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
    return time.perf_counter() - t


def _long_job(folder: Path, hours: float) -> Path:
    """The reports of a job over one long recording: a speech segment of 4 s every 30 s, each a review unit."""
    long_s = _long_file(folder / LONG, hours)
    rng = np.random.default_rng(1)
    out = folder / "long-out"
    out.mkdir()
    starts = np.arange(10.0, long_s - 10, 30.0)
    q = rng.dirichlet(np.ones(len(EMOTIONS)), size=len(starts))
    probs = {f"p_{c}": q[:, k] for k, c in enumerate(EMOTIONS)}
    pd.DataFrame(
        {"path": LONG, "start_s": starts, "end_s": starts + 4.0, "voiced": True, "speech_prob": 0.9,
         "label": np.asarray(EMOTIONS)[q.argmax(axis=1)], "confidence": q.max(axis=1), **probs}
    ).to_parquet(out / "segments.parquet")  # fmt: skip
    p = q.mean(axis=0)
    pd.DataFrame(
        {"path": [LONG], "status": "ok", "label": EMOTIONS[int(p.argmax())], "confidence": p.max(),
         **{f"p_{c}": [p[k]] for k, c in enumerate(EMOTIONS)}, "content_hash": "f" * 64, "segments": len(starts)}
    ).to_parquet(out / "annotations.parquet")  # fmt: skip
    summary = {"job": "bench-long", "files": 1, "inputs": [str(folder / "audio")], "paths_relative_to": str(folder)}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def measure_long(hours: float, log) -> list[float]:  # type: ignore[no-untyped-def]
    """Seconds per clip request for segments from the second half of a ``hours``-hour recording."""
    from werkzeug.serving import make_server

    with tempfile.TemporaryDirectory(prefix="batchser-bench-") as tmp:
        out = _long_job(Path(tmp), hours)
        session = ReviewSession.open(out)
        server = make_server("127.0.0.1", 0, create_app(session, token="t"), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}/"
        try:
            sample = session.sample
            late = sample[sample["start_s"] > sample["start_s"].max() / 2]["order"].tolist()
            times = [_time(base + f"clip/{order}?token=t") for order in late[:REQUESTS]]
        finally:
            server.shutdown()
        log(f"  {hours:g}-hour recording done")
        return times


def measure(rows: int, log) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    from werkzeug.serving import make_server

    with tempfile.TemporaryDirectory(prefix="batchser-bench-") as tmp:
        folder = Path(tmp)
        out = _job(folder, rows)
        t = time.perf_counter()
        session = ReviewSession.open(out)
        opened = time.perf_counter() - t
        tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
        for path in session.sample["path"]:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / path, tone, 16000)
        server = make_server("127.0.0.1", 0, create_app(session, token="t"), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}/"
        try:
            times: dict[str, list[float]] = {"open (read report, draw sample)": [opened]}
            orders = session.sample["order"].tolist()
            for i in range(REQUESTS):
                times.setdefault("page", []).append(_time(base + "?token=t"))
                times.setdefault("state", []).append(_time(base + "state?token=t"))
                body = json.dumps({"order": orders[i], "label": EMOTIONS[i % 4]}).encode()
                times.setdefault("answer", []).append(_time(base + "answer?token=t", body))
                times.setdefault("clip", []).append(_time(base + f"clip/{orders[i]}?token=t"))
        finally:
            server.shutdown()
        log(f"  {rows:,} rows done")
        return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--long-hours", type=float, default=3.0, help="hours of the long recording (3)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    base = measure(1000, log)
    big = measure(args.rows, log) if args.rows != 1000 else base
    print(f"| request | median, {args.rows:,} rows | 90th percentile | median, 1,000 rows | ratio |")
    print("|---|---|---|---|---|")
    for kind in big:
        b, s = big[kind], base[kind]
        p90 = sorted(b)[max(0, round(0.9 * len(b)) - 1)]
        med_b, med_s = statistics.median(b), statistics.median(s)
        print(f"| {kind} | {med_b * 1e3:.1f} ms | {p90 * 1e3:.1f} ms | {med_s * 1e3:.1f} ms | {med_b / med_s:.2f}x |")
    if args.long_hours > 0:
        long = measure_long(args.long_hours, log)
        short = statistics.median(base["clip"])
        p90 = sorted(long)[max(0, round(0.9 * len(long)) - 1)]
        med = statistics.median(long)
        print(
            f"| clip: a speech segment from the second half of a {args.long_hours:g}-hour recording, with context | "
            f"{med * 1e3:.1f} ms | {p90 * 1e3:.1f} ms | {short * 1e3:.1f} ms (a short file's clip) | "
            f"{med / short:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
