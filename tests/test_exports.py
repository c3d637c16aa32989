"""Exports people open: each long recording's segments as a Praat TextGrid, an ELAN file, an Audacity label track.

Every export is read back with the library of its program's format (praatio, pympi-ling; an Audacity label
track is three tab-separated columns) and compared with ``segments.parquet``: the same intervals, to the
millisecond, with the same labels, confidences and speakers. The recordings are espeak-ng voices between
tones and room noise (tests/conftest.py ``say``), with and without speaker turns (an RTTM).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from praatio import textgrid
from pympi.Elan import Eaf

from batchser.api import annotation_manifest
from batchser.cli import main
from batchser.exports import EXPORTERS, EXPORTS_DIR, Interval, Recording, export_name, recordings
from batchser.exports.names import NAME_MAX
from batchser.hashing import path_from_text
from batchser.job import run_job
from batchser.manifest import Manifest, ManifestError
from batchser.paths import check_manifest_paths
from batchser.report import ReportRow, ReportSet, SegmentRow, recover_reports
from tests.conftest import room_noise, write_audio
from tests.test_speakers import SHORT, VOICES, _rttm

SR = 16000
FORMATS = ["csv", "parquet", "textgrid", "eaf", "audacity"]
MS = 0.0005  # "to the millisecond": within half of one


def _tones(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.1 * np.sin(2 * np.pi * np.where(t % 1 < 0.5, 440.0, 660.0) * t)).astype(np.float32)


def _conversation(say, plan: list[str]) -> tuple[np.ndarray, list[tuple[float, float, str]]]:  # type: ignore[no-untyped-def]
    """Each speaker of ``plan`` says the next sentence, between tones and room noise; the audio and its turns."""
    parts, turns, at = [room_noise(0.7, seed=99)], [], 0.7
    for k, who in enumerate(plan):
        voice, pitch = VOICES[who]
        y = say(SHORT[k % len(SHORT)], voice, pitch)
        pause = _tones(1.2) if k % 2 else room_noise(1.0, seed=k)
        turns.append((at, at + len(y) / SR, who))
        parts += [y, pause]
        at += (len(y) + len(pause)) / SR
    return np.concatenate(parts), turns


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, say) -> Path:  # type: ignore[no-untyped-def]
    """A job over two long recordings, one with speaker turns (talk.wav) and one without (solo.wav), every format."""
    tmp = tmp_path_factory.mktemp("exports")
    talk, turns = _conversation(say, ["alice", "bob", "alice", "bob", "alice"])
    solo, _ = _conversation(say, ["dave"] * 4)
    write_audio(tmp / "audio" / "talk.wav", talk, SR, subtype="PCM_16")
    write_audio(tmp / "audio" / "solo.wav", solo, SR, subtype="PCM_16")
    rttm = _rttm(tmp / "talk.rttm", [("talk", a, b, who) for a, b, who in turns])
    m = annotation_manifest(
        [tmp / "audio"], out_dir=tmp / "out", formats=FORMATS, cache=tmp / "cache", backend="sequential", n_jobs=1,
        speakers=rttm,
    )  # fmt: skip
    run_job(m, progress=False)
    return tmp / "out"


def _segments(out: Path) -> dict[str, pd.DataFrame]:
    segs = pd.read_parquet(out / "segments.parquet")
    return {path: rows.reset_index(drop=True) for path, rows in segs.groupby("path", sort=False)}


def _export(out: Path, fmt: str, path: str) -> Path:
    return out / EXPORTS_DIR / fmt / export_name(path, EXPORTERS[fmt].suffix)


def test_every_export_reads_back_with_the_segments_of_segments_parquet(job: Path) -> None:
    files = pd.read_parquet(job / "annotations.parquet").set_index("path")
    by_file = _segments(job)
    assert len(by_file) == 2
    for path, segs in by_file.items():
        speakers = path.endswith("talk.wav")
        labelled = segs[segs["label"].notna()]
        assert len(labelled) >= 4 and (labelled["speaker"].notna().all() if speakers else segs["speaker"].isna().all())
        confidence = [f"{c:.2f}" for c in labelled["confidence"]]
        dims = {d: [f"{v:.2f}" for v in labelled[d]] for d in ("arousal", "valence")}  # the shipped model has both
        duration = files.loc[path, "duration_s"]

        # Praat: tiers that tile the file from 0 to its end; labelled intervals are segments.parquet's.
        tg = textgrid.openTextgrid(os.fspath(_export(job, "textgrid", path)), includeEmptyIntervals=True)
        assert list(tg.tierNames) == ["emotion", "confidence"] + (["speaker"] if speakers else []) + list(dims)
        assert tg.maxTimestamp == pytest.approx(duration)
        for name in tg.tierNames:
            entries = tg.getTier(name).entries
            assert entries[0].start == 0 and entries[-1].end == pytest.approx(duration)
            assert all(a.end == b.start for a, b in itertools.pairwise(entries))  # no gap, no overlap
        emotion = [e for e in tg.getTier("emotion").entries if e.label]
        np.testing.assert_allclose([e.start for e in emotion], labelled["start_s"], atol=MS)
        np.testing.assert_allclose([e.end for e in emotion], labelled["end_s"], atol=MS)
        assert [e.label for e in emotion] == labelled["label"].tolist()
        assert [e.label for e in tg.getTier("confidence").entries if e.label] == confidence
        if speakers:
            assert [e.label for e in tg.getTier("speaker").entries if e.label] == labelled["speaker"].tolist()
        for d, values in dims.items():
            assert [e.label for e in tg.getTier(d).entries if e.label] == values
        # A stretch without speech is an empty interval; so is a gap under 50 ms, which segments.parquet leaves out.
        empty = {(round(e.start, 6), round(e.end, 6)) for e in tg.getTier("emotion").entries if not e.label}
        quiet = {(round(a, 6), round(b, 6)) for a, b in segs.loc[segs["label"].isna(), ["start_s", "end_s"]].values}
        assert quiet and quiet <= empty and all(b - a < 0.05 for a, b in empty - quiet)

        # ELAN: the same annotations in milliseconds; confidences ride on them; linked to the recording.
        eaf = Eaf(os.fspath(_export(job, "eaf", path)))
        assert list(eaf.get_tier_names()) == ["emotion", "confidence"] + (["speaker"] if speakers else []) + list(dims)
        aligned = eaf.get_annotation_data_for_tier("emotion")
        np.testing.assert_allclose([a / 1000 for a, _, _ in aligned], labelled["start_s"], atol=MS)
        np.testing.assert_allclose([b / 1000 for _, b, _ in aligned], labelled["end_s"], atol=MS)
        assert [v for _, _, v in aligned] == labelled["label"].tolist()
        refs = eaf.get_ref_annotation_data_for_tier("confidence")
        assert [(a, b, v, parent) for a, b, v, parent in refs] == [
            (a, b, c, v) for (a, b, v), c in zip(aligned, confidence, strict=True)
        ]
        assert eaf.get_parameters_for_tier("confidence")["PARENT_REF"] == "emotion"
        for d, values in dims.items():
            assert [v for _, _, v, _ in eaf.get_ref_annotation_data_for_tier(d)] == values
        if speakers:
            said = eaf.get_annotation_data_for_tier("speaker")
            assert [(a, b) for a, b, _ in said] == [(a, b) for a, b, _ in aligned]
            assert [v for _, _, v in said] == labelled["speaker"].tolist()
        (media,) = eaf.get_linked_files()
        recording = Path(os.fsdecode(path_from_text(path))).resolve()
        assert media["MEDIA_URL"] == recording.as_uri() and media["MIME_TYPE"] == "audio/x-wav"
        here = _export(job, "eaf", path).parent
        assert (here / unquote(media["RELATIVE_MEDIA_URL"])).resolve() == recording  # from where the .eaf lies

        # Audacity: start, end, text, tab-separated; one label per labelled segment.
        lines = _export(job, "audacity", path).read_text(encoding="utf-8").splitlines()
        cells = [line.split("\t") for line in lines]
        assert all(len(c) == 3 for c in cells) and len(cells) == len(labelled)
        np.testing.assert_allclose([float(a) for a, _, _ in cells], labelled["start_s"], atol=MS)
        np.testing.assert_allclose([float(b) for _, b, _ in cells], labelled["end_s"], atol=MS)
        texts = [
            f"{lab} {c} arousal {a} valence {v}"
            for lab, c, a, v in zip(labelled["label"], confidence, dims["arousal"], dims["valence"], strict=True)
        ]
        if speakers:
            texts = [f"{who}: {t}" for who, t in zip(labelled["speaker"], texts, strict=True)]
        assert [t for _, _, t in cells] == texts


def test_the_report_set_holds_the_exports_and_a_rerun_without_them_removes_them(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = json.loads((job / "summary.json").read_text())
    assert summary["exports"] == {"textgrid": 2, "eaf": 2, "audacity": 2}
    listed = {n: d for n, d in summary["reports"].items() if n.startswith(f"{EXPORTS_DIR}/")}
    on_disk = {p.relative_to(job).as_posix() for p in (job / EXPORTS_DIR).rglob("*") if p.is_file()}
    assert set(listed) == on_disk and len(on_disk) == 6
    assert 'id="exports"' in (job / "report.html").read_text()  # the page says where they are
    for name, d in listed.items():
        data = (job / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == d["sha256"] and len(data) == d["bytes"]

    # The same job again, with other formats: the exports of the first run go with its commit.
    audio, cache = job.parent / "audio", job.parent / "cache"
    out = tmp_path / "out"
    m = annotation_manifest([audio], out_dir=out, formats=FORMATS, cache=cache, backend="sequential", n_jobs=1)
    run_job(m, progress=False)
    assert len(list((out / EXPORTS_DIR).rglob("*.eaf"))) == 2
    args = ["annotate", str(audio), "--out", str(out), "--cache", str(cache), "-j", "1"]
    assert main([*args, "--format", "csv,parquet,audacity"]) == 0
    assert f"exports: 2 audacity in {out / EXPORTS_DIR}" in capsys.readouterr().out
    kept = (out / EXPORTS_DIR).rglob("*")
    assert sorted(p.relative_to(out / EXPORTS_DIR).parts[0] for p in kept if p.is_file()) == ["audacity", "audacity"]
    assert not (out / EXPORTS_DIR / "eaf").exists() and not (out / EXPORTS_DIR / "textgrid").exists()
    assert not [n for n in json.loads((out / "summary.json").read_text())["reports"] if n.endswith(".eaf")]
    # A table format left out goes with the commit too, so the next run is this job's to replace.
    assert main([*args, "-q", "--format", "parquet"]) == 0
    assert not (out / "annotations.csv").exists() and not (out / EXPORTS_DIR).exists()
    assert main([*args, "-q", "--format", "csv,parquet,audacity"]) == 0
    # A file someone put in exports/ is not the job's to remove: refused, unless --overwrite.
    (out / EXPORTS_DIR / "audacity" / "notes.txt").write_text("mine")
    m = annotation_manifest([audio], out_dir=out, formats=["csv", "parquet"], cache=cache, backend="sequential")
    with pytest.raises(ManifestError, match=r"holds exports/audacity/notes\.txt, which this job did not write"):
        run_job(m, progress=False)
    assert (out / EXPORTS_DIR / "audacity" / "notes.txt").exists()
    run_job(m, progress=False, overwrite=True)
    assert not (out / EXPORTS_DIR).exists()
    assert "exports/" not in "".join(json.loads((out / "summary.json").read_text())["reports"])


_COMMIT_AND_DIE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import batchser.report as br

    out, at = Path(sys.argv[1]), int(sys.argv[2])
    real, done = os.replace, []

    def replace(src, dst):
        real(src, dst)
        done.append(dst)
        if len(done) == at:
            os._exit(9)

    with br.ReportSet(out) as rs:
        (rs.stage / "exports" / "textgrid").mkdir(parents=True)
        (rs.stage / "exports" / "textgrid" / "new.TextGrid").write_text("new")
        (rs.stage / "summary.json").write_text("{}")
        br.os.replace = replace
        rs.commit(replace=["exports"])
    """
)


