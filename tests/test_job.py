"""Whole jobs on generated audio: train, annotate, cache reuse, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchser.engine
from batchser.cache import FeatureStore
from batchser.cli import main
from batchser.features import FeatureSpec
from batchser.job import run_job
from batchser.manifest import load_manifest
from batchser.model import load_model
from batchser.model.adapt import group_rows
from batchser.segments import SegmentSpec
from tests.conftest import SHIPPED_MODEL, speechlike, write_audio, write_manifest

CLASSES = ["angry", "sad", "neutral", "happy"]


@pytest.fixture
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count real decodes in this process (the sequential engine runs here)."""
    calls: list[str] = []

    class Counting(batchser.engine.AudioStream):
        def __init__(self, source, **kw):  # type: ignore[no-untyped-def]
            calls.append(str(source))
            super().__init__(source, **kw)

    monkeypatch.setattr(batchser.engine, "AudioStream", Counting)
    return calls


def test_train_then_annotate_then_rerun_from_cache(
    tmp_path: Path, labelled_set: tuple[Path, Path], decode_counter: list[str]
) -> None:
    train = load_manifest(write_manifest(tmp_path, "train.yaml"))
    s = run_job(train, progress=False)
    assert (s.n_files, s.n_extracted, s.n_cached, s.n_failed) == (24, 24, 0, 0)
    assert len(decode_counter) == 24
    out = tmp_path / "reports"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["random_split"]["accuracy"] >= 0.8
    assert metrics["actor_wise"]["method"].startswith("GroupKFold") and len(metrics["actor_wise"]["folds"]) == 3
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "models" / "m.skops").is_file() and (tmp_path / "models" / "m.md").is_file()
    df = pd.read_parquet(out / "annotations.parquet")
    assert df["used_for_training"].all() and df["true_label"].notna().all()

    # A second job with the same features: new output, same cache, no decoding at all.
    decode_counter.clear()
    annotate = load_manifest(
        write_manifest(
            tmp_path,
            "annotate.yaml",
            inputs=[{"path": "audio"}],
            model={"path": "models/m.skops", "train": False},
            output={"dir": "reports2"},
        )
    )
    s2 = run_job(annotate, progress=False)
    assert (s2.n_extracted, s2.n_cached) == (0, 24) and decode_counter == []
    a = pd.read_csv(tmp_path / "reports2" / "annotations.csv", keep_default_na=False)
    assert list(a.columns) == [
        "path",
        "status",
        "error",
        "warning",
        "label",
        "confidence",
        *[f"p_{c}" for c in CLASSES],
        "arousal",  # a train job fits the dimensions too (model.dimensions)
        "valence",
        "true_label",
        "duration_s",
        "orig_sample_rate",
        "channels",
        "content_hash",
        "model",
        "segments",
        "dominant_label",
        "speaker",
        "speaker_normalized",
        "corpus",
        "normalized_by",
        "domain_distance",
        "reviewed",
        "speech_share",
    ]
    assert (a["status"] == "ok").all() and (a["error"] == "").all()
    probs = a[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a["confidence"], probs.max(axis=1), rtol=1e-5)
    assert (a["label"] == a["path"].str.split("/").str[1]).mean() >= 0.9  # folder name is the class
    assert set(a["orig_sample_rate"]) == {8000, 16000, 22050, 44100}
    assert a["model"].nunique() == 1 and a["model"][0].startswith("m@")

    # A touched file is re-hashed, but its content is unchanged: still no decode.
    some = tmp_path / "audio" / "sad" / "sad-0.flac"
    some.touch()
    s3 = run_job(annotate, progress=False)
    assert (s3.n_extracted, s3.n_cached) == (0, 24) and decode_counter == []


