"""The walls a new user hit, each met with a message in the user's own terms and the next step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from batchser.cli import main
from tests.conftest import speechlike, write_audio

KINDS = ["angry", "sad", "neutral", "happy"]


def _clips(folder: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        write_audio(folder / name, speechlike(KINDS[i % 4], sr=16000, seconds=1.0, seed=i), 16000)


def test_annotate_speaks_of_paths_not_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["annotate", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no-such-folder does not exist" in err and "manifest" not in err
    (tmp_path / "empty").mkdir()
    out = ["--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
    assert main(["annotate", str(tmp_path / "empty"), *out]) == 1
    err = capsys.readouterr().err
    assert "no audio files found" in err and "manifest" not in err and "allow_empty" not in err
    assert main(["annotate", str(tmp_path / "emtpy*"), *out]) == 2
    assert "matches nothing" in capsys.readouterr().err


def test_run_on_a_folder_suggests_annotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path)]) == 2
    assert f"batchser annotate {tmp_path}" in capsys.readouterr().err


def test_a_missing_model_points_at_training_not_at_a_repository_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clips(tmp_path / "a", ["x.wav"])
    assert main(["annotate", str(tmp_path / "a"), "--model", str(tmp_path / "mine.skops")]) != 0
    err = capsys.readouterr().err
    assert "model.train: true" in err and "jobs/" not in err


def _train_job(tmp_path: Path, labels_csv: str, rows: str) -> Path:
    (tmp_path / "lab").mkdir(exist_ok=True)
    (tmp_path / "lab" / "labels.csv").write_text("path,label\n" + rows)
    job = {
        "name": "t",
        "inputs": [{"path": "audio", "labels": labels_csv}],
        "emotions": KINDS,
        "cache": "cache",
        "model": {"path": "m.skops", "train": True},
        "output": {"dir": "out"},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    return tmp_path / "job.yaml"


def test_validate_reads_the_labels_and_suggests_a_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"{k}-{i}.wav" for i, k in enumerate(["anger", "sadness", "neutral", "happiness"] * 2)]
    _clips(tmp_path / "audio", names)
    rows = "".join(f"../audio/{n},{n.split('-')[0]}\n" for n in names)
    job = _train_job(tmp_path, "csv:lab/labels.csv", rows)
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert "anger: angry" in err and "happiness: happy" in err and "sadness: sad" in err
    assert not (tmp_path / "cache").exists()  # nothing was extracted


def test_validate_catches_label_paths_relative_to_the_wrong_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [f"{k}-{i}.wav" for i, k in enumerate(KINDS * 2)]
    _clips(tmp_path / "audio", names)
    rows = "".join(f"audio/{n},{n.split('-')[0]}\n" for n in names)  # relative to the job, not to the CSV's folder
    job = _train_job(tmp_path, "csv:lab/labels.csv", rows)
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert "an emotion for 0 of 8 files" in err and "match no file" in err


def test_validate_and_run_refuse_emotions_the_model_does_not_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clips(tmp_path / "audio", [f"{k}-{i}.wav" for i, k in enumerate(KINDS)])
    job = {"name": "t", "inputs": [{"path": "audio"}], "emotions": ["angry", "calm"], "cache": "cache"}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    for command in ("validate", "run"):
        assert main([command, str(tmp_path / "job.yaml")]) == 2, command
        err = capsys.readouterr().err
        assert "emotions: angry, calm are not the emotions the shipped model labels (angry, sad, neutral, happy)" in err
        assert "leave emotions out" in err
    assert not (tmp_path / "cache").exists()  # nothing was done


def test_annotate_speaks_of_out_and_overwrite_not_of_output_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clips(tmp_path / "a", ["x.wav", "y.wav"])
    _clips(tmp_path / "b", ["z.wav"])
    common = ["--cache", str(tmp_path / "c"), "-j", "1", "-q"]
    assert main(["annotate", str(tmp_path / "a"), "--out", str(tmp_path / "reports"), *common]) == 0
    assert main(["annotate", str(tmp_path / "b"), "--out", str(tmp_path / "reports"), *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batchser annotate: --out: {tmp_path / 'reports'} holds the reports of other inputs"), err
    assert "give --out a folder of its own, or pass --overwrite" in err
    assert "manifest" not in err and "output.dir" not in err
    assert main(["annotate", str(tmp_path / "a"), "--out", str(tmp_path / "a"), *common]) == 2
    err = capsys.readouterr().err
    assert f"--out: {tmp_path / 'a'} is the folder the input {tmp_path / 'a'} reads" in err and "inputs[" not in err
    assert main(["annotate", str(tmp_path / "a"), "--reviewed", str(tmp_path / "no.csv"), *common]) == 2
    assert "--reviewed: " in capsys.readouterr().err


def test_a_manifest_without_a_model_key_is_a_labelling_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _clips(tmp_path / "audio", ["x.wav"])
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"name": "t", "inputs": [{"path": "audio"}]}))
    assert main(["validate", str(tmp_path / "job.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_capitalised_labels_in_a_csv_get_advice_that_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"{k}-{i}.wav" for i, k in enumerate(KINDS * 2)]
    _clips(tmp_path / "audio", names)
    rows = "".join(f"../audio/{n},{n.split('-')[0].capitalize()}\n" for n in names)
    job = _train_job(tmp_path, "csv:lab/labels.csv", rows)
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    advice = re.search(r"write inputs\[0\]\.labels as (\{table: .*\}\})", err)
    assert advice, err
    spec = yaml.safe_load(advice[1])  # what the message says to write, written
    assert spec == {
        "table": "lab/labels.csv",
        "map": {"Angry": "angry", "Happy": "happy", "Neutral": "neutral", "Sad": "sad"},
    }
    data = yaml.safe_load(job.read_text())
    data["inputs"][0]["labels"] = spec
    job.write_text(yaml.safe_dump(data))
    assert main(["validate", str(job)]) == 0, capsys.readouterr().err


def test_labels_that_are_no_emotion_get_a_map_to_fill_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"c-{i}.wav" for i in range(4)]
    _clips(tmp_path / "audio", names)
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"audio/{n},calm\n" for n in names))
    job = {"name": "t", "inputs": [{"path": "audio", "labels": "csv:labels.csv"}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert not err.endswith("map:") and "map: {calm: <one of angry, sad, neutral, happy>}" in err, err
    assert "replaced by the emotion that label stands for" in err


def test_speaker_folders_on_a_flat_folder_are_said_to_be_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clips(tmp_path / "flat", [f"{KINDS[i % 4]}-{i}.wav" for i in range(12)])
    common = ["--cache", str(tmp_path / "c"), "-j", "1"]
    assert main(["annotate", str(tmp_path / "flat"), "--speaker-folders", "--out", str(tmp_path / "a"), *common]) == 0
    printed = capsys.readouterr().out
    assert "warning: speaker folders: all 12 of 12 files lie directly in" in printed
    assert "drop --speaker-folders" in printed
    (found,) = json.loads((tmp_path / "a" / "summary.json").read_text())["speaker_folders"]
    assert found["outside_folders"] == 12 and found["folders"] == 0 and "folder of their own" in found["what_to_do"]
    flat = pd.read_parquet(tmp_path / "a" / "annotations.parquet")
    assert (flat.speaker.isna() | (flat.speaker == "")).all() and (flat.normalized_by == "corpus").all()
    # The labels are those of the folder standardised as one input: nothing made up.
    assert main(["annotate", str(tmp_path / "flat"), "--out", str(tmp_path / "b"), *common, "-q"]) == 0
    plain = pd.read_parquet(tmp_path / "b" / "annotations.parquet")
    assert flat.label.tolist() == plain.label.tolist() and (plain.normalized_by == "corpus").all()
    assert not json.loads((tmp_path / "b" / "summary.json").read_text())["speaker_folders"]
    # One folder under the input holding everything is said too; two are speakers.
    (tmp_path / "one" / "s1").mkdir(parents=True)
    for f in (tmp_path / "flat").iterdir():
        f.rename(tmp_path / "one" / "s1" / f.name)
    assert main(["annotate", str(tmp_path / "one"), "--speaker-folders", "--out", str(tmp_path / "o"), *common]) == 0
    assert "one folder, s1, holds all 12 files of" in capsys.readouterr().out
    (tmp_path / "one" / "s2").mkdir()
    for f in sorted((tmp_path / "one" / "s1").iterdir())[:6]:
        f.rename(tmp_path / "one" / "s2" / f.name)
    args = ["annotate", str(tmp_path / "one"), "--speaker-folders", "--out", str(tmp_path / "t"), *common, "-q"]
    assert main([*args, "--overwrite"]) == 0
    assert not json.loads((tmp_path / "t" / "summary.json").read_text())["speaker_folders"]


def test_subfolders_of_many_recordings_get_a_hint_about_speaker_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Recordings in subfolders of 10+ each (speakers, sources), standardised as one group: said, with the option."""
    kinds = ["angry", "sad", "neutral", "happy"]
    for i in range(24):
        y = speechlike(kinds[i % 4], sr=16000, seconds=1.0, seed=i)
        write_audio(tmp_path / "arch" / f"source{i % 2}" / f"{kinds[i % 4]}-{i:02d}.wav", y, 16000)
    base = ["annotate", str(tmp_path / "arch"), "--cache", str(tmp_path / "c"), "-j", "1"]
    assert main([*base, "--out", str(tmp_path / "o1")]) == 0
    out = capsys.readouterr().out
    assert "hint: 24 of the 24 recordings under" in out and "--speaker-folders" in out
    summary = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert summary["hints"][0]["folders"] == 2
    assert "speaker-folders" in (tmp_path / "o1" / "report.html").read_text()
    assert main([*base, "--out", str(tmp_path / "o2"), "--speaker-folders"]) == 0
    assert "hint:" not in capsys.readouterr().out


def test_training_labels_written_another_way_are_said_before_they_are_left_out(
    tmp_path: Path, labelled_set: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """'Angry' and 'anger' beside 'angry' in a label table: validate and run say they are left out, with the map."""
    from tests.conftest import write_manifest

    _, csv = labelled_set
    rows = csv.read_text().splitlines()
    rows[1] = rows[1].replace(",angry,", ",Angry,")
    rows[2] = rows[2].replace(",angry,", ",anger,")
    csv.write_text("\n".join(rows) + "\n")
    manifest = write_manifest(tmp_path)
    assert main(["validate", str(manifest)]) == 0
    said = caplog.text
    assert "2 files labelled Angry, anger are left out of training" in said
    assert "map: {Angry: angry, anger: angry}" in said
