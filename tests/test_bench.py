"""The benchmark scripts still run and print what the README quotes (tiny sizes; no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT


def bench(script: str, *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(PROJECT / "bench" / script), *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def row(lines: list[str], start: str) -> list[str]:
    found = [line.split() for line in lines if line.lstrip().startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def test_extract_speed_compares_tutorial_loop_floor_and_jobs(ravdess48_dir: Path) -> None:
    lines = bench("extract_speed.py", "--corpus", "ravdess-48k", "--repeats", "1", "--files", "40")
    labels = ("tutorial loop", "floor (1 core)", "batchser 1 core", "pinned 1 core", "batchser cold", "batchser warm")
    for label in (*labels, "shipped cold", "pinned cold"):
        cells = row(lines, f"ravdess-48k  {label}")
        assert cells[len(label.split()) + 1] == "40"  # files
        assert float(cells[len(label.split()) + 3]) > 0  # wall s
    for what in ("features vs tutorial loop", "tuning pinned at 0.0 vs tutorial loop"):
        parity = row(lines, f"ravdess-48k: {what}")
        assert float(parity[parity.index("difference") + 1].rstrip(";")) < 1e-2


@pytest.mark.parametrize("features", ["shipped", "tutorial"])
def test_scaling_reports_both_sizes(ravdess_dir: Path, features: str) -> None:
    lines = bench("scaling.py", "--sizes", "40,80", "--features", features)
    assert [line.split()[0] for line in lines[2:]] == ["40", "80"]
    first, second = row(lines, "40"), row(lines, "80")
    assert first[4] == first[7] == "1.00x"  # files/s and peak RSS relative to the first size
    assert float(second[3]) > 0 and second[6] == "MiB" and second[7].endswith("x")
    if features == "tutorial":  # the tutorial loop's time for the same files over the job's
        assert lines[1].split()[-2:] == ["vs", "tutorial"] and float(second[-1].rstrip("x")) > 0


def test_long_file_is_analysed_window_by_window(ravdess_dir: Path) -> None:
    lines = bench("long_file.py", "--minutes", "0.5", "--repeats", "1")
    default, flat = row(lines, "long, windows"), row(lines, "long, no overlap")
    # 30 s in 4 s windows: every 2 s with overlap (15), every 4 s without (8).
    assert int(default[-3]) == 15 and int(flat[-3]) == 8
    # RAVDESS sentences back to back: a few speech segments, each a sentence or more.
    assert 1 <= int(row(lines, "long, speech")[-3]) <= 30
    # The labelling job, before file standardisation, standardised over itself, and with turns: times and memory.
    for job in ("job today", "job over itself", "job with turns"):
        cells = row(lines, job)
        assert float(cells[-5]) > 0 and float(cells[-4]) > 0 and cells[-1] == "MiB", cells
    assert any(line.startswith("standardising over itself: ") for line in lines)


def test_cache_scale_prints_a_row_per_cache_size() -> None:
    lines = bench("cache_scale.py", "--sizes", "100,3000", "--repeats", "1")
    for size in ("100", "3,000"):
        cells = row(lines, size)
        assert float(cells[1]) > 0 and cells[2].endswith("x") and float(cells[3]) > 0


def test_review_page_prints_every_request_kind() -> None:
    lines = bench("review_page.py", "--rows", "3000", "--long-hours", "0.1")
    kinds = ("open (read report, draw sample)", "page", "state", "answer", "clip", "clip: a speech segment")
    for kind in kinds:
        cells = [c.strip() for c in next(line for line in lines if line.startswith(f"| {kind}")).split("|")]
        assert cells[2].endswith(" ms") and cells[5].endswith("x"), cells  # median, ratio to 1,000 rows


def test_speech_segments_measures_non_speech_time() -> None:
    if not (PROJECT.parent / "shared" / "corpora" / "emovo").is_dir():
        pytest.skip("needs ../shared/corpora/emovo (present in CI)")
    lines = bench("speech_segments.py", "--clips", "12", "--repeats", "1")
    cells = [c.strip() for c in next(line for line in lines if line.startswith("| all |")).split("|")]
    windows, segments = float(cells[3].rstrip("%")), float(cells[5].rstrip("%"))
    assert windows > 50 and segments < 10, cells  # tones, noise and silence: labelled by windows, not by segments
    uar = [c.strip() for c in next(line for line in lines if line.startswith("| per speech segment |")).split("|")]
    assert uar[3].endswith("%") and any(line.startswith("VAD share") for line in lines)


def test_interviews_score_segments_against_the_clips_they_came_from() -> None:
    if not (PROJECT.parent / "shared" / "corpora" / "emovo").is_dir():
        pytest.skip("needs ../shared/corpora/emovo (present in CI)")
    lines = bench("interviews.py", "--corpora", "emovo", "--models", "shipped", "--max-clips", "20")
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("| ")]
    uar = {c[0]: c[1] for c in cells}
    for config in ("today", "file-standardised", "speaker turns", "diarizer names", "clips, per input"):
        assert uar[config].endswith("%") and 0 < float(uar[config].rstrip("%")) <= 100, uar
    assert any(line.startswith("file-standardised - clips per input: ") for line in lines)
    # Three interviews of about 24 segments each: each standardised over itself, each speaker over their own.
    how = next(line for line in lines if line.strip().startswith("emovo: today:"))
    assert "today: {'none'" in how and "file-standardised: {'file'" in how and "speaker turns: {'speaker'" in how


def test_report_page_prints_render_load_and_size() -> None:
    from tests.browser import _need

    _need()
    lines = bench("report_page.py", "--files", "2000")
    cells = [c.strip() for c in next(line for line in lines if line.startswith("| 2,000 |")).split("|")]
    assert float(cells[2]) > 0 and float(cells[3]) > 0 and float(cells[4]) > 0


def test_formats_compares_an_m4a_with_its_flac(ravdess48_dir: Path) -> None:
    lines = bench("formats.py", "--minutes", "0.5", "--repeats", "1", "--bit-rates", "96000,192000")
    flac, m4a = row(lines, "flac"), row(lines, "m4a")
    assert flac[3] == flac[5] == "1.00x" and m4a[3].endswith("x") and m4a[5].endswith("x")  # wall, CPU vs FLAC
    assert flac[-1] == m4a[-1] == "ok" and m4a[7] == "MiB" and float(m4a[6]) > 0
    for rate in ("96k", "192k"):  # file label, segments, share of segment labels equal to the FLAC's, ...
        cells = row(lines, rate)
        assert int(cells[2]) > 0 and cells[3].endswith("%") and cells[-1] == "pt"


def test_dimensions_prints_every_variant_for_both_dimensions(tmp_path: Path) -> None:
    corpora = PROJECT.parent / "shared" / "corpora"
    if not all((corpora / c).is_dir() for c in ("ravdess", "savee", "nemo", "urdu", "emovo", "ased")):
        pytest.skip("needs the six corpora in ../shared/corpora (present in CI)")
    lines = bench("dimensions.py", "--per-class", "5", "--cache", str(tmp_path / "cache"), "--no-cost")
    tables = [i for i, line in enumerate(lines) if line.startswith(("arousal:", "valence:"))]
    assert len(tables) == 2
    for start in tables:
        body = lines[start:]
        for variant in ("what ships:", "read off the four-class model", "soft targets (circumplex", "own, C=0.01 |"):
            cells = [c.strip() for c in next(line for line in body if line.startswith(f"| {variant}")).split("|")]
            assert len(cells) == 13 and cells[8].startswith("**") and cells[8].endswith("%**"), cells  # the mean
            assert 0 <= float(cells[11]) <= 0.5  # mean ECE


def test_disk_writes_prints_bytes_written_kept_and_per_stage() -> None:
    lines = bench("disk_writes.py", "--quick")
    for what in ("job 300", "fill 3000/400", "fill 3000/100"):
        cells = row(lines, what)
        written, kept = float(cells[-5]), float(cells[-4])
        assert written > 0 and kept > 0 and cells[-3].endswith("x") and float(cells[-2]) > 0, cells
    stages = row(lines, "this tree")
    assert len(stages) == 9 and float(stages[4]) > 0, stages  # parts are written
