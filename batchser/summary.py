"""A job's summary: the counts, failures and timings it returns, and its ``summary.json``.

``summary.json`` is written last in a report set and names every other report
with its hash; its job fingerprint tells whose reports an output folder holds.
"""

from __future__ import annotations

import json
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# pyarrow imports pandas on its first conversion to or from numpy, which every
# job makes; importing it with the job keeps that cost (0.15 s) in start-up
# instead of in whichever stage converts first, so stage timings stay comparable.
import pandas

from batchser.manifest import Manifest, ManifestError
from batchser.model import TrainedModel
from batchser.predict import domain_summary
from batchser.report import ReportRow, file_digests, write_json

__all__ = ["MAX_FAILURES_LISTED", "JobSummary", "StageClock", "Tally", "check_output_owner", "write_summary"]

MAX_FAILURES_LISTED = 100  # the summary names this many failed files; the report names them all


@dataclass
class JobSummary:
    name: str
    n_files: int = 0
    n_cached: int = 0
    n_extracted: int = 0
    n_failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)
    model_id: str = ""
    metrics: dict[str, Any] | None = None
    domain: dict[str, Any] | None = None  # how far the job's files are from the training data
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per stage

    def table(self, name: str = "annotations") -> pandas.DataFrame:
        """A report this job wrote, read back and indexed by path.

        Parameters
        ----------
        name : {"annotations", "segments"}

        Raises
        ------
        FileNotFoundError
            The job wrote no such report (segments: no file was long).
        """
        written = {p.name: p for p in self.reports}
        if f"{name}.parquet" in written:
            return pandas.read_parquet(written[f"{name}.parquet"]).set_index("path")
        if f"{name}.csv" in written:
            return pandas.read_csv(written[f"{name}.csv"]).set_index("path")
        raise FileNotFoundError(f"job {self.name} wrote no {name} report (it wrote {', '.join(written) or 'none'})")


class StageClock:
    """Wall time of consecutive stages, for summary.json and the benchmarks."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.t = into, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.t
        self.t = now


class Tally:
    """The summary's counts, failures and domain distance, gathered chunk by chunk of report rows."""

    def __init__(self, summary: JobSummary) -> None:
        self.summary = summary
        summary.n_files, summary.n_failed, summary.failures, summary.label_counts = 0, 0, [], {}
        self.labels: Counter[str] = Counter()
        self.distances = array("d")  # 8 bytes per labelled file, for the median

    def add(self, rows: Sequence[ReportRow]) -> None:
        s = self.summary
        s.n_files += len(rows)
        for r in rows:
            if r.status == "ok":
                self.labels[r.label] += 1
                self.distances.append(r.domain_distance)
            else:
                s.n_failed += 1
                if len(s.failures) < MAX_FAILURES_LISTED:
                    s.failures.append((r.path, r.error))

    def finish(self, model: TrainedModel) -> None:
        self.summary.label_counts = dict(self.labels.most_common())
        self.summary.domain = domain_summary(np.frombuffer(self.distances, dtype=np.float64), model)


def write_summary(
    path: Path, manifest: Manifest, s: JobSummary, *, model_id: str, features: str, reports: Sequence[Path]
) -> None:
    """``summary.json``: the job, its counts, stage times, domain check and every report's hash."""
    m = manifest
    write_json(
        path,
        {
            "job": m.name,
            "job_fingerprint": m.fingerprint(),
            "inputs": [str(m.resolve(i.path)) for i in m.inputs],
            "files": s.n_files,
            "from_cache": s.n_cached,
            "extracted": s.n_extracted,
            "failed": s.n_failed,
            "labels": s.label_counts,
            "model": model_id,
            "feature_fingerprint": features,
            "seconds": round(s.seconds, 3),
            "stage_seconds": {k: round(v, 4) for k, v in s.stages.items()},
            "domain": s.domain,
            "reports": file_digests(reports),
        },
    )


def check_output_owner(manifest: Manifest) -> None:
    """Refuse to replace reports another set of inputs wrote (``summary.json``'s job fingerprint).

    Raises
    ------
    ManifestError
        Naming the other job, its inputs, and the two fixes.
    """
    summary = manifest.output_dir / "summary.json"
    try:
        previous = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no reports yet (or none batchser can read: nothing of a job to protect)
    theirs = previous.get("job_fingerprint")
    if theirs is None or theirs == manifest.fingerprint():
        return
    inputs = ", ".join(previous.get("inputs", [])) or "unknown"
    raise ManifestError(
        str(manifest.manifest_file or manifest.name),
        [
            f"output.dir: {manifest.output_dir} holds the reports of another job ({previous.get('job')!r}, "
            f"inputs {inputs}); set output.dir to a folder of this job's own (or leave it out: "
            "result/reports/<manifest name>), or pass --overwrite to replace them"
        ],
    )
