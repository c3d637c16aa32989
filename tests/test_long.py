"""Long recordings: a 30-minute file labelled window by window, streamed, in bounded memory."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from batchser import engine, longfile
from batchser.api import load_model
from batchser.audio import load
from batchser.cache import FeatureStore, hash_file
from batchser.engine import ExtractTask, extract_one, extract_part, merge_parts, plan_parts, run_tasks
from batchser.features import FeatureSpec, extract
from batchser.job import run_job
from batchser.locations import default_model_path
from batchser.manifest import Manifest
from batchser.model.adapt import GroupStats
from batchser.segments import SegmentSpec, windows
from tests.conftest import PROJECT, SENTENCES, room_noise, speechlike

MODEL = PROJECT / "result" / "models" / "ravdess-4emo.skops"
SR = 16000
PERIOD_S, SOUND_S = 12, 6  # each 12 s: 6 s of sound, then 6 s of silence
KINDS = ["angry", "sad", "neutral", "happy"]


def _long_file(path: Path, *, minutes: float, sr: int = SR) -> float:
    """Sound/silence periods cycling through four signal kinds, written block by block."""
    periods = round(minutes * 60 / PERIOD_S)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        silence = np.zeros((PERIOD_S - SOUND_S) * sr, dtype=np.float32)
        for i in range(periods):
            f.write(speechlike(KINDS[i % 4], sr=sr, seconds=SOUND_S, seed=i).astype(np.float32))
            f.write(silence)
    return periods * PERIOD_S


def _job(tmp: Path, inputs: list[str], *, out: str, backend: str = "sequential") -> Path:
    m = {
        "name": out,
        "inputs": [{"path": p} for p in inputs],
        "emotions": KINDS,
        "cache": str(tmp / f"cache-{out}"),
        "engine": {"backend": backend, "n_jobs": 1 if backend == "sequential" else 2},
        "model": {"path": str(MODEL)},
        "output": {"dir": str(tmp / out)},
        "segments": {"method": "windows", "over_s": 10, "window_s": 4, "hop_s": 2},
    }
    p = tmp / f"{out}.yaml"
    p.write_text(yaml.safe_dump(m))
    return p


def _run_measured(manifest: Path) -> int:
    """Run a job in a child process; its peak RSS in KiB (the job runs in-process: sequential)."""
    proc = subprocess.Popen([sys.executable, "-m", "batchser", "run", "-q", str(manifest)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    return usage.ru_maxrss


def test_windows_cover_the_stream_exactly() -> None:
    x = np.arange(25 * 100, dtype=np.float32)
    chunks = np.array_split(x, 9)
    got = list(windows(iter(chunks), sample_rate=100, window_s=4, hop_s=2, min_tail_s=0.5))
    assert [s for s, _ in got] == [0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2100]
    assert all(np.array_equal(w, x[s : s + 400]) for s, w in got)
    # A tail shorter than min_tail_s gets no window of its own.
    assert [s for s, _ in windows([x[:2420]], sample_rate=100, window_s=4, hop_s=2, min_tail_s=0.5)][-1] == 2000


def test_a_30_minute_recording(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    total_s = _long_file(audio / "long.wav", minutes=30)
    short = tmp_path / "short-audio"
    short.mkdir()
    _long_file(short / "36s.wav", minutes=0.6)
    sf.write(short / "clip.wav", speechlike("sad", sr=SR, seconds=3.0), SR, subtype="PCM_16")  # not segmented

    # Memory follows the window, not the file: a 30-minute job peaks within 60 MiB of a 30-second one.
    # (Decoding the whole file would add 110 MiB of float32 samples alone.)
    rss_short = _run_measured(_job(tmp_path, [str(short)], out="short"))
    rss_long = _run_measured(_job(tmp_path, [str(audio)], out="long"))
    assert (rss_long - rss_short) / 1024 < 60, (rss_short, rss_long)

    segs = pd.read_parquet(tmp_path / "long" / "segments.parquet")
    row = pd.read_parquet(tmp_path / "long" / "annotations.parquet").iloc[0]
    # Windows every hop, each 4 s, exactly; the file is a whole number of hops, so no tail window.
    assert len(segs) == (total_s - 4) // 2 + 1 == row["segments"]
    np.testing.assert_array_equal(segs["start_s"], np.arange(len(segs)) * 2.0)
    np.testing.assert_array_equal(segs["end_s"] - segs["start_s"], 4.0)
    # Voiced where the window overlaps sound (0-6 s of each 12 s), silent where it does not.
    phase = segs["start_s"].to_numpy() % PERIOD_S
    expected = (phase < SOUND_S) | (phase + 4 > PERIOD_S)
    np.testing.assert_array_equal(segs["voiced"].to_numpy(), expected)
    # The file's row is the mean over voiced windows, and its label and dominant label follow.
    p_cols = [f"p_{k}" for k in KINDS]
    mean = segs.loc[segs["voiced"], p_cols].mean().to_numpy()
    np.testing.assert_allclose(row[p_cols].to_numpy(dtype=float), mean, rtol=1e-9)
    assert row["label"] == KINDS[int(np.argmax(mean))] and row["confidence"] == pytest.approx(mean.max())
    assert row["dominant_label"] == segs.loc[segs["voiced"], "label"].value_counts().idxmax()
    assert row["duration_s"] == pytest.approx(total_s) and row["status"] == "ok"
    assert (segs["path"] == row["path"]).all()

    short_ann = pd.read_parquet(tmp_path / "short" / "annotations.parquet").set_index("path")
    assert short_ann["segments"].to_dict() == {
        "short-audio/clip.wav": 0,
        "short-audio/36s.wav": (36 - 4) // 2 + 1,
    }

    # A rerun takes every window from the cache: no decoding at all.
    res = subprocess.run([sys.executable, "-m", "batchser", "run", "-q", str(tmp_path / "long.yaml")])
    assert res.returncode == 0
    again = pd.read_parquet(tmp_path / "long" / "segments.parquet")
    pd.testing.assert_frame_equal(segs, again)
    assert yaml.safe_load((tmp_path / "long" / "summary.json").read_text())["extracted"] == 0


def test_streamed_windows_match_windows_of_the_whole_decoded_file(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    _long_file(tmp_path / "a.wav", minutes=0.6, sr=48000)
    y, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    sf.write(path, np.stack([y, 0.5 * y], axis=1), 48000, subtype="PCM_24")  # 24-bit stereo at 48 kHz
    whole = load(path, sample_rate=SR).samples  # decoded and resampled in one piece
    # The librosa tutorial recipe's features, and the speech-rate ones, whose frames overlapping windows share.
    for names in (("mfcc", "chroma", "mel"), ("mfcc_stats", "logmel_stats", "spectral_stats", "prosody")):
        spec = FeatureSpec(names, SR)
        rec = extract_one(ExtractTask(str(path), "h"), spec=spec, segments=SegmentSpec(method="windows"))
        assert rec.ok and rec.channels == 2 and rec.orig_sample_rate == 48000 and rec.duration_s == pytest.approx(36)
        segs = rec.segments
        assert segs is not None and len(segs) == 17
        for j in (0, 1, 8, 16):
            a, b = round(segs.start_s[j] * SR), round(segs.end_s[j] * SR)
            ref = extract(whole[a:b], spec=spec)
            np.testing.assert_allclose(segs.vectors[j], ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    # Shorter than over_s: one vector for the whole file, as before.
    sf.write(tmp_path / "b.wav", y[: 48000 * 5], 48000)
    assert (
        extract_one(
            ExtractTask(str(tmp_path / "b.wav"), "h2"), spec=spec, segments=SegmentSpec(method="windows")
        ).segments
        is None
    )


def _listed(path: Path) -> ExtractTask:
    """``path`` as the job hands it to the engine: hashed, with its listing stamp."""
    st = os.stat(path)
    return ExtractTask(
        str(path), hash_file(path), size=st.st_size, verify=True, stamp=(st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    )


SPEECH = FeatureSpec(("mfcc_stats", "logmel_stats", "spectral_stats", "prosody", "voice_stats"), SR)


@pytest.mark.parametrize(("sr", "rtol"), [(SR, 1e-5), (44100, 1e-3)])
def test_a_long_file_in_parts_gives_the_windows_of_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sr: int, rtol: float
) -> None:
    monkeypatch.setattr(longfile, "PART_S", 20.0)  # 10 windows a part instead of 150
    path = tmp_path / "long.wav"
    _long_file(path, minutes=1.5, sr=sr)
    task, seg = _listed(path), SegmentSpec(method="windows")
    parts = plan_parts(task, spec=SPEECH, seg=seg)
    # 47 windows (0, 2, ..., 92 s): three parts of 10, the last with the other 17.
    assert [(p.part, p.n_parts, p.part_windows) for p in parts] == [(k, 4, 10) for k in range(4)]
    merged = merge_parts([extract_part(p, spec=SPEECH, seg=seg) for p in reversed(parts)])  # any order
    whole = extract_one(task, spec=SPEECH, segments=seg)
    assert (merged.status, merged.duration_s, merged.warning) == ("ok", whole.duration_s, whole.warning)
    assert merged.duration_s == 96
    a, b = whole.segments, merged.segments
    assert a is not None and b is not None and len(a) == len(b) == 47
    np.testing.assert_array_equal(a.start_s, b.start_s)
    np.testing.assert_array_equal(a.end_s, b.end_s)
    np.testing.assert_array_equal(a.voiced, b.voiced)
    # Equal up to float rounding (at 44.1 kHz the resampler restarts at each part, a second early).
    np.testing.assert_allclose(b.vectors, a.vectors, rtol=rtol, atol=rtol * np.abs(a.vectors).max())

    # Through the engine's workers (which know nothing of PART_S) the same; progress hears of each part.
    heard: list[int] = []
    for backend in ("sequential", "loky"):
        heard.clear()
        (batch,) = run_tasks(
            [task],
            spec=SPEECH,
            segments=seg,
            backend=backend,
            n_jobs=2,
            in_process_below=0,
            on_part=lambda t: heard.append(t.part),
        )
        (rec,) = batch
        assert rec.status == "ok" and len(heard) == 3 and rec.segments is not None
        np.testing.assert_allclose(rec.segments.vectors, b.vectors, rtol=1e-6, atol=1e-6)


def test_speech_parts_of_a_44k_file_start_between_its_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 44.1 kHz only every 160th 16 kHz sample falls on an input sample; the parts' reads start on one."""
    monkeypatch.setattr(longfile, "PART_S", 20.0)
    path = tmp_path / "long.wav"
    _long_file(path, minutes=1.5, sr=44100)
    task, seg = _listed(path), SegmentSpec()  # speech segments: frames of 512 samples, parts of whole frames
    assert len(plan_parts(task, spec=SPEECH, seg=seg)) == 4
    ((split,),) = run_tasks([task], spec=SPEECH, segments=seg, backend="sequential", in_process_below=0)
    whole = extract_one(task, spec=SPEECH, segments=seg)
    assert (split.status, split.error, split.duration_s) == (whole.status, whole.error, whole.duration_s)


