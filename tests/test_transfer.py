"""Labels that hold on other people's recordings: corpora, label sources, adaptation, leave one corpus out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from batchser.features import FeatureSpec, extract
from batchser.labels import Label, label_source
from batchser.manifest import ManifestError, corpus_name, load_manifest, parse_manifest
from batchser.model import build_pipeline, fit, fit_model, load_model, read_meta, save_model
from batchser.model.adapt import group_rows
from batchser.model.base import ModelMeta
from batchser.model.evaluate import evaluate_corpora
from tests.conftest import PROJECT, SHARED, speechlike, write_audio

CLASSES = ["angry", "sad", "neutral", "happy"]
SIX = ("ravdess", "savee", "nemo", "urdu", "emovo", "ased")  # the corpora of jobs/train-pooled.yaml


# -- label sources -------------------------------------------------------------------------


def _spec(**labels: object):  # type: ignore[no-untyped-def]
    m = parse_manifest(
        yaml.safe_dump(
            {
                "name": "t",
                "inputs": [{"path": "x", "labels": labels}],
                "emotions": CLASSES,
                "model": {"path": "m.skops"},
                "output": {"dir": "o"},
            }
        ),
        base_dir=Path("/"),
    )
    return m.inputs[0].labels


def test_a_pattern_reads_file_and_folder_names_through_a_map(tmp_path: Path) -> None:
    savee = _spec(pattern=r"^(?P<speaker>[A-Z]+)_(?P<emotion>[a-z]+)\d+\.flac$", map={"a": "angry", "sa": "sad"})
    fn = label_source(savee, resolve=Path, input_root=tmp_path, corpus="savee")
    assert fn(tmp_path / "DC_sa03.flac") == Label("sad", "DC", "savee")
    assert fn(tmp_path / "JK_a11.flac").group == "savee/JK"
    assert fn(tmp_path / "KL_d01.flac").emotion == "d"  # unmapped names pass through (and are not trained on)
    assert fn(tmp_path / "notes.flac") == Label(corpus="savee")
    urdu = _spec(pattern=r"^(?P<emotion>[A-Za-z]+)/(?P<speaker>S[MF]\d+)_", map={"Angry": "angry"})
    fn = label_source(urdu, resolve=Path, input_root=tmp_path, corpus="urdu")
    assert fn(tmp_path / "Angry" / "SM1_F10_A010.flac") == Label("angry", "SM1", "urdu")
    assert fn(Path(f"{tmp_path}/u.zip::Angry/SF2_F1_A1.flac")).speaker == "SF2"  # archive members too


def test_bad_patterns_are_refused_before_any_work() -> None:
    for bad, why in [
        ({"pattern": "(?P<who>x)"}, "needs a named group"),
        ({"pattern": "(unclosed"}, "not a regular expression"),
        ({"pattern": "(?P<emotion>x)(?P<mood>y)"}, "mean nothing here"),
        ({"pattern": "(?P<emotion>x)", "table": "t.csv"}, "exactly one of"),
        ({"map": {"a": "angry"}}, "exactly one of"),
    ]:
        with pytest.raises(ManifestError, match=why):
            _spec(**bad)


@pytest.mark.parametrize(
    ("name", "text"), [("l.tsv", "file\tmood\twho\n{rows}"), ("l.csv", "\ufefffile;mood;who\n{rows}")]
)
def test_a_table_with_chosen_columns_delimiter_and_bom(tmp_path: Path, name: str, text: str) -> None:
    sep = "\t" if name.endswith("tsv") else ";"
    rows = "".join(f"{f}{sep}{e}{sep}{w}\n" for f, e, w in [("a.wav", "anger", "EB0"), ("b.wav", "sadness", "KS0")])
    (tmp_path / name).write_text(text.format(rows=rows), encoding="utf-8")
    spec = _spec(table=name, path_column="file", emotion_column="mood", speaker_column="who", map={"anger": "angry"})
    fn = label_source(spec, resolve=lambda p: tmp_path / p, corpus="nemo")
    assert fn(tmp_path / "a.wav") == Label("angry", "EB0", "nemo")
    assert fn(tmp_path / "b.wav").emotion == "sadness"
    spec = _spec(table=name, path_column="file", emotion_column="emotion")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['emotion'\]; it has \['file', 'mood', 'who'\]"):
        label_source(spec, resolve=lambda p: tmp_path / p)


def test_default_corpus_names() -> None:
    assert corpus_name("../shared/corpora/savee") == "savee"
    assert corpus_name("data/calls/*.wav") == "calls"
    assert corpus_name("/mnt/a/b.tar.gz") == "b"


# -- adaptation ----------------------------------------------------------------------------


def test_grouping_falls_back_from_speaker_to_corpus_and_respects_the_input() -> None:
    X = np.random.default_rng(0).normal(size=(40, 3))
    corpora = ["a"] * 30 + ["b"] * 10
    speakers = ["a/s1"] * 12 + ["a/s2"] * 3 + [None] * 15 + ["b/s3"] * 10
    g = group_rows(X, mode="speaker", corpora=corpora, speakers=speakers, min_files=10)
    assert g.how[:12] == ["speaker"] * 12 and g.how[12:30] == ["corpus"] * 18 and g.how[30:] == ["speaker"] * 10
    assert len(g.members["corpus:a"]) == 30  # the fallback is measured on the whole corpus
    g = group_rows(
        X, mode="speaker", corpora=corpora, speakers=speakers, speaker_ok=[True] * 30 + [False] * 10, min_files=10
    )
    assert g.how[30:] == ["corpus"] * 10  # speaker ids of an input that forbids them are ignored
    assert group_rows(X, mode="none", corpora=corpora, min_files=10).how == [""] * 40
    g = group_rows(X, mode="corpus", corpora=corpora, min_files=11)
    assert g.how == ["corpus"] * 30 + [""] * 10  # "b" has too few files: the plain network
    Xn, covered = g.stats(X).transform(X, g.keys)
    np.testing.assert_allclose(Xn[:30].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Xn[:30].std(axis=0), 1, atol=1e-12)
    assert (Xn[30:] == X[30:]).all() and covered.sum() == 30
    g = group_rows(X, mode="cluster", corpora=corpora, min_files=5)
    assert {h for h in g.how[:30]} <= {"cluster", "corpus"} and "cluster" in g.how


def _corpora_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three corpora, each with its own offset and scale (a recording channel), 4 speakers each."""
    rng = np.random.default_rng(seed)
    X, y, c, s = [], [], [], []
    for corpus in ["a", "b", "c"]:
        offset, scale = rng.normal(scale=5, size=6), rng.uniform(0.5, 2, size=6)
        for k in range(48):
            label = CLASSES[k % 4]
            v = rng.normal(size=6)
            v[CLASSES.index(label)] += 2.5
            X.append(v * scale + offset)
            y.append(label)
            c.append(corpus)
            s.append(f"{corpus}/s{(k // 4) % 4}")  # each speaker voices every emotion
    return np.array(X), np.array(y), np.array(c), np.array(s, dtype=object), np.ones(len(y), dtype=bool)


