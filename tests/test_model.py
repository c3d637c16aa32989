"""Model files: skops with a hash-checked sidecar and a trusted-type list."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from batchser.model import (
    ModelError,
    ModelMeta,
    NumpyNetwork,
    build_pipeline,
    calibration_table,
    evaluate,
    fit,
    fit_model,
    load_model,
    save_model,
)
from batchser.model.base import PROBA_FLOOR

PARAMS = {
    "alpha": 0.01,
    "batch_size": 256,
    "epsilon": 1e-8,
    "hidden_layer_sizes": (16,),
    "learning_rate": "adaptive",
    "max_iter": 200,
}
SPEC = {"names": ["mfcc"], "sample_rate": 16000, "fingerprint": "fp1", "dim": 4}


def floored(p: np.ndarray) -> np.ndarray:
    """What a loaded model reports for probabilities ``p``: never exactly 0 or 1."""
    return (p + PROBA_FLOOR) / (1 + p.shape[1] * PROBA_FLOOR)


def test_probabilities_are_never_exactly_0_or_1(tmp_path: Path) -> None:
    m = load_model(_saved(tmp_path), feature_fingerprint="fp1", classes=["sad", "happy"])
    X, _, _ = _data()
    p = m.predict_proba(X * 100)  # far outside the training data: the network saturates
    assert (p > 0).all() and (p < 1).all() and np.allclose(p.sum(axis=1), 1)


def _data(n: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.array(["sad", "happy"] * (n // 2))
    X = rng.normal(size=(n, 4)) + (y == "happy")[:, None] * 3.0
    groups = np.array([f"s{i % 8}" for i in range(n)])
    return X, y, groups


def _saved(tmp_path: Path) -> Path:
    X, y, _ = _data()
    pipe = fit(build_pipeline(PARAMS, random_state=0), X, y)
    meta = ModelMeta(
        classes=["sad", "happy"], feature_spec=SPEC, training_fingerprint="t", n_train=len(y), params=PARAMS, metrics={}
    )
    save_model(pipe, meta, tmp_path / "m.skops")
    return tmp_path / "m.skops"


def test_roundtrip_predicts_in_job_class_order(tmp_path: Path) -> None:
    m = load_model(_saved(tmp_path), feature_fingerprint="fp1", classes=["sad", "happy"])
    X, y, _ = _data()
    p = m.predict_proba(X)
    assert p.shape == (len(y), 2) and np.allclose(p.sum(axis=1), 1)
    assert (np.array(m.meta.classes)[p.argmax(axis=1)] == y).mean() > 0.9
    assert m.id.startswith("m@") and len(m.id) == 14


def test_changed_bytes_are_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match=r"damaged|changed since it was saved"):
        load_model(path, feature_fingerprint="fp1", classes=["sad", "happy"])


def test_a_bare_skops_file_without_metadata_is_refused(tmp_path: Path) -> None:
    X, y, _ = _data()
    path = tmp_path / "bare.skops"
    path.write_bytes(sio.dumps(fit(build_pipeline(PARAMS, random_state=0), X, y)))
    with pytest.raises(ModelError, match="not a batchser model"):
        load_model(path, feature_fingerprint="fp1", classes=["sad", "happy"])


def test_untrusted_types_are_refused_even_with_a_matching_hash(tmp_path: Path) -> None:
    import hashlib
    import os

    evil = Pipeline([("x", FunctionTransformer(func=os.system))])
    path = tmp_path / "evil.skops"
    blob = sio.dumps(evil)
    path.write_bytes(blob)
    meta = {
        "classes": ["a", "b"],
        "feature_spec": SPEC,
        "training_fingerprint": "",
        "n_train": 0,
        "params": {},
        "metrics": {},
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    (tmp_path / "evil.skops.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="does not trust"):
        load_model(path, feature_fingerprint="fp1", classes=["a", "b"])


def test_feature_and_class_mismatch(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    with pytest.raises(ModelError, match="fingerprint"):
        load_model(path, feature_fingerprint="other", classes=["sad", "happy"])
    with pytest.raises(ModelError, match="make emotions match"):
        load_model(path, feature_fingerprint="fp1", classes=["sad", "angry"])


def test_evaluate_reports_both_splits_without_speaker_leak() -> None:
    X, y, groups = _data(160)
    ev = evaluate(X, y, groups, params=PARAMS, random_state=0, cv_folds=4)
    assert ev["random_split"]["n"] == 40 and ev["random_split"]["accuracy"] > 0.9
    aw = ev["actor_wise"]
    assert aw["n"] == 160 and len(aw["folds"]) == 4
    tested = [s for f in aw["folds"] for s in f["test_speakers"]]
    assert sorted(tested) == sorted(set(groups.tolist()))  # every speaker tested exactly once
    assert np.array(aw["confusion_matrix"]).sum() == 160
    assert set(aw["per_class"]) == {"happy", "sad"}


def test_evaluate_without_groups_skips_actor_wise() -> None:
    X, y, _ = _data()
    assert "skipped" in evaluate(X, y, None, params=PARAMS, random_state=0)["actor_wise"]


def test_calibration_table_by_hand() -> None:
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    cal = calibration_table(proba, np.array(["a", "b", "a", "b"]), ["a", "b"])
    # One prediction per bin: |1 - 0.9|, |0 - 0.8|, |1 - 0.6|, |1 - 0.7|, each weighted 1/4.
    assert cal["ece"] == pytest.approx((0.1 + 0.8 + 0.4 + 0.3) / 4)
    assert [b["n"] for b in cal["bins"]] == [1, 1, 1, 1]
    perfect = calibration_table(np.array([[1.0, 0.0]] * 5), np.array(["a"] * 5), ["a", "b"])
    assert perfect["ece"] == 0.0


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibrated_models_evaluate_save_and_load(tmp_path: Path, method: str) -> None:
    X, y, groups = _data(160)
    ev = evaluate(X, y, groups, params=PARAMS, random_state=0, cv_folds=4, calibration=method)
    assert 0.0 <= ev["actor_wise"]["calibration"]["ece"] <= 1.0 and ev["actor_wise"]["accuracy"] > 0.9
    assert sum(b["n"] for b in ev["actor_wise"]["calibration"]["bins"]) == 160
    model = fit_model(X, y, groups, params=PARAMS, random_state=0, calibration=method)
    meta = ModelMeta(
        classes=["sad", "happy"], feature_spec=SPEC, training_fingerprint="t", n_train=len(y), params=PARAMS, metrics={}
    )
    save_model(model, meta, tmp_path / "c.skops")
    loaded = load_model(tmp_path / "c.skops", feature_fingerprint="fp1", classes=["sad", "happy"])
    np.testing.assert_allclose(loaded.predict_proba(X[:5]), floored(model.predict_proba(X[:5])[:, [1, 0]]))


# -- numpy prediction from the saved arrays ---------------------------------------------


def _multiclass(n: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = np.array(["angry", "sad", "neutral", "happy"] * (n // 4))
    centres = {c: rng.normal(size=6) * 1.5 for c in set(y)}
    X = np.stack([centres[c] for c in y]) + rng.normal(size=(n, 6))
    return X, y, np.array([f"s{i % 6}" for i in range(n)])


@pytest.mark.parametrize("calibration", ["none", "isotonic", "sigmoid"])
@pytest.mark.parametrize("binary", [False, True])
def test_numpy_network_predicts_as_scikit_learn(tmp_path: Path, calibration: str, binary: bool) -> None:
    X, y, groups = _data() if binary else _multiclass()
    params = {**PARAMS, "activation": "tanh"} if binary else PARAMS
    model = fit_model(X, y, groups, params=params, random_state=0, calibration=calibration)
    classes = sorted(set(y.tolist()))
    meta = ModelMeta(
        classes=classes, feature_spec=SPEC, training_fingerprint="t", n_train=len(y), params=params, metrics={}
    )
    save_model(model, meta, tmp_path / "m.skops")
    loaded = load_model(tmp_path / "m.skops", feature_fingerprint="fp1", classes=classes)
    assert isinstance(loaded.pipeline, NumpyNetwork) and loaded.pipeline.calibration == calibration
    # Inside and far outside the training range (calibration thresholds clip there).
    probe = np.vstack([X, 10 * np.random.default_rng(9).normal(size=(50, X.shape[1]))])
    np.testing.assert_allclose(loaded.pipeline.predict_proba(probe), model.predict_proba(probe), rtol=1e-12, atol=1e-14)


def test_speaker_pair_round_trips_through_arrays(tmp_path: Path) -> None:
    X, y, groups = _multiclass()
    a = fit_model(X, y, groups, params=PARAMS, random_state=0, calibration="isotonic")
    b = fit_model(X * 0.5, y, groups, params=PARAMS, random_state=1)
    classes = sorted(set(y.tolist()))
    meta = ModelMeta(
        classes=classes, feature_spec=SPEC, training_fingerprint="t", n_train=len(y), params={}, metrics={}
    )
    saved = save_model(a, meta, tmp_path / "m.skops", speaker_pipeline=b)
    loaded = load_model(tmp_path / "m.skops", feature_fingerprint="fp1", classes=classes)
    assert loaded.meta.weights_sha256 == saved.meta.weights_sha256
    np.testing.assert_allclose(loaded.predict_proba(X), floored(a.predict_proba(X)), rtol=1e-12)
    np.testing.assert_allclose(loaded._proba(loaded.speaker_pipeline, X), floored(b.predict_proba(X)), rtol=1e-12)


def test_changed_arrays_are_refused(tmp_path: Path) -> None:
    import zipfile

    path = _saved(tmp_path)
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    blob = bytearray(entries["batchser/arrays.npz"])
    blob[len(blob) // 2] ^= 0xFF
    entries["batchser/arrays.npz"] = bytes(blob)
    with zipfile.ZipFile(path, "w") as zf:  # a consistent zip around edited arrays
        for n, data in entries.items():
            zf.writestr(n, data)
    with pytest.raises(ModelError, match=r"arrays .* changed since they were saved"):
        load_model(path, feature_fingerprint="fp1", classes=["sad", "happy"])
    path.write_bytes(path.read_bytes()[:-100])  # cut short
    with pytest.raises(ModelError, match="damaged"):
        load_model(path, feature_fingerprint="fp1", classes=["sad", "happy"])
