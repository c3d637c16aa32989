"""Inputs in object storage, against a real S3 API: moto's server on loopback, IAM enforced.

The bucket holds generated audio; the same files on local disk are the
reference: the same labels and probabilities to the last bit, paths that
differ only by their prefix.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

import batchser.featurize
from batchser.discover import Skipped, iter_files
from batchser.engine import ExtractTask, extract_part, plan_parts
from batchser.features import FeatureSpec
from batchser.job import run_job
from batchser.manifest import ManifestError, parse_manifest
from batchser.segments import SegmentSpec
from batchser.storage import ObjectChangedError, read_stats, redact, shown_url, storage_for, url_problem
from batchser.storage import remote as remote_storage
from tests.conftest import PROJECT, SHIPPED_FEATURES, SHIPPED_MODEL, speechlike, write_audio
from tests.s3 import S3, Proxy, s3_server

pytest.importorskip("s3fs", reason="needs s3fs and moto's server: pip install -e '.[test,s3]'")

KINDS = ["angry", "sad", "neutral", "happy"]
PROBS = ["label", "confidence", "true_label", "speaker", "status", "error", *(f"p_{k}" for k in KINDS)]
N_BULK = 10_000


def _fresh_backends(monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Storage backends are made once per process: a test that changes the endpoint needs new ones."""
    if monkeypatch is not None:
        monkeypatch.setattr(remote_storage, "_backends", {})
    else:
        remote_storage._backends.clear()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    with s3_server(f"bulk/many/:{N_BULK}") as server, pytest.MonkeyPatch.context() as mp:
        for k, v in server.env().items():
            mp.setenv(k, v)
        _fresh_backends()
        yield server
    _fresh_backends()