FIT_KW = {"params": {}, "random_state": 0, "calibration": "temperature", "classifier": "logistic", "C": 1.0}


def test_leave_one_corpus_out_never_fits_on_the_held_out_corpus() -> None:
    X, y, c, s, ok = _corpora_data()
    kw = {"modes": ("none", "corpus", "speaker"), "min_files": 8, "fit_kw": FIT_KW, "keep_predictions": True}
    base = evaluate_corpora(X, y, c, s, ok, **kw)
    assert base["corpora"] == ["a", "b", "c"] and base["folds"]["a"]["trained_on"] == ["b", "c"]
    # Corrupt corpus "a" completely: other labels, other features. The networks that label "a"
    # (fitted on b and c) must not move, nor their probabilities for "a" under the labels' change.
    rng = np.random.default_rng(1)
    X2, y2 = X.copy(), y.copy()
    a = c == "a"
    y2[a] = rng.permutation(y2[a])
    again = evaluate_corpora(X2, y2, c, s, ok, **kw)
    assert again["folds"]["a"]["weights"] == base["folds"]["a"]["weights"]
    for mode in kw["modes"]:
        np.testing.assert_array_equal(
            again["modes"][mode]["per_corpus"]["a"]["proba"], base["modes"][mode]["per_corpus"]["a"]["proba"]
        )
    X2[a] = X2[a] * 3 + 7
    moved = evaluate_corpora(X2, y, c, s, ok, **kw)
    assert moved["folds"]["a"]["weights"] == base["folds"]["a"]["weights"]
    assert moved["folds"]["b"]["weights"] != base["folds"]["b"]["weights"]  # "a" trains the others: the test can fail
    # Normalising over the held-out corpus's own files undoes its channel; no normalisation does not.
    corpus_uar = base["modes"]["corpus"]["mean"]["uar"]
    assert corpus_uar > 0.8 and base["modes"]["none"]["mean"]["uar"] < corpus_uar - 0.2
    assert moved["modes"]["corpus"]["per_corpus"]["a"]["uar"] == pytest.approx(
        base["modes"]["corpus"]["per_corpus"]["a"]["uar"]
    )
    scores = base["modes"]["speaker"]["per_corpus"]["b"]
    assert {"accuracy", "uar", "macro_f1", "confusion_matrix", "calibration"} <= set(scores)


