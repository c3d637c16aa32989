"""Reports: per-file annotations (CSV, Parquet), metrics and plots, written as one set.

A job's reports are written into a staging folder inside ``output.dir`` and
moved into place together by :class:`ReportSet`, ``summary.json`` last with
the SHA-256 of every other file it belongs with. A job killed while writing
leaves the previous set; one killed while moving files in is completed by the
next job that opens the folder (the staging folder holds a commit record).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batchser.atomic import atomic_path, atomic_write_bytes, atomic_write_text, fsync_dir
from batchser.pids import OWNER_FILE, OwnerLock, owner_state

__all__ = [
    "ReportError",
    "ReportRow",
    "ReportSet",
    "SegmentRow",
    "TableWriter",
    "annotations_table",
    "csv_text",
    "file_digests",
    "guard_cell",
    "read_csv_report",
    "recover_reports",
    "segments_table",
    "unguard_cell",
    "write_annotations",
    "write_confusion_png",
    "write_json",
    "write_reliability_png",
    "writing_now",
]


log = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """Reports could not be written; the previous ones, if any, are untouched."""


_STAGING = ".batchser-staging-"
_COMMIT = "COMMIT"
_SUMMARY = "summary.json"
_STALE_TMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # atomic_path's temp names


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap(stage: Path, out_dir: Path, name: str, staged: bool) -> None:
    """Put the staged folder ``name`` in place of ``out_dir``'s (or just take that away, when none is ``staged``).

    The old folder is first renamed into the staging folder, and goes with it:
    two renames, each done once however often a killed commit is resumed.
    """
    new, old, dst = stage / name, stage / f".old-{name}", out_dir / name
    if staged and not os.path.lexists(new):
        return  # moved in by the commit this one resumes
    if os.path.lexists(dst):  # a link too: renamed away, never followed
        if os.path.lexists(old):  # set aside by an earlier attempt, and something made dst again since
            _remove(old)
        os.replace(dst, old)
    if staged:
        os.replace(new, dst)


def _finish(stage: Path, out_dir: Path) -> list[Path]:
    """Move a committed staging folder's files into ``out_dir`` (summary.json last), then drop it."""
    record = json.loads((stage / _COMMIT).read_text(encoding="utf-8"))
    for name, staged in record.get("replace", {}).items():  # folders replaced whole (exports/), before summary.json
        _swap(stage, out_dir, name, staged)
    moved = []
    for name in record["move"]:
        src = stage / name
        if src.exists():  # a resumed commit: some are in place already
            os.replace(src, out_dir / name)
        moved.append(out_dir / name)
    for name in record["drop"]:  # reports of an earlier run that this set has none of
        (out_dir / name).unlink(missing_ok=True)
    fsync_dir(out_dir)
    shutil.rmtree(stage, ignore_errors=True)
    return moved


def recover_reports(out_dir: Path) -> None:
    """Complete or discard what a killed job left in ``out_dir``.

    A staging folder with a commit record was being moved in: finish it, so
    the set is whole. One without was still being written: remove it, the
    previous set stands. Stray temp files of single-file writes go too.
    """
    if not out_dir.is_dir():
        return
    for entry in out_dir.iterdir():
        if entry.name.startswith(_STAGING) and entry.is_dir():
            if owner_state(entry) != "dead":
                continue  # another job is writing right now (or may be: never remove what may be alive)
            if (entry / _COMMIT).is_file():
                log.warning("completing the reports an interrupted job was moving into %s", out_dir)
                _finish(entry, out_dir)
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif _STALE_TMP.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)


def writing_now(out_dir: Path) -> bool:
    """Whether a job that may be alive has a staging folder in ``out_dir`` (it is writing reports there)."""
    try:
        entries = list(out_dir.iterdir())
    except OSError:
        return False
    return any(e.name.startswith(_STAGING) and e.is_dir() and owner_state(e) != "dead" for e in entries)


