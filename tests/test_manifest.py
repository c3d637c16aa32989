"""Manifests: valid ones load, each kind of mistake names its field and fix, exit code 2."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from batchser.cli import main
from batchser.manifest import Manifest, ManifestError, load_manifest, parse_manifest
from batchser.model import read_meta
from tests.conftest import PROJECT, manifest_dict, write_manifest


@pytest.mark.parametrize("job", sorted((PROJECT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_jobs_are_valid(job: Path) -> None:
    m = load_manifest(job)
    assert m.root_dir == PROJECT  # examples read from the project root
    assert m.cache_dir == PROJECT / "result" / "cache"


def test_relative_paths_resolve_against_root_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobs").mkdir()
    p = tmp_path / "jobs" / "j.yaml"
    p.write_text(yaml.safe_dump({**manifest_dict(tmp_path), "root": ".."}))
    monkeypatch.chdir("/")
    m = load_manifest(p)
    assert m.resolve("audio") == tmp_path / "audio"
    assert m.output_dir == tmp_path / "reports"
    assert m.resolve("/abs/x") == Path("/abs/x")


def _problems(tmp_path: Path, **over: object) -> str:
    with pytest.raises(ManifestError) as ei:
        parse_manifest(yaml.safe_dump(manifest_dict(tmp_path, **over)), base_dir=tmp_path)
    return str(ei.value)


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"featurs": ["mfcc"]}, ["featurs", "did you mean 'features'"]),
        ({"engine": {"backnd": "loky"}}, ["engine.backnd", "did you mean 'backend'"]),
        ({"engine": {"backend": "spark"}}, ["engine.backend", "'loky'"]),
        ({"engine": {"n_jobs": 0}}, ["engine.n_jobs", "-1 for all cores"]),
        ({"features": ["mfcc", "chromma"]}, ["features", "did you mean 'chroma'"]),
        ({"audio": {"sample_rate": 100}}, ["audio.sample_rate", "greater than or equal to 4000"]),
        ({"inputs": []}, ["inputs", "at least 1"]),
        ({"inputs": [{"path": "a", "labels": "json:x"}]}, ["inputs[0].labels", "csv:<path"]),
        ({"emotions": ["Angry", "sad"]}, ["emotions", "lower-case"]),
        ({"emotions": ["sad", "sad"]}, ["emotions", "duplicate"]),
        ({"output": {"dir": "r", "formats": ["xlsx"]}}, ["output.formats[0]", "'csv', 'parquet', 'textgrid'"]),
        ({"model": {"path": "m", "train": "maybe"}}, ["model.train", "boolean"]),
        ({"name": "has space"}, ["name", "pattern"]),
        ({"inputs": [{"path": "a", "labels": "none"}]}, ["no input has labels", "labels: ravdess"]),
        ({"inputs": [{"path": "a", "labels": "ravdess"}], "emotions": ["angry", "bored"]}, ["'bored'", "RAVDESS"]),
        ({"engine": {"backend": "dask"}}, ["engine.scheduler"]),
        ({"chroma_tuning": 0.7, "features": ["chroma"]}, ["chroma_tuning", "less than 0.5"]),
        ({"chroma_tuning": 0.0, "features": ["mfcc", "mel"]}, ["chroma_tuning", "remove chroma_tuning or add chroma"]),
    ],
)
def test_each_mistake_names_field_and_fix(tmp_path: Path, over: dict, expected: list[str]) -> None:
    msg = _problems(tmp_path, **over)
    for part in expected:
        assert part in msg, msg


def test_missing_required_field(tmp_path: Path) -> None:
    d = manifest_dict(tmp_path)
    del d["inputs"]
    with pytest.raises(ManifestError, match=r"inputs: required field is missing"):
        parse_manifest(yaml.safe_dump(d), base_dir=tmp_path)


def test_a_manifest_without_a_model_labels_with_the_shipped_model(tmp_path: Path) -> None:
    from batchser.locations import default_model_path
    from batchser.model import read_meta

    d = {"name": "t", "inputs": [{"path": "audio"}]}
    m = parse_manifest(yaml.safe_dump(d), base_dir=tmp_path)
    shipped = read_meta(default_model_path())
    assert not m.model.train and m.model_path == default_model_path()
    assert m.emotions == shipped.classes and m.features == shipped.feature_spec["names"]
    # What it lists must be the model's, and is told so in those terms (not "required to train").
    with pytest.raises(ManifestError) as err:
        parse_manifest(yaml.safe_dump({**d, "emotions": ["angry", "calm"], "features": ["mfcc"]}), base_dir=tmp_path)
    msg = str(err.value)
    assert (
        "emotions: angry, calm are not the emotions the shipped model labels" in msg
        and "train" not in msg.split("leave emotions out")[0]
    )
    assert "features: mfcc are not the features the shipped model was trained on" in msg


def test_several_problems_are_all_listed(tmp_path: Path) -> None:
    msg = _problems(tmp_path, featurs=[], engine={"backend": "x"})
    assert "featurs" in msg and "engine.backend" in msg


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="YAML mapping"):
        parse_manifest("- a\n- b\n", base_dir=tmp_path)
    with pytest.raises(ManifestError, match="not valid YAML"):
        parse_manifest("name: [unclosed\n", base_dir=tmp_path)


def test_python_tags_are_not_executed(tmp_path: Path) -> None:
    text = "name: !!python/object/apply:os.system ['echo pwned > pwned']\n"
    with pytest.raises(ManifestError):
        parse_manifest(text, base_dir=tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_alias_bomb_is_rejected_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    t0 = time.perf_counter()
    with pytest.raises(ManifestError, match="aliases"):
        parse_manifest("\n".join(lines) + "\n", base_dir=tmp_path)
    assert time.perf_counter() - t0 < 2.0  # a bound on a hang, not a benchmark


def test_cli_exit_2_names_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_manifest(tmp_path, engine={"backend": "loky", "n_job": 2})
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err
    assert "engine.n_job" in err and "did you mean 'n_jobs'" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "reports").exists()  # no work started


def test_cli_exit_2_for_missing_input_and_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_manifest(tmp_path, inputs=[{"path": "nowhere"}], model={"path": "models/none.skops", "train": False})
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err
    assert "inputs[0].path" in err and "nowhere" in err and "does not exist" in err
    assert "model.path" in err


def test_cli_exit_2_for_unreadable_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the manifest" in capsys.readouterr().err


def test_a_labelling_job_takes_emotions_and_features_from_its_model(tmp_path: Path) -> None:
    shipped = read_meta(PROJECT / "batchser" / "models" / "pooled-4emo.skops")
    base = {"name": "x", "inputs": [{"path": "a"}], "model": {}}
    m = Manifest.from_dict(base, base_dir=tmp_path)
    assert m.emotions == shipped.classes and m.features == shipped.feature_spec["names"]
    other = PROJECT / "result" / "models" / "ravdess-4emo.skops"
    m = Manifest.from_dict({**base, "model": {"path": str(other)}}, base_dir=tmp_path)
    assert m.features == read_meta(other).feature_spec["names"] != shipped.feature_spec["names"]
    # Listed ones must be the model's (any order); a model that cannot be read says so.
    assert Manifest.from_dict({**base, "emotions": shipped.classes[::-1]}, base_dir=tmp_path).emotions[0] == "happy"
    with pytest.raises(ManifestError, match=r"emotions: sad, happy are not the emotions the shipped model labels"):
        Manifest.from_dict({**base, "emotions": ["sad", "happy"]}, base_dir=tmp_path)
    with pytest.raises(
        ManifestError, match=r"emotions, features: not given, and the model cannot be read .* does not exist"
    ):
        Manifest.from_dict({**base, "model": {"path": "missing.skops"}}, base_dir=tmp_path)
    with pytest.raises(ManifestError, match=r"emotions: required to train \(the emotions to learn\)"):
        Manifest.from_dict(
            {**base, "inputs": [{"path": "a", "labels": "ravdess"}], "model": {"path": "m.skops", "train": True}},
            base_dir=tmp_path,
        )