# -- models that export to the numpy forward pass ----------------------------------------------------


@pytest.mark.parametrize("calibration", ["temperature", "isotonic", "sigmoid", "none"])
def test_a_logistic_model_round_trips_through_arrays(tmp_path: Path, calibration: str) -> None:
    X, y, c, _s, _ok = _corpora_data()
    model = fit_model(X, y, c, **{**FIT_KW, "calibration": calibration})
    meta = ModelMeta(
        classes=CLASSES,
        feature_spec={"fingerprint": "fp", "names": []},
        training_fingerprint="",
        n_train=len(y),
        params={},
        metrics={},
    )
    save_model(model, meta, tmp_path / "m.skops")
    loaded = load_model(tmp_path / "m.skops", feature_fingerprint="fp", classes=CLASSES)
    order = [list(model.classes_).index(k) for k in CLASSES]
    expect = model.predict_proba(X)[:, order]
    np.testing.assert_allclose(loaded.predict_proba(X), (expect + 1e-6) / (1 + 4e-6), rtol=1e-9, atol=1e-12)


def test_temperature_never_changes_a_label() -> None:
    X, y, c, _s, _ok = _corpora_data()
    plain = fit(build_pipeline({}, random_state=0, classifier="logistic", C=1.0), X, y)
    scaled = fit_model(X, y, c, **FIT_KW)
    assert (plain.predict(X) == scaled.predict(X)).all()
    assert not np.allclose(plain.predict_proba(X), scaled.predict_proba(X))


# -- openSMILE, the reference ----------------------------------------------------------------


def test_the_opensmile_groups_are_opensmiles_functionals(tmp_path: Path) -> None:
    opensmile = pytest.importorskip(
        "opensmile", reason="the opensmile extra is not installed (pip install 'batchser[opensmile]')"
    )
    y = speechlike("happy", sr=16000, seconds=1.5)
    write_audio(tmp_path / "x.wav", y, 16000, subtype="FLOAT")
    v = extract(y, spec=FeatureSpec(("voice_stats", "egemaps"), 16000))
    ref = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02).process_file(str(tmp_path / "x.wav"))
    np.testing.assert_allclose(v[36:], ref.to_numpy()[0].astype(np.float32), rtol=1e-6)
    assert FeatureSpec(("egemaps",), 16000).fingerprint() != FeatureSpec(("voice_stats",), 16000).fingerprint()


# -- the committed multi-corpus job -----------------------------------------------------------


