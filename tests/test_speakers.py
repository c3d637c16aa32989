"""Who speaks: speaker turns from RTTM, Praat TextGrid and ELAN files, matched to recordings, cutting and
grouping their speech segments; and speakers named by a path,speaker table or a speaker-only pattern.

Recordings are espeak-ng voices taking turns (tests/conftest.py ``say``); turns files are written with the
tools' own libraries (praatio, pympi-ling) where there is one.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchser.api import annotation_manifest, load_model
from batchser.cache import FeatureStore, hash_file
from batchser.cli import main
from batchser.discover import SourceFile
from batchser.features import FeatureSpec
from batchser.job import run_job
from batchser.locations import default_model_path
from batchser.manifest import Manifest, ManifestError
from batchser.model.adapt import GroupStats
from batchser.segments import SegmentSpec, cut_key
from batchser.speakers import (
    SpeakerTurns,
    Turn,
    Turns,
    TurnsError,
    TurnsSource,
    is_anonymous,
    read_eaf,
    read_rttm,
    read_textgrid,
)
from batchser.speakers.match import InputTurns
from tests.conftest import room_noise, speechlike, write_audio

SR = 16000
VOICES = {"alice": ("en+f3", 80), "bob": ("en+m3", 30), "dave": ("en+m1", 50), "SPEAKER_01": ("en+f5", 60)}
SHORT = ["Kids are talking by the door.", "I never said she stole my money.", "The weather is lovely today.",
         "Where did you put the keys?", "Please call Stella.", "Dogs are sitting by the door."]  # fmt: skip
TURNS = [(0.5, 2.0, "alice"), (2.4, 4.0, "bob"), (4.5, 6.25, "alice")]


# -- reading each format -----------------------------------------------------------------------


def _rttm(path: Path, rows: list[tuple[str, float, float, str]], extra: str = "") -> Path:
    lines = [f"SPEAKER {rec} 1 {a:.3f} {b - a:.3f} <NA> <NA> {who} <NA> <NA>" for rec, a, b, who in rows]
    path.write_text(extra + "\n".join(lines) + "\n")
    return path


def _textgrid(path: Path, tiers: dict[str, list[tuple[float, float, str]]], end: float = 7.0) -> Path:
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier

    tg = textgrid.Textgrid()
    for name, entries in tiers.items():
        tg.addTier(IntervalTier(name, entries, 0, end))
    tg.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    return path


def _eaf(path: Path, tiers: dict[str, tuple[str, list[tuple[float, float]]]]) -> Path:
    from pympi.Elan import Eaf

    eaf = Eaf(author="test")
    eaf.add_linguistic_type("translation", constraints="Symbolic_Association", timealignable=False)
    for tier, (participant, spans) in tiers.items():
        eaf.add_tier(tier, part=participant)
        for a, b in spans:
            eaf.add_annotation(tier, round(a * 1000), round(b * 1000), "words")
        eaf.add_tier(f"{tier}-en", ling="translation", parent=tier)  # a dependent tier: not a speaker
        eaf.add_ref_annotation(f"{tier}-en", tier, round(spans[0][0] * 1000) + 1, "a translation")
    eaf.remove_tier("default")
    eaf.to_file(str(path))
    return path


def _spans(turns: Turns) -> list[tuple[float, float, str]]:
    return [(round(t.start_s, 3), round(t.end_s, 3), t.speaker) for t in turns.turns]


def test_rttm_textgrid_and_elan_give_the_same_turns(tmp_path: Path) -> None:
    rows = [("talk", a, b, who) for a, b, who in TURNS] + [("other", 1.0, 2.0, "carol")]
    head = ";; a comment\nSPKR-INFO talk 1 <NA> <NA> <NA> unknown alice <NA> <NA>\n\n"
    talk, other = read_rttm(_rttm(tmp_path / "x.rttm", rows, head))
    assert (talk.recording, other.recording) == ("talk", "other")
    assert _spans(talk) == TURNS and talk.speakers == ("alice", "bob") and _spans(other) == [(1.0, 2.0, "carol")]
    by_tier = {who: [(a, b, "yes") for a, b, w in TURNS if w == who] for who in ("alice", "bob")}
    assert _spans(read_textgrid(_textgrid(tmp_path / "tiers.TextGrid", by_tier), "talk")) == TURNS
    # A tier named "speaker" holds the names; the aligner's "<speaker> - words/phones" tiers are the speaker's.
    named = {"speaker": [(a, b, who) for a, b, who in TURNS], "notes": [(0.0, 7.0, "whole")]}
    assert _spans(read_textgrid(_textgrid(tmp_path / "named.TextGrid", named), "talk")) == TURNS
    mfa = {"alice - words": [(0.5, 1.2, "kids"), (1.2, 2.0, "are"), (4.5, 6.25, "dogs")],
           "alice - phones": [(0.5, 0.7, "K")], "bob - words": [(2.4, 4.0, "no")]}  # fmt: skip
    assert _spans(read_textgrid(_textgrid(tmp_path / "mfa.TextGrid", mfa), "talk")) == TURNS
    elan = {"A": ("alice", [(a, b) for a, b, w in TURNS if w == "alice"]), "Interviewer": ("", [(2.4, 4.0)])}
    got = read_eaf(_eaf(tmp_path / "talk.eaf", elan), "talk")
    assert _spans(got) == [(0.5, 2.0, "alice"), (2.4, 4.0, "Interviewer"), (4.5, 6.25, "alice")]


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("a.rttm", "SPEAKER talk 1 zero 1.0 <NA> <NA> alice <NA> <NA>\n", "a.rttm line 1: start 'zero'"),
        ("b.rttm", ";; header\nSPEAKER talk 1 0.5 1.0\n", "b.rttm line 2: a SPEAKER line needs 8 or more fields"),
        ("c.rttm", "SPEAKER talk 1 0.5 -1 <NA> <NA> alice <NA> <NA>\n", "duration -1 must not be negative"),
        ("d.rttm", "SPKR-INFO talk 1 <NA> <NA> <NA> unknown alice <NA> <NA>\n", "holds no SPEAKER line"),
        ("e.TextGrid", "this is not a TextGrid\n", "cannot read .*e.TextGrid as a Praat TextGrid"),
        ("f.eaf", "<ANNOTATION_DOCUMENT><broken", "cannot read .*f.eaf as an ELAN file"),
    ],
)
def test_unreadable_turns_name_the_file_and_line(tmp_path: Path, name: str, text: str, why: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(TurnsError, match=why):
        TurnsSource(tmp_path / name).load()


def test_where_the_speaker_changes_and_who_speaks_in_a_segment() -> None:
    gap = Turns.of("r", "t", [Turn(0, 5, "A"), Turn(5.4, 8, "B")])
    overlap = Turns.of("r", "t", [Turn(0, 5, "A"), Turn(4.5, 8, "B"), Turn(8, 9, "A")])
    backchannel = Turns.of("r", "t", [Turn(0, 10, "A"), Turn(4, 4.5, "B"), Turn(10.2, 12, "C")])
    assert gap.change_points() == pytest.approx((5.2,))  # the middle of the pause
    assert overlap.change_points() == pytest.approx((4.75, 8.0))  # the middle of the overlap; touching turns
    assert backchannel.change_points() == pytest.approx((10.1,))  # an "mm-hm" over A's turn changes nothing
    assert overlap.speakers_of([0, 4, 6, 20], [3, 6, 8.6, 21]) == ["A", "B", "B", ""]
    assert gap.speakers_of([4.0, 4.6], [6.0, 6.0]) == ["A", "B"]  # 1.0 s of A against 0.6 of B; then 0.4 against 0.6
    # Turns of one speaker that touch or overlap are one; zero-length ones go.
    merged = Turns.of("r", "t", [Turn(0, 2, "A"), Turn(1, 3, "A"), Turn(3, 4, "A"), Turn(5, 5, "B")])
    assert _spans(merged) == [(0.0, 4.0, "A")] and merged.change_points() == ()
    with pytest.raises(TurnsError, match=r"ends .* before it starts"):
        Turns.of("r", "t", [Turn(2, 1, "A")])
    assert is_anonymous("SPEAKER_00") and is_anonymous("speaker_1") and is_anonymous("spk2")
    assert not is_anonymous("alice") and not is_anonymous("f1") and not is_anonymous("Actor_01")


# -- matching turns to recordings --------------------------------------------------------------


def _file(path: Path, input_index: int = 0, member: str = "") -> SourceFile:
    return SourceFile(path, input_index, 1000, 0, member=member)


def test_recordings_are_matched_by_their_path_below_the_input_then_by_name(tmp_path: Path) -> None:
    turns = tmp_path / "turns"
    (turns / "2024").mkdir(parents=True)
    _rttm(turns / "calls.rttm", [("intro", 0, 1, "alice"), ("gone", 0, 1, "bob")])
    _textgrid(turns / "2024" / "call-03.TextGrid", {"alice": [(0.0, 1.0, "hi")]})
    _eaf(turns / "2024" / "call-04.eaf", {"A": ("bob", [(0.0, 1.0)])})
    (turns / "notes.txt").write_text("not turns")
    source = TurnsSource.parse(f"{turns}", resolve=Path)
    assert [(p.name, fmt, name) for p, fmt, name in source.files()] == [
        ("call-03.TextGrid", "textgrid", "2024/call-03"),
        ("call-04.eaf", "eaf", "2024/call-04"),
        ("calls.rttm", "rttm", "calls"),  # an RTTM's recordings are named by its file ids
    ]
    assert [f.name for f, *_ in TurnsSource.parse(f"rttm:{turns}", resolve=Path).files()] == ["calls.rttm"]
    audio = tmp_path / "audio"
    index = SpeakerTurns({0: InputTurns("inputs[0].speakers", source, audio, source.load())})
    assert index.match(_file(audio / "2024" / "call-03.wav")).speakers == ("alice",)  # by its path below the input
    assert index.match(_file(audio / "old" / "intro.flac")).recording == "intro"  # by its name (RTTM file ids)
    assert index.match(_file(audio / "x.zip", member="2024/call-04.wav")).speakers == ("bob",)  # archive members too
    assert index.match(_file(audio / "unknown.wav")) is None and index.match(_file(audio / "a.wav", 1)) is None
    problems, notes = index.check()
    assert problems == [] and notes == [f"inputs[0].speakers: 1 of the recordings {turns / 'calls.rttm'} names are "
                                        "not in the job ('gone')"]  # fmt: skip
    index.match(_file(audio / "new" / "intro.wav"))  # a second "intro": which one did the RTTM mean?
    problems, _ = index.check()
    assert len(problems) == 1 and "the turns for 'intro'" in problems[0] and "fit 2 recordings" in problems[0]
    assert "old/intro.flac" in problems[0] and "new/intro.wav" in problems[0]
    fresh = SpeakerTurns({0: InputTurns("inputs[0].speakers", source, audio, source.load())})
    fresh.match(_file(audio / "intro.wav"))
    problems, _ = fresh.check()
    assert [p.split(":", 1)[0] for p in problems] == ["inputs[0].speakers"] * 2
    assert all("names no recording of this input" in p for p in problems)  # the TextGrid and the EAF
    with pytest.raises(TurnsError, match="names no format; write rttm:, textgrid: or eaf:"):
        TurnsSource(turns / "notes.txt").files()
    (tmp_path / "empty").mkdir()
    with pytest.raises(TurnsError, match=r"holds no \.eaf, \.rttm, \.textgrid file"):
        TurnsSource(tmp_path / "empty").files()
    with pytest.raises(TurnsError, match="does not exist"):
        TurnsSource(tmp_path / "nowhere").files()


# -- the job -----------------------------------------------------------------------------------


def _conversation(say, plan: list[str], *, gap: float = 0.6, quick: set[int] = frozenset()) -> tuple[np.ndarray, list]:  # type: ignore[no-untyped-def]
    """Each speaker of ``plan`` says the next sentence in their voice; returns the audio and its turns.

    Pauses are ``gap`` seconds of room noise, or 0.12 s after the utterances whose index is in ``quick``
    (shorter than a pause the voice-activity model splits at, so one segment runs across the change).
    """
    parts, turns, at = [room_noise(0.5, seed=99)], [], 0.5
    for k, who in enumerate(plan):
        voice, pitch = VOICES[who]
        y = say(SHORT[k % len(SHORT)], voice, pitch)
        turns.append((at, at + len(y) / SR, who))
        pause = room_noise(0.12 if k in quick else gap, seed=k)
        parts += [y, pause]
        at += (len(y) + len(pause)) / SR
    return np.concatenate(parts), turns


def _job(tmp: Path, audio: Path, out: str, **kw: object) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    m = annotation_manifest([audio], out_dir=tmp / out, cache=tmp / "cache", backend="sequential", n_jobs=1, **kw)
    summary = run_job(m, progress=False)
    ann = pd.read_parquet(tmp / out / "annotations.parquet")
    segs = pd.read_parquet(tmp / out / "segments.parquet") if (tmp / out / "segments.parquet").exists() else None
    return {"extracted": summary.n_extracted, "cached": summary.n_cached}, ann, segs  # type: ignore[return-value]


def test_a_segment_crossing_a_turn_change_is_cut_there_and_cached_under_its_cuts(tmp_path: Path, say) -> None:  # type: ignore[no-untyped-def]
    plan = ["alice", "bob", "alice", "bob", "alice", "bob"]
    x, turns = _conversation(say, plan, quick={0, 2})  # alice hands over to bob at once, twice
    audio = write_audio(tmp_path / "audio" / "talk.wav", x, SR, subtype="PCM_16").parent
    rttm = _rttm(tmp_path / "talk.rttm", [("talk", a, b, who) for a, b, who in turns])
    changes = read_rttm(rttm)[0].change_points()  # as the job reads them (times to the millisecond)
    quick = [changes[0], changes[2]]  # after utterances 0 and 2
    counts, ann, plain = _job(tmp_path, audio, "plain")
    labelled = plain[plain["label"].notna()]
    across = [c for c in quick if ((labelled["start_s"] < c - 0.3) & (labelled["end_s"] > c + 0.3)).any()]
    assert across == quick  # without turns, one segment holds both voices
    assert labelled["speaker"].isna().all() and counts["extracted"] == 1
    counts, ann, cut = _job(tmp_path, audio, "cut", speakers=rttm)
    labelled = cut[cut["label"].notna()]
    for c in changes:  # no segment crosses a change any more (but by a sliver under min_speech_s, 0.25 s)
        assert not ((labelled["start_s"] < c - 0.25) & (labelled["end_s"] > c + 0.25)).any(), c
    for c in quick:
        cut_at = round(c * SR) / SR  # in whole samples
        assert np.isclose(labelled["end_s"], cut_at).any() and np.isclose(labelled["start_s"], cut_at).any()
    assert len(labelled) >= len(plain[plain["label"].notna()]) + 2
    # Every piece gets the speaker of its turn; the stretches between have none.
    mid = (labelled["start_s"] + labelled["end_s"]) / 2
    truth = [next(w for a, b, w in turns if a - 0.3 <= m <= b + 0.3) for m in mid]
    assert labelled["speaker"].tolist() == truth
    assert cut.loc[cut["label"].isna(), "speaker"].isna().all()
    assert pd.read_csv(tmp_path / "cut" / "segments.csv")["speaker"].dropna().tolist() == truth
    # The cut segments are cached under a key of the content and the cuts, the report keeps the content hash.
    h = hash_file(audio / "talk.wav")
    assert counts["extracted"] == 1 and ann["content_hash"].tolist() == [h]
    spec = FeatureSpec.from_dict(load_model(default_model_path()).meta.feature_spec)
    with FeatureStore(tmp_path / "cache", spec, segments=SegmentSpec()) as store:
        assert len(store.get(cut_key(h, changes)).segments) == len(labelled)  # type: ignore[union-attr]
        assert len(store.get(h).segments) == len(plain[plain["label"].notna()])  # type: ignore[union-attr]
    renamed = _rttm(tmp_path / "renamed.rttm", [("talk", a, b, {"alice": "A", "bob": "B"}[w]) for a, b, w in turns])
    counts, _, again = _job(tmp_path, audio, "renamed", speakers=renamed)
    assert counts == {"extracted": 0, "cached": 1}  # names are not cuts: nothing is analysed again
    assert again["speaker"].dropna().tolist() == [{"alice": "A", "bob": "B"}[w] for w in truth]


def _segment_vectors(tmp: Path, audio: Path, turns: Turns | None) -> np.ndarray:
    """A long file's segment vectors as the job cached them (cut at ``turns``' changes)."""
    spec = FeatureSpec.from_dict(load_model(default_model_path()).meta.feature_spec)
    h = hash_file(audio)
    with FeatureStore(tmp / "cache", spec, segments=SegmentSpec()) as store:
        rec = store.get(cut_key(h, turns.change_points() if turns else ()))
    assert rec is not None and rec.segments is not None
    return rec.segments.vectors.astype(np.float64)


def _expected(X: np.ndarray, groups: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """The shipped model's probabilities of rows ``X`` standardised by the groups named (their rows given)."""
    model = load_model(default_model_path())
    stats = GroupStats.fit(np.concatenate([groups[k] for k in groups]),
                           [k for k in groups for _ in range(len(groups[k]))], min_files=2)  # fmt: skip
    p, covered = model.predict_proba_by_speaker(X, keys, stats)
    assert covered.all()
    return p


