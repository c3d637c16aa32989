"""Make docs/report.png, the README's picture of a job's report page.

    python docs/screenshot.py          # needs ../shared/corpora and Debian's chromium

Labels the SAVEE and EMOVO corpora with the shipped model (their true labels read by the
patterns of jobs/train-pooled.yaml, so the page shows scores), then has headless Chromium
photograph the top of the job's report.html.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"


def main() -> int:
    from batchser.api import annotation_manifest
    from batchser.job import run_job

    chromium = shutil.which("chromium")
    if chromium is None or not all((CORPORA / c).is_dir() for c in ("savee", "emovo")):
        print("needs Debian's chromium and ../shared/corpora/{savee,emovo}", file=sys.stderr)
        return 2
    pooled = yaml.safe_load((ROOT / "jobs" / "train-pooled.yaml").read_text())
    labels = {Path(i["path"]).name: i["labels"] for i in pooled["inputs"]}
    with tempfile.TemporaryDirectory(prefix="batchser-screenshot-") as tmp:
        out = Path(tmp) / "out"
        manifest = annotation_manifest([CORPORA / "savee", CORPORA / "emovo"], out_dir=out, speaker="labels")
        data = manifest.model_dump(mode="json")
        for given in data["inputs"]:
            given["labels"] = labels[Path(given["path"]).name]
        manifest = type(manifest).from_dict({**data, "cache": str(ROOT / "result" / "cache")})
        run_job(manifest, progress=False)
        subprocess.run(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp}/profile",
             "--window-size=1280,1180", "--hide-scrollbars", f"--screenshot={ROOT / 'docs' / 'report.png'}",
             (out / "report.html").as_uri()],
            check=True, capture_output=True,
        )  # fmt: skip
    print(ROOT / "docs" / "report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