@pytest.mark.parametrize("killed_after", [1, 2, 3, 4])
def test_a_kill_while_exports_are_moved_in_is_completed_by_the_next_job(tmp_path: Path, killed_after: int) -> None:
    out = tmp_path / "out"
    with ReportSet(out) as rs:
        (rs.stage / "exports" / "textgrid").mkdir(parents=True)
        (rs.stage / "exports" / "textgrid" / "old.TextGrid").write_text("old")
        (rs.stage / "summary.json").write_text('{"old": true}')
        rs.commit(replace=["exports"])
    assert (out / "exports" / "textgrid" / "old.TextGrid").read_text() == "old"
    # Killed after writing the commit record (1), setting the old exports aside (2), moving the new ones in (3),
    # moving summary.json in (4).
    res = subprocess.run([sys.executable, "-c", _COMMIT_AND_DIE, str(out), str(killed_after)], capture_output=True)
    assert res.returncode == 9, res.stderr
    before = {p.relative_to(out).as_posix() for p in out.rglob("*") if ".batchser-staging-" not in str(p)}
    assert (
        before
        == {
            1: {"exports", "exports/textgrid", "exports/textgrid/old.TextGrid", "summary.json"},
            2: {"summary.json"},
            3: {"exports", "exports/textgrid", "exports/textgrid/new.TextGrid", "summary.json"},
            4: {"exports", "exports/textgrid", "exports/textgrid/new.TextGrid", "summary.json"},
        }[killed_after]
    )
    assert (out / "summary.json").read_text() == ("{}" if killed_after == 4 else '{"old": true}')
    recover_reports(out)  # what the next job does first
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "exports",
        "exports/textgrid",
        "exports/textgrid/new.TextGrid",
        "summary.json",
    ]
    assert (out / "summary.json").read_text() == "{}"


