"""Reports edited after the job, read back by ``batchser report`` and ``batchser review``: each problem is named
by file and column (or key), never a traceback or an HTTP 500; a clip asked for at an absurd time is refused
with a reason."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from batchser.cli import main
from batchser.review import SAMPLE
from batchser.web.readback import ReadBackError, read_metrics, read_summary
from batchser.web.review import ReviewSession, create_app
from batchser.web.tables import read_report
from tests.review_kit import fresh, make_job


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_job(tmp_path_factory.mktemp("job"))


def _csv_only(job: Path, tmp_path: Path) -> Path:
    """A copy of the reports with annotations as CSV only (what a person edits in a spreadsheet)."""
    out = fresh(job, tmp_path)
    (out / "annotations.parquet").unlink()
    return out


def _both_commands_say(out: Path, capsys: pytest.CaptureFixture[str], *words: str) -> None:
    for cmd in (["report", str(out)], ["review", str(out), "--list"]):
        assert main(cmd) == 1, cmd
        err = capsys.readouterr().err
        assert all(w in err for w in words) and "Traceback" not in err and "Error:" not in err, err


def _segments(out: Path, **rows: object) -> None:
    """A segments report of two windows of the first labelled file, with ``rows`` overriding its columns."""
    ann = pd.read_csv(out / "annotations.csv")
    path = ann.loc[ann["status"] == "ok", "path"].iloc[0]
    seg = pd.DataFrame(
        {"path": [path, path], "start_s": [0.0, 0.5], "end_s": [0.5, 1.0], "voiced": [True, True],
         "speech_prob": [float("nan")] * 2, "speaker": ["", ""], "label": ["sad", "sad"],
         "confidence": [0.6, 0.7], "p_angry": [0.1, 0.1], "p_sad": [0.6, 0.7], "p_neutral": [0.2, 0.1],
         "p_happy": [0.1, 0.1], "normalized_by": ["", ""], "reviewed": [False, False]}
    )  # fmt: skip
    for col, value in rows.items():
        if value is None:
            seg = seg.drop(columns=[col])
        else:
            seg[col] = seg[col].astype(object)
            seg.loc[1, col] = value
    seg.to_csv(out / "segments.csv", index=False)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda df: df.drop(columns=["status"]), ["annotations.csv has no status column"]),
        (lambda df: df.assign(confidence=df["confidence"].astype(object).where(df.index != 3, "high")),
         ["annotations.csv line 5: column confidence: 'high' is not a number"]),
        (lambda df: df.assign(p_sad=df["p_sad"].where(df.index != 0, 7.5)),
         ["annotations.csv line 2: column p_sad: 7.5 is not a probability (0 to 1)"]),
        (lambda df: df.assign(reviewed=df["reviewed"].astype(object).where(df.index != 1, "maybe")),
         ["annotations.csv line 3: column reviewed: 'maybe' is not true or false"]),
        (lambda df: df.assign(segments=df["segments"].astype(object).where(df.index != 2, "1e400")),
         ["annotations.csv line 4: column segments: inf is not a whole number"]),
        (lambda df: df.rename(columns={"error": "status"}),
         ["annotations.csv: column 'status' appears more than once"]),
    ],
)  # fmt: skip
def test_a_tampered_annotations_table_is_named_by_column_and_line(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, words: list[str]
) -> None:
    out = _csv_only(job, tmp_path)
    edit(pd.read_csv(out / "annotations.csv", keep_default_na=False, na_values=[""])).to_csv(
        out / "annotations.csv", index=False
    )
    _both_commands_say(out, capsys, *words, "run the job again")


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ({"end_s": None}, "segments.csv has no end_s column"),
        ({"start_s": 1.5}, "segments.csv line 3: column end_s: 1.0 is not a time at or after the segment's start_s"),
        ({"start_s": -2.0}, "segments.csv line 3: column start_s: -2.0 is not a time at or after the recording's"),
        ({"end_s": "inf"}, "segments.csv line 3: column end_s: inf is not a finite time under 1e+07 s"),
        ({"end_s": "nan"}, "segments.csv line 3: column end_s: 'nan' is not a number"),
        ({"start_s": "soon"}, "segments.csv line 3: column start_s: 'soon' is not a number"),
    ],
)
def test_a_tampered_segments_table_is_named_by_column_and_line(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: dict, words: str
) -> None:
    out = _csv_only(job, tmp_path)
    _segments(out, **rows)
    with pytest.raises(ReadBackError, match=r"segments\.csv"):
        read_report(out, "segments")
    _both_commands_say(out, capsys, words)


def test_an_intact_segments_table_reads_back(job: Path, tmp_path: Path) -> None:
    out = _csv_only(job, tmp_path)
    _segments(out)
    seg = read_report(out, "segments")
    assert seg["start_s"].tolist() == [0.0, 0.5] and seg["reviewed"].dtype == bool
    assert main(["report", str(out)]) == 0


def test_absurd_numbers_and_deep_nesting_in_json_are_refused(job: Path, tmp_path: Path) -> None:
    out = fresh(job, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    for value, named in (
        ({**summary, "files": 10**30}, "key files: Input should be less than or equal to 1000000000000000"),
        ({**summary, "seconds": float("inf")}, "key seconds: Input should be a finite number"),
    ):
        (out / "summary.json").write_text(json.dumps(value))
        with pytest.raises(ReadBackError, match=named):
            read_summary(out)
    for depth, said in ((100_000, "thousands of levels deep"), (100, "over 32 levels deep")):
        (out / "summary.json").write_text(json.dumps(summary)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}")
        with pytest.raises(ReadBackError, match=said):
            read_summary(out)
        (out / "metrics.json").write_text('{"random_split": ' + "[" * depth + "]" * depth + "}")
        with pytest.raises(ReadBackError, match=said):
            read_metrics(out, ["angry"])


def test_metrics_entries_of_the_wrong_type_are_left_out_with_a_warning(
    job: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = fresh(job, tmp_path)
    (out / "metrics.json").write_text(
        json.dumps({"model": "m", "random_split": 5, "labelled_files": "x", "labels_outside_the_model": [1]})
    )
    with caplog.at_level(logging.WARNING, logger="batchser.web.readback"):
        got = read_metrics(out, ["angry", "sad", "neutral", "happy"])
        assert main(["report", str(out)]) == 0  # the page is drawn without them
    assert got == {"model": "m"}
    said = caplog.text
    assert "key random_split is int, not an object" in said and "key labelled_files is str" in said
    (out / "metrics.json").write_text(json.dumps({"dimensions_of_labelled_files": {"arousal": {"n": -1}}}))
    with pytest.raises(ReadBackError, match=r"key dimensions_of_labelled_files\.arousal\.n"):
        read_metrics(out, ["angry"])
    scores = {"n": 3, "accuracy": 0.5, "uar": 0.5, "macro_f1": 0.5}
    for more, lacking in (({}, "labels"), ({"labels": ["angry"], "confusion_matrix": [[3]]}, "calibration")):
        (out / "metrics.json").write_text(json.dumps({"labelled_files": scores | more}))
        with pytest.raises(ReadBackError, match=rf"key labelled_files\.{lacking}: missing"):
            read_metrics(out, ["angry"])


@pytest.mark.parametrize(("start", "end"), [(1e308, 1e308), ("inf", "inf"), (5.0, 2.0), (-3.0, 1.0)])
def test_a_clip_at_an_absurd_time_is_refused_with_a_reason(job: Path, tmp_path: Path, start, end) -> None:
    out = fresh(job, tmp_path)
    session = ReviewSession.open(out, per_label=2)
    sample = pd.read_csv(out / SAMPLE)
    sample["start_s"], sample["end_s"] = sample["start_s"].astype(object), sample["end_s"].astype(object)
    sample.loc[0, ["start_s", "end_s"]] = [start, end]
    sample.to_csv(out / SAMPLE, index=False)
    session = ReviewSession.open(out, per_label=2)
    client = create_app(session, token="t").test_client()
    order = int(sample.loc[0, "order"])
    got = client.get(f"/clip/{order}?token=t")
    assert got.status_code == 410, got.data
    assert b"cannot play this file: the stretch to play" in got.data or b"the context around" in got.data
    other = int(sample.loc[1, "order"])
    assert client.get(f"/clip/{other}?token=t").status_code == 200  # the other units still play


def test_an_answer_for_no_unit_of_the_sample_is_refused_by_name(job: Path, tmp_path: Path) -> None:
    client = create_app(ReviewSession.open(fresh(job, tmp_path), per_label=2), token="t").test_client()
    for order in (10**30, "1e400", "-1", [1], 99):
        got = client.post("/answer?token=t", json={"order": order, "label": "sad"})
        assert got.status_code == 400, order
        assert got.get_json()["error"].endswith("is no recording's number in the sample"), got.get_json()


def test_a_tampered_parquet_report_is_named_by_column_and_row(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fresh(job, tmp_path)
    table = pd.read_parquet(out / "annotations.parquet")
    table["confidence"] = table["confidence"].astype(str).where(table.index != 6, "very")
    table.to_parquet(out / "annotations.parquet")
    _both_commands_say(out, capsys, "annotations.parquet row 7: column confidence: 'very' is not a number")
    table.drop(columns=["confidence"]).to_parquet(out / "annotations.parquet")
    _both_commands_say(out, capsys, "annotations.parquet has no confidence column")
