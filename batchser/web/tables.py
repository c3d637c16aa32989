"""The reports the web pages read back: a job's tables, from Parquet when written, else CSV, checked as read.

``annotations`` and ``segments`` may have been edited since a job wrote them:
a column the pages use that is missing, named twice or holds a cell of the
wrong kind (text where a number goes, a probability past 1, a segment that
ends before it starts or at an infinite time) is named by file, column and
line with the fix (:class:`~batchser.web.readback.ReadBackError`), never a
``KeyError`` or an HTTP 500 later.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from batchser.report import read_csv_report
from batchser.web.readback import ReadBackError

__all__ = ["MAX_SECONDS", "check_table", "read_report"]

# No recording lasts 10 million seconds (116 days): a later time is an edit, and sample
# positions computed from it would overflow.
MAX_SECONDS = 1e7
_NEEDED = {
    "annotations": ("path", "status", "label", "confidence", "content_hash", "segments"),
    "segments": ("path", "start_s", "end_s", "voiced", "label", "confidence"),
}
_SHARES = ("confidence", "speech_prob", "speech_share", "arousal", "valence")  # and every p_<class>
_NUMBERS = ("duration_s", "domain_distance", "start_s", "end_s")
_COUNTS = ("orig_sample_rate", "channels", "segments")
_FLAGS = ("reviewed", "voiced", "speaker_normalized", "used_for_training")
_TEXT = ("path", "status", "label", "content_hash")


def read_report(out_dir: Path, stem: str, columns: list[str] | None = None) -> pd.DataFrame:
    """``<stem>.parquet`` (or ``<stem>.csv``) of a job's output folder, checked (:func:`check_table`).

    Raises
    ------
    FileNotFoundError
        The job wrote no such report.
    ReadBackError
        A column the pages use is missing, repeated or holds a cell of the wrong kind (named).
    """
    parquet, csv = out_dir / f"{stem}.parquet", out_dir / f"{stem}.csv"
    if parquet.is_file():
        try:
            df = pd.read_parquet(parquet, columns=columns)
        except (OSError, ValueError) as exc:
            raise ReadBackError(f"{parquet} cannot be read as Parquet ({exc}); {_fix(stem)}") from None
        return check_table(df, parquet, stem)
    if csv.is_file():
        df = read_csv_table(csv, stem)
        return df[columns] if columns else df
    raise FileNotFoundError(f"{out_dir} holds no {stem} report ({stem}.parquet or {stem}.csv)")


def read_csv_table(path: Path, stem: str) -> pd.DataFrame:
    """A CSV report read back (:func:`~batchser.report.read_csv_report`) and checked."""
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        df = read_csv_report(path)
    except (ValueError, pd.errors.ParserError, IndexError, UnicodeDecodeError) as exc:
        raise ReadBackError(f"{path} cannot be read as CSV ({exc}); {_fix(stem)}") from None
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:  # pandas would rename the second "path.1": say so instead of reading the wrong one
        raise ReadBackError(f"{path}: column {twice[0]!r} appears more than once; {_fix(stem)}")
    return check_table(df, path, stem)


def _fix(stem: str) -> str:
    return f"the file was edited or damaged: run the job again to rewrite its {stem} report"


def check_table(df: pd.DataFrame, path: Path, stem: str, *, offset: int = 0) -> pd.DataFrame:
    """``df`` (the ``stem`` report read from ``path``, from its row ``offset``) with its columns of the kinds a
    job writes.

    Raises
    ------
    ReadBackError
        Naming the file, the column and the first bad line.
    """
    fix = _fix(stem)
    line = offset + (2 if path.suffix == ".csv" else 1)  # a CSV's first row is its line 2 (after the header)
    where = "line" if path.suffix == ".csv" else "row"
    if df.columns.duplicated().any():
        raise ReadBackError(f"{path}: column {df.columns[df.columns.duplicated()][0]!r} appears twice; {fix}")
    missing = [c for c in _NEEDED.get(stem, ()) if c not in df.columns]
    if missing:
        raise ReadBackError(f"{path} has no {', '.join(missing)} column, which a job writes; {fix}")
    df = df.copy()

    def refuse(col: str, bad: np.ndarray, what: str) -> None:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = df[col].iloc[i]
            cell = repr(value.item() if isinstance(value, np.generic) else value)
            cell = cell if len(cell) <= 40 else cell[:37] + "..."
            raise ReadBackError(f"{path} {where} {i + line}: column {col}: {cell} is not {what}; {fix}")

    shares = [c for c in df.columns if c in _SHARES or str(c).startswith("p_")]
    for col in [*shares, *(c for c in (*_NUMBERS, *_COUNTS) if c in df.columns)]:
        num = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
        given = df[col].notna().to_numpy() & (df[col].astype(str).str.strip() != "").to_numpy()
        refuse(col, (num.isna().to_numpy() & given), "a number")
        x = num.to_numpy()
        if col in shares:
            refuse(col, ~np.isnan(x) & ~((x >= 0) & (x <= 1)), "a probability (0 to 1)")
        elif col in _COUNTS:
            with np.errstate(invalid="ignore"):  # inf % 1: refused by the bound before it
                refuse(col, ~np.isnan(x) & ~((x >= 0) & (x <= 2**53) & (x % 1 == 0)), "a whole number")
        else:
            refuse(
                col, np.isinf(x) | (np.abs(np.nan_to_num(x)) > MAX_SECONDS), f"a finite time under {MAX_SECONDS:.0e} s"
            )
        df[col] = num.astype(np.int64) if col in _COUNTS and not num.isna().any() else num
    for col in (c for c in _FLAGS if c in df.columns):
        if df[col].dtype != bool:
            text = df[col].map(lambda v: str(v).strip().lower() if v == v and v is not None else "false")
            refuse(col, ~text.isin(["true", "false", "1", "0", "1.0", "0.0"]).to_numpy(), "true or false")
            df[col] = text.isin(["true", "1", "1.0"])
    for col in (c for c in _TEXT if c in df.columns):
        if col == "path":
            refuse(col, (df[col].isna() | (df[col].astype(str).str.strip() == "")).to_numpy(), "a file's path")
        df[col] = df[col].where(df[col].isna(), df[col].astype(str))
    if stem == "segments":
        a, b = df["start_s"].to_numpy(), df["end_s"].to_numpy()
        refuse("start_s", np.isnan(a) | (a < 0), "a time at or after the recording's start")
        refuse("end_s", np.isnan(b) | (b < a), "a time at or after the segment's start_s")
    return df
