"""Recordings FFmpeg reads (M4A, MP4 with a video track, MOV, WebM/Opus, WMA, AMR) labelled as their samples are.

Every file is written by PyAV's own encoders (``tests/media.py``) from espeak-ng
speech, and labelled through the real job beside the very samples handed to the
encoder, as FLAC. Broken ones (cut short, overwritten, not audio) get rows with
their reasons; files no decoder reads are counted by extension, never silent.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from batchser import decoders, longfile
from batchser.api import default_model_path, shipped_features
from batchser.audio import UNRECOGNISED, AudioStream, load
from batchser.cache import FeatureRecord, FeatureStore, hash_file
from batchser.cli import main
from batchser.decoders import decoder_tag
from batchser.discover import Skipped, discover
from batchser.engine import ExtractTask, extract_one, plan_parts, run_tasks
from batchser.features import FeatureSpec
from batchser.model.store import load_model
from batchser.segments import SegmentSpec
from tests.conftest import espeak_sentences, speechlike
from tests.media import KINDS, encode

SR = 16000
SPEC = FeatureSpec(tuple(shipped_features()), SR)  # what annotate computes
SENTENCES = [
    "Kids are talking by the door.",
    "Dogs are sitting by the door.",
    "I cannot believe you did that to me!",
    "Please leave me alone, I am so tired.",
]
CLASSES = ["angry", "sad", "neutral", "happy"]
LOSSLESS_ENOUGH = ["m4a", "m4a-faststart", "mp4-video", "mov", "webm", "wma"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """espeak-ng saying four sentences, float32 at 16 kHz."""
    return espeak_sentences(SENTENCES, tmp_path_factory.mktemp("espeak"), sr=SR)


def annotate(inputs: list[Path], out: Path, *extra: str) -> pd.DataFrame:
    """The real command, in this process; its annotations indexed by path."""
    args = ["annotate", *map(str, inputs), "--out", str(out), "--cache", str(out.parent / "cache"), "-q", *extra]
    assert main(args) == 0
    return pd.read_csv(out / "annotations.csv").set_index("path")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, speech: list[np.ndarray]) -> tuple[Path, pd.DataFrame]:
    """Each sentence in every kind, and as FLAC of the samples the encoder got; all labelled in one job."""
    root = tmp_path_factory.mktemp("formats")
    for name, kind in KINDS.items():
        for k, y in enumerate(speech):
            x = encode(root / "audio" / name / f"s{k}{kind.suffix}", y, SR, kind)
            sf.write(root / "audio" / name / f"s{k}.flac", x, kind.rate, subtype="PCM_24")
    # Each file standardised by nothing but itself: its label depends on its own samples only.
    return root, annotate([root / "audio"], root / "out", "--adapt", "none", "-j", "1")


def _pair(root: Path, name: str, k: int) -> tuple[Path, Path]:
    return root / "audio" / name / f"s{k}{KINDS[name].suffix}", root / "audio" / name / f"s{k}.flac"


@pytest.fixture(scope="module")
def unit() -> np.ndarray:
    """Each feature's standard deviation over the shipped model's training data: the unit its network reads."""
    model = load_model(default_model_path(), feature_fingerprint=SPEC.fingerprint(), classes=CLASSES)
    return model.pipeline.arrays["scale"]


@pytest.mark.parametrize("name", [*LOSSLESS_ENOUGH, "amr"])
def test_each_format_is_labelled_as_its_samples_are(
    labelled: tuple[Path, pd.DataFrame], unit: np.ndarray, name: str
) -> None:
    root, table = labelled
    pairs = [_pair(root, name, k) for k in range(len(SENTENCES))]
    rows = [(table.loc[str(a)], table.loc[str(b)]) for a, b in pairs]
    for (coded, flac), (a, _) in zip(rows, pairs, strict=True):
        assert coded["status"] == "ok", (a, coded["error"])
        assert coded["orig_sample_rate"] == flac["orig_sample_rate"] == KINDS[name].rate
        assert abs(coded["duration_s"] - flac["duration_s"]) < 0.1  # encoder padding at most
    # Vectors: each coded file's median distance from its FLAC's, feature by feature, in the network's unit
    # (measured: 0.02-0.05 for AAC and Opus, 0.09 for FFmpeg's WMA encoder, 0.3 for AMR-NB).
    coded_v = np.stack([extract_one(ExtractTask(str(a), "a"), spec=SPEC).vector for a, _ in pairs])
    flac_v = np.stack([extract_one(ExtractTask(str(b), "b"), spec=SPEC).vector for _, b in pairs])
    off = np.median(np.abs(coded_v - flac_v) / unit, axis=1)
    if name == "amr":
        # AMR-NB at 12.2 kbit/s is a narrowband speech codec: it moves the features, and labels can
        # move with them; what is checked here is the decoding.
        assert (off < 0.5).all(), off
        return
    assert (off < 0.15).all(), off
    assert [c["label"] for c, _ in rows] == [f["label"] for _, f in rows]


def test_a_video_track_beside_the_sound_is_passed_over(labelled: tuple[Path, pd.DataFrame]) -> None:
    root, _ = labelled
    mp4, flac = _pair(root, "mp4-video", 0)
    with AudioStream(mp4, sample_rate=SR) as stream:
        assert stream.decoder == decoder_tag() and stream.channels == 1 and stream.orig_sample_rate == 48000
        got = stream.read_all().samples
    want = load(flac, sample_rate=SR).samples
    n = min(len(got), len(want))
    snr = 10 * np.log10(np.sum(want[:n] ** 2) / np.sum((got[:n] - want[:n]) ** 2))
    assert snr > 20  # AAC at 128 kbit/s, aligned to the sample: the encoder's delay is trimmed


def test_flac_and_m4a_of_the_same_audio_never_share_a_row(labelled: tuple[Path, pd.DataFrame]) -> None:
    root, table = labelled
    m4a, flac = _pair(root, "m4a", 1)
    assert table.loc[str(m4a), "content_hash"] != table.loc[str(flac), "content_hash"]
    store = FeatureStore(root / "cache", SPEC, segments=SegmentSpec())
    with store:
        a, b = store.get(hash_file(m4a)), store.get(hash_file(flac))
    assert a is not None and b is not None
    assert a.decoder == decoder_tag() and b.decoder == ""  # FFmpeg's row is keyed by its version
    keys = pd.read_parquet(root / "cache" / "features" / store.key, columns=["content_hash"])["content_hash"]
    assert f"{hash_file(m4a)}+{decoder_tag()}" in set(keys) and hash_file(flac) in set(keys)


def test_a_row_of_another_decoder_or_from_before_ffmpeg_is_not_used(tmp_path: Path, speech: list[np.ndarray]) -> None:
    audio = tmp_path / "audio"
    m4a = audio / "talk.m4a"
    encode(m4a, speech[0], SR, KINDS["m4a"])
    h = hash_file(m4a)
    spec, seg = SPEC, SegmentSpec()
    vector = np.zeros(spec.dim, dtype=np.float32)
    with FeatureStore(tmp_path / "cache", spec, segments=seg) as store:
        store.add(
            [
                # What a job before FFmpeg decoding cached for a named m4a, and another FFmpeg's row.
                FeatureRecord(h, "error", f"{UNRECOGNISED}.", 0, 0, 0.0, None),
                FeatureRecord(h, "ok", "", 44100, 1, 2.0, vector, decoder="ffmpeg-0.1-r1"),
            ]
        )
    table = annotate([audio], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert table.loc[str(m4a), "status"] == "ok" and summary["extracted"] == 1
    # And the row this FFmpeg wrote is used the next time.
    annotate([audio], tmp_path / "again")
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["extracted"] == 0


def test_broken_recordings_get_rows_with_their_reasons(tmp_path: Path, speech: list[np.ndarray]) -> None:
    audio = tmp_path / "audio"
    y = np.concatenate(speech[:2])
    encode(audio / "whole.m4a", y, SR, KINDS["m4a"])
    data = (audio / "whole.m4a").read_bytes()
    # A recorder writes the index ('moov') last: cut short, the file has none.
    (audio / "cut-short.m4a").write_bytes(data[: len(data) // 2])
    # With the index first (faststart), the audio present is labelled and the shortfall said.
    encode(audio / "faststart.m4a", y, SR, KINDS["m4a-faststart"])
    fast = (audio / "faststart.m4a").read_bytes()
    (audio / "faststart-cut.m4a").write_bytes(fast[: len(fast) * 2 // 3])
    # Bytes overwritten inside the audio data: those packets are skipped, and the warning says how many.
    damaged = bytearray(data)
    damaged[len(data) // 3 : len(data) // 3 + 4000] = np.random.default_rng(0).bytes(4000)
    (audio / "overwritten.m4a").write_bytes(bytes(damaged))
    (audio / "random.m4a").write_bytes(np.random.default_rng(1).bytes(30000))
    (audio / "text.wma").write_text("not a recording\n" * 100)
    encode(audio / "silent.webm", np.zeros(SR * 2, dtype=np.float32), SR, KINDS["webm"])
    video_only = tmp_path / "video-only.mp4"
    _video_without_sound(video_only)
    shutil.copy(video_only, audio / "video-only.mp4")
    table = annotate([audio], tmp_path / "out")
    row = table.loc
    assert row[f"{audio}/whole.m4a", "status"] == "ok" and pd.isna(row[f"{audio}/whole.m4a", "warning"])
    cut = row[f"{audio}/cut-short.m4a"]
    assert cut["status"] == "error" and cut["error"].startswith("truncated: the file ends inside its 'mdat' box")
    assert "no 'moov' index" in cut["error"]
    fast_cut = row[f"{audio}/faststart-cut.m4a"]
    assert fast_cut["status"] == "ok" and fast_cut["warning"].startswith("truncated: header declares")
    hurt = row[f"{audio}/overwritten.m4a"]
    assert hurt["status"] == "ok" and "packets could not be decoded and were skipped" in hurt["warning"]
    assert row[f"{audio}/random.m4a", "error"].startswith("cannot decode: neither libsndfile nor FFmpeg recognises")
    assert row[f"{audio}/text.wma", "error"].startswith("cannot decode: neither libsndfile nor FFmpeg")
    assert row[f"{audio}/silent.webm", "error"].startswith("silent")
    assert row[f"{audio}/video-only.mp4", "error"] == "no audio track: the file holds video streams only"
    assert (table["status"] == "error").sum() == 5
    # The verdicts are cached under FFmpeg's key: a rerun decodes nothing again.
    annotate([audio], tmp_path / "again")
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["extracted"] == 0


def _video_without_sound(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            picture = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            picture.pts = i
            out.mux(video.encode(picture))
        out.mux(video.encode(None))


def test_files_no_decoder_reads_are_counted_by_extension(
    tmp_path: Path, speech: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    audio = tmp_path / "audio"
    encode(audio / "memo.m4a", speech[0], SR, KINDS["m4a"])
    encode(audio / "memo-without-extension", speech[1], SR, KINDS["m4a"])  # known by its first bytes
    for name in ("notes.docx", "minutes.docx", "cover.heic", "labels.csv", ".DS_Store"):
        (audio / name).write_bytes(b"\x00\x00\x00\x18ftypheic" if name.endswith(".heic") else b"not audio")
    with zipfile.ZipFile(audio / "more.zip", "w") as zf:
        zf.writestr("x.txt", "inside")
    args = ["annotate", str(audio), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    expected = [
        "2 .docx: no decoder reads them",
        "1 .csv: no decoder reads them",
        "1 .heic: no decoder reads them",
        "1 .zip: archives inside a folder are not opened (name them as inputs to label their audio)",
    ]
    assert "job annotate" in printed and "2 files seen" in printed
    assert "skipped (no report rows): " + "; ".join(expected) in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [f"{r['files']} {r['extension']}: {r['why']}" for r in summary["skipped"]] == expected
    page = (tmp_path / "out" / "report.html").read_text()
    assert all(line.replace("'", "&#39;") in page for line in expected)
    table = pd.read_csv(tmp_path / "out" / "annotations.csv").set_index("path")
    assert set(table.index) == {f"{audio}/memo.m4a", f"{audio}/memo-without-extension"}
    assert (table["status"] != "error").all()

    # A folder of only M4A files is a folder of recordings; one of nothing decodable says what it skipped.
    only = tmp_path / "only-m4a"
    encode(only / "a.m4a", speech[2], SR, KINDS["m4a"])
    assert len(annotate([only], tmp_path / "only-out")) == 1
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.docx").write_bytes(b"x")
    capsys.readouterr()
    assert main(["annotate", str(docs), "--out", str(tmp_path / "docs-out"), "-q"]) == 1
    assert f"no audio files found in {docs} (skipped: 1 .docx: no decoder reads them)" in capsys.readouterr().err
    # Discovery alone: the counter, and the inside of a named archive too.
    named = tmp_path / "named.zip"
    with zipfile.ZipFile(named, "w") as zf:
        zf.writestr("a.m4a", (audio / "memo.m4a").read_bytes())
        zf.writestr("readme.txt", "x")
    skipped = Skipped()
    assert [f.member for f in discover([named], skipped=skipped)] == ["a.m4a"]
    assert skipped.rows() == [{"extension": ".txt", "files": 1, "why": "no decoder reads them"}]


def test_an_m4a_inside_an_archive_is_decoded(tmp_path: Path, speech: list[np.ndarray]) -> None:
    encode(tmp_path / "a.m4a", speech[3], SR, KINDS["m4a"])
    with zipfile.ZipFile(tmp_path / "calls.zip", "w") as zf:
        zf.write(tmp_path / "a.m4a", "call-1.m4a")
    table = annotate([tmp_path / "calls.zip"], tmp_path / "out")
    (row,) = table.itertuples()
    assert row.Index.endswith("calls.zip::call-1.m4a") and row.status == "ok"
    with zipfile.ZipFile(tmp_path / "calls.zip") as zf:
        from_member = load(io.BytesIO(zf.read("call-1.m4a")), sample_rate=SR).samples
    np.testing.assert_array_equal(from_member, load(tmp_path / "a.m4a", sample_rate=SR).samples)


def test_without_pyav_an_m4a_is_retried_and_a_wav_keeps_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PyAV is installed here; its absence is what a user without it meets.
    monkeypatch.setattr(decoders, "_av", lambda: None)
    monkeypatch.setattr(decoders, "decoder_tag", lambda: None)
    audio = tmp_path / "audio"
    encode(audio / "a.m4a", speechlike("sad", sr=SR, seconds=2.0), SR, KINDS["m4a"])
    (audio / "noise.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    table = annotate([audio], tmp_path / "out")
    m4a, wav = table.loc[f"{audio}/a.m4a"], table.loc[f"{audio}/noise.wav"]
    assert m4a["status"] == "retry" and m4a["error"].startswith("needs FFmpeg's decoders, which come with PyAV")
    assert wav["status"] == "error" and wav["error"].startswith(UNRECOGNISED)


# Long recordings --------------------------------------------------------------------------------


def _talk(speech: list[np.ndarray], repeats: int) -> np.ndarray:
    """The sentences again and again, between pauses of quiet noise."""
    rng = np.random.default_rng(0)
    parts = []
    for r in range(repeats):
        for k, y in enumerate(speech):
            parts.append((rng.normal(0, 1, round(SR * (1.0 + (r + k) % 3))) * 10 ** (-55 / 20)).astype(np.float32))
            parts.append(y)
    return np.concatenate(parts)


def test_a_long_m4a_is_labelled_by_its_speech_segments_as_its_flac_is(tmp_path: Path, speech: list[np.ndarray]) -> None:
    x = _talk(speech, repeats=2)  # about 40 s
    audio = tmp_path / "audio"
    samples = encode(audio / "talk.m4a", x, SR, KINDS["m4a"])
    sf.write(audio / "talk.flac", samples, KINDS["m4a"].rate, subtype="PCM_24")
    annotate([audio], tmp_path / "out", "--adapt", "none")
    segs = pd.read_csv(tmp_path / "out" / "segments.csv")
    files = pd.read_csv(tmp_path / "out" / "annotations.csv").set_index("path")
    m4a, flac = (segs[segs["path"] == f"{audio}/talk.{ext}"].reset_index(drop=True) for ext in ("m4a", "flac"))
    speech_m4a, speech_flac = m4a[m4a["label"].notna()], flac[flac["label"].notna()]
    assert len(speech_m4a) == len(speech_flac) == 2 * len(SENTENCES)  # each sentence one segment
    np.testing.assert_allclose(speech_m4a["start_s"], speech_flac["start_s"], atol=0.07)
    np.testing.assert_allclose(speech_m4a["end_s"], speech_flac["end_s"], atol=0.07)
    assert (speech_m4a["label"].to_numpy() == speech_flac["label"].to_numpy()).mean() >= 0.75
    a, b = files.loc[f"{audio}/talk.m4a"], files.loc[f"{audio}/talk.flac"]
    assert a["status"] == b["status"] == "ok" and a["segments"] == b["segments"]
    assert a["label"] == b["label"] and abs(a["speech_share"] - b["speech_share"]) < 0.02


def test_a_webm_without_a_duration_is_measured_and_streamed(tmp_path: Path, speech: list[np.ndarray]) -> None:
    """A browser's recording (MediaRecorder, a live WebM) declares no duration: its packets are counted."""
    audio = tmp_path / "audio"
    x = _talk(speech, repeats=1)  # about 17 s: a long file, labelled by speech segments
    encode(audio / "browser.webm", x, SR, dataclasses.replace(KINDS["webm"], options=(("live", "1"),)))
    with AudioStream(audio / "browser.webm", sample_rate=SR) as stream:
        assert abs(stream.declared_duration_s - len(x) / SR) < 0.05
    row = annotate([audio], tmp_path / "out").iloc[0]
    assert row["status"] == "ok" and row["segments"] == len(SENTENCES)


