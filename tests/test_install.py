"""batchser as a user gets it: a wheel installed into a fresh environment, run from another folder."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PROJECT, speechlike, write_audio


def test_a_wheel_labels_a_folder_with_the_packaged_model_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(PROJECT),
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("batchser-*.whl")
    # A fresh environment; the dependencies come from this one (no network needed), batchser from the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # This interpreter's packages, seen from the new one whether or not this one runs in a venv itself
    # (--system-site-packages would give the base interpreter's, which a venv's pip never filled).
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(site) / "batchser-test-deps.pth").write_text("\n".join(sorted(here)) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import batchser; print(batchser.__file__)"], cwd=work, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel's copy, not this checkout
    for i, kind in enumerate(["angry", "sad", "neutral", "happy"]):
        write_audio(work / "clips" / f"{kind}.wav", speechlike(kind, sr=16000, seconds=1.5, seed=i), 16000)
    res = subprocess.run(
        [str(venv / "bin" / "batchser"), "annotate", "clips", "--out", "out", "--cache", "cache", "-j", "1"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    a = pd.read_csv(work / "out" / "annotations.csv")
    assert len(a) == 4 and (a.status == "ok").all() and a.model.str.startswith("pooled-4emo@").all()
    # The Python interface outside a checkout, with the shipped model from the wheel.
    code = "import batchser; t = batchser.annotate('clips', cache='cache', n_jobs=1); print(len(t), t.model.iloc[0])"
    res = subprocess.run([str(py), "-c", code], cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("4 pooled-4emo@"), res.stderr
    version = subprocess.run([str(venv / "bin" / "batchser"), "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("batchser ")