# -- hostile names ------------------------------------------------------------------------------

HOSTILE = [
    "a.wav",
    "../../etc/evil.wav",
    "calls.zip::../../evil.wav",
    "calls.zip::/etc/evil.wav",
    "calls.zip::a//b/./c.wav",
    "/abs/olute/evil.wav",
    "..",
    ".",
    "",
    "/",
    "x\\xff.wav",  # a report path's escape of the byte 0xFF
    "x\\\\xff.wav",  # a name with a backslash
    "a:b%2F.wav",
    "a%3Ab%252F.wav",
    "%2E%2E/x.wav",
    "x.wav.TextGrid/y.wav",
    "x.wav",
    "d" * 250 + ".wav",
    "d" * 249 + "e.wav",
    "é" * 126 + ".wav",
]


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_report_paths_map_one_to_one_and_never_out_of_the_folder(tmp_path: Path, fmt: str) -> None:
    suffix = EXPORTERS[fmt].suffix
    names = [export_name(p, suffix) for p in HOSTILE]
    assert len(set(names)) == len(HOSTILE)  # one-to-one
    for name in names:
        pieces = name.split("/")
        assert not name.startswith("/") and not {".", "..", ""} & set(pieces), name
        assert all(len(p.encode()) <= NAME_MAX for p in pieces) and pieces[-1].endswith(suffix), name
        assert not any(p.endswith(suffix) for p in pieces[:-1]), name  # a folder is never some file's export
        target = tmp_path / name
        assert target.resolve().is_relative_to(tmp_path.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(name)  # every one can be made, none in another's way
    assert all((tmp_path / n).read_text() == n for n in names)
    assert export_name("calls.zip::2024/a.wav", ".TextGrid") == "calls.zip%3A%3A2024/a.wav.TextGrid"
    assert export_name("../x.wav", ".eaf") == "%2E%2E/x.wav.eaf"


def test_odd_file_names_in_a_job_each_get_their_own_exports_inside_the_folder(
    tmp_path: Path,
    say,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, _ = _conversation(say, ["alice", "dave"] * 3)  # over 10 s: a long recording
    root = tmp_path / "root"
    data = write_audio(root / "audio" / "x.wav", x, SR, subtype="PCM_16").read_bytes()
    for name in [os.fsdecode(b"x\xff.wav"), "x\\xff.wav", "a:b%2F.wav", "x.wav.TextGrid/y.wav", "d" * 250 + ".wav"]:
        (root / "audio" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "audio" / name).write_bytes(data)  # the same bytes: analysed once, labelled as each file
    far = write_audio(tmp_path / "elsewhere" / "far.wav", x, SR, subtype="PCM_16")  # outside root: an absolute path
    with zipfile.ZipFile(root / "calls.zip", "w") as zf:
        for member in ["../../evil.wav", "/etc/evil.wav", "a//b/./c.wav"]:
            zf.writestr(zipfile.ZipInfo(member), data)
    monkeypatch.chdir(root)
    out = root / "out"
    m = annotation_manifest(
        ["audio", "calls.zip", far], out_dir=out, formats=FORMATS, cache=tmp_path / "cache", backend="sequential",
        n_jobs=1,
    )  # fmt: skip
    summary = run_job(m, progress=False)
    paths = pd.read_parquet(out / "annotations.parquet")["path"].tolist()
    assert len(paths) == 10 and summary.n_failed == 0
    assert sorted(paths)[-3:] == ["calls.zip::../../evil.wav", "calls.zip::/etc/evil.wav", "calls.zip::a//b/./c.wav"]
    assert str(far) in paths
    made = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".TextGrid", ".eaf", ".txt"))
    assert len(made) == 30 and all(p.resolve().is_relative_to((out / EXPORTS_DIR).resolve()) for p in made)
    for fmt in EXPORTERS:  # each report path's own, found where export_name says
        assert sorted(_export(out, fmt, p) for p in paths) == [p for p in made if out / EXPORTS_DIR / fmt in p.parents]
    listed = [n for n in json.loads((out / "summary.json").read_text())["reports"] if n.startswith("exports/")]
    assert sorted(out / n for n in listed) == made
    # An archive member has no file of its own to link; a file outside the root is linked where it is.
    assert Eaf(os.fspath(_export(out, "eaf", "calls.zip::../../evil.wav"))).get_linked_files() == []
    (media,) = Eaf(os.fspath(_export(out, "eaf", str(far)))).get_linked_files()
    assert media["MEDIA_URL"] == far.as_uri()