def test_parts_of_a_truncated_changed_or_silent_long_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(longfile, "PART_S", 20.0)
    seg = SegmentSpec(method="windows")
    # A header declaring 96 s over 50 s of data: planned on what is there (libsndfile counts the frames
    # present), and the part that reaches the end warns, as one pass does.
    cut = tmp_path / "cut.wav"
    _long_file(cut, minutes=1.5)
    with open(cut, "r+b") as f:
        f.truncate(44 + 50 * SR * 2)
    task = _listed(cut)
    parts = plan_parts(task, spec=SPEECH, seg=seg)
    assert len(parts) == 2
    merged = merge_parts([extract_part(p, spec=SPEECH, seg=seg) for p in parts])
    whole = extract_one(task, spec=SPEECH, segments=seg)
    assert merged.status == whole.status == "ok" and merged.warning == whole.warning
    assert merged.warning.startswith("truncated: header declares") and merged.duration_s == whole.duration_s == 50
    assert merged.segments is not None and whole.segments is not None
    np.testing.assert_array_equal(merged.segments.start_s, whole.segments.start_s)

    # A file rewritten after it was listed: the part says so and the file is retried, never cached.
    changed = tmp_path / "changed.wav"
    _long_file(changed, minutes=1.5)
    task = _listed(changed)
    parts = plan_parts(task, spec=SPEECH, seg=seg)
    first = extract_part(parts[0], spec=SPEECH, seg=seg)
    with open(changed, "r+b") as f:
        f.seek(50_000)
        f.write(b"\x7f" * 100)
    rest = [extract_part(p, spec=SPEECH, seg=seg) for p in parts[1:]]
    assert first.status == "ok" and {r.status for r in rest} == {"retry"}
    rec = merge_parts([first, *rest])
    assert (rec.status, rec.error) == ("retry", engine.CHANGED)

    # Silence is judged over the whole file, not per part.
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros(90 * SR, dtype=np.float32), SR, subtype="PCM_16")
    task = _listed(quiet)
    parts = plan_parts(task, spec=SPEECH, seg=seg)
    assert len(parts) == 4
    rec = merge_parts([extract_part(p, spec=SPEECH, seg=seg) for p in parts])
    assert (
        rec.status == "error"
        and rec.error.startswith("silent")
        and rec.error == extract_one(task, spec=SPEECH, segments=seg).error
    )

    # Not split: archive members, files without a listing stamp, formats whose seeks are not exact.
    assert plan_parts(dataclasses.replace(task, stamp=None), spec=SPEECH, seg=seg) == [
        dataclasses.replace(task, stamp=None)
    ]
    ogg = tmp_path / "long.ogg"
    sf.write(ogg, speechlike("sad", sr=SR, seconds=90).astype(np.float32), SR, format="OGG")
    assert len(plan_parts(dataclasses.replace(_listed(ogg), size=2 << 20), spec=SPEECH, seg=seg)) == 1