def test_the_pooled_job_evaluates_leave_one_corpus_out_and_makes_the_shipped_model(tmp_path: Path) -> None:
    if not all((SHARED / c).is_dir() for c in SIX):
        pytest.skip(f"needs the shared corpora at {SHARED} (../shared beside the repo; present in CI)")
    job = yaml.safe_load((PROJECT / "jobs" / "train-pooled.yaml").read_text())
    job["root"] = str(PROJECT)
    job["cache"] = str(tmp_path / "cache")
    job["model"]["path"] = str(tmp_path / "m.skops")
    job["output"]["dir"] = str(tmp_path / "reports")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    from batchser.job import run_job

    s = run_job(load_manifest(tmp_path / "job.yaml"), progress=False)
    assert s.n_failed == 0 and s.n_files == 5029
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    loco = metrics["leave_one_corpus_out"]
    assert loco["corpora"] == sorted(SIX)
    # Floors just below the measured figures (speaker 55.7 %, corpus 49.5 %, none 45.0 %).
    assert loco["modes"]["speaker"]["mean"]["uar"] >= 0.55 and loco["modes"]["corpus"]["mean"]["uar"] >= 0.49
    assert loco["modes"]["corpus"]["mean"]["uar"] > loco["modes"]["none"]["mean"]["uar"] + 0.03
    assert loco["modes"]["speaker"]["mean"]["ece"] <= 0.08 and loco["modes"]["corpus"]["mean"]["ece"] <= 0.08
    a = pd.read_parquet(tmp_path / "reports" / "annotations.parquet")
    assert set(a.corpus) == set(SIX)
    assert set(a[a.corpus == "urdu"].normalized_by) == {"corpus"}  # speaker ids withheld there
    shipped = read_meta(PROJECT / "batchser" / "models" / "pooled-4emo.skops")
    assert shipped.training_fingerprint == read_meta(tmp_path / "m.skops").training_fingerprint
    card = (tmp_path / "m.md").read_text()
    assert "Leave one corpus out" in card and "CC BY-NC-SA 4.0" in card and "non-commercial" in card
    # A reliability diagram per held-out corpus, drawn beside the model and shown by the card.
    assert "![reliability](m.reliability.png)" in card and (tmp_path / "m.reliability.png").stat().st_size > 10_000
    for corpus in SIX:
        assert f"| {corpus} | " in card.split("### Confidence on each held-out corpus")[1]
    # Arousal and valence, leave one corpus out. Measured on the 2-core dev VM: arousal 76.3 % without speaker
    # ids (worst corpus 70.7 %, ECE at most 0.073; read off the four classes 75.4 %), 81.7 % with them; valence
    # 62.3 %. Floors just below; ECE at most 0.08 on every corpus is the project's goal.
    arousal, valence = metrics["dimensions"]["arousal"]["modes"], metrics["dimensions"]["valence"]["modes"]
    assert arousal["corpus"]["mean"]["reported"]["balanced_accuracy"] >= 0.75
    assert arousal["corpus"]["mean"]["reported"]["worst_ece"] <= 0.08
    assert arousal["speaker"]["mean"]["reported"]["balanced_accuracy"] >= 0.80
    assert valence["corpus"]["mean"]["reported"]["balanced_accuracy"] >= 0.60
    assert "## Arousal and valence" in card and "**valence, adaptation 'corpus'**" in card


