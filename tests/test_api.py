"""The Python interface: batchser.annotate, load_model and Manifest.from_dict, as a notebook uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import batchser
from batchser.cli import main
from tests.conftest import PROJECT, speechlike, write_audio

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
