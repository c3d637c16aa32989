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

from _common import progress_log

from batchser.web.page import render

LOADS = 5
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' browser and synthetic report


def measure(n: int, folder: Path, driver) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    from tests.synthetic_report import synthetic_stats

    stats = synthetic_stats(n)
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