def test_the_domain_check_flags_recordings_unlike_any_training_corpus(tmp_path: Path) -> None:
    from batchser.cli import main

    model = PROJECT / "batchser" / "models" / "pooled-4emo.skops"
    ref = read_meta(model).metrics["domain"]
    assert set(ref["held_out_medians"]) == set(SIX)
    assert ref["limit"] == max(ref["held_out_medians"].values()) > ref["training_median"]
    for i, kind in enumerate(CLASSES * 2):  # synthetic tones and noise: nothing like speech
        write_audio(tmp_path / "synthetic" / f"{kind}-{i}.wav", speechlike(kind, sr=16000, seed=i), 16000)
    args = ["annotate", str(tmp_path / "synthetic"), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c")]
    assert main([*args, "-j", "1"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["domain"]["out_of_domain"] and summary["domain"]["median_distance"] > ref["limit"]
    a = pd.read_parquet(tmp_path / "out" / "annotations.parquet")
    assert (a.domain_distance > 0).all() and a.domain_distance.median() == pytest.approx(
        summary["domain"]["median_distance"], abs=1e-3
    )
    if (SHARED / "savee").is_dir():  # real speech of a corpus it was scored on: in its domain
        out = tmp_path / "savee-out"
        assert main(["annotate", str(SHARED / "savee"), "--out", str(out), "--cache", str(tmp_path / "c"), "-q"]) == 0
        assert not json.loads((out / "summary.json").read_text())["domain"]["out_of_domain"]


# -- defaults that transfer -------------------------------------------------------------------


def test_a_train_manifest_that_says_nothing_gets_the_shipped_recipe() -> None:
    """The README's training recipe names no classifier, calibration or normalisation: it gets the shipped ones."""
    from tests.test_readme import walkthrough

    (_, _, recipe), *_ = walkthrough("train")
    readme = parse_manifest(recipe, base_dir=PROJECT).model
    shipped = load_manifest(PROJECT / "jobs" / "train-pooled.yaml").model
    fields = ("classifier", "C", "calibration", "normalize", "min_speaker_files", "mlp", "random_state")
    assert {f: getattr(readme, f) for f in fields} == {f: getattr(shipped, f) for f in fields}
    params = read_meta(PROJECT / "batchser" / "models" / "pooled-4emo.skops").params
    assert {f: params[f] for f in ("classifier", "C", "calibration", "normalize")} == {
        f: getattr(readme, f) for f in ("classifier", "C", "calibration", "normalize")
    }
    import inspect

    import batchser.api

    assert inspect.signature(batchser.api.train).parameters["classifier"].default == readme.classifier


def test_a_default_recipe_without_speakers_trains_the_plain_network(tmp_path: Path) -> None:
    from batchser.api import train

    for i, kind in enumerate(CLASSES * 3):
        write_audio(tmp_path / "a" / f"{kind}-{i}.wav", speechlike(kind, sr=16000, seed=i), 16000)
    rows = "".join(f"{kind}-{i}.wav,{kind}\n" for i, kind in enumerate(CLASSES * 3))
    (tmp_path / "a" / "labels.csv").write_text("path,label\n" + rows)
    model = train(
        tmp_path / "a", labels="csv:" + str(tmp_path / "a" / "labels.csv"), emotions=CLASSES,
        model_path=tmp_path / "m.skops", cache=tmp_path / "c", n_jobs=1,
    )  # fmt: skip
    assert model.meta.params["normalize"] == "none" and model.speaker_pipeline is None


# -- speaker groups that are emotion groups -----------------------------------------------------


def test_emotion_folders_given_as_speaker_folders_are_caught(tmp_path: Path) -> None:
    from batchser.cli import main

    urdu = SHARED / "urdu"
    if not urdu.is_dir():
        pytest.skip(f"needs the URDU corpus at {urdu} (../shared beside the repo; present in CI)")
    out = tmp_path / "out"
    args = ["annotate", "-q", str(urdu), "--speaker-folders", "--out", str(out), "--cache", str(tmp_path / "c")]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    (found,) = summary["speaker_groups_that_are_emotions"]
    assert found["corpus"] == "urdu" and sorted(found["groups"]) == ["Angry", "Happy", "Neutral", "Sad"]
    a = pd.read_parquet(out / "annotations.parquet")
    assert set(a.normalized_by) == {"corpus"} and not a.speaker_normalized.any()
    # The same files under groups with neutral names, one per emotion: caught by what the network reads in them.
    table = tmp_path / "groups.csv"
    lines = [f"{p},{p.parent.name.lower()},g{'AHNS'.index(p.parent.name[0])}" for p in sorted(urdu.rglob("*.flac"))]
    table.write_text("path,label,speaker\n" + "\n".join(lines) + "\n")
    import batchser

    got = batchser.annotate(urdu, labels=f"csv:{table}", cache=tmp_path / "c", n_jobs=1)
    assert set(got.normalized_by) == {"corpus"}
    # Real speakers are left as they are: RAVDESS actors, one folder each.
    ravdess = SHARED / "ravdess"
    if ravdess.is_dir():
        four = tmp_path / "ravdess-4"  # four speakers, as many as emotions: the case most like emotion groups
        for k in range(1, 5):
            for f in (ravdess / f"Actor_0{k}").iterdir():
                (four / f.parent.name).mkdir(parents=True, exist_ok=True)
                (four / f.parent.name / f.name).symlink_to(f)
        got = batchser.annotate(four, speaker="folder", cache=tmp_path / "c", n_jobs=1)
        assert set(got.normalized_by) == {"speaker"}
