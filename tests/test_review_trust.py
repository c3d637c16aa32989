"""A review you can trust: estimates that count every answer, answers checked at the door, an answers file
that never loses or leaks, reports read back checked. Each test is an attack that once got through."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchser.cli import main
from batchser.review import (
    ANSWERS,
    SAMPLE,
    TORN,
    Answer,
    AnswerLog,
    AnswersError,
    AnswersFile,
    estimate,
    expected_accuracy,
    read_answers,
    read_sample,
)
from batchser.web.review import ReviewSession, SavedButUnreadableError
from tests.browser import chromium
from tests.conftest import espeak_sentences
from tests.review_kit import KINDS, Server, fresh, given, make_job, wait


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 generated clips, 6 a kind (the model labels 6 of each), 4 of them also copied byte for byte."""
    return make_job(tmp_path_factory.mktemp("trust"), copies=4)


def _listed(out: Path, capsys: pytest.CaptureFixture[str], *args: str) -> pd.DataFrame:
    assert main(["review", str(out), "--list", *args]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)


def _kind(path: str) -> str:
    return Path(path).name.removeprefix("copy-").split("-")[0]


def _annotate(job: Path, out: Path, *extra: str, cwd: Path | None = None) -> int:
    clips, cache = job.parent / "clips", job.parent / "cache"
    args = ["annotate", "-q", str(clips), "--out", str(out), "--cache", str(cache), "-j", "1", *extra]
    if cwd is None:
        return main(args)
    here = Path.cwd()
    os.chdir(cwd)
    try:
        return main(args)
    finally:
        os.chdir(here)


# -- estimates that count every answer ---------------------------------------------------------


def test_none_of_these_counts_as_wrong_and_its_share_is_estimated() -> None:
    # Two strata of 100 files; of 10 answers each, 3 say "none of these", 5 agree with the model.
    pred = ["a"] * 10 + ["b"] * 10
    truth = ["a"] * 5 + ["none"] * 3 + ["b"] * 2 + ["b"] * 5 + ["none"] * 3 + ["a"] * 2
    got = estimate(pred, truth, pred, {"a": 100, "b": 100}, classes=["a", "b"])
    assert got["accuracy"] == pytest.approx(0.5)  # the 6 "none" answers are wrong labels, not left out
    assert got["none_share"] == pytest.approx(0.3)
    lo, hi = got["none_share_ci"]
    assert lo < 0.3 < hi and hi - lo < 0.5
    assert got["n_none"] == 6
    assert got["uar"] == pytest.approx(5 / 7)  # over the model's emotions: a 5 of 7, b 5 of 7


def test_a_stratum_without_answers_gives_no_archive_wide_figure() -> None:
    got = estimate(["a"] * 8, ["a"] * 6 + ["b"] * 2, ["a"] * 8, {"a": 50, "b": 50, "c": 10}, classes=["a", "b", "c"])
    assert got["accuracy"] is None and got["none_share"] is None and got["uar"] is None
    assert got["missing_strata"] == ["b", "c"]
    assert got["partial"]["strata"] == ["a"] and got["partial"]["accuracy"] == pytest.approx(0.75)
    assert got["covers"] == pytest.approx(50 / 110)