def test_segments_are_standardised_per_speaker_within_the_file_and_across_files(tmp_path: Path, say) -> None:  # type: ignore[no-untyped-def]
    """alice (named) speaks in both recordings, 6 times in each: one group of 12, which the 10 a speaker
    needs (the model's min_speaker_files) allow; SPEAKER_01 (a diarizer's name) is a group within its own
    recording only; dave says too little for a group and is standardised over his recording's speech."""
    one, turns_one = _conversation(say, ["alice", "bob", "bob"] * 6 + ["dave", "dave"])
    two, turns_two = _conversation(say, ["SPEAKER_01", "SPEAKER_01", "alice"] * 6)
    audio = tmp_path / "audio"
    write_audio(audio / "one.wav", one, SR, subtype="PCM_16")
    write_audio(audio / "two.flac", two, SR)
    folder = tmp_path / "turns"
    folder.mkdir()
    _rttm(folder / "one.rttm", [("one", a, b, w) for a, b, w in turns_one])
    by_tier: dict[str, list[tuple[float, float, str]]] = {}
    for a, b, w in turns_two:
        by_tier.setdefault(w, []).append((a, b, "words"))
    _textgrid(folder / "two.TextGrid", by_tier, end=len(two) / SR)  # a folder of turns in two formats
    job = Manifest.from_dict({
        "name": "t", "inputs": [{"path": str(audio), "speakers": str(folder)}], "cache": str(tmp_path / "cache"),
        "engine": {"backend": "sequential", "n_jobs": 1}, "model": {"min_file_segments": 5},
        "output": {"dir": str(tmp_path / "out")},
    }, base_dir=tmp_path)  # fmt: skip
    run_job(job, progress=False)
    segs = pd.read_parquet(tmp_path / "out" / "segments.parquet")
    segs = segs[segs["label"].notna()]
    ann = pd.read_parquet(tmp_path / "out" / "annotations.parquet").set_index("path")
    rows = {n: segs[segs["path"] == f"audio/{n}"].reset_index(drop=True) for n in ("one.wav", "two.flac")}
    read = TurnsSource(folder).load()  # the turns as the job read them
    t_one, t_two = read["one"], read["two"]
    X = {"one.wav": _segment_vectors(tmp_path, audio / "one.wav", t_one),
         "two.flac": _segment_vectors(tmp_path, audio / "two.flac", t_two)}  # fmt: skip
    who = {n: rows[n]["speaker"].to_numpy() for n in rows}
    assert set(who["one.wav"]) == {"alice", "bob", "dave"} and set(who["two.flac"]) == {"alice", "SPEAKER_01"}
    rule = {n: dict(zip(rows[n]["speaker"], rows[n]["normalized_by"], strict=True)) for n in rows}
    assert rule["one.wav"] == {"alice": "speaker", "bob": "speaker", "dave": "file"}
    assert rule["two.flac"] == {"alice": "speaker", "SPEAKER_01": "file-speaker"}
    assert ann.loc["audio/one.wav", "normalized_by"] == "speaker"  # the rule of most of its speech
    # Each segment's probabilities: the model on its vector standardised by exactly its group's segments.
    groups = {
        "speaker:audio/alice": np.concatenate([X[n][who[n] == "alice"] for n in rows]),
        "speaker:audio/bob": X["one.wav"][who["one.wav"] == "bob"],
        "file": X["one.wav"],
    }
    keys = [{"alice": "speaker:audio/alice", "bob": "speaker:audio/bob", "dave": "file"}[w] for w in who["one.wav"]]
    p = rows["one.wav"][["p_angry", "p_sad", "p_neutral", "p_happy"]].to_numpy()
    np.testing.assert_allclose(p, _expected(X["one.wav"], groups, keys), atol=1e-6)
    groups = {"speaker:audio/alice": groups["speaker:audio/alice"],
              "file-speaker": X["two.flac"][who["two.flac"] == "SPEAKER_01"]}  # fmt: skip
    keys = ["file-speaker" if w == "SPEAKER_01" else "speaker:audio/alice" for w in who["two.flac"]]
    p = rows["two.flac"][["p_angry", "p_sad", "p_neutral", "p_happy"]].to_numpy()
    np.testing.assert_allclose(p, _expected(X["two.flac"], groups, keys), atol=1e-6)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "speakers alice, bob, dave" in page and "each speaker standardised over their own speech in the job" in page


