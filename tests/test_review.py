"""batchser review: a person checks a sample in a real browser, every answer survives, the job learns from them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchser.cli import main
from batchser.review import ANSWERS, AnswersFile, choose, estimate, read_sample
from tests.browser import chromium, console_errors
from tests.conftest import SHARED
from tests.review_kit import KINDS, Server, fresh, given, make_job, wait


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled folder of 24 generated clips (6 a kind), annotated with the shipped model."""
    return make_job(tmp_path_factory.mktemp("review"))


@pytest.fixture
def served(job: Path, tmp_path: Path) -> Iterator[tuple[Path, Server]]:
    out = fresh(job, tmp_path)
    server = Server(out, "--n", "3")
    try:
        yield out, server
    finally:
        server.kill()


def test_answer_by_keyboard_in_a_browser_and_lose_nothing_to_a_kill(
    served: tuple[Path, Server], tmp_path: Path
) -> None:
    out, server = served
    sample = read_sample(out)
    assert len(sample) == 12 and set(sample["part"]) == {"random"}  # 3 per model label, 4 labels
    with chromium() as driver:
        driver.get(server.url)
        # The clip plays: the browser decoded the WAV the server made from the job's own file.
        wait(lambda: driver.execute_script("return document.getElementById('player').readyState") >= 1)
        assert driver.execute_script("return document.getElementById('player').duration") == pytest.approx(1.5, 0.05)
        first = driver.find_element("id", "path").text
        body = driver.find_element("tag name", "body")
        body.send_keys("2")  # the second emotion on the page
        wait(lambda: driver.find_element("id", "answered").text == "1")
        assert given(out) == {
            first: driver.find_elements("css selector", "#answer-form button")[1].get_attribute("value")
        }
        body.send_keys("0")  # none of these
        wait(lambda: driver.find_element("id", "answered").text == "2")
        body.send_keys("s")  # skip: not counted, asked again at the end
        wait(lambda: len(given(out)) == 3)
        assert driver.find_element("id", "answered").text == "2"
        assert not console_errors(driver)
    answers = given(out)
    assert sorted(answers.values()).count("none") == 1 and sorted(answers.values()).count("skip") == 1

    # kill -9 mid-session, start again: every answer is there and the page goes on from the next file.
    server.kill()
    again = Server(out, "--n", "3")
    try:
        assert given(out) == answers
        with chromium() as driver:
            driver.get(again.url)
            assert driver.find_element("id", "answered").text == "2"
            assert driver.find_element("id", "path").text not in answers
        status, raw = again.get("state")
        assert status == 200 and json.loads(raw)["answered"] == 2
    finally:
        again.kill()


def test_two_tabs_answer_side_by_side(served: tuple[Path, Server]) -> None:
    out, server = served
    with chromium() as driver:
        driver.get(server.url)
        first = driver.find_element("id", "path").text
        driver.switch_to.new_window("tab")
        driver.get(server.url)
        assert driver.find_element("id", "path").text == first  # both show the first unanswered file
        driver.find_element("tag name", "body").send_keys("1")
        wait(lambda: driver.find_element("id", "answered").text == "1")
        second = driver.find_element("id", "path").text
        driver.switch_to.window(driver.window_handles[0])
        driver.find_element("tag name", "body").send_keys("3")  # answers the same first file again: latest wins
        wait(lambda: driver.find_element("id", "answered").text == "1")
        assert driver.find_element("id", "path").text == second
    lines = (out / ANSWERS).read_text().splitlines()
    assert len(lines) == 3  # header and both answers, appended
    assert given(out)[first] == KINDS[2]  # the page's third emotion: the model's classes in order


def test_the_page_works_without_javascript(served: tuple[Path, Server]) -> None:
    out, server = served
    with chromium(javascript=False) as driver:
        driver.get(server.url)
        first = driver.find_element("id", "path").text
        driver.find_element("css selector", "button[value='none']").click()  # a plain form post
        wait(lambda: driver.find_element("id", "answered").text == "1")
    assert given(out) == {first: "none"}


