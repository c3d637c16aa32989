"""Live capture through real PyAudio/PortAudio/ALSA, and a run that watches the queue.

CI has no microphone, so each test gives ALSA a real capture device that
replays a file: an ``.asoundrc`` in a temp HOME defines ``pcm.batchser_test``
(and the default PCM) as the ``file`` plugin with ``infile`` set to raw 16-bit
16 kHz mono espeak-ng speech. PyAudio opens it like any microphone; past the
end of the file it reads silence, as a quiet room would give.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from batchser.capture import frame_levels, trim_silence
from tests.conftest import PROJECT

SR = 16000
DEVICE = "batchser_test"
SENTENCE = "Kids are talking by the door"


def _need_tools() -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (apt-get install espeak-ng sox; .ci/run installs them)")
    try:
        import pyaudio  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"needs PyAudio ({exc}): pip install -e '.[mic]' with portaudio19-dev installed")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """espeak-ng saying a RAVDESS sentence, as int16 at 16 kHz, converted by sox."""
    _need_tools()
    d = tmp_path_factory.mktemp("speech")
    subprocess.run(["espeak-ng", "-w", str(d / "s.wav"), SENTENCE], check=True, capture_output=True)
    raw = d / "s.raw"
    subprocess.run(
        ["sox", str(d / "s.wav"), "-r", str(SR), "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw", str(raw)],
        check=True,
        capture_output=True,
    )
    return np.fromfile(raw, dtype="<i2")


def room(seconds: float, *, seed: int) -> np.ndarray:
    """Quiet room noise at about -66 dBFS: a real microphone never gives digital zeros."""
    return np.random.default_rng(seed).normal(0, 16, round(seconds * SR)).astype(np.int16)


class Device:
    """A HOME whose .asoundrc makes ``stream`` a capture device, plus a job using it."""

    def __init__(self, root: Path, stream: np.ndarray) -> None:
        self.home = root / "home"
        self.home.mkdir()
        self.raw = root / "capture.raw"
        stream.astype("<i2").tofile(self.raw)
        self.stream = stream
        pcm = f'{{\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n  infile "{self.raw}"\n  format "raw"\n}}\n'
        (self.home / ".asoundrc").write_text(f"pcm.{DEVICE} {pcm}pcm.!default {pcm}")
        self.queue = root / "queue"
        self.out = root / "out"
        self.manifest = root / "job.yaml"
        self.manifest.write_text(
            yaml.safe_dump(
                {
                    "name": "mic",
                    "inputs": [{"path": str(PROJECT / "data" / "demo")}],
                    "emotions": ["angry", "sad", "neutral", "happy"],
                    "model": {"path": str(PROJECT / "result" / "models" / "ravdess-4emo.skops")},
                    "cache": str(root / "cache"),
                    "queue": str(self.queue),
                    "output": {"dir": str(self.out)},
                    "engine": {"backend": "loky", "n_jobs": 2},
                }
            )
        )

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home), "PYTHONPATH": str(PROJECT)}

    def batchser(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "batchser", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def clips(self) -> list[Path]:
        return sorted(self.queue.glob("*.wav")) if self.queue.is_dir() else []


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Where ``needle`` occurs exactly in ``haystack`` (-1 if nowhere)."""
    n = len(needle)
    candidates = np.flatnonzero(haystack[: len(haystack) - n + 1] == needle[0])
    return next((int(i) for i in candidates if np.array_equal(haystack[i : i + n], needle)), -1)


def _extent(x: np.ndarray) -> tuple[int, int]:
    """First and last sample of ``x`` louder than -40 dBFS peak (independent of the frame rule)."""
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 328)
    return int(loud[0]), int(loud[-1])


@pytest.fixture
def device(tmp_path: Path, speech: np.ndarray) -> Device:
    return Device(tmp_path, np.concatenate([room(1.0, seed=1), speech, room(3.0, seed=2)]))


# -- pure helpers --------------------------------------------------------------------