# -- what each format writes, on records made by hand ------------------------------------------


def test_overlapping_windows_go_to_further_tiers_with_their_own_times(tmp_path: Path) -> None:
    # method: windows on a 9.5 s file: 4 s windows every 2 s, and a last one ending at the end of the file.
    windows = [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (5.5, 9.5)]
    rec = Recording("a.wav", 9.5, tuple(Interval(a, b, "sad", "0.61", "") for a, b in windows), media=None)
    assert [[(iv.start_s, iv.end_s) for iv in lane] for lane in rec.lanes()] == [
        [(0.0, 4.0), (4.0, 8.0)],
        [(2.0, 6.0)],
        [(5.5, 9.5)],
    ]
    paths = {f: tmp_path / f"a{EXPORTERS[f].suffix}" for f in EXPORTERS}
    for fmt, path in paths.items():
        EXPORTERS[fmt].write(rec, path, path)
    emotions = ["emotion", "emotion 2", "emotion 3"]
    tg = textgrid.openTextgrid(os.fspath(paths["textgrid"]), includeEmptyIntervals=False)
    assert list(tg.tierNames) == ["emotion", "confidence", "emotion 2", "confidence 2", "emotion 3", "confidence 3"]
    assert sorted((e.start, e.end) for t in emotions for e in tg.getTier(t).entries) == windows
    eaf = Eaf(os.fspath(paths["eaf"]))
    assert sorted((a / 1000, b / 1000) for t in emotions for a, b, _ in eaf.get_annotation_data_for_tier(t)) == windows
    assert len(paths["audacity"].read_text().splitlines()) == 4  # a label track may overlap