def test_a_long_m4a_is_split_into_parts_at_sample_exact_seeks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speech: list[np.ndarray]
) -> None:
    monkeypatch.setattr(longfile, "PART_S", 20.0)  # parts of 20 s instead of 300
    path = tmp_path / "talk.m4a"
    encode(path, _talk(speech, repeats=5), SR, KINDS["m4a"])  # about 100 s, 1.3 MB
    st = os.stat(path)
    task = ExtractTask(str(path), hash_file(path), size=st.st_size, verify=True,
                       stamp=(st.st_size, st.st_mtime_ns, st.st_ctime_ns))  # fmt: skip
    seg = SegmentSpec()
    parts = plan_parts(task, spec=SPEC, seg=seg)
    assert len(parts) >= 3 and {p.n_parts for p in parts} == {len(parts)}
    ((split,),) = run_tasks([task], spec=SPEC, segments=seg, backend="sequential", in_process_below=0)
    whole = extract_one(task, spec=SPEC, segments=seg)  # one pass, no seek
    assert split.status == whole.status == "ok" and split.decoder == whole.decoder == decoder_tag()
    assert split.duration_s == whole.duration_s and split.warning == whole.warning == ""
    a, b = whole.segments, split.segments
    assert a is not None and b is not None and len(a) == len(b)
    np.testing.assert_array_equal(a.start_s, b.start_s)
    np.testing.assert_array_equal(a.end_s, b.end_s)
    # Sample-exact seeks: the parts decode what one pass decodes (AAC's noise substitution, the one
    # random part of the decoder, restarts its generator after a seek; these files barely use it).
    np.testing.assert_allclose(b.vectors, a.vectors, rtol=1e-3, atol=1e-3 * np.abs(a.vectors).max())

    # Formats whose timestamps do not count samples stream in one pass.
    webm = tmp_path / "talk.webm"
    encode(webm, _talk(speech, repeats=4), SR, KINDS["webm"])
    assert plan_parts(dataclasses.replace(task, path=str(webm), size=2 << 20), spec=SPEC, seg=seg) == [
        dataclasses.replace(task, path=str(webm), size=2 << 20)
    ]


def test_seeks_in_an_m4a_land_on_the_sample(tmp_path: Path) -> None:
    y = speechlike("happy", sr=SR, seconds=30.0, seed=4)
    path = tmp_path / "a.m4a"
    encode(path, y, SR, dataclasses.replace(KINDS["m4a"], rate=SR))
    whole = load(path, sample_rate=SR).samples
    for start in (0, 7 * SR + 123, 20 * SR + 1):
        with AudioStream(path, sample_rate=SR) as stream:
            got = np.concatenate(list(stream.span(start, start + 2 * SR)))
        np.testing.assert_array_equal(got, whole[start : start + 2 * SR])
    with AudioStream(tmp_path / "a.m4a", sample_rate=SR) as stream:
        assert stream.declared_frames == len(y)  # the MP4 sample table, encoder delay trimmed
