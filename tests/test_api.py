"""The Python interface: annotate, process_files, load_model and Manifest.from_dict, as a notebook uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import batchser
from batchser.cli import main
from tests.conftest import PROJECT, SENTENCES, room_noise, speechlike, write_audio

CLASSES = ["angry", "sad", "neutral", "happy"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "calls"
    for i in range(12):
        kind = CLASSES[i % 4]
        write_audio(d / f"spk{i % 2}" / f"{kind}-{i}.wav", speechlike(kind, sr=16000, seconds=1.5, seed=i), 16000)
    (d / "broken.wav").write_bytes(b"RIFF....not audio")
    return d


def test_annotate_a_folder_returns_the_report_as_a_dataframe(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    table = batchser.annotate("calls", cache=tmp_path / "cache", backend="sequential", speaker="folder")
    assert isinstance(table, pd.DataFrame) and table.index.name == "path"
    assert len(table) == 13 and table.loc["calls/broken.wav", "status"] == "error"
    ok = table[table.status == "ok"]
    assert set(ok.label) <= set(CLASSES)
    np.testing.assert_allclose(ok[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-6)
    assert (ok.normalized_by == "corpus").all()  # 6 files a speaker: under 10, the input's 12 files instead
    # The same as the command line's report for the same job.
    job = {
        "name": "same",
        "inputs": [{"path": "calls", "speaker": "folder"}],
        "emotions": CLASSES,
        "features": list(batchser.load_model(batchser.default_model_path()).meta.feature_spec["names"]),
        "cache": "cache",
        "engine": {"backend": "sequential"},
        "model": {"path": str(batchser.default_model_path())},
        "output": {"dir": "reports"},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", "-q", str(tmp_path / "job.yaml")]) == 0
    cli = pd.read_parquet(tmp_path / "reports" / "annotations.parquet").set_index("path")
    pd.testing.assert_frame_equal(table, cli)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "calls",
        "job.yaml",
        "reports",
    ]  # annotate wrote no other file


def test_load_model_and_manifest_from_dict() -> None:
    m = batchser.load_model(PROJECT / "batchser" / "models" / "pooled-4emo.skops")
    assert sorted(m.meta.classes) == sorted(CLASSES) and m.id.startswith("pooled-4emo@")
    assert m.predict_proba(np.zeros((1, m.meta.feature_spec["dim"]))).shape == (1, 4)
    with pytest.raises(batchser.ManifestError, match=r"engine.n_job: unknown key; did you mean 'n_jobs'"):
        batchser.Manifest.from_dict(
            {
                "name": "x",
                "inputs": [{"path": "a"}],
                "emotions": CLASSES,
                "model": {"path": "m"},
                "output": {"dir": "o"},
                "engine": {"n_job": 2},
            }
        )
    assert (
        batchser.__version__ and batchser.Manifest.from_yaml(PROJECT / "jobs" / "annotate.yaml").name == "annotate-demo"
    )


def test_process_files_returns_the_segments_indexed_as_audinterface_does_and_the_summary(
    tmp_path: Path,
    say,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    speech = [piece for k, text in enumerate(SENTENCES[:5]) for piece in (room_noise(1.2, seed=k), say(text))]
    write_audio(tmp_path / "talks" / "long.wav", np.concatenate(speech), 16000, subtype="PCM_16")  # about 20 s
    write_audio(tmp_path / "talks" / "short.wav", speechlike("sad", sr=16000, seconds=1.5), 16000)
    kw = {"cache": tmp_path / "cache", "backend": "sequential", "n_jobs": 1}
    result = batchser.process_files("talks", out_dir="reports", formats=["csv", "parquet", "textgrid"], **kw)
    assert isinstance(result, batchser.AnnotationResult)

    # The segments: a (file, start, end) MultiIndex of report paths and timedelta64[ns], as audinterface's.
    seg, parquet = result.segments, pd.read_parquet(tmp_path / "reports" / "segments.parquet")
    assert seg.index.names == ["file", "start", "end"]
    assert [str(t) for t in seg.index.dtypes[["start", "end"]]] == ["timedelta64[ns]", "timedelta64[ns]"]
    assert set(seg.index.get_level_values("file")) == {"talks/long.wav"} and len(seg) == len(parquet) >= 9
    for level, column in (("start", "start_s"), ("end", "end_s")):
        times = seg.index.get_level_values(level)
        assert (times == pd.to_timedelta(parquet[column], unit="s")).all()
        np.testing.assert_allclose(times.total_seconds(), parquet[column], rtol=0, atol=1e-9)
    assert (seg.index.get_level_values("start")[1:] == seg.index.get_level_values("end")[:-1]).sum() >= len(seg) - 3
    pd.testing.assert_frame_equal(seg.reset_index(drop=True), parquet.drop(columns=["path", "start_s", "end_s"]))
    labelled = seg.loc["talks/long.wav"].dropna(subset=["label"])  # sliced by file, as an audformat table is
    assert labelled["voiced"].all() and set(labelled["label"]) <= set(CLASSES) and len(labelled) >= 4

    # The files, the summary and the exports: what the job wrote.
    files = pd.read_parquet(tmp_path / "reports" / "annotations.parquet").set_index("path")
    pd.testing.assert_frame_equal(result.files, files)
    assert result.summary == json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert result.summary["files"] == 2 and result.summary["expected_accuracy"] and "domain" in result.summary
    assert result.exports == [tmp_path / "reports" / "exports" / "textgrid" / "talks" / "long.wav.TextGrid"]

    # Without out_dir: the same results from a temporary folder, nothing left behind; annotate returns .files.
    again = batchser.process_files("talks", **kw)
    pd.testing.assert_frame_equal(again.segments, seg)
    pd.testing.assert_frame_equal(again.files, result.files)
    assert again.exports == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "reports", "talks"]
    pd.testing.assert_frame_equal(batchser.annotate("talks", **kw), result.files)
    with pytest.raises(batchser.ManifestError, match="formats: eaf are files to open in other programs; give out_dir"):
        batchser.process_files("talks", formats=["parquet", "eaf"], **kw)
    # No long file: no rows, but the same index and columns.
    short = batchser.process_files("talks/short.wav", **kw).segments
    assert short.empty and short.index.names == seg.index.names and list(short.columns) == list(seg.columns)
    assert [str(t) for t in short.index.dtypes[["start", "end"]]] == ["timedelta64[ns]", "timedelta64[ns]"]


def test_annotate_names_a_missing_input(tmp_path: Path) -> None:
    with pytest.raises(batchser.ManifestError, match="does not exist"):
        batchser.annotate(tmp_path / "nowhere", cache=tmp_path / "cache")


def test_the_annotate_command_labels_a_folder_without_a_manifest(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["annotate", str(folder), "--out", str(out), "--cache", str(tmp_path / "c"), "--format", "csv", "-j", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "13 files seen" in text and "1 failed" in text
    a = pd.read_csv(out / "annotations.csv")
    assert len(a) == 13 and not (out / "annotations.parquet").exists()


def test_schema_prints_the_manifests_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"name", "inputs", "model", "output"} <= set(schema["properties"]) and "base_dir" not in schema["properties"]
    assert "LabelSpec" in schema["$defs"]


def test_init_writes_a_commented_manifest_that_runs(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "mine.yaml", "--inputs", "calls"]) == 0
    text = (tmp_path / "mine.yaml").read_text()
    assert text.count("#") > 10 and "name: mine" in text  # it teaches as it goes
    assert main(["init", "mine.yaml"]) == 2  # never over an existing file
    assert main(["validate", "-q", "mine.yaml"]) == 0
    assert main(["run", "-q", "mine.yaml"]) == 0  # the shipped model, without naming it
    a = pd.read_csv(tmp_path / "result" / "reports" / "mine" / "annotations.csv")
    assert len(a) == 13 and a.model.str.startswith("pooled-4emo@").all()
