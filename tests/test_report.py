"""Report tables: the CSV is what pandas would write, whatever the chunking."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from batchser.report import ReportRow, _write_csv, annotations_table, write_annotations


def _rows() -> list[ReportRow]:
    probs = {"angry": 0.125, "sad": 1 / 3, "neutral": 2e-9, "happy": 0.5416666}
    return [
        ReportRow(path="a/ok.wav", status="ok", label="sad", confidence=1 / 3, probabilities=probs, duration_s=3.3),
        ReportRow(path='b/"quoted", comma.wav', status="error", error="cannot read: no, really", channels=2),
        ReportRow(path="c/ünïcode\\xff.flac", status="ok", label="happy", confidence=math.nan, speaker="actor01"),
        ReportRow(path="d/train.wav", status="ok", used_for_training=True, speaker_normalized=True, segments=4),
    ] * 5


def test_csv_is_what_pandas_writes_and_parquet_round_trips(tmp_path: Path) -> None:
    classes = ["angry", "sad", "neutral", "happy"]
    table = annotations_table(_rows(), classes)
    written = write_annotations(table, tmp_path, ["csv", "parquet"])
    assert [p.name for p in written] == ["annotations.csv", "annotations.parquet"]
    frame = table.to_pandas()
    expected = frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")
    assert (tmp_path / "annotations.csv").read_text(encoding="utf-8") == expected
    # Chunked as a large report is, byte for byte the same.
    _write_csv(table, tmp_path / "chunked.csv", rows_per_chunk=3)
    assert (tmp_path / "chunked.csv").read_text(encoding="utf-8") == expected
    back = pq.read_table(tmp_path / "annotations.parquet").to_pandas()
    pd.testing.assert_frame_equal(back, frame)
    assert back["used_for_training"].tolist() == [False, False, False, True] * 5


def test_missing_text_is_null_in_parquet_and_empty_in_csv_alike(tmp_path: Path) -> None:
    write_annotations(annotations_table(_rows(), ["angry", "sad", "neutral", "happy"]), tmp_path, ["csv", "parquet"])
    parquet = pd.read_parquet(tmp_path / "annotations.parquet")
    csv = pd.read_csv(tmp_path / "annotations.csv")
    for col in ("label", "error", "warning", "speaker", "true_label"):
        assert parquet[col].isna().tolist() == csv[col].isna().tolist(), col  # was "" in Parquet, NaN in the CSV
    assert pd.isna(parquet.loc[1, "label"]) and parquet.loc[1, "error"] == "cannot read: no, really"
