"""How big report.html is and how fast Chromium shows it, for 100,000 files against 1,000.

    python bench/report_page.py             # needs Debian's chromium and chromedriver, and selenium

Feeds the page's aggregator (batchser.web.page.PageStats) synthetic report rows as a job
would (labels and probabilities drawn at random, 300 speakers, 200 folders, one long
recording in 20,000 with 299 windows), times the render, writes the page, and has headless
Chromium load it 5 times: the median time from navigation start to the load event, and the
page's size, each with its ratio to a 1,000-file page measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import EMOTIONS, progress_log

from batchser.report import ReportRow, SegmentRow
from batchser.web.page import PageStats, render

LOADS = 5


def stats_for(n: int) -> PageStats:
    rng = np.random.default_rng(0)
    stats = PageStats(EMOTIONS, 0.6)
    for start in range(0, n, 5000):
        size = min(5000, n - start)
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


def measure(n: int, folder: Path, driver) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    stats = stats_for(n)
    summary = {"job": f"bench-{n}", "files": n, "from_cache": n, "extracted": 0, "failed": stats.n_files - stats.n_ok,
               "inputs": ["/archive"], "model": "pooled-4emo", "seconds": 1.0}  # fmt: skip
    t = time.perf_counter()
    html = render(stats, summary)
    rendered = time.perf_counter() - t
    page = folder / f"report-{n}.html"
    page.write_text(html, encoding="utf-8")
    loads = []
    for _ in range(LOADS):
        driver.get("about:blank")
        driver.get(page.as_uri())
        loads.append(
            driver.execute_script(
                "const e = performance.getEntriesByType('navigation')[0]; return e.loadEventEnd - e.startTime;"
            )
            / 1e3
        )
    return rendered, statistics.median(loads), page.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.browser import chromium

    with tempfile.TemporaryDirectory(prefix="batchser-page-") as tmp, chromium() as driver:
        base = measure(1000, Path(tmp), driver)
        log("  1,000 files done")
        big = measure(args.files, Path(tmp), driver)
        log(f"  {args.files:,} files done")
    print(f"| files | render s | Chromium load s (median of {LOADS}) | page KB |")
    print("|---|---|---|---|")
    for n, (r, load, size) in ((1000, base), (args.files, big)):
        print(f"| {n:,} | {r:.2f} | {load:.3f} | {size / 1024:.0f} |")
    print(f"| ratio | {big[0] / base[0]:.2f}x | {big[1] / base[1]:.2f}x | {big[2] / base[2]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