def test_control_characters_become_spaces_and_quotes_and_markup_read_back_as_written(tmp_path: Path) -> None:
    nan = {"sad": math.nan, "happy": math.nan}
    seg_rows = [
        SegmentRow("a.wav", 0.5, 2.0, True, "sad", 0.7, nan, speaker='Ann "the host" <&>'),
        SegmentRow("a.wav", 2.0, 2.5, False, "", math.nan, nan),
        SegmentRow("a.wav", 2.5, 4.0, True, "happy", 0.4, nan, speaker="Bob\tB\nobby", reviewed=True),
    ]
    (rec,) = recordings([ReportRow("a.wav", "ok", duration_s=5.0)], seg_rows, root=tmp_path)
    assert rec.end_s == 5.0 and rec.media is None  # no such file under the root: nothing to link
    paths = {f: tmp_path / f"x{EXPORTERS[f].suffix}" for f in EXPORTERS}
    for fmt, path in paths.items():
        EXPORTERS[fmt].write(rec, path, path)
    shown = ['Ann "the host" <&>', "Bob B obby"]
    tg = textgrid.openTextgrid(os.fspath(paths["textgrid"]), includeEmptyIntervals=False)
    assert [e.label for e in tg.getTier("speaker").entries] == shown
    assert [e.label for e in tg.getTier("confidence").entries] == ["0.70", "reviewed"]  # a person's answer
    eaf = Eaf(os.fspath(paths["eaf"]))
    assert [v for _, _, v in eaf.get_annotation_data_for_tier("speaker")] == shown
    assert paths["audacity"].read_text().split("\n") == [
        '0.500000\t2.000000\tAnn "the host" <&>: sad 0.70',
        "2.500000\t4.000000\tBob B obby: happy reviewed",
        "",
    ]