def test_trim_silence_keeps_the_margin_around_sound() -> None:
    x = np.concatenate([np.zeros(SR, np.int16), np.full(SR // 2, 3000, np.int16), np.zeros(SR, np.int16)])
    y = trim_silence(x, sample_rate=SR, threshold_db=-40, frame_s=0.01, keep_s=0.1)
    assert len(y) == SR // 2 + 2 * SR // 10 and y.max() == 3000
    assert trim_silence(np.zeros(SR, np.int16), sample_rate=SR).size == 0
    levels = frame_levels(np.full(480, 16384, np.int16), frame=480)
    assert levels[0] == pytest.approx(-6.02, abs=0.01)


# -- through the real device -------------------------------------------------------


def test_list_devices_shows_the_alsa_device_without_backend_noise(device: Device) -> None:
    res = device.batchser("capture", "--list-devices")
    assert res.returncode == 0, res.stderr
    assert DEVICE in res.stdout
    assert "ALSA lib" not in res.stderr and "jack" not in res.stderr.lower()  # PortAudio's probing is kept quiet


def test_capture_queues_the_utterance_bit_exact_and_trimmed(device: Device, speech: np.ndarray) -> None:
    res = device.batchser("capture", str(device.manifest), "--device", DEVICE)
    assert res.returncode == 0, res.stderr
    (clip,) = device.clips()
    assert clip.name.startswith("clip-") and "stopped by silence" in res.stdout
    info = sf.info(clip)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    y, _ = sf.read(clip, dtype="int16")
    # What PortAudio delivered is exactly the replayed stream, cut around the speech.
    at = _find(device.stream, y)
    assert at >= 0, "the clip is not a slice of what the device played"
    first, last = _extent(device.stream)
    keep, frame = round(0.1 * SR), round(0.03 * SR)
    assert abs(at - (first - keep)) <= frame  # 0.1 s of lead-in kept, to a frame
    assert abs((at + len(y)) - (last + keep)) <= frame
    speech_s = (last - first) / SR
    assert len(y) / SR == pytest.approx(speech_s + 0.2, abs=0.07)
    assert not list(device.queue.glob(".*"))  # no temp file left behind


def test_default_device_and_fixed_length(device: Device) -> None:
    # No --device: PortAudio's default input, which the .asoundrc also points at the file.
    res = device.batchser("capture", str(device.manifest), "--seconds", "1.5")
    assert res.returncode == 0, res.stderr
    (clip,) = device.clips()
    y, _ = sf.read(clip, dtype="int16")
    first, _last = _extent(device.stream)
    # 1.5 s recorded: room noise until 1.0 s, then speech; trimming keeps 0.1 s before it.
    assert len(y) / SR == pytest.approx(1.5 - (first / SR - 0.1), abs=0.04)
    assert "stopped by seconds" in res.stdout


def test_a_silent_device_queues_nothing_and_says_why(tmp_path: Path, speech: np.ndarray) -> None:
    dev = Device(tmp_path, room(5.0, seed=3))
    res = dev.batchser("capture", str(dev.manifest), "--device", DEVICE, "--wait", "2")
    assert res.returncode == 1
    assert "heard nothing louder than -40 dBFS in 2 s" in res.stderr
    assert dev.clips() == []


def test_unknown_device_is_a_setup_error_listing_the_choices(device: Device) -> None:
    res = device.batchser("capture", str(device.manifest), "--device", "no-such-mic")
    assert res.returncode == 3 and "speak now" not in res.stderr
    assert "'no-such-mic' matches no input device" in res.stderr and DEVICE in res.stderr


def test_no_input_device_at_all(tmp_path: Path, device: Device) -> None:
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    env = {**device.env(), "HOME": str(empty_home)}
    probe = subprocess.run(
        [sys.executable, "-m", "batchser", "capture", "--list-devices"], env=env, capture_output=True, text=True
    )
    if probe.returncode == 0:
        pytest.skip(f"this machine has real input devices: {probe.stdout.strip()}")
    assert probe.returncode == 3 and "no audio input devices found" in probe.stderr
    res = subprocess.run(
        [sys.executable, "-m", "batchser", "capture", str(device.manifest)], env=env, capture_output=True, text=True
    )
    assert res.returncode == 3 and "no audio input device found" in res.stderr and "speak now" not in res.stderr


def test_without_pyaudio_capture_says_what_to_install(device: Device) -> None:
    code = "import sys; sys.modules['pyaudio'] = None; from batchser.cli import main; sys.exit(main(sys.argv[1:]))"
    res = subprocess.run(
        [sys.executable, "-c", code, "capture", str(device.manifest)], env=device.env(), capture_output=True, text=True
    )
    assert res.returncode == 3 and "speak now" not in res.stderr
    assert "pip install 'batchser[mic]'" in res.stderr and "apt-get install portaudio19-dev" in res.stderr
    assert "brew install portaudio" in res.stderr and device.clips() == []


def test_a_run_labels_the_captured_clip(device: Device) -> None:
    assert device.batchser("capture", str(device.manifest), "--device", DEVICE).returncode == 0
    (clip,) = device.clips()
    res = device.batchser("run", "-q", str(device.manifest))
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(device.out / "annotations.parquet")
    row = df[df["path"] == "queue/" + clip.name].iloc[0]  # paths inside root are reported relative to it
    assert row["status"] == "ok" and row["label"] in {"angry", "sad", "neutral", "happy"}
    assert row["duration_s"] == pytest.approx(sf.info(clip).duration, abs=1e-3)
    assert len(df) == 1 + sum(1 for p in (PROJECT / "data" / "demo").iterdir() if p.suffix in {".wav", ".flac", ".ogg"})


def _read_lines(proc: subprocess.Popen[str], lines: list[str]) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def _wait_for(lines: list[str], text: str, *, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        hit = next((line for line in lines if text in line), None)
        if hit is not None:
            return hit
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not printed within {timeout} s; got {lines}")


def test_watch_labels_clips_as_they_arrive_and_stops_cleanly(device: Device, speech: np.ndarray) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchser", "run", str(device.manifest), "--watch", "--poll", "0.2"],
        env=device.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    pump = _read_lines(proc, lines)
    try:
        _wait_for(lines, "watching", timeout=120)
        # 1. A clip captured through the device while the run watches.
        res = device.batchser("capture", str(device.manifest), "--device", DEVICE)
        assert res.returncode == 0, res.stderr
        (clip,) = device.clips()
        line = _wait_for(lines, clip.name, timeout=30)
        assert any(f": {e} (" in line for e in ("angry", "sad", "neutral", "happy")), line
        # 2. A clip written in place, slowly, by some other tool: it must not be taken half written.
        slow = device.queue / "slow.wav"
        buf = np.concatenate([speech, speech])
        sf.write(device.queue.parent / "whole.wav", buf, SR, subtype="PCM_16")
        data = (device.queue.parent / "whole.wav").read_bytes()
        with open(slow, "wb") as fh:
            for i in range(0, len(data), len(data) // 40):
                fh.write(data[i : i + len(data) // 40])
                fh.flush()
                time.sleep(0.05)  # 2 s of writing, 10 polls
        line = _wait_for(lines, "slow.wav", timeout=30)
        assert line.endswith(f", {len(buf) / SR:.1f} s)"), line  # the whole file, not a prefix
        time.sleep(1.0)
        assert sum("slow.wav" in x for x in lines) == 1, lines
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        pump.join(timeout=5)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert any("stopped watching after 2 new clips" in x for x in lines), lines
    df = pd.read_parquet(device.out / "annotations.parquet")
    got = df.set_index("path")
    assert got.loc[f"queue/{clip.name}", "status"] == "ok" and got.loc["queue/slow.wav", "status"] == "ok"
    assert got.loc["queue/slow.wav", "duration_s"] == pytest.approx(len(buf) / SR, abs=1e-3)
    assert pd.read_csv(device.out / "annotations.csv")["path"].tolist() == df["path"].tolist()
    # The next plain run takes both clips from the cache.
    res = device.batchser("run", "-q", str(device.manifest))
    assert res.returncode == 0
    assert yaml.safe_load((device.out / "summary.json").read_text())["extracted"] == 0
