"""report.html: one self-contained page per job, checked in a real headless Chromium."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from batchser.cli import main
from batchser.web.page import render
from tests.browser import chromium, console_errors
from tests.conftest import PROJECT, speechlike, write_audio
from tests.synthetic_report import synthetic_stats

KINDS = ["angry", "sad", "neutral", "happy"]
ARTEFACTS = PROJECT / "result" / "test-artefacts"


@pytest.fixture(scope="module")
def labelled_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelling job over 24 generated clips (one with HTML in its name) whose true labels are known."""
    root = tmp_path_factory.mktemp("page")
    names = []
    for i in range(24):
        kind = KINDS[i % 4]
        name = f"{kind}-{i:02d}.wav" if i else '<img src=x onerror="window.pwned=1">.wav'
        write_audio(root / "clips" / name, speechlike(kind, sr=16000, seconds=1.5, seed=i), 16000)
        names.append((name, kind))
    (root / "clips" / "labels.csv").write_text("path,label\n" + "".join(f'"{n}",{k}\n' for n, k in names))
    import batchser.api
    from batchser.job import run_job

    manifest = batchser.api.annotation_manifest(
        [root / "clips"], out_dir=root / "out", labels=f"csv:{root / 'clips' / 'labels.csv'}", cache=root / "cache",
        n_jobs=1,
    )  # fmt: skip
    run_job(manifest, progress=False)
    return root / "out"


def test_every_job_writes_its_page_with_the_set(labelled_job: Path) -> None:
    summary = json.loads((labelled_job / "summary.json").read_text())
    page = labelled_job / "report.html"
    assert summary["reports"]["report.html"]["sha256"] == hashlib.sha256(page.read_bytes()).hexdigest()
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # offline: nothing loaded from elsewhere
    assert "<script" not in text  # nothing to run: it works with JavaScript off


def test_the_page_in_chromium_shows_the_jobs_own_numbers(labelled_job: Path) -> None:
    metrics = json.loads((labelled_job / "metrics.json").read_text())["labelled_files"]
    summary = json.loads((labelled_job / "summary.json").read_text())
    for javascript in (True, False):
        with chromium(javascript=javascript) as driver:
            driver.get((labelled_job / "report.html").as_uri())
            text = lambda i: driver.find_element("id", i).text  # noqa: E731
            assert text("n-files") == str(summary["files"]) == "24"
            assert "trained on ased, emovo, nemo, ravdess, savee, urdu" in driver.find_element("id", "what-ran").text
            assert text("score-n") == str(metrics["n"])
            assert text("score-accuracy") == f"{metrics['accuracy']:.1%}"
            assert text("score-uar") == f"{metrics['uar']:.1%}"
            assert text("score-macro-f1") == f"{metrics['macro_f1']:.1%}"
            assert text("score-ece") == f"{metrics['calibration']['ece']:.3f}"
            # A file name holding HTML is shown as text and runs nothing.
            assert driver.execute_script("return window.pwned === undefined")
            assert any('onerror="window.pwned=1"' in e.text for e in driver.find_elements("class name", "path"))
            if javascript:
                assert not console_errors(driver)
                ARTEFACTS.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(ARTEFACTS / "report-small.png"))