# -- choosing them ------------------------------------------------------------------------------


def test_formats_are_checked_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    base = {"name": "t", "root": str(tmp_path), "inputs": [{"path": "audio"}]}
    assert Manifest.from_dict(base | {"output": {"formats": ["csv", "textgrid", "eaf", "audacity"]}}).output.tables == [
        "csv"
    ]
    with pytest.raises(ManifestError, match=r"output\.formats: .*at least one table format is needed, csv or parquet"):
        Manifest.from_dict(base | {"output": {"formats": ["textgrid"]}})
    with pytest.raises(ManifestError, match=r"output\.formats"):
        Manifest.from_dict(base | {"output": {"formats": ["csv", "praat"]}})
    # Reading from exports/, which every run replaces: refused (someone's edited TextGrids as speaker turns).
    (tmp_path / "out" / EXPORTS_DIR / "textgrid").mkdir(parents=True)
    m = Manifest.from_dict(
        base
        | {
            "inputs": [{"path": "audio", "speakers": f"textgrid:{tmp_path / 'out' / EXPORTS_DIR / 'textgrid'}"}],
            "output": {"dir": "out"},
        }
    )
    with pytest.raises(ManifestError, match=r"inputs\[0\]\.speakers: .* lies in .*exports, which every run replaces"):
        check_manifest_paths(m)
