"""The README's and docs' walkthroughs, run as written: a newcomer's first commands must work.

Each fenced block after ``<!-- walkthrough: NAME -->`` is executed in a fresh folder
holding what the text assumes the reader has (``my-recordings/`` of 48 clips by four
speakers and ``my-labels.csv``); ``file=X`` blocks are written to X first.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import PROJECT, speechlike
from tests.test_capture import Device, room, speech  # noqa: F401 - speech is a fixture used below

KINDS = ["angry", "happy", "neutral", "sad"]
BLOCK = re.compile(
    r"<!-- walkthrough: (?P<name>[\w-]+)(?: file=(?P<file>[\w.-]+))? -->\n```(?P<lang>\w+)\n(?P<code>.*?)```", re.S
)


DOCUMENTS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]


def walkthrough(name: str) -> list[tuple[str, str | None, str]]:
    """(language, file to write or None, code) of each block of walkthrough ``name``: the README's, then the docs'."""
    blocks = [
        (m["lang"], m["file"], m["code"])
        for doc in DOCUMENTS
        for m in BLOCK.finditer(doc.read_text(encoding="utf-8"))
        if m["name"] == name
    ]
    assert blocks, f"neither the README nor docs/ has a walkthrough {name!r}"
    return blocks


def test_every_walkthrough_is_run_by_a_test() -> None:
    names = {m["name"] for doc in DOCUMENTS for m in BLOCK.finditer(doc.read_text(encoding="utf-8"))}
    tested = set(re.findall(r'play\("([\w-]+)"', Path(__file__).read_text()))
    assert names == tested, f"walkthroughs without a test: {names - tested}; tests of none: {tested - names}"


@pytest.fixture
def reader(tmp_path: Path) -> Path:
    """A reader's folder: recordings by four speakers in four moods, and a labels CSV for them."""
    rec = tmp_path / "my-recordings"
    rows = []
    for s in range(4):
        (rec / f"speaker-{s}").mkdir(parents=True)
        for k, kind in enumerate(KINDS):
            for i in range(3):
                path = rec / f"speaker-{s}" / f"{kind}-{i}.wav"
                sf.write(
                    path, speechlike(kind, sr=16000, seconds=1.5, seed=100 * s + 10 * k + i), 16000, subtype="PCM_16"
                )
                rows.append({"path": path.relative_to(tmp_path).as_posix(), "label": kind, "speaker": f"s{s}"})
    with open(tmp_path / "my-labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "speaker"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "home").mkdir()
    return tmp_path


def play(name: str, where: Path, env: dict[str, str] | None = None) -> str:
    """Run walkthrough ``name`` in ``where`` as a reader would, with the ``batchser`` command on PATH; its stderr."""
    env = {
        **(env or os.environ),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_CACHE_HOME": str(where / "user-cache"),  # the per-user cache `annotate` uses, kept in here
    }
    env.setdefault("HOME", str(where / "home"))
    err = ""
    for lang, file, code in walkthrough(name):
        if file:
            (where / file).write_text(code)
            continue
        cmd = {"bash": ["bash", "-e", "-c", code], "python": [sys.executable, "-c", code]}[lang]
        res = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{name}: {code}\n{res.stdout}\n{res.stderr}"
        err += res.stderr
    return err


def test_label_your_own_folder(reader: Path) -> None:
    play("label", reader)
    table = pd.read_csv(reader / "my-reports" / "annotations.csv")
    assert len(table) == 48 and (table["status"] == "ok").all() and set(table["label"]) <= set(KINDS)
    assert pd.read_json(reader / "my-reports" / "summary.json", typ="series")["from_cache"] == 48  # the second run


def test_check_a_sample_and_learn(reader: Path) -> None:
    play("label", reader)
    play("review", reader)
    sample = pd.read_csv(reader / "my-sample.csv")
    assert len(sample) == sum(
        min(20, n) for n in pd.read_csv(reader / "my-reports" / "annotations.csv").label.value_counts()
    )
    sample["label"] = sample["path"].str.split("/").str[-1].str.split("-").str[0]  # a person's answers: the truth
    sample.to_csv(reader / "my-sample.csv", index=False)
    play("learn", reader)
    table = pd.read_csv(reader / "my-reports" / "annotations.csv")
    assert table["reviewed"].sum() == len(sample)
    review = json.loads((reader / "my-reports" / "summary.json").read_text())["review"]
    assert review["learned_from"] == len(sample) and review["random_sample"] is True


def test_train_on_your_own_labelled_data(reader: Path) -> None:
    err = play("train", reader)
    assert re.search(r"training: 100%.* (\d+)/\1 ", err), err  # progress over the networks it fits
    assert (reader / "my-model.skops").is_file()
    from batchser.model import read_meta
    from batchser.recipe import SHIPPED

    assert read_meta(reader / "my-model.skops").feature_spec["names"] == list(SHIPPED.features)  # the shipped recipe
    metrics = json.loads((reader / "my-model-reports" / "metrics.json").read_text())
    assert metrics["actor_wise"]["n"] == 48 and 0 <= metrics["actor_wise"]["uar"] <= 1  # speakers held out
    again = pd.read_csv(reader / "my-labels-again" / "annotations.csv")
    assert len(again) == 48 and again["model"].str.startswith("my-model@").all()


def test_label_live_from_a_microphone(reader: Path, speech: np.ndarray) -> None:  # noqa: F811
    (reader / "mic").mkdir()
    device = Device(reader / "mic", np.concatenate([room(1.0, seed=1), speech, room(3.0, seed=2)]))
    play("live", reader, env={**os.environ, "HOME": str(device.home)})
    (report,) = (reader / "result" / "reports" / "my-job").glob("annotations.csv")
    rows = pd.read_csv(report)
    assert len(rows) == 49 and rows["path"].str.contains("clip-").sum() == 1


def test_run_on_a_cluster(reader: Path) -> None:
    pytest.importorskip("distributed", reason="needs dask.distributed: pip install -e '.[dask]'")
    play("cluster", reader)
    assert len(pd.read_csv(reader / "my-cluster-reports" / "annotations.csv")) == 48


def test_train_from_python(reader: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import batchser

    monkeypatch.chdir(reader)  # paths as a notebook in that folder would give them
    model = batchser.train(
        "my-recordings",
        labels="csv:my-labels.csv",
        emotions=KINDS,
        model_path="py-model.skops",
        cache=reader / "cache",
        n_jobs=1,
    )
    assert model.meta.classes == KINDS and model.id.startswith("py-model@") and (reader / "py-model.md").is_file()
    assert model.meta.metrics["actor_wise"]["n"] == 48
    assert model.meta.feature_spec["names"] == list(batchser.api.shipped_features())
    table = batchser.annotate("my-recordings", model="py-model.skops", cache=reader / "cache", n_jobs=1)
    assert len(table) == 48 and set(table["label"]) <= set(KINDS)


def test_run_job_gives_back_the_tables_it_wrote(reader: Path) -> None:
    import batchser

    job = batchser.Manifest.from_dict(
        {"name": "t", "inputs": [{"path": "my-recordings"}], "model": {}, "cache": "cache", "output": {"dir": "out"}},
        base_dir=reader,
    )
    summary = batchser.run_job(job, progress=False)
    table = summary.table()
    assert len(table) == 48 and table.index.str.startswith("my-recordings/").all()
    assert table.equals(pd.read_parquet(reader / "out" / "annotations.parquet").set_index("path"))
    with pytest.raises(FileNotFoundError, match="wrote no segments report"):
        summary.table("segments")  # no file was long


def test_a_scikit_learn_estimator_over_files(reader: Path) -> None:
    from sklearn.base import clone
    from sklearn.model_selection import GroupKFold, cross_val_score

    import batchser

    table = pd.read_csv(reader / "my-labels.csv")
    paths = [str(reader / p) for p in table["path"]]
    clf = batchser.EmotionClassifier(cache=reader / "cache", n_jobs=1)
    assert clone(clf).get_params() == clf.get_params()  # a well-behaved estimator
    scores = cross_val_score(clf, paths, table["label"], groups=table["speaker"], cv=GroupKFold(4))
    assert len(scores) == 4 and all(0 <= s <= 1 for s in scores)
    clf.fit(paths, table["label"])
    assert list(clf.classes_) == KINDS and clf.predict_proba(paths[:5]).shape == (5, 4)
    rows = clf.transform(paths[:5])  # feature rows work as well as paths
    np.testing.assert_array_equal(clf.predict(rows), clf.predict(paths[:5]))
    with pytest.raises(ValueError, match=r"cannot be used; the first: .*empty\.wav: cannot decode"):
        (reader / "empty.wav").write_bytes(b"")
        clf.predict([str(reader / "empty.wav")])