def test_bad_files_are_rows_not_crashes(tmp_path: Path, labelled_set: tuple[Path, Path]) -> None:
    run_job(load_manifest(write_manifest(tmp_path, "train.yaml")), progress=False)
    extra = tmp_path / "audio" / "mess"
    extra.mkdir()
    (extra / "empty.wav").write_bytes(b"")
    (extra / "text.flac").write_text("not audio at all")
    write_audio(extra / "silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    (extra / "dangling.wav").symlink_to(extra / "nowhere.wav")
    m = load_manifest(
        write_manifest(tmp_path, "a.yaml", inputs=[{"path": "audio"}], model={"path": "models/m.skops", "train": False})
    )
    s = run_job(m, progress=False)
    assert s.n_files == 28
    df = pd.read_csv(tmp_path / "reports" / "annotations.csv", keep_default_na=False).set_index("path")
    errors = df[df.status == "error"]
    assert set(errors.index) == {
        "audio/mess/empty.wav",
        "audio/mess/text.flac",
        "audio/mess/dangling.wav",
        "audio/mess/silence.wav",
    }
    assert errors.loc["audio/mess/silence.wav", "error"].startswith("silent")
    assert errors.loc["audio/mess/dangling.wav", "error"].startswith("cannot stat")
    assert "cannot decode" in errors.loc["audio/mess/text.flac", "error"]
    assert (errors["label"] == "").all() and (errors["p_sad"] == "").all()
    assert (df[df.status == "ok"].shape[0]) == 24


def test_feature_change_recomputes_and_refuses_old_model(tmp_path: Path, labelled_set: tuple[Path, Path]) -> None:
    run_job(load_manifest(write_manifest(tmp_path, "train.yaml")), progress=False)
    p = write_manifest(
        tmp_path,
        "a.yaml",
        features=["mfcc", "chroma", "mel", "contrast"],
        model={"path": "models/m.skops", "train": False},
    )
    assert main(["validate", "-q", str(p)]) == 2  # model trained on other features: a manifest error,
    assert main(["run", "-q", str(p)]) == 2  # refused by validate and by run before any extraction


def test_parallel_engine_equals_sequential(tmp_path: Path) -> None:
    from batchser.engine import ExtractTask, run_tasks
    from batchser.features import FeatureSpec

    spec = FeatureSpec(("mfcc", "chroma", "mel"), 16000)
    tasks = []
    for i in range(12):
        p = write_audio(tmp_path / f"{i}.wav", speechlike(CLASSES[i % 4], sr=22050, seed=i), 22050)
        tasks.append(ExtractTask(str(p), f"h{i}"))
    seq = {r.content_hash: r for b in run_tasks(tasks, spec=spec, backend="sequential") for r in b}
    par = {
        r.content_hash: r
        for b in run_tasks(tasks, spec=spec, backend="loky", n_jobs=2, batch_size=2, in_process_below=0)
        for r in b
    }
    assert seq.keys() == par.keys()
    for h in seq:
        np.testing.assert_array_equal(seq[h].vector, par[h].vector)


def test_cli_run_prints_summary(
    tmp_path: Path, labelled_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(write_manifest(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "24 files seen, 24 newly extracted, 0 from cache, 0 failed" in out
    assert "random split: accuracy" in out and "report:" in out
    assert main(["run", "--quiet", str(write_manifest(tmp_path))]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "extracting" not in captured.err


def test_calibrated_training_reliability_diagram_and_min_confidence(
    tmp_path: Path, labelled_set: tuple[Path, Path]
) -> None:
    model = {"path": "models/c.skops", "train": True, "mlp": {"max_iter": 300}, "calibration": "isotonic"}
    s = run_job(load_manifest(write_manifest(tmp_path, "train.yaml", model=model)), progress=False)
    assert s.n_failed == 0
    out = tmp_path / "reports"
    metrics = json.loads((out / "metrics.json").read_text())
    cal = metrics["actor_wise"]["calibration"]
    assert 0 <= cal["ece"] <= 1 and sum(b["n"] for b in cal["bins"]) == 24
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "isotonic" in (tmp_path / "models" / "c.md").read_text()
    # Annotating with a confidence floor: below it, "uncertain", probabilities kept.
    # Mixtures of two classes' signals are what the model should hesitate on.
    odd = tmp_path / "odd"
    for i, (a, b) in enumerate([("angry", "happy"), ("sad", "neutral"), ("happy", "sad"), ("angry", "neutral")]):
        y = 0.5 * speechlike(a, sr=16000, seed=50 + i) + 0.5 * speechlike(b, sr=16000, seed=60 + i)
        write_audio(odd / f"mix-{i}.wav", y.astype(np.float32), 16000)
    annotate = {"path": "models/c.skops", "train": False, "min_confidence": 0.95}
    inputs = [{"path": "audio"}, {"path": "odd"}]
    run_job(
        load_manifest(write_manifest(tmp_path, "a.yaml", inputs=inputs, model=annotate, output={"dir": "ann"})),
        progress=False,
    )
    df = pd.read_parquet(tmp_path / "ann" / "annotations.parquet")
    low = df["confidence"] < 0.95
    assert low.any() and not low.all(), df[["path", "confidence"]]
    assert (df.loc[low, "label"] == "uncertain").all() and (df.loc[~low, "label"] != "uncertain").all()
    probs = df[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(df["confidence"], probs.max(axis=1))


def test_speaker_normalised_training_and_annotation(tmp_path: Path, labelled_set: tuple[Path, Path]) -> None:
    # labelled_set: 3 speakers (CSV column) x 8 files.
    model = {"path": "models/s.skops", "train": True, "mlp": {"max_iter": 300}, "normalize": "speaker"}
    model["min_speaker_files"] = 5
    s = run_job(load_manifest(write_manifest(tmp_path, "train.yaml", model=model)), progress=False)
    assert s.n_failed == 0
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["speaker_normalization"] == {"min_speaker_files": 5, "speakers": 3, "corpora_normalised_whole": 0}
    assert metrics["actor_wise"]["n"] == 24 and metrics["without_speaker_normalization"]["actor_wise"]["n"] == 24
    assert "per speaker" in (tmp_path / "models" / "s.md").read_text()
    df = pd.read_parquet(tmp_path / "reports" / "annotations.parquet")
    assert set(df.speaker) == {"spk0", "spk1", "spk2"} and df.speaker_normalized.all()

    # Annotating by folder: "many" has enough files for statistics, "few" does not.
    rng = np.random.default_rng(7)
    for i in range(6):
        kind = CLASSES[i % 4]
        write_audio(tmp_path / "new" / "many" / f"{kind}-{i}.wav", speechlike(kind, sr=16000, seed=300 + i), 16000)
    for i in range(2):
        y = speechlike(CLASSES[i], sr=16000, seed=400 + i) * rng.uniform(0.5, 1.0)
        write_audio(tmp_path / "new" / "few" / f"x-{i}.wav", y.astype(np.float32), 16000)
    job = write_manifest(
        tmp_path,
        "a.yaml",
        inputs=[{"path": "new", "speaker": "folder"}],
        model={"path": "models/s.skops", "train": False},
        output={"dir": "ann"},
    )
    run_job(load_manifest(job), progress=False)
    a = pd.read_parquet(tmp_path / "ann" / "annotations.parquet").set_index("path")
    assert (a.status == "ok").all()
    many, few = a[a.speaker == "new/many"], a[a.speaker == "new/few"]
    assert len(many) == 6 and many.speaker_normalized.all() and (many.normalized_by == "speaker").all()
    # Too few of their own: standardised over the whole input (corpus "new", 8 files) instead.
    assert len(few) == 2 and not few.speaker_normalized.any() and (few.normalized_by == "corpus").all()

    # The normalised rows are what the normalised network says about the standardised vectors.
    spec = FeatureSpec(tuple(load_manifest(job).features), 16000)
    m = load_model(tmp_path / "models" / "s.skops", feature_fingerprint=spec.fingerprint(), classes=CLASSES)
    assert m.speaker_pipeline is not None
    with FeatureStore(tmp_path / "cache", spec, segments=SegmentSpec()) as store:
        X = np.stack([store.get(h).vector for h in a.content_hash]).astype(np.float64)
    speakers = ["new/" + sp for sp in a.speaker]
    g = group_rows(X, mode="speaker", corpora=["new"] * len(X), speakers=speakers, min_files=5)
    Xn, covered = g.stats(X).transform(X, g.keys)
    assert covered.all() and g.how == a.normalized_by.tolist()
    expect = m._proba(m.speaker_pipeline, Xn)
    np.testing.assert_allclose(a[[f"p_{c}" for c in CLASSES]].to_numpy(), expect, rtol=1e-6)

    # Without adaptation, the plain network labels every file.
    job = write_manifest(
        tmp_path,
        "plain.yaml",
        inputs=[{"path": "new", "speaker": "folder"}],
        model={"path": "models/s.skops", "train": False, "adapt": "none"},
        output={"dir": "plain"},
    )
    run_job(load_manifest(job), progress=False)
    p = pd.read_parquet(tmp_path / "plain" / "annotations.parquet").set_index("path").loc[a.index]
    assert p.normalized_by.isna().all()  # a real null: no rule applied
    np.testing.assert_allclose(p[[f"p_{c}" for c in CLASSES]].to_numpy(), m.predict_proba(X), rtol=1e-6)


def test_speaker_normalisation_without_speakers_fails_with_the_fix(
    tmp_path: Path, labelled_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, csv = labelled_set
    csv.write_text("\n".join(line.rsplit(",", 1)[0] for line in csv.read_text().splitlines()) + "\n")
    model = {"path": "models/s.skops", "train": True, "normalize": "speaker"}
    assert main(["run", "--quiet", str(write_manifest(tmp_path, "train.yaml", model=model))]) == 1
    err = capsys.readouterr().err
    assert "needs 2+ groups to standardise within" in err and "speaker: folder" in err


def test_an_untrusted_model_stops_the_job_before_any_work(
    tmp_path: Path, labelled_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # A model file without numpy arrays (older, or hand-made) goes through skops and
    # its trusted-type list before anything is decoded.
    import hashlib
    import os

    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    job = write_manifest(tmp_path, "a.yaml", model={"path": "models/evil.skops", "train": False})
    spec = FeatureSpec(tuple(load_manifest(job).features), 16000)
    blob = sio.dumps(Pipeline([("x", FunctionTransformer(func=os.system))]))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "evil.skops").write_bytes(blob)
    meta = {
        "classes": CLASSES,
        "feature_spec": spec.to_dict(),
        "training_fingerprint": "",
        "n_train": 0,
        "params": {},
        "metrics": {},
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    (tmp_path / "models" / "evil.skops.json").write_text(json.dumps(meta))
    assert main(["run", "--quiet", str(job)]) == 1
    assert "does not trust" in capsys.readouterr().err
    assert not (tmp_path / "reports" / "annotations.csv").exists()
    with FeatureStore(tmp_path / "cache", spec, segments=SegmentSpec()) as store:
        assert len(store) == 0


def test_labelling_never_imports_scikit_learn_or_skops(tmp_path: Path) -> None:
    # What keeps a labelling job's start-up short (the two cost ~3 s to import): the
    # shipped model loads and predicts from its numpy arrays.
    import subprocess
    import sys

    for i, kind in enumerate(CLASSES):
        write_audio(tmp_path / "audio" / f"{kind}.wav", speechlike(kind, sr=16000, seed=i), 16000)
    job = write_manifest(
        tmp_path,
        "a.yaml",
        inputs=[{"path": "audio", "labels": "none"}],
        model={"path": str(SHIPPED_MODEL), "train": False},
    )
    code = (
        "import sys\n"
        "from batchser.cli import main\n"
        f"assert main(['run', '--quiet', {str(job)!r}]) == 0\n"
        "print(sorted(m for m in ('sklearn', 'skops') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert (pd.read_parquet(tmp_path / "reports" / "annotations.parquet").status == "ok").all()