@pytest.fixture(scope="module")
def corpus(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated clips of four kinds by three speakers (WAV, FLAC, OGG), on disk under ``audio/`` and in
    ``s3://corpus/clips/``, with a label table beside each naming them relative to itself."""
    root = tmp_path_factory.mktemp("corpus")
    audio = root / "audio"
    formats = [("wav", "PCM_16", 16000), ("flac", "PCM_24", 22050), ("ogg", "VORBIS", 16000)]
    local_rows, remote_rows = ["path,label,speaker"], ["path,label,speaker"]
    for ci, kind in enumerate(KINDS):
        for k in range(3):
            ext, subtype, sr = formats[(ci + k) % len(formats)]
            rel = f"spk{k}/{kind}-{k}.{ext}"
            write_audio(audio / rel, speechlike(kind, sr=sr, seconds=1.5, seed=10 * ci + k), sr, subtype=subtype)
            local_rows.append(f"audio/{rel},{kind},spk{k}")
            remote_rows.append(f"clips/{rel},{kind},spk{k}")
    (audio / "spk0" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (audio / "notes.txt").write_text("not audio")
    (root / "labels.csv").write_text("\n".join(local_rows) + "\n")
    s3.upload(audio, "corpus", "clips/")
    s3.client().put_object(Bucket="corpus", Key="labels.csv", Body=("\n".join(remote_rows) + "\n").encode())
    return root


def _manifest(root: Path, inputs: list[dict[str, Any]], **over: Any) -> Any:
    m: dict[str, Any] = {
        "name": "objects",
        "inputs": inputs,
        "features": SHIPPED_FEATURES,
        "audio": {"sample_rate": 16000},
        "cache": "cache",
        "engine": {"backend": "sequential", "n_jobs": 1},
        "model": {"path": str(SHIPPED_MODEL)},
        "output": {"dir": "reports", "formats": ["csv", "parquet"]},
    } | over
    return parse_manifest(yaml.safe_dump(m), base_dir=root)


def _table(root: Path, out: str = "reports", *, prefix: str) -> pd.DataFrame:
    df = pd.read_parquet(root / out / "annotations.parquet")
    assert df["path"].str.startswith(prefix).all(), df["path"].tolist()
    return df.assign(path=df["path"].str.removeprefix(prefix)).set_index("path").sort_index()


# -- addresses ------------------------------------------------------------------------------


def test_addresses_are_shown_without_what_could_be_a_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    assert shown_url("https://host/a.wav?X-Amz-Signature=abc&X-Amz-Credential=AKIA#x") == "https://host/a.wav"
    assert shown_url("s3://bucket/odd?name.wav") == "s3://bucket/odd?name.wav"  # a "?" in a key is the key's
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    text = "GET https://u:pw@host/x.wav?sig=zzz failed; key very-secret-value; az://c@acct/p"
    assert redact(text) == "GET https://…@host/x.wav failed; key ***; az://c@acct/p"
    problem = url_problem("s3://AKIA:secret@bucket/x/")
    assert problem.startswith("credentials inside the address are not accepted") and "secret" not in problem
    assert url_problem("ftp://host/x.wav").startswith("ftp:// is not a storage batchser reads")
    assert url_problem("az://container@account.dfs.core.windows.net/p/") == ""  # adlfs's form, no credential


def test_a_password_in_an_address_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        _manifest(tmp_path, [{"path": "s3://AKIAEXAMPLE:hunter2-secret@bucket/clips/"}])
    assert "inputs[0].path: credentials inside the address are not accepted" in str(err.value)
    assert "hunter2" not in str(err.value)
    with pytest.raises(ManifestError, match=re.escape("output.dir: s3://bucket/out is in object storage")):
        _manifest(tmp_path, [{"path": "s3://bucket/clips/"}], output={"dir": "s3://bucket/out"})


# -- listing --------------------------------------------------------------------------------


def test_ten_thousand_keys_are_listed_page_by_page_in_key_order(s3: S3) -> None:
    c = s3.client()
    for key in ("many/notes.txt", "many/.hidden/x.wav", "many/sub/a.wav", "many/sub/"):
        c.put_object(Bucket="bulk", Key=key, Body=b"RIFF")
    read_stats(reset=True)
    skipped = Skipped()
    found = iter_files(["s3://bulk/many/"], skipped=skipped)  # type: ignore[list-item]
    first = next(found)
    assert read_stats()["list"] == 1, "the first object came only after more than one page"
    rest = list(found)
    names = [str(f.path) for f in [first, *rest]]
    assert len(names) == N_BULK + 1 and names == sorted(names)
    assert names[0] == "s3://bulk/many/00000.wav" and names[-1] == "s3://bulk/many/sub/a.wav"
    assert read_stats()["list"] == 11  # 10,004 keys, 1,000 a page
    assert dict(skipped.counts) == {".txt": 1}
    # Sizes come from the listing (no request per object); the stamp holds the ETag's digest.
    assert {f.size for f in rest[:-1]} == {8} and rest[-1].size == 4 and first.ctime_ns != 0
    pattern = list(iter_files(["s3://bulk/many/0000?.wav"]))  # type: ignore[list-item]
    assert [f.name for f in pattern] == [f"s3://bulk/many/0000{i}.wav" for i in range(10)]


# -- a job over objects ---------------------------------------------------------------------


def test_the_same_reports_as_the_same_files_on_local_disk(corpus: Path) -> None:
    local = _manifest(corpus, [{"path": "audio", "labels": "csv:labels.csv"}], output={"dir": "local"})
    remote = _manifest(
        corpus,
        [{"path": "s3://corpus/clips/", "labels": "csv:s3://corpus/labels.csv"}],
        cache="cache-s3",
        output={"dir": "remote"},
    )
    run_job(local, progress=False)
    read_stats(reset=True)
    s = run_job(remote, progress=False)
    cold = read_stats(reset=True)
    assert (s.n_files, s.n_extracted, s.n_failed) == (13, 13, 1)
    assert cold["get"] == 13 + 2  # each object read once, where it was analysed; the label table checked and read
    a, b = _table(corpus, "local", prefix="audio/"), _table(corpus, "remote", prefix="s3://corpus/clips/")
    pd.testing.assert_frame_equal(a[PROBS], b[PROBS], check_exact=True)
    assert (a["content_hash"] == b["content_hash"]).all()  # hashed from the bytes
    assert b.loc["spk0/broken.wav", "status"] == "error"

    # Unchanged objects (same ETag, size and time) are neither hashed nor read again.
    again = run_job(remote, progress=False)
    warm = read_stats(reset=True)
    assert (again.n_cached, again.n_extracted) == (13, 0)
    assert warm["get"] == 2 and warm["list"] == 2  # the label table twice; the check's page and the job's
    pd.testing.assert_frame_equal(_table(corpus, "remote", prefix="s3://corpus/clips/")[PROBS], b[PROBS])


def test_an_object_replaced_during_the_job_is_a_retry_never_a_wrong_vector(
    s3: S3, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "clips/spk2/sad-2.wav"
    c = s3.client()
    old = c.get_object(Bucket="corpus", Key=key)["Body"].read()
    new_path = write_audio(corpus / "new.wav", speechlike("angry", sr=16000, seconds=1.5, seed=99), 16000)
    real = batchser.featurize.content_hashes

    def replaced_after_listing(files, store, **kw):  # type: ignore[no-untyped-def]
        out = real(files, store, **kw)
        c.upload_file(str(new_path), "corpus", key)  # after the listing, before any worker reads it
        return out

    monkeypatch.setattr(batchser.featurize, "content_hashes", replaced_after_listing)
    job = _manifest(corpus, [{"path": "s3://corpus/clips/spk2/"}], cache="cache-swap", output={"dir": "swap"})
    run_job(job, progress=False)
    row = _table(corpus, "swap", prefix="s3://corpus/clips/spk2/").loc["sad-2.wav"]
    assert row["status"] == "retry" and "changed during the job" in row["error"], row["error"]
    stored = set(pq.read_table(corpus / "cache-swap" / "features", columns=["content_hash"]).column(0).to_pylist())
    for data in (old, new_path.read_bytes()):
        assert hashlib.sha256(data).hexdigest() not in stored, "a vector filed under bytes that were not read"

    monkeypatch.undo()
    run_job(job, progress=False)  # the next run labels the new content, as a clean cache does
    clean = _manifest(corpus, [{"path": "s3://corpus/clips/spk2/"}], cache="cache-clean", output={"dir": "clean"})
    run_job(clean, progress=False)
    got, ref = (_table(corpus, d, prefix="s3://corpus/clips/spk2/") for d in ("swap", "clean"))
    assert got.loc["sad-2.wav", "content_hash"] == hashlib.sha256(new_path.read_bytes()).hexdigest()
    pd.testing.assert_frame_equal(got[PROBS], ref[PROBS])
    c.put_object(Bucket="corpus", Key=key, Body=old)


def test_throttling_is_waited_out_and_a_failing_object_is_a_retry_row(
    s3: S3, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = [{"path": "s3://corpus/clips/"}]
    alone = {"path": str(SHIPPED_MODEL), "adapt": "none"}  # each file labelled on its own: one missing changes no other
    direct = _manifest(corpus, inputs, cache="cache-direct", output={"dir": "direct"}, model=alone)
    run_job(direct, progress=False)
    with Proxy(s3.port, throttle_every=3, broken=("spk2/neutral-2",)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        _fresh_backends(monkeypatch)
        read_stats(reset=True)
        s = run_job(_manifest(corpus, inputs, cache="cache-slow", output={"dir": "slow"}, model=alone), progress=False)
    assert proxy.counts["throttled"] >= 4 and read_stats()["retries"] >= proxy.counts["throttled"]
    slow, ref = (_table(corpus, d, prefix="s3://corpus/clips/") for d in ("slow", "direct"))
    row = slow.loc["spk2/neutral-2.flac"]
    assert row["status"] == "retry" and "InternalError" in row["error"] and "rerun" in row["error"], row["error"]
    assert s.n_failed == 2  # the broken WAV and the object the server would not give
    same = slow.index != "spk2/neutral-2.flac"
    pd.testing.assert_frame_equal(slow.loc[same, PROBS], ref.loc[same, PROBS], check_exact=True)


def test_a_zip_in_object_storage_is_read_in_ranges_like_one_on_disk(s3: S3, corpus: Path) -> None:
    import zipfile

    zipped = corpus / "takes.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for p in sorted((corpus / "audio" / "spk1").iterdir()):
            zf.write(p, f"spk1/{p.name}")
    s3.client().upload_file(str(zipped), "corpus", "zips/takes.zip")
    local = _manifest(corpus, [{"path": "takes.zip"}], output={"dir": "zip-local"})
    remote = _manifest(corpus, [{"path": "s3://corpus/zips/takes.zip"}], cache="cache-zip", output={"dir": "zip-s3"})
    run_job(local, progress=False)
    s = run_job(remote, progress=False)
    assert (s.n_files, s.n_failed) == (4, 0)
    a = _table(corpus, "zip-local", prefix="takes.zip::")
    b = _table(corpus, "zip-s3", prefix="s3://corpus/zips/takes.zip::")
    pd.testing.assert_frame_equal(a[PROBS], b[PROBS], check_exact=True)


def test_the_review_page_plays_an_object_under_the_job_s_inputs_only(corpus: Path) -> None:
    import io

    import soundfile as sf

    from batchser.web.clips import ClipError, clip_wav, locate

    inputs = ["s3://corpus/clips/"]
    where, member = locate("s3://corpus/clips/spk0/angry-0.wav", root=str(corpus), inputs=inputs)
    read_stats(reset=True)
    y, sr = sf.read(io.BytesIO(clip_wav(where, member, start_s=0.5, seconds=0.5)))
    assert sr == 16000 and len(y) == 8000 and np.abs(y).max() > 0.01
    assert read_stats()["get"] <= 2  # a 1.5-s clip is one block (read again after the header's end is looked at)
    for outside in ("s3://corpus/labels.csv", "s3://corpus/clipsX/a.wav", "s3://other/clips/a.wav"):
        with pytest.raises(ClipError, match="outside the job's inputs"):
            locate(outside, root=str(corpus), inputs=inputs)


def test_a_bucket_that_denies_listing_is_a_clear_error(s3: S3, corpus: Path, tmp_path: Path) -> None:
    c = s3.client()
    c.create_bucket(Bucket="locked")
    c.upload_file(str(corpus / "audio" / "spk0" / "angry-0.wav"), "locked", "clips/angry-0.wav")
    with pytest.raises(ManifestError) as err:
        run_job(_manifest(tmp_path, [{"path": "s3://locked/clips/"}]), progress=False)
    text = str(err.value)
    assert "inputs[0].path: s3://locked/clips/ cannot be listed or read with the credentials in use" in text
    assert "AccessDenied" in text and "s3:ListBucket" in text
    # Reading is allowed: the object named itself needs no listing.
    s = run_job(_manifest(tmp_path, [{"path": "s3://locked/clips/angry-0.wav"}]), progress=False)
    assert (s.n_files, s.n_failed) == (1, 0)
    res = subprocess.run(
        [sys.executable, "-m", "batchser", "annotate", "-q", "s3://locked/clips/", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    assert res.returncode == 2 and "cannot be listed" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_long_recording_is_streamed_in_parts_each_reading_its_own_range(
    s3: S3, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    sr, seconds = 16000, 12 * 60
    t = np.arange(sr * seconds) / sr
    y = 0.2 * np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * t / 30)) * t) * (np.sin(2 * np.pi * t / 5) > -0.3)
    long = corpus / "long" / "meeting.wav"
    write_audio(long, (y + 0.01 * rng.standard_normal(t.size)).astype(np.float32), sr, subtype="PCM_16")
    s3.upload(long.parent, "corpus", "long/")  # a multipart upload: its ETag is no hash of the bytes
    head = s3.client().head_object(Bucket="corpus", Key="long/meeting.wav")
    assert "-" in head["ETag"]
    url, size = "s3://corpus/long/meeting.wav", long.stat().st_size
    seg = SegmentSpec(method="windows")
    spec = FeatureSpec(tuple(SHIPPED_FEATURES), 16000)
    (listed,) = iter_files([url])  # type: ignore[list-item]
    task = ExtractTask(url, "h", size=size, stamp=listed.stamp)
    parts = plan_parts(task, spec=spec, seg=seg)
    assert len(parts) == 2
    read_stats(reset=True)
    got = extract_part(parts[0], spec=spec, seg=seg)
    assert got.status == "ok" and got.segments is not None
    assert read_stats()["bytes"] < 0.6 * size, "a part read more than its own range"

    local = _manifest(corpus, [{"path": "long"}], segments={"method": "windows"}, output={"dir": "long-local"})
    remote = _manifest(
        corpus,
        [{"path": "s3://corpus/long/"}],
        cache="cache-long",
        segments={"method": "windows"},
        output={"dir": "long-s3"},
    )
    run_job(local, progress=False)
    run_job(remote, progress=False)
    a = pd.read_parquet(corpus / "long-local" / "segments.parquet").drop(columns="path")
    b = pd.read_parquet(corpus / "long-s3" / "segments.parquet").drop(columns="path")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    row = _table(corpus, "long-s3", prefix="s3://corpus/long/").loc["meeting.wav"]
    assert row["content_hash"] == hashlib.sha256(long.read_bytes()).hexdigest()

    # Replaced between its hashing and its parts' reads: every part refuses the new bytes.
    real = batchser.featurize.content_hashes

    def replaced_after_hashing(files, store, **kw):  # type: ignore[no-untyped-def]
        out = real(files, store, **kw)
        s3.client().put_object(Bucket="corpus", Key="long/meeting.wav", Body=long.read_bytes()[:-2] + b"\x01\x02")
        return out

    monkeypatch.setattr(batchser.featurize, "content_hashes", replaced_after_hashing)
    swap = _manifest(
        corpus,
        [{"path": "s3://corpus/long/"}],
        cache="cache-long2",
        segments={"method": "windows"},
        output={"dir": "ls"},
    )
    run_job(swap, progress=False)
    row = _table(corpus, "ls", prefix="s3://corpus/long/").loc["meeting.wav"]
    assert row["status"] == "retry" and "changed during the job" in row["error"], row["error"]


def test_credentials_never_reach_reports_summaries_logs_or_the_page(corpus: Path, tmp_path: Path) -> None:
    secret = "batchser-test-secret-" + os.urandom(6).hex()
    with s3_server(open_=True) as open_s3:
        env = {**os.environ, **open_s3.env(), "AWS_SECRET_ACCESS_KEY": secret, "PYTHONPATH": str(PROJECT)}
        client = open_s3.client()
        client.create_bucket(Bucket="corpus")
        client.upload_file(str(corpus / "audio" / "spk0" / "angry-0.wav"), "corpus", "clips/angry-0.wav")
        client.upload_file(str(corpus / "audio" / "spk2" / "sad-2.wav"), "corpus", "one/sad-2.wav")
        signed = client.generate_presigned_url(
            "get_object", Params={"Bucket": "corpus", "Key": "one/sad-2.wav"}, ExpiresIn=600
        )
        signature = urllib.parse.parse_qs(urllib.parse.urlparse(signed).query)["Signature"][0]
        out = tmp_path / "out"
        res = subprocess.run(
            [sys.executable, "-m", "batchser", "-vv", "annotate", "s3://corpus/clips/", signed, "--out", str(out),
             "--cache", str(tmp_path / "cache")],
            capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        refused = subprocess.run(
            [sys.executable, "-m", "batchser", "annotate", f"s3://AKIAX:{secret}@corpus/clips/", "--out", str(out)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
        )  # fmt: skip
        assert refused.returncode == 2 and "credentials inside the address" in refused.stderr
    df = pd.read_parquet(out / "annotations.parquet")
    assert sorted(df["path"]) == [
        f"http://127.0.0.1:{open_s3.port}/corpus/one/sad-2.wav",
        "s3://corpus/clips/angry-0.wav",
    ]
    assert (df["status"] == "ok").all()
    texts = {"stdout": res.stdout, "stderr": res.stderr, "refused": refused.stdout + refused.stderr}
    files = [p for p in [*out.rglob("*"), *(tmp_path / "cache").rglob("*")] if p.is_file()]
    assert {p.name for p in files} >= {"annotations.csv", "annotations.parquet", "summary.json", "report.html"}
    for p in files:
        texts[str(p)] = p.read_bytes().decode("latin-1")
    assert len(res.stderr) > 1000, "the debug log is there to be searched"
    for where, text in texts.items():
        for needle in (secret, signature, urllib.parse.quote(signature, safe=""), "Signature="):
            assert needle not in text, f"{needle[:12]}… in {where}"


def test_the_local_disk_is_read_through_the_same_interface_and_checked_the_same_way(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"0123456789")
    disk = storage_for(str(f))
    st = os.stat(f)
    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with disk.open(str(f), size=10, stamp=stamp) as fh:
        fh.seek(4)
        assert fh.read(3) == b"456"
    assert disk.hash(str(f), size=10, stamp=stamp) == hashlib.sha256(b"0123456789").hexdigest()
    f.write_bytes(b"9876543210")  # same size, rewritten
    with pytest.raises(ObjectChangedError):
        disk.read(str(f), size=10, stamp=stamp)
    assert [p for p, _, _ in disk.walk(str(tmp_path))] == [str(f)]