def _clips(folder: Path) -> list[str]:
    """Ten short clips of each of two speakers, in one folder (no speaker folders), generated."""
    names = []
    for who in ("ann", "ben"):
        for k in range(10):
            kind = ("angry", "sad", "neutral", "happy")[k % 4]
            y = speechlike(kind, sr=SR, seconds=1.0, seed=k + (100 if who == "ben" else 0))
            if who == "ben":
                y = (y * 0.3).astype(np.float32)  # another microphone
            names.append(f"{who}_{k:02d}.wav")
            write_audio(folder / names[-1], y, SR)
    return names


@pytest.mark.parametrize("source", ["table", "empty labels", "pattern", "cli"])
def test_an_unlabelled_archive_names_its_speakers_without_folders(
    tmp_path: Path, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    names = _clips(tmp_path / "audio")
    if source == "pattern":
        labels: object = {"pattern": r"^(?P<speaker>[a-z]+)_\d+\.wav$"}
    else:
        header, cells = ("path,label,speaker", ",") if source == "empty labels" else ("path,speaker", "")
        rows = [f"audio/{n}{cells},{n.split('_')[0]}" if cells else f"audio/{n},{n.split('_')[0]}" for n in names]
        (tmp_path / "who.csv").write_text("\n".join([header, *rows]) + "\n")
        labels = "csv:who.csv"
    out = tmp_path / "out"
    if source == "cli":
        proc = subprocess.run(
            [sys.executable, "-m", "batchser", "annotate", str(tmp_path / "audio"), "--out", str(out), "--cache",
             str(tmp_path / "cache"), "-j", "1", "--speakers", str(tmp_path / "who.csv")],
            capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    else:
        caplog.set_level(logging.INFO, logger="batchser")
        job = {"name": "t", "inputs": [{"path": "audio", "labels": labels}], "cache": "cache", "model": {},
               "engine": {"backend": "sequential", "n_jobs": 1}, "output": {"dir": "out"}}  # fmt: skip
        run_job(Manifest.from_dict(job, base_dir=tmp_path), progress=True)  # says what each input's labels gave
        assert "inputs[0] (audio): a speaker for 20 of 20 files" in caplog.text
    ann = pd.read_csv(out / "annotations.csv")
    assert sorted(ann["speaker"]) == ["ann"] * 10 + ["ben"] * 10
    assert (ann["normalized_by"] == "speaker").all() and ann["true_label"].isna().all()


def test_speaker_sources_that_name_nobody_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clips(tmp_path / "audio")
    (tmp_path / "who.csv").write_text("path,speaker\nelsewhere/a.wav,ann\n")
    (tmp_path / "none.csv").write_text("path,mood\naudio/ann_00.wav,happy\n")
    (tmp_path / "talk.rttm").write_text("SPEAKER interview 1 0.0 1.0 <NA> <NA> ann <NA> <NA>\n")
    (tmp_path / "bad.rttm").write_text("SPEAKER ann_00 1 0.0 one <NA> <NA> ann <NA> <NA>\n")
    cases = [
        ({"labels": "csv:who.csv"}, "inputs[0].labels: inputs[0] (audio): a speaker for 0 of 20 files"),
        ({"labels": {"pattern": r"^(?P<speaker>zz)_"}}, "a speaker for 0 of 20 files; check the pattern's speaker"),
        ({"labels": "csv:none.csv"}, "lacks column(s) ['label']"),
        ({"speakers": "talk.rttm"}, "inputs[0].speakers: " + str(tmp_path / "talk.rttm") + " names no recording"),
        ({"speakers": "rttm:bad.rttm"}, "bad.rttm line 1: start '0.0' and duration 'one' must be seconds"),
        ({"speakers": "nowhere/"}, "inputs[0].speakers: " + str(tmp_path / "nowhere") + " does not exist"),
    ]
    for extra, why in cases:
        job = {"name": "t", "inputs": [{"path": "audio", **extra}], "cache": "cache", "model": {}}
        job["output"] = {"dir": "out"}
        with pytest.raises(ManifestError) as err:
            run_job(Manifest.from_dict(job, base_dir=tmp_path), progress=False)
        assert why in str(err.value), (extra, str(err.value))
        assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()  # nothing was done
        (tmp_path / "job.yaml").write_text(json.dumps(job))  # YAML is a superset of JSON
        assert main(["validate", str(tmp_path / "job.yaml")]) == 2 and why in capsys.readouterr().err
    # Two recordings of one name under different folders: the turns must say which.
    write_audio(tmp_path / "audio" / "a" / "talk.wav", room_noise(1.0), SR)
    write_audio(tmp_path / "audio" / "b" / "talk.wav", room_noise(1.0), SR)
    (tmp_path / "talk.rttm").write_text("SPEAKER talk 1 0.0 1.0 <NA> <NA> ann <NA> <NA>\n")
    job = {"name": "t", "inputs": [{"path": "audio", "speakers": "talk.rttm"}], "cache": "cache", "model": {}}
    with pytest.raises(ManifestError, match=r"the turns for 'talk' \(.*talk.rttm\) fit 2 recordings"):
        run_job(Manifest.from_dict(job, base_dir=tmp_path), progress=False)
    (tmp_path / "talk.rttm").write_text("SPEAKER a/talk 1 0.0 1.0 <NA> <NA> ann <NA> <NA>\n")  # named by its path
    (tmp_path / "ok.yaml").write_text(json.dumps(job | {"output": {"dir": "out"}}))
    assert main(["validate", "-q", str(tmp_path / "ok.yaml")]) == 0