def file_digests(paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256": …, "bytes": …}}`` for summary.json, to check a report set is one run's."""
    out = {}
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as fh:  # streamed: a million-file report is hundreds of MB
            while block := fh.read(1 << 20):
                h.update(block)
        out[p.name] = {"sha256": h.hexdigest(), "bytes": p.stat().st_size}
    return out


class ReportSet:
    """Reports written together: each into ``stage``, then moved into ``out_dir`` by :meth:`commit`.

    Use as a context manager; leaving it without a commit removes the staging
    folder and leaves the previous reports as they were.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.stage = out_dir / f"{_STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = OwnerLock(self.stage)

    def __enter__(self) -> ReportSet:
        with _clear_errors(self.out_dir):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            recover_reports(self.out_dir)
            self.stage.mkdir()
            self._lock.acquire()  # held until the set is committed or dropped: other jobs leave it alone
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        shutil.rmtree(self.stage, ignore_errors=True)

    def commit(self, *, drop: Sequence[str] = (), replace: Sequence[str] = ()) -> list[Path]:
        """Move every staged file into place, ``summary.json`` last; returns their final paths.

        ``drop`` names files of an earlier set that this one does not have
        (``segments.*`` when no file was long): removed with the same commit.
        ``replace`` names folders (``exports``) that belong to the set whole:
        the staged one takes the place of the earlier one, and an earlier one
        with none staged is removed, so no stale file of an earlier run stays.
        The moved folders are not among the paths returned.
        """
        skip = {_COMMIT, OWNER_FILE, *replace}
        names = sorted(p.name for p in self.stage.iterdir() if p.name not in skip and not p.name.startswith(".old-"))
        names.sort(key=lambda n: n == _SUMMARY)  # stable: summary.json last
        drop = [n for n in drop if n not in names]
        folders = {name: (self.stage / name).is_dir() for name in replace}
        with _clear_errors(self.out_dir):
            atomic_write_text(self.stage / _COMMIT, json.dumps({"move": names, "drop": drop, "replace": folders}))
            return _finish(self.stage, self.out_dir)


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One discovered file's line in the annotations report."""

    path: str
    status: str  # ok | error
    error: str = ""
    warning: str = ""
    label: str = ""
    confidence: float = math.nan
    probabilities: dict[str, float] = field(default_factory=dict)
    true_label: str = ""
    duration_s: float = math.nan
    orig_sample_rate: int = 0
    channels: int = 0
    content_hash: str = ""
    model: str = ""
    used_for_training: bool | None = None  # train jobs only
    segments: int = 0  # windows of a long file (0: analysed whole)
    dominant_label: str = ""  # a long file's most frequent label over voiced windows
    speaker: str = ""
    speaker_normalized: bool = False  # labelled by the speaker-normalised network
    corpus: str = ""  # the input's corpus (inputs[].corpus)
    # Whose statistics standardised it: speaker | file-speaker | file | cluster | corpus; "": none.
    # A long file's: the rule of most of its speech (each segment's is in the segments report).
    normalized_by: str = ""
    domain_distance: float = math.nan  # RMS z-score against the training data (about 1: like it)
    reviewed: bool = False  # the label is a person's answer (batchser review), not the model's
    speech_share: float = math.nan  # a long file's (speech segments): the share of its time in them
    # P(high arousal), P(positive valence): a long file's, its voiced segments' mean weighted by length.
    dimensions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """One piece of a long file in the segments report: a speech segment, a stretch without speech, or a window."""

    path: str
    start_s: float
    end_s: float
    voiced: bool  # speech (or, for windows, sound); a stretch without speech has no label
    label: str
    confidence: float
    probabilities: dict[str, float]
    speech_prob: float = math.nan  # a speech segment's mean speech probability
    speaker: str = ""  # who speaks in it, from the recording's speaker turns
    normalized_by: str = ""  # as a file's: speaker | file-speaker | file | cluster | corpus | ""
    reviewed: bool = False  # the label is a person's answer about this segment
    dimensions: dict[str, float] = field(default_factory=dict)  # P(high arousal), P(positive valence)


def annotations_table(rows: Sequence[ReportRow], classes: Sequence[str], dims: Sequence[str] = ()) -> pa.Table:
    """The annotations table: fixed leading columns, then ``p_<class>`` in ``classes`` order, then each of
    the model's dimensions ``dims`` (``arousal``, ``valence``: the probability of the high, positive side)."""
    data: dict[str, Any] = {
        "path": [r.path for r in rows],
        "status": [r.status for r in rows],
        "error": [r.error for r in rows],
        "warning": [r.warning for r in rows],
        "label": [r.label for r in rows],
        "confidence": np.array([r.confidence for r in rows], dtype=np.float64),
    }
    for c in classes:
        data[f"p_{c}"] = np.array([r.probabilities.get(c, math.nan) for r in rows], dtype=np.float64)
    for d in dims:
        data[d] = np.array([r.dimensions.get(d, math.nan) for r in rows], dtype=np.float64)
    data |= {
        "true_label": [r.true_label for r in rows],
        "duration_s": np.array([r.duration_s for r in rows], dtype=np.float64),
        "orig_sample_rate": np.array([r.orig_sample_rate for r in rows], dtype=np.int64),
        "channels": np.array([r.channels for r in rows], dtype=np.int64),
        "content_hash": [r.content_hash for r in rows],
        "model": [r.model for r in rows],
        "segments": np.array([r.segments for r in rows], dtype=np.int64),
        "dominant_label": [r.dominant_label for r in rows],
        "speaker": [r.speaker for r in rows],
        "speaker_normalized": np.array([r.speaker_normalized for r in rows], dtype=bool),
        "corpus": [r.corpus for r in rows],
        "normalized_by": [r.normalized_by for r in rows],
        "domain_distance": np.array([r.domain_distance for r in rows], dtype=np.float64),
        "reviewed": np.array([r.reviewed for r in rows], dtype=bool),
        "speech_share": np.array([r.speech_share for r in rows], dtype=np.float64),
    }
    if any(r.used_for_training is not None for r in rows):
        data["used_for_training"] = np.array([bool(r.used_for_training) for r in rows], dtype=bool)
    return _table(data)


def segments_table(rows: Sequence[SegmentRow], classes: Sequence[str], dims: Sequence[str] = ()) -> pa.Table:
    """The segments table: path, start_s, end_s, voiced, speech_prob, speaker, label, confidence,
    ``p_<class>``, the model's dimensions ``dims``, normalized_by, reviewed."""
    data: dict[str, Any] = {
        "path": [r.path for r in rows],
        "start_s": np.array([r.start_s for r in rows], dtype=np.float64),
        "end_s": np.array([r.end_s for r in rows], dtype=np.float64),
        "voiced": np.array([r.voiced for r in rows], dtype=bool),
        "speech_prob": np.array([r.speech_prob for r in rows], dtype=np.float64),
        "speaker": [r.speaker for r in rows],
        "label": [r.label for r in rows],
        "confidence": np.array([r.confidence for r in rows], dtype=np.float64),
    }
    for c in classes:
        data[f"p_{c}"] = np.array([r.probabilities[c] for r in rows], dtype=np.float64)
    for d in dims:
        data[d] = np.array([r.dimensions.get(d, math.nan) for r in rows], dtype=np.float64)
    data["normalized_by"] = [r.normalized_by for r in rows]
    data["reviewed"] = np.array([r.reviewed for r in rows], dtype=bool)
    return _table(data)


def _table(columns: dict[str, Any]) -> pa.Table:
    # A missing text value is a real null (what an empty CSV cell reads back as), not "";
    # float NaN stays NaN, as numpy has it.
    return pa.table(
        {
            k: v if isinstance(v, np.ndarray) else pa.array([x if x else None for x in v], pa.string())
            for k, v in columns.items()
        }
    )


# A CSV cell starting with one of these is read as a formula by spreadsheets
# (OWASP's CSV injection list); "'" is in it so that the guard can be undone.
_FORMULA_START = r"^[=+\-@\t\r']"


def _csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Text cells as a spreadsheet should see them: never a formula, never a line break.

    A cell starting with ``= + - @``, a tab or ``'`` gets a leading ``'``
    (:func:`read_csv_report` removes it). Line breaks inside messages become
    spaces: Python's csv writer leaves a lone carriage return unquoted, and
    readers split the row there. Report paths hold none (``text_path``
    escapes them). The Parquet keeps every value as it is.
    """
    for col in df.columns:
        if not pd.api.types.is_string_dtype(df[col].dtype):
            continue
        cells = df[col]
        text = cells.notna()
        if not text.any():
            continue
        cells = cells.where(~text, cells.str.replace(r"[\r\n]+", " ", regex=True))
        guard = cells.str.contains(_FORMULA_START, regex=True, na=False)
        if guard.any():
            cells = cells.where(~guard, "'" + cells.astype(str))
        df[col] = cells
    return df


def guard_cell(text: str) -> str:
    """One CSV cell guarded as :func:`_csv_safe` guards a column (for CSV written row by row)."""
    text = re.sub(r"[\r\n]+", " ", text)
    return "'" + text if re.match(_FORMULA_START, text) else text


def unguard_cell(text: str) -> str:
    """A cell as it was before :func:`guard_cell` (or :func:`_csv_safe`)."""
    return text[1:] if text.startswith("'") else text


def read_csv_report(path: Path) -> pd.DataFrame:
    """A CSV report read back as written: the formula guard of :func:`_csv_safe` removed."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in df.columns:
        if pd.api.types.is_string_dtype(df[col].dtype):
            guarded = df[col].str.startswith("'", na=False)
            if guarded.any():
                df[col] = df[col].where(~guarded, df[col].str.slice(1))
    return df


def _csv_chunk(fh: Any, table: pa.Table, *, header: bool, rows_per_chunk: int = 4096) -> None:
    # pandas' CSV writer (6 significant digits, nulls as empty cells), a chunk of
    # rows at a time: the text of a whole large report at once would cost 1 KB per
    # file of memory. 6 µs a row, twice a hand-written csv.writer loop's time for
    # the same bytes, measured: 3 s more for a million-file job, which spends far
    # longer decoding.
    for i, batch in enumerate(table.to_batches(max_chunksize=rows_per_chunk)):
        _csv_safe(batch.to_pandas()).to_csv(
            fh, index=False, header=header and i == 0, float_format="%.6g", lineterminator="\n"
        )


def csv_text(table: pa.Table) -> str:
    """A table as the reports' CSV text (formula guard included), for small tables printed or sent whole."""
    buf = io.StringIO()
    _csv_chunk(buf, table, header=True)
    if table.num_rows == 0:
        buf.write(",".join(table.column_names) + "\n")
    return buf.getvalue()


def _write_csv(table: pa.Table, path: Path, *, rows_per_chunk: int = 4096) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        _csv_chunk(fh, table, header=True, rows_per_chunk=rows_per_chunk)
        if table.num_rows == 0:
            fh.write(",".join(table.column_names) + "\n")


def write_annotations(
    table: pa.Table, out_dir: Path, formats: Sequence[str], *, stem: str = "annotations"
) -> list[Path]:
    """Write ``<stem>.<fmt>`` for each format, each atomically; returns the paths written.

    Raises
    ------
    ReportError
        The folder is not writable or the disk is full; existing reports stay as they were.
    """
    written = []
    for fmt in formats:
        target = out_dir / f"{stem}.{fmt}"
        with _clear_errors(out_dir), atomic_path(target) as tmp:
            if fmt == "csv":
                _write_csv(table, tmp)
            else:
                pq.write_table(table, tmp)
        written.append(target)
    return written


class TableWriter:
    """One report table (``<stem>.csv``, ``<stem>.parquet``) written a chunk of rows at a time.

    Parquet gets a row group per chunk and CSV an append, so a job's memory
    holds one chunk of rows, not its archive's. Write into a
    :class:`ReportSet`'s staging folder: the files are moved into place with
    the rest of the set, never seen half-written.

    Parameters
    ----------
    folder : Path
    formats : sequence of {"csv", "parquet"}
    stem : str
    empty : pa.Table
        A table with no rows and the report's columns: what :meth:`close` writes
        when no chunk came (a CSV header, a Parquet schema).
    """

    def __init__(self, folder: Path, formats: Sequence[str], *, stem: str, empty: pa.Table) -> None:
        self.paths = [folder / f"{stem}.{fmt}" for fmt in formats]
        self._empty = empty
        self._parquet: pq.ParquetWriter | None = None
        self._csv: Any = None
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        with _clear_errors(self.paths[0].parent):
            for path in self.paths:
                if path.suffix == ".csv":
                    if self._csv is None:
                        self._csv = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
                    _csv_chunk(self._csv, table, header=self.rows == 0)
                else:
                    if self._parquet is None:
                        self._parquet = pq.ParquetWriter(path, table.schema)
                    self._parquet.write_table(table)
        self.rows += table.num_rows

    def close(self) -> list[Path]:
        """Finish the files (an empty table's header when nothing came); returns their paths."""
        with _clear_errors(self.paths[0].parent):
            if self.rows == 0:
                for path in self.paths:
                    if path.suffix == ".csv":
                        _write_csv(self._empty, path)
                    else:
                        pq.write_table(self._empty, path)
            if self._csv is not None:
                self._csv.close()
            if self._parquet is not None:
                self._parquet.close()
        return self.paths


@contextlib.contextmanager
def _clear_errors(out_dir: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ReportError(
            f"cannot write reports to {out_dir}: {exc.strerror or exc}; any previous reports there are untouched"
        ) from None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    with _clear_errors(path.parent):
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    plt.rcParams["text.parse_math"] = False  # labels are shown as written, never parsed as mathtext
    return plt


def _save_png(fig: Any, path: Path, *, title: str) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    with _clear_errors(path.parent):
        atomic_write_bytes(path, buf.getvalue())


def write_confusion_png(path: Path, evaluations: dict[str, dict[str, Any]], *, title: str) -> None:
    """One confusion-matrix panel per evaluation (row-normalised, counts annotated)."""
    plt = _pyplot()
    panels = {k: v for k, v in evaluations.items() if "confusion_matrix" in v}
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 4.8), squeeze=False)
    for ax, (name, ev) in zip(axes[0], panels.items(), strict=False):
        cm = np.asarray(ev["confusion_matrix"], dtype=float)
        labels = ev["labels"]
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(
                    j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black"
                )
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name.replace('_', ' ')}: acc {ev['accuracy']:.1%}, n={ev['n']}")
    _save_png(fig, path, title=title)


def write_reliability_png(path: Path, evaluations: dict[str, dict[str, Any]], *, title: str) -> None:
    """Reliability diagram per evaluation: accuracy against mean confidence per bin, with ECE."""
    plt = _pyplot()
    panels = {k: v["calibration"] for k, v in evaluations.items() if "calibration" in v}
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, cal) in zip(axes.flat, panels.items(), strict=False):
        bins = cal["bins"]
        centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
        width = 1.0 / cal["n_bins"]
        ax.bar(centers, [b["accuracy"] for b in bins], width=width * 0.9, color="#4c72b0", label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#dd8452", label="bin mean")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name.replace('_', ' ')}: ECE {cal['ece']:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    _save_png(fig, path, title=title)
