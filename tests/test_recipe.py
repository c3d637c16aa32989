"""One training recipe, whatever the door: the shipped model's features and parameters by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchser.api import train_manifest
from batchser.cli import main
from batchser.locations import default_model_path
from batchser.manifest import Manifest, load_manifest, parse_manifest
from batchser.model import read_meta
from batchser.recipe import SHIPPED
from tests.conftest import PROJECT

FIELDS = ("classifier", "C", "calibration", "normalize", "min_speaker_files", "random_state")
KINDS = ["angry", "sad", "neutral", "happy"]


def _shipped() -> dict[str, Any]:
    """What the shipped model was trained with, read from the model file itself."""
    meta = read_meta(default_model_path())
    return {
        "features": list(meta.feature_spec["names"]),
        "sample_rate": meta.feature_spec["sample_rate"],
        **{f: meta.params[f] for f in FIELDS},
    }


def _recipe_of(m: Manifest) -> dict[str, Any]:
    return {
        "features": list(m.features),
        "sample_rate": m.audio.sample_rate,
        **{f: getattr(m.model, f) for f in FIELDS},
    }


def test_the_recipe_is_the_shipped_models_and_its_job_and_card_say_so() -> None:
    shipped = _shipped()
    assert {"features": list(SHIPPED.features), "sample_rate": SHIPPED.sample_rate} | {
        f: getattr(SHIPPED, f) for f in FIELDS
    } == shipped
    assert _recipe_of(load_manifest(PROJECT / "jobs" / "train-pooled.yaml")) == shipped
    card = (PROJECT / "batchser" / "models" / "pooled-4emo.md").read_text()
    assert f"| features | {', '.join(shipped['features'])} (" in card
    assert f"LogisticRegression(C={shipped['C']})" in card and f"method={shipped['calibration']}" in card
    assert f"speakers with {shipped['min_speaker_files']}+ recordings" in card


def test_every_door_trains_with_the_shipped_recipe(tmp_path: Path) -> None:
    """A train manifest that says nothing, the README's example, `batchser init`'s template, batchser.train()."""
    shipped = _shipped()
    bare = {"name": "t", "inputs": [{"path": "a", "labels": "csv:l.csv"}], "emotions": KINDS}
    doors = {"a train manifest that says nothing": {**bare, "model": {"path": "m.skops", "train": True}}}

    from tests.test_readme import walkthrough

    (_, _, readme), *_ = walkthrough("train")
    doors["the README's train example"] = yaml.safe_load(readme)

    assert main(["init", str(tmp_path / "job.yaml"), "--inputs", "a"]) == 0
    template = yaml.safe_load((tmp_path / "job.yaml").read_text())
    template["inputs"][0]["labels"] = "csv:l.csv"
    template["emotions"] = KINDS  # what the template's comments say a train job adds
    template["model"] |= {"train": True, "path": "m.skops"}
    doors["batchser init's template, made a train job"] = template

    for door, job in doors.items():
        assert _recipe_of(parse_manifest(yaml.safe_dump(job), base_dir=tmp_path)) == shipped, door
    api = train_manifest(["a"], labels="csv:l.csv", emotions=KINDS, model_path="m.skops", out_dir=tmp_path / "o")
    assert _recipe_of(api) == shipped, "batchser.train()"

    import batchser

    clf = batchser.EmotionClassifier()
    assert clf._spec().names == tuple(shipped["features"]) and clf.sample_rate == shipped["sample_rate"]
    assert {f: getattr(clf, f) for f in ("classifier", "C", "calibration", "random_state")} == {
        f: shipped[f] for f in ("classifier", "C", "calibration", "random_state")
    }


def test_a_train_job_reuses_the_features_labelling_cached_and_its_model_says_its_domain_is_unknown(
    tmp_path: Path, labelled_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    audio, _ = labelled_set
    cache = ["--cache", str(tmp_path / "cache"), "-j", "1", "-q"]
    assert main(["annotate", str(audio), "--out", str(tmp_path / "labelled"), *cache]) == 0
    # Then a model of one's own, from a manifest that names no features or classifier.
    job = {
        "name": "mine",
        "inputs": [{"path": "audio", "labels": "csv:labels.csv"}],
        "emotions": KINDS,
        "cache": "cache",
        "engine": {"backend": "sequential", "n_jobs": 1},
        "model": {"path": "mine.skops", "train": True},
        "output": {"dir": "trained"},
    }
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", "-q", str(tmp_path / "mine.yaml")]) == 0
    summary = json.loads((tmp_path / "trained" / "summary.json").read_text())
    assert summary["extracted"] == 0 and summary["from_cache"] == 24  # nothing analysed twice
    meta = read_meta(tmp_path / "mine.skops")
    assert meta.feature_spec["names"] == list(SHIPPED.features) and meta.params["classifier"] == SHIPPED.classifier

    # One corpus, none held out: how far is too far for this model is not known, and the job says so.
    capsys.readouterr()
    out = tmp_path / "again"
    assert main(["annotate", str(audio), "--model", str(tmp_path / "mine.skops"), "--out", str(out), *cache[:-1]]) == 0
    domain = json.loads((out / "summary.json").read_text())["domain"]
    assert domain["out_of_domain"] is None and "trained on one" in domain["out_of_domain_why"]
    assert domain["held_out_limit"] is None and domain["median_distance"] > 0
    printed = capsys.readouterr().out
    assert "is unknown" in printed and "two or more corpora" in printed and "warning: these recordings" not in printed