def test_requests_without_the_token_or_outside_the_sample_are_refused(served: tuple[Path, Server]) -> None:
    out, server = served
    assert server.get("", token=False)[0] == 403
    assert server.get("state", token=False)[0] == 403
    assert server.get("clip/0", token=False)[0] == 403
    assert server.get("?token=wrong", token=False)[0] == 403
    assert server.get("clip/0")[0] == 200
    for path in ("clip/999", "clip/-1", "clip/..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "static/../../summary.json"):
        assert server.get(path)[0] == 404, path
    # Answers without the token, too big, or malformed: refused, nothing written.
    assert server.post(json.dumps({"order": 0, "label": "sad"}).encode(), token=False) == 403
    assert server.post(json.dumps({"order": 0, "label": "sad", "pad": "x" * 100_000}).encode()) == 413
    assert server.post(json.dumps({"order": 0, "label": "<script>"}).encode()) == 400
    assert server.post(json.dumps({"order": "zero", "label": "sad"}).encode()) == 400
    assert server.post(json.dumps({"order": 12345, "label": "sad"}).encode()) == 400
    assert server.post(b"{not json", kind="application/json") == 400
    assert not (out / ANSWERS).exists()
    assert server.post(json.dumps({"order": 0, "label": "sad"}).encode()) == 200
    assert len(given(out)) == 1


def test_the_server_listens_on_loopback_only(served: tuple[Path, Server]) -> None:
    _, server = served
    assert server.base.startswith("http://127.0.0.1:")
    port = int(server.base.rsplit(":", 1)[1].strip("/"))
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    mine = [
        line.split()[1] for line in listening if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
    ]
    assert mine == [f"0100007F:{port:04X}"]


def test_list_prints_the_sample_and_more_can_be_asked_for(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = fresh(job, tmp_path)
    assert main(["review", str(out), "--n", "2", "--list"]) == 0
    first = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    columns = [
        "order", "path", "content_hash", "start_s", "end_s", "model_label", "confidence", "part", "stratum_size",
        "strata", "label",
    ]  # fmt: skip
    assert len(first) == 8 and list(first.columns) == columns
    assert main(["review", str(out), "--n", "4", "--list"]) == 0
    more = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(more) == 16 and more["path"].iloc[:8].tolist() == first["path"].tolist()  # the first ones stay first
    assert more["path"].is_unique


def test_review_says_what_to_run_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", str(tmp_path)]) == 1
    assert "batchser annotate" in capsys.readouterr().err


# -- the sample and the estimate --------------------------------------------------------------


def test_the_sample_is_stratified_by_label_and_drawn_at_random() -> None:
    labels = ["a"] * 100 + ["b"] * 10 + ["c"] * 2
    conf = np.linspace(0.3, 0.9, 112)
    picked = choose(labels, conf, per_label=5, seed=1)
    by = pd.Series([labels[i] for i, _ in picked]).value_counts().to_dict()
    assert by == {"a": 5, "b": 5, "c": 2}  # rare labels reviewed too; a label with 2 files gives 2
    assert choose(labels, conf, per_label=5, seed=1) == picked  # repeatable
    unsure = choose(labels, conf, per_label=4, random_share=0.0, seed=1)
    assert [i for i, _ in unsure if labels[i] == "a"] == [0, 1, 2, 3]  # the least confident


def test_the_estimate_weights_strata_by_their_share_of_the_archive() -> None:
    # 90 % of the archive is labelled "a" and right 90 % of the time; 10 % "b", right 10 %.
    pred = ["a"] * 10 + ["b"] * 10
    truth = ["a"] * 9 + ["b"] + ["a"] * 9 + ["b"]
    got = estimate(pred, truth, pred, {"a": 900, "b": 100}, classes=["a", "b"])
    # Each label weighted by its share of the files no one answered: 890 and 90.
    assert got["accuracy"] == pytest.approx((890 * 0.9 + 90 * 0.1) / 980)
    lo, hi = got["accuracy_ci"]
    assert lo < got["accuracy"] < hi and hi - lo < 0.4


# -- learning from the answers ---------------------------------------------------------------


@pytest.mark.skipif(not (SHARED / "emovo").is_dir(), reason=f"needs the EMOVO corpus at {SHARED / 'emovo'} (CI has it)")
def test_a_job_learns_from_answers_and_says_what_they_bought(tmp_path: Path) -> None:
    emovo = SHARED / "emovo"
    cache = str(tmp_path / "cache")
    first = tmp_path / "first"
    assert main(["annotate", "-q", str(emovo), "--speaker-folders", "--out", str(first), "--cache", cache]) == 0
    assert main(["review", str(first), "--list"]) == 0
    sample = read_sample(first)
    code = {"rab": "angry", "gio": "happy", "neu": "neutral", "tri": "sad"}
    answers = AnswersFile(first)
    for r in sample.itertuples():
        answers.add(r.path, r.content_hash, code[Path(r.path).name.split("-")[0]])
    second = tmp_path / "second"
    args = ["annotate", "-q", str(emovo), "--speaker-folders", "--out", str(second), "--cache", cache]
    assert main([*args, "--reviewed", str(first / ANSWERS)]) == 0

    def accuracy(out: Path, unreviewed: bool) -> float:
        a = pd.read_parquet(out / "annotations.parquet")
        truth = a.path.str.split("/").str[-1].str.split("-").str[0].map(code)
        keep = ~a.reviewed if unreviewed else a.path.notna()
        return float((a.label == truth)[keep].mean())

    a = pd.read_parquet(second / "annotations.parquet")
    assert a.reviewed.sum() == len(sample) == 80
    assert accuracy(second, True) > accuracy(first, False) + 0.03  # measured 0.70 -> 0.76
    summary = json.loads((second / "summary.json").read_text())
    review = summary["review"]
    assert review["learned_from"] == 80 and review["random_sample"] is True
    assert summary["from_cache"] == 336 and summary["extracted"] == 0  # nothing decoded again
    for when, true in (("before", accuracy(first, False)), ("after", accuracy(second, True))):
        lo, hi = review[when]["accuracy_ci"]
        assert lo <= true <= hi, (when, lo, true, hi)
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["review"]["after"]["uar"] > metrics["review"]["before"]["uar"]
    assert summary["model"] != json.loads((first / "summary.json").read_text())["model"]  # the refitted weights


def test_stale_and_foreign_answers(job: Path, tmp_path: Path) -> None:
    clips = job.parent / "clips"
    table = pd.read_parquet(job / "annotations.parquet")
    answers = tmp_path / "mine.csv"  # any CSV with path and label columns
    rows = [f"{p},{KINDS[i % 4]}" for i, p in enumerate(table.path)]
    answers.write_text("path,label\n" + "\n".join(rows[:8]) + "\nnot/in/the/job.wav,sad\n")
    out = tmp_path / "out"
    cache = str(job.parent / "cache")
    args = ["annotate", "-q", str(clips), "--out", str(out), "--cache", cache, "-j", "1"]
    assert main([*args, "--reviewed", str(answers)]) == 0
    review = json.loads((out / "summary.json").read_text())["review"]
    assert review["learned_from"] == 8 and review["unmatched"] == 1 and review["random_sample"] is False
    got = pd.read_parquet(out / "annotations.parquet").set_index("path")
    for i, p in enumerate(table.path[:8]):
        assert got.at[p, "reviewed"] and got.at[p, "label"] == KINDS[i % 4]  # the person's answer wins
    # An answer given for other bytes than the file holds now is set aside, named.
    stale = tmp_path / "stale.csv"
    stale.write_text(f"path,content_hash,label\n{table.path[0]},{'0' * 64},sad\n{table.path[1]},,{KINDS[1]}\n")
    assert main([*args, "--overwrite", "--reviewed", str(stale)]) == 0
    assert json.loads((out / "summary.json").read_text())["review"]["stale"] == [table.path[0]]


def test_reviewed_is_checked_before_any_work(job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\nx.wav,sad\n")
    args = ["annotate", "-q", str(job.parent / "clips"), "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
    assert main([*args, "--reviewed", str(bad)]) == 2
    assert "needs path and label columns" in capsys.readouterr().err
    assert main([*args, "--reviewed", str(tmp_path / "missing.csv")]) == 2
    assert not (tmp_path / "c").exists()