# A long recording standardised over itself -------------------------------------------------------


def _talk(say, n: int, *, seed: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``n`` espeak-ng sentences in two voices, 0.5-1.5 s of room noise between them."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(n):
        voice, pitch = (("en+f3", 80), ("en+m3", 30))[k % 2]
        parts += [
            room_noise(float(rng.uniform(0.5, 1.5)), seed=seed + k),
            say(SENTENCES[k % len(SENTENCES)], voice, pitch),
        ]
    return np.concatenate([*parts, room_noise(1.0, seed=seed + n)])


def _annotate(tmp: Path, audio: Path, out: str, **model: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    job = {"name": out, "inputs": [{"path": str(audio)}], "cache": str(tmp / "cache"), "model": model,
           "engine": {"backend": "sequential", "n_jobs": 1}, "output": {"dir": str(tmp / out)}}  # fmt: skip
    run_job(Manifest.from_dict(job, base_dir=tmp), progress=False)
    ann = pd.read_parquet(tmp / out / "annotations.parquet").set_index("path")
    segs = pd.read_parquet(tmp / out / "segments.parquet")
    return ann, segs[segs["label"].notna()]


def test_a_long_recording_is_standardised_over_its_own_speech(tmp_path: Path, say) -> None:  # type: ignore[no-untyped-def]
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "interview.wav", _talk(say, 26), SR, subtype="PCM_16")
    sf.write(audio / "brief.wav", _talk(say, 4, seed=50), SR, subtype="PCM_16")  # long, but little speech
    for k, kind in enumerate(KINDS):
        sf.write(audio / f"clip-{kind}.wav", speechlike(kind, sr=SR, seconds=2.0, seed=k), SR)
    ann, segs = _annotate(tmp_path, audio, "own")
    before, before_segs = _annotate(tmp_path, audio, "before", min_file_segments=None)
    talk = "audio/interview.wav"  # reports name files relative to the job's root
    mine = segs[segs["path"] == talk]
    assert len(mine) >= 20 and (mine["normalized_by"] == "file").all() and ann.loc[talk, "normalized_by"] == "file"
    assert before.loc[talk, "normalized_by"] == "" or pd.isna(before.loc[talk, "normalized_by"])  # 6 files: no group
    # Each segment: the model on its vector standardised by the recording's own segments.
    model = load_model(default_model_path())
    spec = FeatureSpec.from_dict(model.meta.feature_spec)
    with FeatureStore(tmp_path / "cache", spec, segments=SegmentSpec()) as store:
        X = store.get(hash_file(audio / "interview.wav")).segments.vectors.astype(np.float64)  # type: ignore[union-attr]
    stats = GroupStats.fit(X, ["file"] * len(X), min_files=2)
    p, covered = model.predict_proba_by_speaker(X, ["file"] * len(X), stats)
    p_cols = [f"p_{k}" for k in model.meta.classes]
    assert covered.all()
    np.testing.assert_allclose(mine[p_cols].to_numpy(), p, atol=1e-6)
    assert not np.allclose(before_segs[before_segs["path"] == talk][p_cols].to_numpy(), p, atol=1e-3)
    # Too little speech of its own: the recording falls back to its input's group, as before (none here).
    brief = "audio/brief.wav"
    assert (segs[segs["path"] == brief]["normalized_by"].fillna("") == "").all()
    pd.testing.assert_frame_equal(
        segs[segs["path"] == brief].reset_index(drop=True),
        before_segs[before_segs["path"] == brief].reset_index(drop=True),
    )
    # Short clips in the same job are unchanged.
    clips = [p for p in ann.index if "clip-" in p]
    pd.testing.assert_frame_equal(ann.loc[clips], before.loc[clips])
    page = (tmp_path / "own" / "report.html").read_text()
    assert '<span class="normalized-by">standardised over its own speech</span>' in page
    assert '<span class="pill">file: 1</span>' in page