def test_the_sample_interleaves_labels_and_holds_each_content_once(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fresh(job, tmp_path)
    sample = _listed(out, capsys, "--n", "5")
    assert sample["content_hash"].is_unique  # a copy of a sampled file is never sampled again
    labels = sample["model_label"].tolist()
    runs = sum(a != b for a, b in itertools.pairwise(labels))
    assert runs > len(set(labels))  # not walked label by label: the labels are mixed
    assert set(labels[:8]) != {labels[0]}
    table = pd.read_parquet(out / "annotations.parquet")
    copied = table[table.path.str.contains("copies/")].content_hash
    assert (
        read_sample(out).set_index("content_hash").loc[list(set(copied) & set(sample.content_hash)), "copies"] == 2
    ).all()


def test_stopping_early_names_the_labels_never_reviewed(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fresh(job, tmp_path)
    sample = _listed(out, capsys)
    one = sample["model_label"].iloc[0]
    mine = sample[sample["model_label"] == one].copy()  # a person who answered only one label's units
    mine["label"] = [_kind(p) for p in mine["path"]]
    filled = tmp_path / "filled.csv"
    mine.to_csv(filled, index=False)
    second = tmp_path / "second"
    capsys.readouterr()
    assert main(["annotate", str(job.parent / "clips"), "--out", str(second), "--cache", str(job.parent / "cache"),
                 "-j", "1", "--reviewed", str(filled)]) == 0  # fmt: skip
    said = capsys.readouterr().out
    review = json.loads((second / "summary.json").read_text())["review"]
    assert review["before"]["accuracy"] is None and review["after"]["accuracy"] is None
    assert sorted(review["before"]["missing_strata"]) == sorted(set(KINDS) - {one})
    assert "No figure for the whole archive yet" in said and one in said


def test_copies_are_one_unit_and_all_carry_the_answer(job: Path, tmp_path: Path) -> None:
    table = pd.read_parquet(job / "annotations.parquet")
    twins = table[table.path.str.contains("copies/")]
    h = twins.content_hash.iloc[0]
    answers = tmp_path / "answers.csv"
    rows = [f"{p},{c},{_kind(p)}" for p, c in zip(table.path, table.content_hash, strict=True) if "copies/" not in p]
    answers.write_text("path,content_hash,label\n" + "\n".join(rows[:12]) + "\n")
    out = tmp_path / "out"
    assert _annotate(job, out, "--reviewed", str(answers)) == 0
    review = json.loads((out / "summary.json").read_text())["review"]
    got = pd.read_parquet(out / "annotations.parquet").set_index("path")
    same = table[table.content_hash == h].path.tolist()
    assert len(same) == 2
    if h in {r.split(",")[1] for r in rows[:12]}:
        assert got.loc[same, "reviewed"].all()
    assert review["units"] == 12 and review["matched_files"] == 12 + sum(
        c in {r.split(",")[1] for r in rows[:12]} for c in twins.content_hash
    )


def test_expected_accuracy_is_said_before_any_review(job: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads((job / "summary.json").read_text())
    expected = summary["expected_accuracy"]
    from batchser.api import default_model_path
    from batchser.model import read_meta

    loco = read_meta(default_model_path()).metrics["leave_one_corpus_out"]["modes"]
    assert expected["adaptation"] == "corpus" and expected["uar_mean"] == pytest.approx(loco["corpus"]["mean"]["uar"])
    assert expected["uar_worst"] == pytest.approx(loco["corpus"]["mean"]["worst_uar"])
    page = (job / "report.html").read_text()
    assert 'id="expected"' in page and "about half right" in page
    none = expected_accuracy({"actor_wise": {"uar": 0.8, "accuracy": 0.8}}, {"speaker": 3})
    assert none is not None and none["held_out"] is False


# -- answers checked at the door ---------------------------------------------------------------


def test_unknown_labels_stop_the_job_and_name_the_closest_emotion(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fresh(job, tmp_path)
    sample = _listed(out, capsys)
    labels = ["Angry", " SAD ", "hapy", "banana", "<script>x</script>", "=HYPERLINK(1)", "$\\frac{$", "None of these"]
    sample["label"] = [labels[i % len(labels)] for i in range(len(sample))]
    filled = tmp_path / "filled.csv"
    sample.to_csv(filled, index=False)
    second = tmp_path / "second"
    capsys.readouterr()
    assert _annotate(job, second, "--reviewed", str(filled)) == 2
    err = capsys.readouterr().err
    for bad in ("'hapy'", "'banana'", "'<script>x</script>'", "'=HYPERLINK(1)'", "'$\\\\frac{$'"):
        assert bad in err, bad
    assert "hapy \u2192 happy?" in err and "Angry" not in err.split("valence (positive, negative):")[1]
    assert not second.exists()  # nothing was run
    # Set aside on request: counted and named, never a file's label.
    assert _annotate(job, second, "--reviewed", str(filled), "--ignore-unknown-answers") == 0
    got = pd.read_parquet(second / "annotations.parquet")
    assert set(got.label) <= {*KINDS, "none"}
    review = json.loads((second / "summary.json").read_text())["review"]
    assert set(review["set_aside"]) == {"hapy", "banana", "<script>x</script>", "=HYPERLINK(1)", "$\\frac{$"}
    assert review["learned_from"] + review["none_of_these"] == review["units"]  # Angry and SAD were understood


def test_charts_take_labels_as_text() -> None:
    from collections import Counter

    from batchser.web.page import _label_chart

    svg = _label_chart(Counter({"$\\frac{$": 3, "angry": 2}), KINDS)
    assert "frac" in svg  # drawn as written, where mathtext once stopped the whole job


def test_a_stale_answer_is_never_applied(job: Path, tmp_path: Path) -> None:
    table = pd.read_parquet(job / "annotations.parquet")
    p = table.path.iloc[0]
    stale = tmp_path / "stale.csv"
    ok = [f"{q},{h},{_kind(q)}" for q, h in zip(table.path[1:5], table.content_hash[1:5], strict=True)]
    stale.write_text("path,content_hash,label\n" + f"{p},{'0' * 64},sad\n" + "\n".join(ok) + "\n")
    out = tmp_path / "out"
    assert _annotate(job, out, "--reviewed", str(stale)) == 0
    got = pd.read_parquet(out / "annotations.parquet").set_index("path")
    assert (not got.at[p, "reviewed"] and got.at[p, "label"] != "sad") or table.label.iloc[0] == "sad"
    assert not got.at[p, "reviewed"]
    assert json.loads((out / "summary.json").read_text())["review"]["stale"] == [p]


def test_answers_matching_no_file_stop_the_job_and_keep_the_reports(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = pd.read_parquet(job / "annotations.parquet")
    out = fresh(job, tmp_path)
    before = (out / "annotations.csv").read_bytes()
    wrong = tmp_path / "wrong.csv"
    name = Path(table.path.iloc[3]).name
    wrong.write_text(f"path,label\nelsewhere/{name},sad\n./in/x.wav,angry\n")
    capsys.readouterr()
    assert _annotate(job, out, "--reviewed", str(wrong), "--overwrite") == 2
    err = capsys.readouterr().err
    assert f"elsewhere/{name}" in err and f"closest report path: '{table.path.iloc[3]}'" in err
    assert (out / "annotations.csv").read_bytes() == before  # the reviewed reports are not replaced


def test_a_report_or_changed_files_are_not_answers(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = fresh(job, tmp_path)
    capsys.readouterr()
    assert _annotate(job, tmp_path / "a", "--reviewed", str(out / "annotations.csv")) == 2
    assert "is a job's report" in capsys.readouterr().err  # its labels are the model's own
    table = pd.read_parquet(job / "annotations.parquet")
    changed = tmp_path / "changed.csv"
    changed.write_text("path,content_hash,label\n" + "".join(f"{p},{'0' * 64},sad\n" for p in table.path[:3]))
    assert _annotate(job, tmp_path / "b", "--reviewed", str(changed)) == 2
    assert "3 files changed since they were answered" in capsys.readouterr().err
    cut = tmp_path / "cut.csv"  # a hash cut short by a spreadsheet: the path decides
    cut.write_text(f"path,content_hash,label\n{table.path[0]},{table.content_hash[0][:15]},sad\n")
    assert _annotate(job, tmp_path / "c", "--reviewed", str(cut)) == 0
    assert "not 64 hex digits" in caplog.text
    got = pd.read_parquet(tmp_path / "c" / "annotations.parquet").set_index("path")
    assert got.at[table.path[0], "reviewed"] and got.at[table.path[0], "label"] == "sad"


def test_a_path_names_one_file_even_where_two_folders_hold_it(job: Path, tmp_path: Path) -> None:
    """A bare name found beside the answers file is that file, not also a same-named file under the job's root."""
    clips = job.parent / "clips"
    local = clips / "copies" / "mine.csv"  # copies/copy-angry-00.wav exists here; clips/copy-angry-00.wav does not
    twin = clips / "copy-angry-00.wav"
    twin.write_bytes((clips / "sad-01.wav").read_bytes())  # another recording under the same name at the root
    local.write_text("path,label\ncopy-angry-00.wav,happy\n")
    try:
        out = tmp_path / "out"
        assert _annotate(job, out, "--reviewed", str(local), cwd=clips) == 0  # report paths relative to clips/
        got = pd.read_parquet(out / "annotations.parquet").set_index("path")
        assert got.at["copies/copy-angry-00.wav", "reviewed"] and not got.at["copy-angry-00.wav", "reviewed"]
    finally:
        local.unlink()
        twin.unlink()


def test_answers_find_their_files_from_another_folder(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's --reviewed command run from elsewhere: answers match by content hash."""
    out = fresh(job, tmp_path)
    session = ReviewSession.open(out, per_label=2)
    for r in session.sample.itertuples():
        session.answer(int(r.order), _kind(r.path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = tmp_path / "second"
    assert _annotate(job, second, "--reviewed", str(out / ANSWERS), cwd=elsewhere) == 0
    review = json.loads((second / "summary.json").read_text())["review"]
    assert review["matched"] == len(session.sample) and review["unmatched"] == 0
    # Bare names and ./ paths relative to the answers file's own folder match too.
    clips = job.parent / "clips"
    local = clips / "mine.csv"
    local.write_text("path,label\n./angry-00.wav,angry\nsad-01.wav,sad\n")
    try:
        third = tmp_path / "third"
        assert _annotate(job, third, "--reviewed", str(local), cwd=elsewhere) == 0
        assert json.loads((third / "summary.json").read_text())["review"]["matched"] == 2
    finally:
        local.unlink()
    # And names as they appear under the folder labelled, from a list kept anywhere.
    kept = elsewhere / "kept.csv"
    kept.write_text("path,label\nangry-00.wav,angry\ncopies/copy-sad-01.wav,sad\n")
    fourth = tmp_path / "fourth"
    assert _annotate(job, fourth, "--reviewed", str(kept), cwd=tmp_path) == 0
    assert json.loads((fourth / "summary.json").read_text())["review"]["matched"] == 2


# -- the answers file --------------------------------------------------------------------------


@pytest.fixture
def session(job: Path, tmp_path: Path) -> ReviewSession:
    return ReviewSession.open(fresh(job, tmp_path), per_label=2)


def test_a_link_a_fifo_or_a_folder_is_never_written_through(session: ReviewSession, tmp_path: Path) -> None:
    answers = session.out_dir / ANSWERS
    target = tmp_path / "victim-rc"
    answers.symlink_to(target)
    with pytest.raises(AnswersError, match="link"):
        session.answer(0, "sad")
    assert not target.exists()  # never created, never written
    answers.unlink()
    os.mkfifo(answers)
    done = threading.Event()

    def attempt() -> None:
        with pytest.raises(AnswersError, match="FIFO"):
            session.answer(0, "sad")
        done.set()

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    assert done.is_set()  # no hang
    answers.unlink()
    answers.mkdir()
    with pytest.raises(AnswersError, match="folder"):
        session.answer(0, "sad")
    answers.rmdir()
    other = tmp_path / "other.csv"
    other.write_text("x")
    os.link(other, answers)  # a hard link to another file
    with pytest.raises(AnswersError, match="names"):
        session.answer(0, "sad")
    assert other.read_text() == "x"
    answers.unlink()
    review = session.out_dir / "review"
    (review / "sample.csv").rename(tmp_path / "sample.csv")
    review.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    review.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(AnswersError, match="link"):
        session.answer(0, "sad")
    assert not list(elsewhere.iterdir())


def test_the_answers_file_is_the_users_alone(session: ReviewSession) -> None:
    session.answer(0, "sad")
    assert (session.out_dir / ANSWERS).stat().st_mode & 0o777 == 0o600


def test_a_torn_last_line_is_set_aside_and_no_answer_is_glued_to_it(session: ReviewSession) -> None:
    session.answer(0, "sad")
    path = session.out_dir / ANSWERS
    with open(path, "ab") as fh:
        fh.write(b"clips/x.wav,abc,ang")  # the power went out mid-line
    session.answer(1, "happy")  # acknowledged: must be on disk, whole
    text = path.read_text()
    assert text.endswith("\n") and "ang" not in text.replace("angry", "")
    latest = read_answers(path, KINDS).latest
    assert [a.label for a in latest.values()] == ["sad", "happy"]
    assert (session.out_dir / TORN).read_bytes() == b"clips/x.wav,abc,ang\n"


_FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from batchser.review import AnswersFile, AnswerNotSavedError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    out = Path(sys.argv[1])
    f = AnswersFile(out)
    size = (out / "review" / "answers.csv").stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, hard))  # room for part of one line: a short write
    try:
        f.add("clips/" + "n" * 200 + ".wav", "h" * 64, "sad")
        print("saved")
    except AnswerNotSavedError as exc:
        print("not saved:", exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    f.add("clips/after.wav", "a" * 64, "angry")
    print("then saved")
    """
)


def test_a_short_write_says_not_saved_and_leaves_the_file_whole(session: ReviewSession) -> None:
    session.answer(0, "sad")
    path = session.out_dir / ANSWERS
    before = path.read_bytes()
    run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(session.out_dir)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "not saved:" in run.stdout and "then saved" in run.stdout
    after = path.read_bytes()
    assert after.startswith(before) and after[len(before) :].startswith(b"clips/after.wav,")  # nothing half-written
    assert [a.label for a in read_answers(path, KINDS).latest.values()] == ["sad", "angry"]


def test_a_bad_row_is_named_and_skipped_never_a_500(job: Path, tmp_path: Path) -> None:
    out = fresh(job, tmp_path)
    ReviewSession.open(out, per_label=2).answer(0, "sad")
    with open(out / ANSWERS, "a") as fh:
        fh.write("clips/x.wav,,angry,yesterday,,,,\n")
    server = Server(out, "--n", "2")
    try:
        status, body = server.get("state")
        assert status == 200 and json.loads(body)["n_unreadable"] == 1
        assert "answered_at 'yesterday'" in json.loads(body)["unreadable_rows"][0]["why"]
        assert server.get("")[0] == 200
        status, reply = server.send("answer", {"order": 1, "label": "happy"})
        assert status == 200 and reply["answered"] == 2
    finally:
        log = server.kill()
    assert main(["review", str(out), "--n", "2", "--list"]) == 0
    assert server.token not in log and "token=\u2026" in log  # the request log never holds the token


def test_the_server_reads_only_what_was_appended(tmp_path: Path) -> None:
    out = tmp_path
    f = AnswersFile(out)
    for i in range(50):
        f.add(f"clips/{i}.wav", f"{i:064x}", "sad")
    log = AnswerLog(out / ANSWERS, KINDS)
    assert len(log.refresh().latest) == 50
    path = out / ANSWERS
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"clips/3.wav") : raw.index(b"clips/3.wav") + 11] = b"clips/Z.wav"  # same size, same inode
    with open(path, "r+b") as fh:
        fh.write(raw)
    f.add("clips/new.wav", "f" * 64, "happy")
    latest = log.refresh().latest
    assert ("clips/new.wav", None, None) in latest and ("clips/3.wav", None, None) in latest  # old bytes not read again
    assert ("clips/Z.wav", None, None) not in latest


def test_a_damaged_line_loses_only_itself(tmp_path: Path) -> None:
    sheet = tmp_path / "filled.csv"  # as a spreadsheet saves a note with a line break: one quoted cell, two lines
    sheet.write_text('path,label,note\nclips/a.wav,sad,"first line\nsecond line"\nclips/b.wav,angry,\n')
    assert [a.label for a in read_answers(sheet, KINDS).latest.values()] == ["sad", "angry"]
    f = AnswersFile(tmp_path)
    f.add("clips/a.wav", "a" * 64, "sad")
    log = AnswerLog(tmp_path / ANSWERS, KINDS)
    assert ("clips/a.wav", None, None) in log.refresh().latest
    with open(tmp_path / ANSWERS, "ab") as fh:  # appended by hand while the server reads the file
        fh.write(b'"clips/stray.wav,,angry\n')  # an unbalanced quote
        fh.write(b"clips/caf\xe9.wav,,happy\n")  # Latin-1
        fh.write(b"clips/" + b"x" * 200_000 + b".wav,,sad\n")  # a cell past the csv module's 128 KB
        fh.write(b"clips/nul\x00.wav,,sad\n")
    f.add("clips/after.wav", "b" * 64, "happy")
    answers = log.refresh()
    assert [k[0] for k in answers.latest] == ["clips/a.wav", "clips/after.wav"]
    whys = [why for _, why in answers.bad]
    assert [line for line, _ in answers.bad] == [3, 4, 5, 6]
    assert "unbalanced quote" in whys[0] and "UTF-8" in whys[1] and "NUL" in whys[3]


def test_each_tab_undoes_its_own_answer(session: ReviewSession) -> None:
    session.answer(0, "sad")  # one tab
    session.answer(1, "angry")  # another tab, later
    session.undo(0)
    keys = {int(r["order"]): r["path"] for r in session.sample.to_dict("records")}
    assert given(session.out_dir) == {keys[1]: "angry"}
    with pytest.raises(KeyError, match="no answer to undo"):
        session.undo(0)


def test_an_answer_on_disk_is_never_called_not_saved(session: ReviewSession, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(**_: object) -> None:
        raise AnswersError("answers.csv line 1 holds NUL bytes")

    monkeypatch.setattr(session, "state", unreadable)  # the read back fails after the answer reached the disk
    with pytest.raises(SavedButUnreadableError, match=r"^Saved: sad\. The page cannot read"):
        session.answer(0, "sad")
    assert list(given(session.out_dir).values()) == ["sad"]


def test_a_segment_answer_is_refused_by_a_file_without_times(tmp_path: Path) -> None:
    (tmp_path / "review").mkdir()
    (tmp_path / ANSWERS).write_text("path,content_hash,label\nclips/a.wav,,sad\n")  # an older file's columns
    with pytest.raises(AnswersError, match="no start_s and end_s columns"):
        AnswersFile(tmp_path).add("long.flac", "a" * 64, "sad", start_s=1.0, end_s=2.5)
    assert (tmp_path / ANSWERS).read_text() == "path,content_hash,label\nclips/a.wav,,sad\n"


def test_undo_takes_back_the_latest_answer(session: ReviewSession) -> None:
    session.answer(0, "sad")
    session.answer(1, "angry")
    session.answer(1, "happy")
    state = session.undo()  # takes back "happy": "angry" stands again
    keys = {int(r["order"]): r["path"] for r in session.sample.to_dict("records")}
    latest = {k[0]: a.label for k, a in read_answers(session.out_dir / ANSWERS, KINDS).latest.items()}
    assert latest == {keys[0]: "sad", keys[1]: "angry"} and state["answered"] == 2
    session.undo()
    session.undo()
    assert read_answers(session.out_dir / ANSWERS, KINDS).latest == {} and not session.state()["can_undo"]
    assert len((session.out_dir / ANSWERS).read_text().splitlines()) == 1 + 3 + 3  # appended, never rewritten


def test_formulas_are_guarded_in_every_csv_the_review_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = AnswersFile(tmp_path)
    f.add("=cmd|' /C calc'!A0.wav", "a" * 64, "sad")
    line = (tmp_path / ANSWERS).read_text().splitlines()[1]
    assert line.startswith("\"'=cmd") or line.startswith("'=cmd")
    assert ("=cmd|' /C calc'!A0.wav", None, None) in read_answers(tmp_path / ANSWERS, KINDS).latest


def test_blind_review_hides_the_model(job: Path, tmp_path: Path) -> None:
    out = fresh(job, tmp_path)
    server = Server(out, "--n", "2", "--blind")
    try:
        status, body = server.get("state")
        state = json.loads(body)
        assert status == 200 and "model_label" not in state["next"] and state["agreement"] is None
        status, page = server.get("")
        assert b'id="model-label"' not in page
        status, page = server.get("?blind=0")
        assert b'id="model-label"' in page
    finally:
        server.kill()


def test_a_restarted_server_says_the_address_changed(job: Path, tmp_path: Path) -> None:
    out = fresh(job, tmp_path)
    first = Server(out, "--n", "2")
    old = first.url
    first.kill()
    second = Server(out, "--n", "2")
    try:
        stale = second.base + "?token=" + old.rsplit("=", 1)[1]
        with chromium() as driver:
            driver.get(stale)
            assert "restarted" in driver.find_element("tag name", "body").text
            driver.get(second.url)
            driver.execute_script(f"window.history.replaceState(null, '', '{stale}')")
            # The page's own requests carry the token it was served with; an old page after a restart:
            driver.execute_script(
                "window.fetch = ((f) => (u, o) => f(u.replace(/token=[^&]*/, 'token=old'), o))(window.fetch)"
            )
            driver.find_element("tag name", "body").send_keys("1")
            wait(lambda: "restarted" in driver.find_element("id", "message").text)
        assert given(out) == {}
    finally:
        second.kill()


def test_not_saved_says_why_on_the_page(job: Path, tmp_path: Path) -> None:
    out = fresh(job, tmp_path)
    server = Server(out, "--n", "2")
    try:
        with chromium() as driver:
            driver.get(server.url)
            (out / ANSWERS).mkdir()  # the answers file became a folder while the page was open
            driver.find_element("tag name", "body").send_keys("1")
            wait(lambda: driver.find_element("id", "message").text.startswith("Not saved"))
            assert "folder" in driver.find_element("id", "message").text
            assert driver.find_element("id", "answered").text == "0"
            (out / ANSWERS).rmdir()
            driver.find_element("tag name", "body").send_keys("1")
            wait(lambda: driver.find_element("id", "message").text.startswith("Saved"))
            driver.find_element("tag name", "body").send_keys("u")
            wait(lambda: driver.find_element("id", "answered").text == "0")
    finally:
        server.kill()
    assert given(out) == {}


# -- answers and reports from outside ----------------------------------------------------------


def test_a_latin1_answers_file_is_named_with_the_fix(job: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    table = pd.read_parquet(job / "annotations.parquet")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"path,label,note\n{table.path.iloc[0]},sad,caf\xe9\n".encode("latin-1"))
    capsys.readouterr()
    assert _annotate(job, tmp_path / "o", "--reviewed", str(latin)) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "line 2" in err and "CSV UTF-8" in err


def test_a_damaged_sample_is_named(job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = fresh(job, tmp_path)
    _listed(out, capsys)
    raw = (out / SAMPLE).read_bytes()
    (out / SAMPLE).write_bytes(raw[:40] + b"\x00" + raw[40:])
    assert main(["review", str(out), "--list"]) == 1
    err = capsys.readouterr().err
    assert "sample.csv holds NUL bytes (line 1)" in err and "move it away" in err


def test_a_sample_that_is_a_link_is_never_read_through(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fresh(job, tmp_path)
    _listed(out, capsys)
    elsewhere = tmp_path / "elsewhere.csv"
    (out / SAMPLE).rename(elsewhere)  # a whole, valid sample: only the link is wrong
    (out / SAMPLE).symlink_to(elsewhere)
    assert main(["review", str(out), "--list"]) == 1
    err = capsys.readouterr().err
    assert "sample.csv is a link, not a regular file; a review sample is never read through one" in err, err
    assert (out / SAMPLE).is_symlink() and elsewhere.read_bytes()  # nothing replaced, nothing written
    (out / SAMPLE).unlink()
    (out / SAMPLE).symlink_to(tmp_path / "missing.csv")  # a dangling link is refused too, not taken for no sample
    assert main(["review", str(out), "--list"]) == 1
    assert "is a link" in capsys.readouterr().err
    assert not (tmp_path / "missing.csv").exists()


def test_tampered_reports_are_named_by_file_and_key(job: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = fresh(job, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    for key, value, named in (
        ("files", "abc", "key files"),
        ("review", {"answers": 3}, "key review.learned_from"),
        ("domain", {"median_distance": "far"}, "key domain.median_distance"),
    ):
        (out / "summary.json").write_text(json.dumps({**summary, key: value}))
        for cmd in (["report", str(out)], ["review", str(out), "--list"]):
            assert main(cmd) == 1, cmd
            err = capsys.readouterr().err
            assert "summary.json" in err and named in err and "Error:" not in err, err
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "metrics.json").write_text("{not json")
    assert main(["report", str(out)]) == 1
    assert "metrics.json is not valid JSON" in capsys.readouterr().err
    big = {"labelled_files": {"n": 1, "accuracy": 0.5, "uar": 0.5, "macro_f1": 0.5,
                              "labels": [f"l{i}" for i in range(200)],
                              "confusion_matrix": np.zeros((200, 200), dtype=int).tolist()}}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(big))
    assert main(["report", str(out)]) == 1
    assert "key labelled_files.labels" in capsys.readouterr().err


def test_a_review_in_a_folder_it_cannot_write_says_what_it_needed(job: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = fresh(job, tmp_path)
    (out / "review").write_text("not a folder")  # what a review needs to write cannot be made there
    assert main(["review", str(out), "--list"]) == 1
    err = capsys.readouterr().err
    assert str(out / "review") in err and "not a folder" in err
    (out / "review").unlink()
    # A read-only folder: root writes anywhere, so the review runs as a user without rights over it (a user
    # namespace: uid 65534).
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"needs unprivileged user namespaces (unshare --user) to be refused a write: {probe.stderr!r}")
    os.chmod(out, 0o555)
    try:
        run = subprocess.run(
            ["unshare", "--user", sys.executable, "-m", "batchser", "review", str(out), "--list"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    finally:
        os.chmod(out, 0o755)
    assert run.returncode == 1, run.stderr
    assert f"cannot write {out / 'review'}: Permission denied" in run.stderr and f"make {out} writable" in run.stderr


def test_reports_are_written_only_after_answers_are_checked(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.wav,maybe\n")
    assert main(["validate", str(_manifest(job, tmp_path, bad))]) == 2
    assert "'maybe'" in capsys.readouterr().err


def _manifest(job: Path, tmp_path: Path, answers: Path) -> Path:
    import yaml

    path = tmp_path / "job.yaml"
    job_ = {
        "name": "reviewed",
        "inputs": [{"path": str(job.parent / "clips")}],
        "cache": str(job.parent / "cache"),
        "model": {"reviewed": str(answers)},
        "output": {"dir": str(tmp_path / "o")},
    }
    path.write_text(yaml.safe_dump(job_))
    return path


# -- long recordings: their speech segments are units -----------------------------------------


def test_speech_segments_of_a_long_recording_are_reviewed_and_learned_one_by_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    from tests.test_speech import SENTENCES, SR, _recording

    speech = espeak_sentences(SENTENCES, tmp_path, sr=SR)
    job = make_job(tmp_path / "job")
    y, _ = _recording(speech, repeats=2)
    sf.write(job.parent / "clips" / "interview.flac", y, SR)
    out = tmp_path / "out"
    assert _annotate(job, out) == 0
    segs = pd.read_parquet(out / "segments.parquet")
    speech_rows = segs[segs.speech_prob.notna()]
    assert len(speech_rows) >= 6
    sample = _listed(out, capsys, "--n", "40")
    seg_units = sample[sample.path.str.endswith("interview.flac")].astype({"start_s": float, "end_s": float})
    assert len(seg_units) == len(speech_rows) and seg_units.start_s.notna().all()  # every segment a unit of its own
    pairs = {(round(a, 3), round(b, 3)) for a, b in zip(speech_rows.start_s, speech_rows.end_s, strict=True)}
    assert {(a, b) for a, b in zip(seg_units.start_s, seg_units.end_s, strict=True)} == pairs
    # The page plays the segment with a second of quieter context on each side.
    session = ReviewSession.open(out, per_label=40)
    row = session.sample[session.sample.start_s.notna()].iloc[2]
    wav, sr = sf.read(io.BytesIO(session.clip(int(row["order"]))))
    assert len(wav) / sr == pytest.approx(row.end_s - row.start_s + 2.0, abs=0.05)
    state = session.state()
    # Answer every unit: segments "sad", short clips their kind.
    for r in session.sample.itertuples():
        session.answer(int(r.order), "sad" if r.path.endswith("interview.flac") else _kind(r.path))
    assert session.state()["answered"] == len(session.sample) and state["total"] == len(session.sample)
    listed = _listed(out, capsys, "--n", "40")
    assert (listed[listed.path.str.endswith("interview.flac")].label == "sad").all()  # segment answers listed too
    shifted = tmp_path / "shifted.csv"  # a stretch the recording's segments do not have
    shifted.write_text(f"path,label,start_s,end_s\n{seg_units.path.iloc[0]},sad,0.123,0.456\n")
    capsys.readouterr()
    assert _annotate(job, tmp_path / "shifted", "--reviewed", str(shifted)) == 2
    err = capsys.readouterr().err
    assert "stretch that their recording's speech segments do not have" in err and "0.123-0.456 s" in err
    first = seg_units.iloc[0]  # answered again by hand, its file named relative to the answers file: that wins
    where = os.path.relpath(Path(json.loads((out / "summary.json").read_text())["paths_relative_to"]) / first.path,
                            out / ANSWERS.parent)  # fmt: skip
    with open(out / ANSWERS, "a") as fh:
        fh.write(f"{where},,none,,,,{first.start_s:.3f},{first.end_s:.3f}\n")
    second = tmp_path / "second"
    assert _annotate(job, second, "--reviewed", str(out / ANSWERS)) == 0
    review = json.loads((second / "summary.json").read_text())["review"]
    assert review["segment_units"] == len(seg_units) and review["unmatched"] == 0
    assert review["learned_from"] == len(session.sample) - 1  # "none of these" teaches no emotion
    got = pd.read_parquet(second / "segments.parquet")
    spoken = got[got.speech_prob.notna()]
    assert spoken.reviewed.all()  # the person's answer wins for each segment, the latest for the one answered twice
    assert spoken.label.tolist() == ["none" if abs(a - first.start_s) < 2e-3 else "sad" for a in spoken.start_s]
    assert review["none_of_these"] == 1  # what is learned too, not the earlier "sad"
    assert not got[got.speech_prob.isna()].reviewed.any()


def test_a_side_of_arousal_or_valence_is_an_answer_of_its_own(job: Path, tmp_path: Path) -> None:
    """A person who cannot name an emotion can say how activated or pleasant it sounds: counted for that
    dimension, never as "none of these", never as a label."""
    out = fresh(job, tmp_path)
    session = ReviewSession.open(out, per_label=3)
    assert session.dimensions == ["arousal", "valence"]
    rows = session.sample.to_dict("records")
    session.answer(int(rows[0]["order"]), "High arousal")
    session.answer(int(rows[1]["order"]), "negative")
    for r in rows[2:]:
        session.answer(int(r["order"]), _kind(r["path"]))
    state = session.state()
    assert state["per_answer"]["none"] == 0 and state["per_answer"]["arousal:high"] == 1
    assert [a.label for a in read_answers(out / ANSWERS, KINDS).latest.values()][:2] == [
        "arousal:high",
        "valence:negative",
    ]
    second = tmp_path / "second"
    assert _annotate(job, second, "--reviewed", str(out / ANSWERS)) == 0
    review = json.loads((second / "summary.json").read_text())["review"]
    assert review["dimension_answers"] == 2 and review["none_of_these"] == 0
    assert review["learned_from"] == len(rows) - 2 and review["before"]["n"] == len(rows) - 2
    arousal = review["dimensions"]["arousal"]
    assert arousal["answers"] == len(rows) - 1 and arousal["before"]["n"] == len(rows) - 1  # 1 side + emotions
    assert 0 <= arousal["before"]["accuracy"] <= 1 and review["dimensions"]["valence"]["answers"] >= 1
    got = pd.read_parquet(second / "annotations.parquet").set_index("path")
    assert not got.loc[rows[0]["path"], "reviewed"]  # a side is not a label
    assert set(got["label"]) <= {*KINDS, "none"}


def test_after_a_review_the_reports_and_page_say_what_is_true(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reviewed file's confidence is the model's in the person's label (none for "none of these"); the page of
    the relearned reports counts the answers the job learned from, shows today's labels, and refuses to extend
    a sample drawn from the labels of another model."""
    out = fresh(job, tmp_path)
    sample = _listed(out, capsys, "--n", "3")
    sample["label"] = ["none" if i % 4 == 0 else _kind(p) for i, p in enumerate(sample["path"])]
    filled = tmp_path / "filled.csv"
    sample.to_csv(filled, index=False)
    assert _annotate(job, out, "--reviewed", str(filled), "--overwrite") == 0  # relabelled into the same folder
    got = pd.read_parquet(out / "annotations.parquet").set_index("path")
    answered = got[got.reviewed]
    assert answered.loc[answered.label == "none", "confidence"].isna().all()
    named = answered[answered.label != "none"]
    for _, r in named.iterrows():
        assert r["confidence"] == pytest.approx(r[f"p_{r['label']}"])
    page = (out / "report.html").read_text()
    least = page[page.index('id="least-sure"') :]
    assert not any(p in least for p in answered.index)  # a person's answer is no model's doubt
    session = ReviewSession.open(out, per_label=3)
    state = session.state()
    assert state["answered"] == len(sample)  # the answers the job learned from count as given
    assert "The labels are right for" in " ".join(session.measured)
    first = session.sample.iloc[0]
    assert session._item(first.to_dict(), {}, False)["model_label"] == got.at[first["path"], "label"]
    with pytest.raises(AnswersError, match="drawn from the labels of"):
        ReviewSession.open(out, per_label=10)


def test_two_stray_quotes_lines_apart_swallow_no_answers(tmp_path: Path) -> None:
    """A quote opening a cell on one line and one closing a cell five lines on: the rows between (without their
    note) stay answers."""
    sheet = tmp_path / "filled.csv"
    sheet.write_text(
        'path,label,note\n"a.wav,sad\nb.wav,sad\nc.wav,angry\nd.wav,sad\ne.wav,sad\nf.wav",sad\ng.wav,happy\n'
    )
    answers = read_answers(sheet, KINDS)
    assert [k[0] for k in answers.latest][:4] == ["b.wav", "c.wav", "d.wav", "e.wav"]
    assert [line for line, _ in answers.bad] == [2] and "unbalanced quote" in answers.bad[0][1]
    # A note with line breaks, one of its lines with commas, is still one row.
    sheet.write_text('path,label,note\nclips/a.wav,sad,"first, line\nsecond, line\nthird"\nclips/b.wav,angry,\n')
    assert [a.label for a in read_answers(sheet, KINDS).latest.values()] == ["sad", "angry"]


def test_a_header_in_any_case_and_a_file_without_its_last_line_break(tmp_path: Path) -> None:
    sheet = tmp_path / "filled.csv"
    sheet.write_bytes(b"\xef\xbb\xbf Path , LABEL \r\nclips/a.wav,sad\r\n\r\nclips/b.wav,Happy\r\nclips/c.wav,angry")
    answers = read_answers(sheet, KINDS)
    assert {k[0]: a.label for k, a in answers.latest.items()} == {"clips/a.wav": "sad", "clips/b.wav": "happy"}
    assert answers.bad == [(5, answers.bad[0][1])] and "no line break at its end" in answers.bad[0][1]
    sheet.write_text("path,Label,label\nclips/a.wav,sad,happy\n")  # which holds the answers? never guessed
    with pytest.raises(AnswersError, match=r"2 label columns \(columns 2, 3\); keep one"):
        read_answers(sheet, KINDS)
    sheet.write_bytes(b"path,label\rclips/a.wav,sad\rclips/b.wav,happy\r")  # Excel's "CSV (Macintosh)"
    with pytest.raises(AnswersError, match="carriage return alone"):
        read_answers(sheet, KINDS)
    sheet.write_text("path;label\nclips/a.wav;sad\n")  # a spreadsheet set to semicolons
    with pytest.raises(AnswersError, match="semicolons"):
        read_answers(sheet, KINDS)


def test_undo_of_a_number_not_in_the_sample_says_so_plainly(session: ReviewSession) -> None:
    from batchser.web.review import create_app

    client = create_app(session, token="t").test_client()
    session.answer(0, "sad")
    for order in [400, "400", 1.5, "1.0", -1, "-1", 10**30, True, "abc", [0], {"a": 0}]:
        resp = client.post("/undo?token=t", json={"order": order})
        error = resp.get_json()["error"]
        assert resp.status_code == 400 and "no recording's number in the sample" in error, (order, error)
        assert "Traceback" not in error and "int()" not in error
    assert list(given(session.out_dir).values()) == ["sad"]  # nothing undone by any of them
    # A form posted without scripts (the page's own undo button): the token in the form, back to the page.
    resp = client.post("/undo?blind=0", data={"token": "t"})
    assert resp.status_code == 302 and given(session.out_dir) == {}
    assert client.post("/undo", data={"token": "t"}).status_code == 400  # nothing left: a 400, never a 500


def test_undo_leaves_an_answer_another_tab_gave_since(session: ReviewSession) -> None:
    from batchser.web.review import create_app

    client = create_app(session, token="t").test_client()
    path = str(session.sample.loc[session.sample["order"] == 0, "path"].iloc[0])
    assert client.post("/answer?token=t", json={"order": 0, "label": "sad"}).status_code == 200  # this tab
    assert client.post("/answer?token=t", json={"order": 0, "label": "angry"}).status_code == 200  # another tab
    resp = client.post("/undo?token=t", json={"order": 0, "label": "sad"})  # this tab takes back its "sad"
    assert resp.status_code == 400 and "answered again since (now: angry)" in resp.get_json()["error"]
    assert given(session.out_dir) == {path: "angry"}
    assert client.post("/undo?token=t", json={"order": 0, "label": "angry"}).status_code == 200
    assert given(session.out_dir) == {path: "sad"}


def test_a_windows_path_or_a_folder_of_the_same_name_still_finds_the_file(job: Path, tmp_path: Path) -> None:
    win = job.parent / "win.csv"  # filled in on Windows, beside the clips folder
    win.write_text("path,label\nclips\\angry-00.wav,sad\n")
    lists = tmp_path / "lists"
    (lists / "sad-01.wav").mkdir(parents=True)  # a folder, beside the list, named as the answer's file
    (lists / "a.csv").write_text("path,label\nsad-01.wav,happy\n")
    try:
        for i, answers in enumerate([win, lists / "a.csv"]):
            out = tmp_path / f"out{i}"
            assert _annotate(job, out, "--reviewed", str(answers), cwd=tmp_path) == 0
            review = json.loads((out / "summary.json").read_text())["review"]
            assert review["matched"] == 1 and review["unmatched"] == 0
    finally:
        win.unlink()


def test_a_later_row_for_the_same_file_spelt_otherwise_wins(job: Path, tmp_path: Path) -> None:
    """A review's answer (with its hash and time), then a correction typed in by hand, relative to the file."""
    out = fresh(job, tmp_path)
    session = ReviewSession.open(out, per_label=2)
    row = session.sample.loc[session.sample["order"] == 0].iloc[0]
    session.answer(0, "sad")
    full = Path(json.loads((out / "summary.json").read_text())["paths_relative_to"]) / row["path"]
    with open(out / ANSWERS, "a") as fh:
        fh.write(f"{os.path.relpath(full, out / ANSWERS.parent)},,angry\n")
    second = tmp_path / "second"
    assert _annotate(job, second, "--reviewed", str(out / ANSWERS)) == 0
    review = json.loads((second / "summary.json").read_text())["review"]
    got = pd.read_parquet(second / "annotations.parquet").set_index("path")
    assert got.at[str(full), "label"] == "angry" and review["unmatched"] == 0


def test_an_answer_sent_while_an_undo_is_checked_is_never_the_one_undone(
    session: ReviewSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(session.sample.loc[session.sample["order"] == 0, "path"].iloc[0])
    session.answer(0, "sad")
    read, checked = session.refresh, threading.Event()

    def slow_read():  # type: ignore[no-untyped-def]
        got = read()
        if threading.current_thread() is not threading.main_thread():
            checked.set()
            threading.Event().wait(0.3)  # the undo has looked; another tab's answer arrives now
        return got

    monkeypatch.setattr(session, "refresh", slow_read)
    undo = threading.Thread(target=session.undo, args=(0,), kwargs={"label": "sad"})
    undo.start()
    assert checked.wait(5)
    session.answer(0, "angry")  # another tab
    undo.join()
    assert given(session.out_dir) == {path: "angry"}  # the undo took back "sad", the answer it was for


def test_two_threads_reading_new_answers_count_each_once(tmp_path: Path) -> None:
    f = AnswersFile(tmp_path)
    log = AnswerLog(tmp_path / ANSWERS, KINDS)
    f.add("clips/a.wav", "a" * 64, "sad")
    log.refresh()
    with open(tmp_path / ANSWERS, "a") as fh:  # many lines at once: the readers meet while parsing them
        fh.writelines(f"clips/a.wav,{'a' * 64},{KINDS[i % 4]},{i}\n" for i in range(20000))
    readers = [threading.Thread(target=log.refresh) for _ in range(4)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert len(log.answers.standing[("clips/a.wav", None, None)]) == 20001


def test_the_page_never_undoes_an_answer_another_tab_gave_since(job: Path, tmp_path: Path) -> None:
    out = fresh(job, tmp_path)
    server = Server(out, "--n", "2")
    try:
        with chromium() as driver:
            driver.get(server.url)
            order = int(driver.find_element("id", "order").get_attribute("value"))
            driver.find_element("tag name", "body").send_keys("1")  # this tab: the first emotion
            wait(lambda: driver.find_element("id", "message").text.startswith("Saved"))
            assert server.send("answer", {"order": order, "label": "sad"})[0] == 200  # another tab, since
            driver.find_element("tag name", "body").send_keys("u")
            wait(lambda: "answered again since" in driver.find_element("id", "message").text)
            assert not driver.find_element("id", "message").text.startswith("Not saved")
    finally:
        server.kill()
    assert list(given(out).values()) == ["sad"]


def test_undo_rows_take_back_the_latest_standing_answer_in_any_order(tmp_path: Path) -> None:
    sheet = tmp_path / "answers.csv"  # 20,000 answers and as many undos: read in one pass, each undo its own file's
    rows = [f"f{i}.wav,sad" for i in range(20000)] + [f"f{i}.wav,undo" for i in range(19999, 0, -2)]
    sheet.write_text(
        "path,label\n" + "\n".join([*rows, "a.wav,sad", "b.wav,angry", "a.wav,happy", "a.wav,undo"]) + "\n"
    )
    answers = read_answers(sheet, KINDS)
    assert len(answers.latest) == 10000 + 2 and answers.latest[("a.wav", None, None)].label == "sad"
    assert answers.last_given().path == "b.wav"  # type: ignore[union-attr]
    for path in ["b.wav", "a.wav"]:
        answers.add(Answer(path, "", "undo"))
    assert answers.last_given().path == "f19998.wav"  # type: ignore[union-attr]


def test_lines_of_stray_quotes_are_each_tried_a_few_times_not_thirty_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchser.review import lines

    sheet = tmp_path / "answers.csv"
    sheet.write_text("path,label\n" + "".join(f'"f{i}.wav",sad,"x\n"g{i}.wav,sad\n' for i in range(1000)))
    parse, calls = lines._line, [0]

    def counted(raw: bytes, n: int):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return parse(raw, n)

    monkeypatch.setattr(lines, "_line", counted)
    answers = read_answers(sheet, KINDS)
    assert len(answers.bad) == 2000 and not answers.latest
    assert calls[0] < 4 * 2001  # an error before a join's end ends the joining: linear in the lines
