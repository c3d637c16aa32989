"""A synthetic job's report rows fed to the report page's aggregator, for the page's test and bench/report_page.py."""

from __future__ import annotations

import numpy as np

from batchser.report import ReportRow, SegmentRow
from batchser.web.page import PageStats

EMOTIONS = ["angry", "sad", "neutral", "happy"]


def synthetic_stats(n: int, *, chunk: int = 5000) -> PageStats:
    """``n`` files as a job would feed them: random labels and probabilities, 300 speakers, a folder per 500
    files, one failure in 97, and one long recording (299 windows) in 20,000."""
    rng = np.random.default_rng(0)
    stats = PageStats(EMOTIONS, 0.6)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        p = rng.dirichlet(np.ones(len(EMOTIONS)), size=size)
        rows = []
        for i in range(size):
            k = start + i
            long = k % 20_000 == 1
            rows.append(
                ReportRow(
                    path=f"archive/{k // 500:04d}/call-{k:06d}.wav",
                    status="ok" if k % 97 else "error",
                    error="" if k % 97 else "cannot decode: not audio",
                    label=EMOTIONS[int(p[i].argmax())],
                    confidence=float(p[i].max()),
                    probabilities=dict(zip(EMOTIONS, map(float, p[i]), strict=True)),
                    corpus="archive",
                    speaker=f"spk{k % 300}",
                    normalized_by="speaker",
                    duration_s=600.0 if long else 3.0,
                    segments=299 if long else 0,
                )
            )
        segs = [
            SegmentRow(r.path, 2.0 * j, 2.0 * j + 4, j % 3 > 0, EMOTIONS[j % 4], 0.5, {})
            for r in rows
            if r.segments
            for j in range(299)
        ]
        stats.add(rows, segs)
    return stats
