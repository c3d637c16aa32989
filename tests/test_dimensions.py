"""Arousal and valence: the circumplex table, the networks in the model file, predictions, training, the card."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from batchser.estimator import extract_features
from batchser.features import FeatureSpec
from batchser.model import ModelError, ModelMeta, fit_model, load_model, read_meta, save_model, weights_digest
from batchser.model.adapt import group_rows
from batchser.model.base import Dimension
from batchser.model.circumplex import CIRCUMPLEX, canonical, circumplex_table_md, placements, read_off, sides, temper
from batchser.model.dimensions import (
    balanced_accuracy,
    binary_ece,
    fit_dimension,
    fit_dimension_pair,
    fit_temperature,
    high_proba,
)
from tests.conftest import PROJECT, speechlike, write_audio

SHIPPED = PROJECT / "batchser" / "models" / "pooled-4emo.skops"
OLD = PROJECT / "result" / "models" / "ravdess-4emo.skops"  # committed before models had dimensions
KINDS = ["angry", "sad", "neutral", "happy"]
SPEC = {"names": ["mfcc"], "sample_rate": 16000, "fingerprint": "fp1", "dim": 4}


# -- the table ----------------------------------------------------------------------------------


def test_the_circumplex_sides_are_the_usual_placement() -> None:
    emotions = ["angry", "happy", "fearful", "surprised", "sad", "neutral", "calm", "bored", "disgust"]
    assert sides("arousal", emotions).tolist() == [1, 1, 1, 1, 0, 0, 0, 0, -1]  # disgust: no arousal side
    assert sides("valence", emotions).tolist() == [0, 1, 0, -1, 0, -1, 1, -1, 0]  # neutral, surprise: none
    # Other names corpora use, any case; an emotion the table does not know has no side and no placement.
    assert sides("arousal", ["Anger", "JOY", "sadness", "boredom", "other"]).tolist() == [1, 1, 0, 0, -1]
    assert canonical("Happiness") == "happy" and canonical("contempt") is None
    assert np.isnan(placements("valence", ["contempt"])[0])


def test_placements_order_the_emotions_and_agree_with_the_sides() -> None:
    for dim in ("arousal", "valence"):
        for emotion, place in CIRCUMPLEX.items():
            side, q = place.side(dim), place.placement(dim)
            assert 0 <= q <= 1
            if side is not None:  # a placed emotion sits on its own side of the middle
                assert (q > 0.5) == (side == 1), (dim, emotion)
    a = dict(zip(CIRCUMPLEX, placements("arousal", list(CIRCUMPLEX)), strict=True))
    assert a["angry"] > a["happy"] > a["disgust"] > a["neutral"] > a["calm"]
    v = dict(zip(CIRCUMPLEX, placements("valence", list(CIRCUMPLEX)), strict=True))
    assert v["happy"] > v["calm"] > v["neutral"] > v["fearful"] >= v["angry"]
    table = circumplex_table_md()
    assert "| disgust | none (0.50) | negative (0.10) |" in table and "| calm | low (0.05) | positive (0.85) |" in table


def test_read_off_is_the_share_of_the_sided_classes() -> None:
    classes = ["angry", "sad", "neutral", "happy"]
    p = np.array([[0.5, 0.1, 0.1, 0.3], [0.1, 0.4, 0.4, 0.1]])
    np.testing.assert_allclose(read_off(p, classes, "arousal"), [0.8, 0.2])  # p_angry + p_happy
    np.testing.assert_allclose(read_off(p, classes, "valence"), [0.3 / 0.9, 0.1 / 0.6])  # neutral has no side
    assert read_off(p[:, :2], ["angry", "fearful"], "arousal") is None  # one side only: nothing to read


def test_scores_and_temperature_by_hand() -> None:
    side = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.9, 0.9, 0.25])
    assert balanced_accuracy(side, p) == pytest.approx((1.0 + 0.5) / 2)
    # Confidence 0.9 (3 files, 2 right) and 0.75 (1 file, right): 3/4 * |2/3 - 0.9| + 1/4 * |1 - 0.75|.
    assert binary_ece(side, p) == pytest.approx(0.75 * (0.9 - 2 / 3) + 0.25 * 0.25)
    # Over-confident probabilities get a temperature below 1, which never changes a side.
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 2000)
    sure = np.where(truth == 1, 0.97, 0.03)
    noisy = np.where(rng.random(2000) < 0.3, 1 - sure, sure)
    beta = fit_temperature(noisy, truth)
    assert beta < 0.5 and ((temper(noisy, beta) >= 0.5) == (noisy >= 0.5)).all()


# -- networks -----------------------------------------------------------------------------------


def _rows(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of 4 features; the first follows the arousal placement, the second the valence one."""
    rng = np.random.default_rng(seed)
    y = np.array(["angry", "sad", "neutral", "happy", "fearful", "calm"] * (n // 6))
    X = rng.normal(size=(n, 4))
    X[:, 0] += 4 * placements("arousal", y)
    X[:, 1] += 4 * placements("valence", y)
    return X, y, np.array([f"s{i % 6}" for i in range(n)])


def test_a_dimension_network_learns_the_placement_from_every_emotion() -> None:
    X, y, _ = _rows()
    net = fit_dimension(X, y, "arousal")
    assert sorted(net.classes_) == ["high", "low"]
    p = high_proba(net, X, "arousal")
    means = {e: p[y == e].mean() for e in set(y.tolist())}
    assert means["angry"] > means["fearful"] > means["happy"] > 0.5 > means["neutral"] > means["calm"]
    assert balanced_accuracy(sides("arousal", y), p) > 0.85
    with pytest.raises(ValueError, match="both sides"):
        fit_dimension(X[y == "angry"], y[y == "angry"], "arousal")


def _model_with_dimensions(tmp_path: Path, name: str = "m.skops") -> tuple[object, tuple[Dimension, ...]]:
    X, y, groups = _rows()
    four = np.isin(y, KINDS)
    plain = fit_model(X[four], y[four], groups[four], params={}, random_state=0, classifier="logistic")
    norm = fit_model(X[four] * 0.5, y[four], groups[four], params={}, random_state=0, classifier="logistic")
    g = group_rows(X, mode="speaker", corpora=["c"] * len(X), speakers=groups, min_files=10)
    dims = tuple(
        Dimension(d, *fit_dimension_pair(X, y, d, grouping=g), {"corpus": 1.3, "speaker": 0.8})
        for d in ("arousal", "valence")
    )
    meta = ModelMeta(classes=KINDS, feature_spec=SPEC, training_fingerprint="t", n_train=int(four.sum()), params={},
                     metrics={})  # fmt: skip
    return save_model(plain, meta, tmp_path / name, speaker_pipeline=norm, dimensions=dims), dims


def test_dimension_networks_round_trip_through_the_model_file(tmp_path: Path) -> None:
    saved, dims = _model_with_dimensions(tmp_path)
    loaded = load_model(tmp_path / "m.skops", feature_fingerprint="fp1", classes=KINDS)
    assert [d.name for d in loaded.dimensions] == ["arousal", "valence"]
    assert all(d.norm is not None and d.temperature == {"corpus": 1.3, "speaker": 0.8} for d in loaded.dimensions)
    # The id covers the dimensions and is recomputed from what was loaded.
    assert (
        loaded.loaded_sha256
        == saved.meta.weights_sha256
        != weights_digest(  # type: ignore[attr-defined]
            {"global": saved.pipeline, "speaker": saved.speaker_pipeline}  # type: ignore[attr-defined]
        )
    )
    X, _, groups = _rows(seed=1)
    for mine, theirs in zip(loaded.dimensions, dims, strict=True):  # numpy arrays predict as scikit-learn
        for a, b in ((mine.plain, theirs.plain), (mine.norm, theirs.norm)):
            np.testing.assert_allclose(high_proba(a, X, mine.name), high_proba(b, X, mine.name), rtol=1e-12)
    g = group_rows(X, mode="speaker", corpora=["c"] * len(X), speakers=groups, min_files=10)
    keys, stats = g.keys, g.stats(X)
    np.testing.assert_allclose(
        loaded.predict_dimensions(X, keys, stats)["arousal"],
        saved.predict_dimensions(X, keys, stats)["arousal"],  # type: ignore[attr-defined]
        rtol=1e-12,
    )


def test_an_edited_temperature_is_refused(tmp_path: Path) -> None:
    _model_with_dimensions(tmp_path)
    path = tmp_path / "m.skops"
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    with np.load(io.BytesIO(entries["batchser/arrays.npz"])) as npz:
        flat = {k: npz[k] for k in npz.files}
    flat["temperature__arousal__corpus"] = np.array(9.0)
    buf = io.BytesIO()
    np.savez(buf, **flat)
    entries["batchser/arrays.npz"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:  # a consistent zip around the edited arrays
        for n, data in entries.items():
            zf.writestr(n, data)
    with pytest.raises(ModelError, match=r"arrays .* changed since they were saved"):
        load_model(path, feature_fingerprint="fp1", classes=KINDS)


def test_the_temperature_follows_each_row_s_adaptation_rule(tmp_path: Path) -> None:
    import dataclasses

    model, _ = _model_with_dimensions(tmp_path)
    untempered = dataclasses.replace(
        model,
        dimensions=tuple(dataclasses.replace(d, temperature={}) for d in model.dimensions),  # type: ignore[attr-defined]
    )
    X, _, groups = _rows(seed=2)
    g = group_rows(X, mode="speaker", corpora=["c"] * len(X), speakers=groups, min_files=10)
    stats = g.stats(X)
    assert {h for h in g.how} == {"speaker"}
    raw = untempered.predict_dimensions(X, g.keys, stats)["valence"]
    np.testing.assert_allclose(model.predict_dimensions(X, g.keys, stats)["valence"], temper(raw, 0.8), rtol=1e-9)  # type: ignore[attr-defined]
    # Rows no group covers take the plain networks and the "none" rule, which has no temperature here: factor 1.
    none = [None] * len(X)
    np.testing.assert_allclose(
        model.predict_dimensions(X, none, None)["valence"],  # type: ignore[attr-defined]
        untempered.predict_dimensions(X, none, None)["valence"],
    )


def test_an_old_model_without_dimensions_loads_and_labels_as_before(tmp_path: Path) -> None:
    meta = read_meta(OLD)
    model = load_model(OLD, feature_fingerprint=meta.feature_fingerprint, classes=meta.classes)
    assert model.dimensions == () and model.loaded_sha256 == meta.weights_sha256  # its id unchanged
    paths = [
        write_audio(tmp_path / f"{k}-{i}.wav", speechlike(k, sr=16000, seed=i), 16000) for i, k in enumerate(KINDS * 3)
    ]
    X = extract_features(paths, spec=FeatureSpec.from_dict(meta.feature_spec), cache=tmp_path / "c", n_jobs=1)
    proba, _ = model.predict_proba_by_speaker(X, [None] * len(X), None)
    assert np.allclose(proba.sum(axis=1), 1)
    assert model.predict_dimensions(X, [None] * len(X), None) == {}
    # A model saved without dimensions today keeps the four-class digest as its id, as older ones do.
    Xr, y, groups = _rows()
    four = np.isin(y, KINDS)
    plain = fit_model(Xr[four], y[four], groups[four], params={}, random_state=0, classifier="logistic")
    m2 = ModelMeta(classes=KINDS, feature_spec=SPEC, training_fingerprint="t", n_train=1, params={}, metrics={})
    assert save_model(plain, m2, tmp_path / "plain.skops").meta.weights_sha256 == weights_digest(plain)


# -- the shipped model on real audio ---------------------------------------------------------------


def _generated(tmp_path: Path, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    meta = read_meta(SHIPPED)
    kinds = np.array([KINDS[i % 4] for i in range(n)])
    paths = [
        write_audio(tmp_path / "a" / f"{k}-{i}.wav", speechlike(str(k), sr=16000, seconds=1.5, seed=i), 16000)
        for i, k in enumerate(kinds)
    ]
    return extract_features(paths, spec=FeatureSpec.from_dict(meta.feature_spec), cache=tmp_path / "c", n_jobs=1), kinds


def test_loud_broadband_bursts_sound_more_activated_than_a_quiet_hum(tmp_path: Path) -> None:
    meta = read_meta(SHIPPED)
    model = load_model(SHIPPED, feature_fingerprint=meta.feature_fingerprint, classes=meta.classes)
    assert [d.name for d in model.dimensions] == ["arousal", "valence"]
    X, kinds = _generated(tmp_path)
    g = group_rows(X, mode="corpus", corpora=["job"] * len(X), min_files=10)  # as a job standardises its files
    stats = g.stats(X)
    out = model.predict_dimensions(X, g.keys, stats)
    assert set(out) == {"arousal", "valence"} and all(v.shape == (len(X),) for v in out.values())
    assert all(((v > 0) & (v < 1)).all() for v in out.values())
    bursts, hum = out["arousal"][kinds == "angry"], out["arousal"][kinds == "sad"]
    assert bursts.min() > 0.5 > hum.max()
    proba, _ = model.predict_proba_by_speaker(X, g.keys, stats)  # the caller's probabilities: the same answer
    np.testing.assert_allclose(model.predict_dimensions(X, g.keys, stats, proba=proba)["arousal"], out["arousal"])


def test_the_shipped_card_and_metrics_have_the_dimension_tables() -> None:
    meta = read_meta(SHIPPED)
    dims = meta.metrics["dimensions"]
    assert dims["corpora"] == sorted(["ravdess", "savee", "nemo", "urdu", "emovo", "ased"])
    corpus = dims["arousal"]["modes"]["corpus"]
    assert set(corpus["per_corpus"]) == set(dims["corpora"])
    # Measured: 76.3 % mean, 70.7 % worst, ECE at most 0.073 (read-off 75.4 %); floors just below.
    assert corpus["mean"]["reported"]["balanced_accuracy"] >= 0.75 and corpus["mean"]["reported"]["worst_ece"] <= 0.08
    assert corpus["mean"]["reported"]["balanced_accuracy"] > corpus["mean"]["read_off"]["balanced_accuracy"]
    assert dims["arousal"]["modes"]["speaker"]["mean"]["reported"]["balanced_accuracy"] >= 0.80
    card = SHIPPED.with_suffix(".md").read_text()
    assert "## Arousal and valence" in card and "**arousal, adaptation 'corpus'**" in card
    assert "| read off the four classes (baseline) |" in card and circumplex_table_md() in card


# -- a train job --------------------------------------------------------------------------------


def _two_corpora(tmp_path: Path) -> list[dict[str, object]]:
    """Two generated 'corpora' of 30 files each, fearful and calm beside the four emotions; their inputs."""
    inputs = []
    for ci, corpus in enumerate(("one", "two")):
        rows = ["path,label,speaker"]
        for k in range(30):
            kind = KINDS[k % 4]
            label = kind if k % 3 else {"angry": "fearful", "sad": "calm"}.get(kind, kind)
            write_audio(tmp_path / corpus / f"{label}-{k}.wav", speechlike(kind, sr=16000, seed=1000 * ci + k), 16000)
            rows.append(f"{corpus}/{label}-{k}.wav,{label},{corpus}{k % 2}")
        (tmp_path / f"{corpus}.csv").write_text("\n".join(rows) + "\n")
        inputs.append({"path": corpus, "corpus": corpus, "labels": f"csv:{corpus}.csv"})
    return inputs


@pytest.mark.parametrize("dimensions", [True, False])
def test_a_train_job_fits_scores_and_describes_the_dimensions(tmp_path: Path, dimensions: bool) -> None:
    from batchser.job import run_job
    from batchser.manifest import load_manifest
    from tests.conftest import manifest_dict

    m = manifest_dict(tmp_path, inputs=_two_corpora(tmp_path), model={"dimensions": dimensions, "min_speaker_files": 5})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(m))
    run_job(load_manifest(tmp_path / "job.yaml"), progress=False)
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    meta = read_meta(tmp_path / "models" / "m.skops")
    model = load_model(tmp_path / "models" / "m.skops", feature_fingerprint=meta.feature_fingerprint, classes=KINDS)
    card = (tmp_path / "models" / "m.md").read_text()
    if not dimensions:
        assert model.dimensions == () and "dimensions" not in metrics and "## Arousal and valence" not in card
        return
    dims = metrics["dimensions"]
    assert dims["n_train"] == 60 > meta.n_train  # fearful and calm files too
    assert dims["corpora"] == ["one", "two"]
    for d in ("arousal", "valence"):
        per = dims[d]["modes"]["speaker"]["per_corpus"]
        assert set(per) == {"one", "two"} and all(0 <= r["balanced_accuracy"] <= 1 for r in per.values())
        assert per["one"]["read_off"] is not None
        assert per["one"]["temperature"] == 1.0  # two corpora: none left to fit a held-out one's temperature on
    assert [d.name for d in model.dimensions] == ["arousal", "valence"]
    for d in model.dimensions:  # the saved model's: fitted on both held-out corpora's predictions, one per mode
        assert set(d.temperature) == {"none", "corpus", "cluster", "speaker"} and d.norm is not None
    assert "**arousal, adaptation 'speaker'**" in card and "| angry | high (1.00) | negative (0.10) |" in card


# -- in a job's reports -------------------------------------------------------------------------------


def test_a_job_reports_arousal_and_valence_for_files_and_scores_them_where_truth_has_a_side(tmp_path: Path) -> None:
    import batchser

    for i in range(24):
        kind = KINDS[i % 4]
        write_audio(tmp_path / "clips" / f"{kind}-{i:02d}.wav", speechlike(kind, sr=16000, seconds=1.5, seed=i), 16000)
    (tmp_path / "labels.csv").write_text(
        "path,label\n"
        + "".join(f"clips/{p.name},{p.name.split('-')[0]}\n" for p in sorted((tmp_path / "clips").iterdir()))
    )
    result = batchser.process_files(
        tmp_path / "clips", labels=f"csv:{tmp_path / 'labels.csv'}", cache=tmp_path / "c", n_jobs=1,
        out_dir=tmp_path / "out",
    )  # fmt: skip
    files = result.files
    assert {"arousal", "valence"} <= set(files.columns) and files["arousal"].between(0, 1).all()
    assert (
        files.loc[files.true_label == "angry", "arousal"].min() > files.loc[files.true_label == "sad", "arousal"].max()
    )
    scored = result.summary  # the job scores itself on the dimensions too, where the true emotion has a side
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["dimensions_of_labelled_files"]
    assert metrics["arousal"]["n"] == 24 and metrics["valence"]["n"] == 18  # neutral has no valence side
    assert 0 <= metrics["arousal"]["balanced_accuracy"] <= 1
    expected = scored["expected_accuracy"]["dimensions"]
    card = read_meta(SHIPPED).metrics["dimensions"]["arousal"]["modes"]["corpus"]["mean"]["reported"]
    assert expected["arousal"]["mean"] == pytest.approx(card["balanced_accuracy"], abs=1e-9)
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="dimensions"' in page and 'id="dimension-scores"' in page
    # A model without dimensions writes no such columns.
    old = batchser.annotate(tmp_path / "clips", model=OLD, cache=tmp_path / "c2", n_jobs=1)
    assert "arousal" not in old.columns
