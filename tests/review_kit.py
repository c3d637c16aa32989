"""What the review tests share: a small labelled job, a fresh copy of its reports, a real review server."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from batchser.cli import main
from batchser.review import ANSWERS, read_answers
from tests.conftest import speechlike, write_audio

KINDS = ["angry", "sad", "neutral", "happy"]  # the shipped model's emotions, in its order


def make_job(root: Path, *, copies: int = 0) -> Path:
    """24 generated clips (6 a kind, named by kind) annotated with the shipped model; returns the output folder.

    ``copies``: that many clips also copied, byte for byte, into ``clips/copies/``.
    """
    for i in range(24):
        kind = KINDS[i % 4]
        write_audio(root / "clips" / f"{kind}-{i:02d}.wav", speechlike(kind, sr=16000, seconds=1.5, seed=i), 16000)
    for i in range(copies):
        src = root / "clips" / f"{KINDS[i % 4]}-{i:02d}.wav"
        (root / "clips" / "copies").mkdir(exist_ok=True)
        (root / "clips" / "copies" / f"copy-{src.name}").write_bytes(src.read_bytes())
    out = root / "out"
    args = ["annotate", "-q", str(root / "clips"), "--out", str(out), "--cache", str(root / "cache"), "-j", "1"]
    assert main(args) == 0
    return out


def fresh(job: Path, tmp_path: Path) -> Path:
    """A copy of the job's reports (and no review yet) for one test."""
    out = tmp_path / "out"
    out.mkdir()
    for f in job.iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    return out


def given(out: Path) -> dict[str, str]:
    """Report path -> the answer standing, from the job's answers file."""
    path = out / ANSWERS
    return {k[0]: a.label for k, a in read_answers(path, KINDS).latest.items()} if path.is_file() else {}


class Server:
    """``batchser review OUT`` in a subprocess: its address, token and request log."""

    def __init__(self, out: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchser", "review", str(out), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=(\S+)", line)
        assert m, line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.base, self.token = m.group(1), m.group(2)
        self.url = f"{self.base}?token={self.token}"

    def get(self, path: str, *, token: bool = True) -> tuple[int, bytes]:
        sep = "&" if "?" in path else "?"
        url = self.base + path + (f"{sep}token={self.token}" if token else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def send(self, what: str, body: Any, *, token: bool = True) -> tuple[int, dict[str, Any]]:
        """POST ``body`` (JSON) to ``what``: the status and the JSON reply."""
        url = self.base + what + (f"?token={self.token}" if token else "")
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def post(self, body: bytes, *, token: bool = True, kind: str = "application/json") -> int:
        url = self.base + "answer" + (f"?token={self.token}" if token else "")
        req = urllib.request.Request(url, data=body, headers={"Content-Type": kind}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def kill(self) -> str:
        """Stop the server (SIGKILL); returns what it wrote to stderr (its request log)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return self.proc.stderr.read() if self.proc.stderr else ""


def wait(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Until ``cond()`` holds; an element that went away as the page reloaded just means "not yet"."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    end = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except (StaleElementReferenceException, NoSuchElementException):
            pass
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)