def test_a_labelling_job_scores_itself_and_names_labels_outside_the_model(tmp_path: Path) -> None:
    for i, kind in enumerate(KINDS * 2 + ["calm", "calm", "fearful"]):
        write_audio(
            tmp_path / "c" / f"{kind}-{i}.wav", speechlike(kind if kind in KINDS else "sad", sr=16000, seed=i), 16000
        )
    rows = "".join(f"{p.name},{p.name.split('-')[0]}\n" for p in sorted((tmp_path / "c").glob("*.wav")))
    (tmp_path / "labels.csv").write_text("path,label\n" + rows.replace(",", ",", 1))
    (tmp_path / "c" / "labels.csv").write_text("path,label\n" + rows)
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: scored\ninputs: [{path: c, labels: 'csv:c/labels.csv'}]\n"
        "cache: cache\nengine: {backend: sequential}\nmodel: {train: false}\noutput: {dir: out}\n"
    )
    assert main(["run", "-q", str(job)]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["labelled_files"]["n"] == 8
    assert metrics["labels_outside_the_model"]["counts"] == {"calm": 2, "fearful": 1}
    assert {"accuracy", "uar", "macro_f1", "confusion_matrix", "per_class", "calibration"} <= set(
        metrics["labelled_files"]
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["scores"]["labelled_files"]["n"] == 8


def test_report_draws_the_page_again_and_the_set_stays_the_jobs(labelled_job: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    out.mkdir()
    for f in labelled_job.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    (out / "report.html").write_text("old")
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Scores on the files whose true label is known" in page
    digest = json.loads((out / "summary.json").read_text())["reports"]["report.html"]
    assert digest["sha256"] == hashlib.sha256(page.encode()).hexdigest() and digest["bytes"] == len(page.encode())


def test_a_100000_file_report_stays_small_and_loads_cleanly(tmp_path: Path) -> None:
    stats = synthetic_stats(100_000)
    summary = {"job": "big", "files": 100_000, "from_cache": 100_000, "extracted": 0, "inputs": ["/archive"],
               "failed": stats.n_files - stats.n_ok, "model": "pooled-4emo@x", "seconds": 30.0}  # fmt: skip
    page = tmp_path / "report.html"
    page.write_text(render(stats, summary))
    assert page.stat().st_size < 2 * 2**20  # aggregated: the size does not grow with the files
    assert page.read_text().count("<tr>") < 500
    with chromium() as driver:
        driver.get(page.as_uri())
        assert driver.find_element("id", "n-files").text == "100000"
        assert len(driver.find_elements("css selector", "#long svg")) == 5
        assert not console_errors(driver)
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTEFACTS / "report-100000.png"))
    assert not math.isnan(stats.least_sure[0]["confidence"])


def test_least_sure_rows_show_the_true_label_when_known(labelled_job: Path) -> None:
    text = (labelled_job / "report.html").read_text()
    least = text[text.index('id="least-sure"') :]
    assert "<th>true label</th>" in least
    assert sum(f"<td>{k}</td></tr>" in least for k in KINDS) >= 2  # the last cell of rows: their true labels


def test_speakers_named_by_folders_are_not_tabled_twice(tmp_path: Path) -> None:
    for i in range(24):
        kind = KINDS[i % 4]
        y = speechlike(kind, sr=16000, seconds=1.5, seed=i)
        write_audio(tmp_path / "clips" / f"spk{i % 2}" / f"{kind}-{i:02d}.wav", y, 16000)
    out = tmp_path / "out"
    args = ["annotate", "-q", str(tmp_path / "clips"), "--out", str(out), "--cache", str(tmp_path / "c"), "-j", "1"]
    assert main([*args, "--speaker-folders"]) == 0
    text = (out / "report.html").read_text()
    assert "By speaker" in text and "By folder" not in text


def test_a_job_of_one_long_recording_reads_right(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    parts = []
    for i in range(8):
        parts += [speechlike(KINDS[i % 4], sr=16000, seconds=2.0, seed=i), 0.001 * rng.standard_normal(16000)]
    write_audio(tmp_path / "in" / "talk.wav", np.concatenate(parts).astype(np.float32), 16000)
    out = tmp_path / "out"
    args = ["annotate", "-q", str(tmp_path / "in"), "--out", str(out), "--cache", str(tmp_path / "c"), "-j", "1"]
    assert main([*args, "--segments", "windows"]) == 0
    text = (out / "report.html").read_text()
    header = text[text.index("<h1>") : text.index("</h1>")]
    assert "1 file," in header and "1 files" not in header
    assert " files/s" not in text[: text.index("</header>")]  # a rate of 0 files/s says nothing; audio per second does
    assert "s of audio per second" in text
    assert 'id="by-segment"' in text  # the charts count its pieces, not its one file
    assert 'id="none-explained"' in text and "had no group of 10 or more recordings" in text
