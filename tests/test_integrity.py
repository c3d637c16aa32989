"""The cache never lies and no run destroys what it did not make (issue I, items 1-7).

Each test reproduces an attack on a real job (real files, real decoder, real
Parquet store); each failed on the code before its fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

import batchser.featurize
import batchser.job
from batchser.cache import FeatureStore
from batchser.cli import main
from batchser.features import FeatureSpec
from batchser.job import run_job
from batchser.manifest import load_manifest
from batchser.model import load_model, read_meta
from batchser.report import recover_reports
from batchser.segments import SegmentSpec
from tests.conftest import PROJECT, SHIPPED_FEATURES, speechlike, write_audio

MODEL = PROJECT / "result" / "models" / "ravdess-4emo.skops"
KINDS = ["angry", "sad", "neutral", "happy"]
SPEC = FeatureSpec(tuple(SHIPPED_FEATURES), 16000)


def job_file(tmp_path: Path, *, name: str = "job.yaml", **over: object) -> Path:
    m: dict[str, object] = {
        "name": "integrity",
        "inputs": [{"path": "good"}],
        "emotions": KINDS,
        "features": SHIPPED_FEATURES,
        "cache": "cache",
        "engine": {"backend": "sequential"},
        "model": {"path": str(MODEL)},
        "output": {"dir": "reports"},
        **over,
    }
    p = tmp_path / name
    p.write_text(yaml.safe_dump(m))
    return p


@pytest.fixture
def good(tmp_path: Path) -> Path:
    d = tmp_path / "good"
    for i, kind in enumerate(KINDS):
        write_audio(d / f"{kind}.wav", speechlike(kind, sr=16000, seconds=1.5, seed=i), 16000)
    return d


def run(job: Path) -> batchser.job.JobSummary:
    return run_job(load_manifest(job), progress=False)


def rows(tmp_path: Path, out: str = "reports") -> pd.DataFrame:
    return pd.read_parquet(tmp_path / out / "annotations.parquet").set_index("path")


def after_hashing(monkeypatch: pytest.MonkeyPatch, action) -> None:  # type: ignore[no-untyped-def]
    """Run ``action`` once, right after the job hashed its files and before it extracts them."""
    real = batchser.featurize.content_hashes
    done = []

    def hashes_then_act(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        if not done:
            done.append(1)
            action()
        return out

    monkeypatch.setattr(batchser.featurize, "content_hashes", hashes_then_act)


def cached_hashes(cache: Path) -> set[str]:
    with FeatureStore(cache, SPEC, segments=SegmentSpec()) as store:
        return set(store._records)


# -- 1. a file changed between hashing and extraction ---------------------------------------


def test_a_file_changed_during_the_job_never_poisons_the_cache(
    tmp_path: Path, good: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = good / "sad.wav"
    old_bytes = target.read_bytes()
    new_audio = speechlike("angry", sr=16000, seconds=1.5, seed=42)

    def rewrite() -> None:
        st = target.stat()
        write_audio(target, new_audio, 16000)  # same size (same length, same format)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime

    after_hashing(monkeypatch, rewrite)
    job = job_file(tmp_path)
    s = run(job)
    first = rows(tmp_path)
    assert first.loc["good/sad.wav", "status"] == "retry"
    assert "changed during the job" in first.loc["good/sad.wav", "error"]
    assert (s.n_files, s.n_failed) == (4, 1)
    import hashlib

    old_hash = hashlib.sha256(old_bytes).hexdigest()
    assert old_hash not in cached_hashes(tmp_path / "cache"), "features of other bytes stored under the old hash"

    # The next run labels the new content, exactly as a clean cache does.
    monkeypatch.undo()
    run(job)
    clean = job_file(tmp_path, name="clean.yaml", cache="clean-cache", output={"dir": "clean"})
    run(clean)
    again, ref = rows(tmp_path), rows(tmp_path, "clean")
    pd.testing.assert_frame_equal(again, ref)


# -- 2. a transient read failure ------------------------------------------------------------


def test_a_file_missing_for_a_moment_is_retried_not_cached(
    tmp_path: Path, good: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, away = good / "happy.wav", tmp_path / "happy.wav.away"
    after_hashing(monkeypatch, lambda: target.rename(away))
    job = job_file(tmp_path)
    run(job)
    row = rows(tmp_path).loc["good/happy.wav"]
    assert row["status"] == "retry" and row["error"].startswith("vanished"), row["error"]
    monkeypatch.undo()
    away.rename(target)
    s = run(job)
    assert s.n_failed == 0 and rows(tmp_path).loc["good/happy.wav", "status"] == "ok"


# -- 3. outputs that would replace inputs ---------------------------------------------------


def test_reports_never_replace_a_label_file_the_model_or_the_manifest(tmp_path: Path, good: Path) -> None:
    (tmp_path / "reports").mkdir()
    labels = tmp_path / "reports" / "annotations.csv"
    labels.write_text("path,label\n" + "".join(f"../good/{k}.wav,{k}\n" for k in KINDS))
    before = labels.read_bytes()
    job = job_file(tmp_path, inputs=[{"path": "good", "labels": "csv:reports/annotations.csv"}])
    assert main(["run", "-q", str(job)]) == 2
    assert labels.read_bytes() == before
    assert not (tmp_path / "cache").exists(), "work was done before the refusal"

    train = job_file(tmp_path, name="t.yaml", model={"path": "t.yaml", "train": True}, inputs=[{"path": "good"}])
    assert main(["validate", "-q", str(train)]) == 2  # would replace the manifest itself
    into_model = job_file(tmp_path, name="m.yaml", output={"dir": str(MODEL.parent)})
    assert main(["validate", "-q", str(into_model)]) == 0  # reports beside the model replace nothing of it
    cache_over_input = job_file(tmp_path, name="c.yaml", cache="good")
    assert main(["validate", "-q", str(cache_over_input)]) == 0  # a folder input inside the cache is no file
    cache_holds_manifest = job_file(tmp_path, name="c2.yaml", cache=".")
    assert main(["validate", "-q", str(cache_holds_manifest)]) == 2


def test_refusal_names_the_field_and_the_fix(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (good / "labels.csv").write_text("path,label\n")
    job = job_file(tmp_path, inputs=[{"path": "good", "labels": "csv:good/labels.csv"}], output={"dir": "good"})
    (good / "annotations.csv").unlink(missing_ok=True)
    assert main(["validate", str(job)]) == 2  # reports into a folder the job reads: refused
    assert "output.dir" in capsys.readouterr().err
    job = job_file(tmp_path, inputs=[{"path": "good/sad.wav"}], output={"dir": "good"}, name="j2.yaml")
    assert main(["validate", str(job)]) == 0  # beside a single input file: nothing of it is read again
    job = job_file(
        tmp_path,
        model={"path": "good/sad.wav", "train": True},
        name="j3.yaml",
        inputs=[{"path": "good", "labels": "csv:good/labels.csv"}],
    )
    assert main(["run", str(job)]) == 2
    err = capsys.readouterr().err
    assert "model.path" in err and "good/sad.wav" in err and "never replaces what it reads" in err


# -- 4. a run that finds no audio -----------------------------------------------------------


def test_no_audio_is_an_error_and_the_previous_reports_stay(tmp_path: Path, good: Path) -> None:
    job = job_file(tmp_path)
    run(job)
    before = {p.name: p.read_bytes() for p in (tmp_path / "reports").iterdir()}
    typo = job_file(tmp_path, name="typo.yaml", inputs=[{"path": "goood/*.wav"}])
    assert main(["run", "-q", str(typo)]) == 2
    (tmp_path / "empty").mkdir()
    empty = job_file(tmp_path, name="empty.yaml", inputs=[{"path": "empty"}])
    assert main(["run", "-q", "--overwrite", str(empty)]) == 1  # (other inputs: replacing needs --overwrite)
    assert {p.name: p.read_bytes() for p in (tmp_path / "reports").iterdir()} == before
    opted = job_file(tmp_path, name="opted.yaml", inputs=[{"path": "empty"}], allow_empty=True)
    assert main(["run", "-q", "--overwrite", str(opted)]) == 0
    assert len(rows(tmp_path)) == 0


# -- 5. cache integrity ---------------------------------------------------------------------


def _parts(cache: Path) -> list[Path]:
    return sorted((cache / "features").glob("*/part-*.parquet"))


@pytest.mark.parametrize("damage", ["truncate", "zero", "garbage", "flip3"])
def test_a_damaged_cache_part_is_quarantined_and_its_rows_recomputed(
    tmp_path: Path, good: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = job_file(tmp_path)
    run(job)
    ref = rows(tmp_path)
    (part,) = _parts(tmp_path / "cache")
    data = bytearray(part.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "zero":
        data = bytearray(len(data))
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    else:  # three bits in the float data, where Parquet would not notice
        for k in (0.3, 0.5, 0.7):
            data[int(len(data) * k)] ^= 0x10
    part.write_bytes(bytes(data))
    s = run(job)
    assert s.n_extracted == 4 and s.n_failed == 0
    pd.testing.assert_frame_equal(rows(tmp_path), ref)
    assert any(str(part) in r.getMessage() and "moved to" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "cache" / "quarantine").iterdir())


def test_files_the_store_did_not_write_are_never_opened(tmp_path: Path, good: Path) -> None:
    job = job_file(tmp_path)
    run(job)
    (folder,) = {p.parent for p in _parts(tmp_path / "cache")}
    os.mkfifo(folder / "part-zz.parquet")  # opened, it would block the job forever
    (folder / "part-dir.parquet").mkdir()
    pd.DataFrame({"content_hash": ["x"]}).to_parquet(folder / "part-foreign.parquet")
    (folder / "part-00000000000000000001-1-0123456789abcdef0123456789abcdef.parquet").symlink_to(
        _parts(tmp_path / "cache")[0]
    )
    res = subprocess.run(
        [sys.executable, "-m", "batchser", "run", str(job)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "not a part batchser wrote" in res.stderr
    assert rows(tmp_path).status.eq("ok").all()


# -- 6. a kill during a model save ----------------------------------------------------------

_SAVE_AND_DIE = textwrap.dedent(
    """
    import contextlib, os, sys
    from pathlib import Path
    import batchser.model as bm
    import batchser.model.store as store
    import numpy as np

    real = store.atomic_path

    @contextlib.contextmanager
    def dying(path):
        with real(path) as tmp:
            yield tmp
            os._exit(9)  # killed with the new file written, before it is switched in

    store.atomic_path = dying
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 4)); y = np.array(["sad", "happy"] * 20)
    params = dict(alpha=0.01, batch_size=256, epsilon=1e-8, hidden_layer_sizes=(8,),
                  learning_rate="adaptive", max_iter=50)
    pipe = bm.fit(bm.build_pipeline(params, random_state=1), X, y)
    old = bm.read_meta(Path(sys.argv[1]))
    bm.save_model(pipe, old, Path(sys.argv[1]))
    """
)


def test_a_kill_during_a_model_save_leaves_the_old_model_loadable(tmp_path: Path) -> None:
    from tests.test_model import _saved

    path = _saved(tmp_path)
    before = path.read_bytes()
    old_id = load_model(path, feature_fingerprint="fp1", classes=["sad", "happy"]).id
    res = subprocess.run([sys.executable, "-c", _SAVE_AND_DIE, str(path)], capture_output=True, text=True)
    assert res.returncode == 9, res.stderr
    assert path.read_bytes() == before
    assert load_model(path, feature_fingerprint="fp1", classes=["sad", "happy"]).id == old_id
    assert list(tmp_path.glob(".m.skops.*.tmp")), "the killed save left its temp file (the test's premise)"
    _saved(tmp_path)  # the next save cleans up after the killed one
    assert not list(tmp_path.glob(".*.tmp"))
    assert zipfile.is_zipfile(path) and read_meta(path).classes == ["sad", "happy"]


# -- 7. a kill while writing reports --------------------------------------------------------

_RUN_AND_DIE = textwrap.dedent(
    """
    import os, sys
    import batchser.report as br
    from batchser.job import run_job
    from batchser.manifest import load_manifest

    when, real = sys.argv[2], os.replace
    moved = []

    def replace(src, dst):
        real(src, dst)
        if when == "commit" and ".batchser-staging-" in str(src) and ".batchser-staging-" not in str(dst):
            moved.append(dst)
            if len(moved) == 2:
                os._exit(9)  # killed after moving two of the set's files into place

    real_close = br.TableWriter.close

    def close(self):
        paths = real_close(self)
        if when == "write":
            os._exit(9)  # killed with the new CSV and Parquet staged, nothing in place
        return paths

    br.os.replace = replace
    br.TableWriter.close = close
    run_job(load_manifest(sys.argv[1]), progress=False)
    """
)


def _consistent(out: Path) -> dict[str, object]:
    summary = json.loads((out / "summary.json").read_text())
    import hashlib

    for name, d in summary["reports"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == d["sha256"], name
    return summary


@pytest.mark.parametrize("when", ["write", "commit"])
def test_a_kill_while_writing_reports_never_leaves_a_mixed_set(tmp_path: Path, good: Path, when: str) -> None:
    job = job_file(tmp_path)
    run(job)
    out = tmp_path / "reports"
    _consistent(out)
    assert not (out / "segments.csv").exists()  # no file was long: no empty segment tables
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    write_audio(good / "extra.wav", speechlike("sad", sr=16000, seconds=1.5, seed=7), 16000)
    res = subprocess.run([sys.executable, "-c", _RUN_AND_DIE, str(job), when], capture_output=True, text=True)
    assert res.returncode == 9, res.stderr
    assert len(list(out.glob(".batchser-staging-*"))) == 1  # what the killed job left
    recover_reports(out)  # what the next job does first
    assert not list(out.glob(".*"))
    summary = _consistent(out)
    if when == "write":  # nothing was in place: the previous set stands
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    else:  # the set was being moved in: it is completed
        assert summary["files"] == 5 and len(pd.read_csv(out / "annotations.csv")) == 5


# -- 11, 12, 17: hostile manifests and edited models -----------------------------------------


def test_deep_or_endless_manifests_are_refused_at_once(tmp_path: Path) -> None:
    import time

    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 100_000 + "]" * 100_000)
    t = time.perf_counter()
    assert main(["validate", "-q", str(deep)]) == 2
    assert main(["validate", "-q", "/dev/zero"]) == 2  # not a regular file: never read
    assert time.perf_counter() - t < 30  # (it took 323 s of CPU and ended in RecursionError)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"segments": {"hop_s": 0.00001}}, "segments.hop_s"),  # rounded to 0 samples, the run never ended
        ({"engine": {"n_jobs": 100_000}}, "engine.n_jobs"),
        ({"model": {"path": "m.skops", "train": True, "mlp": {"hidden_layer_sizes": [0]}}}, "model.mlp"),
        ({"model": {"path": "m.skops", "train": True, "mlp": {"max_iter": 0}}}, "model.mlp.max_iter"),
    ],
)
def test_numbers_the_code_cannot_run_are_refused(
    tmp_path: Path, over: dict[str, object], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path, inputs=[{"path": "good", "labels": "ravdess"}], **over)
    assert main(["validate", str(job)]) == 2
    assert field in capsys.readouterr().err


def test_the_model_id_comes_from_the_weights_loaded(tmp_path: Path) -> None:
    import hashlib

    from tests.test_model import _saved

    path = _saved(tmp_path)
    honest = load_model(path, feature_fingerprint="fp1", classes=["sad", "happy"])
    assert honest.id.endswith(read_meta(path).weights_sha256[:12])
    # Edit a weight and record the new arrays' hash, as an attacker who knows the format would.
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    import io

    import numpy as np

    with np.load(io.BytesIO(entries["batchser/arrays.npz"])) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["global__coef_0"] = arrays["global__coef_0"] * 1.5
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    entries["batchser/arrays.npz"] = buf.getvalue()
    meta = json.loads(entries["batchser/meta.json"])
    meta["arrays_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    entries["batchser/meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    edited = load_model(path, feature_fingerprint="fp1", classes=["sad", "happy"])
    assert edited.meta.weights_sha256 == honest.meta.weights_sha256  # the metadata still claims the old weights
    assert edited.id != honest.id  # the reports do not


def test_label_tables_are_read_at_validate_and_duplicates_flagged(
    tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "l.csv").write_text("file;label\ngood/sad.wav;sad\n", encoding="utf-8")
    job = job_file(tmp_path, inputs=[{"path": "good", "labels": "csv:l.csv"}])
    assert main(["validate", str(job)]) == 2  # it used to pass validate and fail the run
    err = capsys.readouterr().err
    assert "inputs[0].labels" in err and "l.csv" in err and "lacks column(s) ['path']" in err
    (tmp_path / "l.csv").write_text("\ufeffpath;label\ngood/sad.wav;sad\ngood/sad.wav;happy\n", encoding="utf-8")
    assert main(["validate", "-q", str(job)]) == 0  # BOM and ";" are fine
    run(job)
    assert rows(tmp_path).loc["good/sad.wav", "true_label"] == "happy"
    assert "lists 1 path(s) more than once, the last row wins: good/sad.wav (lines 2 and 3)" in caplog.text


def test_label_rows_matching_no_file_are_counted_and_none_at_all_refused(
    tmp_path: Path, good: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "l.csv").write_text("path,label\n/elsewhere/sad.wav,sad\n/elsewhere/x.wav,sad\n")
    job = job_file(tmp_path, inputs=[{"path": "good", "labels": "csv:l.csv"}])
    assert main(["run", str(job)]) == 2  # it used to run with every true_label empty
    err = capsys.readouterr().err
    assert "an emotion for 0 of 4 files; 2 row(s) of" in err and "/elsewhere/sad.wav" in err
    assert not (tmp_path / "reports").exists()
    (tmp_path / "l.csv").write_text("path,label\ngood/sad.wav,sad\ngood/gone.wav,happy\n")
    run(job)
    assert "inputs[0] (good): an emotion for 1 of 4 files; 1 row(s) of" in caplog.text and "gone.wav" in caplog.text


# -- H.1: a copied manifest never replaces another job's reports ------------------------------


def test_reports_of_other_inputs_are_not_replaced_without_overwrite(
    tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "-q", str(job_file(tmp_path))]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "reports").iterdir()}
    other = tmp_path / "other"
    write_audio(other / "x.wav", speechlike("sad", sr=16000, seconds=1.5, seed=5), 16000)
    copy = job_file(tmp_path, name="copy.yaml", inputs=[{"path": "other"}])  # same name and output.dir
    assert main(["run", "-q", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "holds the reports of other inputs (" in err and "job 'integrity')" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "reports").iterdir()} == before
    assert main(["run", "-q", str(job_file(tmp_path, model={"path": str(MODEL), "adapt": "none"}))]) == 0  # same inputs
    assert main(["run", "-q", "--overwrite", str(copy)]) == 0
    assert rows(tmp_path).index.tolist() == ["other/x.wav"]
    # Without output.dir, reports go to result/reports/<the manifest's file name>.
    mine = yaml.safe_load(copy.read_text())
    del mine["output"]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
    assert main(["run", "-q", str(tmp_path / "mine.yaml")]) == 0
    assert (tmp_path / "result" / "reports" / "mine" / "annotations.csv").is_file()


def test_labels_match_through_symbolic_links_either_way(tmp_path: Path, good: Path) -> None:
    (tmp_path / "link").symlink_to(good)  # the same folder under another name
    for input_path, listed in (("good", tmp_path / "link"), ("link", good), (str(tmp_path / "link"), good)):
        (tmp_path / "l.csv").write_text("path,label\n" + "".join(f"{listed / k}.wav,{k}\n" for k in KINDS))
        job = job_file(
            tmp_path, inputs=[{"path": input_path, "labels": "csv:l.csv"}], output={"dir": f"r{len(input_path)}"}
        )
        s = run(job)
        labels = rows(tmp_path, f"r{len(input_path)}")["true_label"]
        assert s.n_files == 4 and labels.notna().all(), (input_path, labels.to_dict())  # it matched 0 of 4
