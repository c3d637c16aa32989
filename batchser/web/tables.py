"""The reports the web pages read back: a job's tables, from Parquet when written, else CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from batchser.report import read_csv_report

__all__ = ["read_report"]


def read_report(out_dir: Path, stem: str, columns: list[str] | None = None) -> pd.DataFrame:
    """``<stem>.parquet`` (or ``<stem>.csv``) of a job's output folder.

    Raises
    ------
    FileNotFoundError
        The job wrote no such report.
    """
    parquet, csv = out_dir / f"{stem}.parquet", out_dir / f"{stem}.csv"
    if parquet.is_file():
        return pd.read_parquet(parquet, columns=columns)
    if csv.is_file():
        df = read_csv_report(csv)
        return df[columns] if columns else df
    raise FileNotFoundError(f"{out_dir} holds no {stem} report ({stem}.parquet or {stem}.csv)")
