"""What :func:`batchser.process_files` returns: a job's tables and summary, as pandas and a dict.

The segments are indexed as audinterface indexes segments (and audformat its
segmented tables): a ``MultiIndex`` of ``file``, ``start`` and ``end``, the
times as ``pandas.Timedelta``, so a table from batchser joins, slices and
plots as one from audinterface's ``process_files`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from batchser.exports.names import EXPORTS_DIR
from batchser.report import segments_table
from batchser.summary import JobSummary

__all__ = ["AnnotationResult", "read_result", "segmented"]


@dataclass(frozen=True)
class AnnotationResult:
    """A labelling job's results.

    Attributes
    ----------
    files : pandas.DataFrame
        The annotations report, one row per file, indexed by ``path``: what
        :func:`batchser.annotate` returns.
    segments : pandas.DataFrame
        ``segments.*``: a row per speech segment and per stretch without speech
        of each long recording (per window with ``segments="windows"``),
        indexed by ``file`` (the report path, as in ``files``), ``start`` and
        ``end`` (``timedelta64[ns]``), with the columns ``voiced``,
        ``speech_prob``, ``speaker``, ``label``, ``confidence``,
        ``p_<emotion>``, ``normalized_by`` and ``reviewed``. Empty (with those
        columns) when no file was long.
    summary : dict
        ``summary.json``'s content: counts (``files``, ``failed``,
        ``no_speech``), ``failures``, ``skipped`` files by extension, the
        domain warning (``domain``), ``expected_accuracy`` before a review and
        ``review`` (its estimates) after one, ``normalized_by``, ``exports``
        and every report's hash (``reports``).
    exports : list of Path
        The files written under ``out_dir/exports`` (TextGrid, ELAN, Audacity),
        when asked for with ``formats``.
    """

    files: pd.DataFrame
    segments: pd.DataFrame
    summary: dict[str, Any]
    exports: list[Path] = field(default_factory=list)


def _seconds(column: pd.Series) -> pd.TimedeltaIndex:
    # In nanoseconds, as audinterface's (pandas picks another unit for no values at all).
    return pd.TimedeltaIndex(pd.to_timedelta(column.to_numpy(dtype=float), unit="s")).astype("timedelta64[ns]")


def segmented(table: pd.DataFrame) -> pd.DataFrame:
    """A segments report (``path``, ``start_s``, ``end_s`` columns) indexed by (file, start, end) as audinterface does.

    ``start`` and ``end`` are ``pandas.to_timedelta`` of the seconds, exact to
    the nanosecond (``total_seconds()`` gives the report's numbers back).
    """
    index = pd.MultiIndex.from_arrays(
        [
            table["path"].to_numpy(),
            _seconds(table["start_s"]),
            _seconds(table["end_s"]),
        ],
        names=["file", "start", "end"],
    )
    return table.drop(columns=["path", "start_s", "end_s"]).set_axis(index)


def read_result(summary: JobSummary, out_dir: Path, *, keep_exports: bool) -> AnnotationResult:
    """The result of the job ``summary`` describes, read back from its reports in ``out_dir``.

    ``keep_exports``: ``out_dir`` outlives the call, so the exports' paths are worth returning.
    """
    files = summary.table("annotations")
    try:
        segments = summary.table("segments").reset_index()
    except FileNotFoundError:  # no file was long: the columns all the same
        classes = [c.removeprefix("p_") for c in files.columns if c.startswith("p_")]
        dims = [d for d in ("arousal", "valence") if d in files.columns]
        segments = segments_table([], classes, dims).to_pandas()
    content = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    names = content.get("reports", {}) if keep_exports else {}
    exports = [out_dir / n for n in names if n.startswith(f"{EXPORTS_DIR}/")]
    return AnnotationResult(files=files, segments=segmented(segments), summary=content, exports=exports)
