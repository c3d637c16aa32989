"""Record one utterance from an input device with PyAudio.

PyAudio is optional (``pip install 'batchser[mic]'``); it is imported only
here, only when recording or listing devices. Recording is split in two
pure-numpy steps that tests and other sources can reuse: :func:`frame_levels`
(energy per frame in dBFS) and :func:`trim_silence`.

Ctrl-C while recording discards the recording: nothing reaches the queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CaptureError",
    "CaptureSetupError",
    "Clip",
    "InputDevice",
    "check_input",
    "frame_levels",
    "list_input_devices",
    "record_utterance",
    "trim_silence",
]

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with: pip install 'batchser[mic]' (PyAudio needs PortAudio: "
    "apt-get install portaudio19-dev on Debian/Ubuntu, brew install portaudio on macOS)"
)


class CaptureError(RuntimeError):
    """Recording failed (for example, nothing louder than the threshold was heard)."""


class CaptureSetupError(CaptureError):
    """Recording cannot start on this machine: no PyAudio, no PortAudio, or no input device."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_sample_rate: float
    is_default: bool = False


@dataclass(frozen=True)
class Clip:
    """A recorded utterance: 16-bit mono samples, silence trimmed."""

    samples: np.ndarray  # int16, 1-D
    sample_rate: int
    device: str
    stopped_by: str  # "silence", "seconds" or "max_seconds"

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


# -- pure signal helpers ---------------------------------------------------------


def frame_levels(samples: np.ndarray, *, frame: int) -> np.ndarray:
    """RMS level in dBFS of each whole ``frame``-sample frame of int16 ``samples``.

    Digital silence gives -inf.
    """
    n = len(samples) // frame
    x = samples[: n * frame].astype(np.float64).reshape(n, frame) / 32768.0
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(np.mean(x * x, axis=1))


def trim_silence(
    samples: np.ndarray, *, sample_rate: int, threshold_db: float = -40.0, frame_s: float = 0.03, keep_s: float = 0.1
) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``threshold_db``, keeping ``keep_s`` around the sound.

    Parameters
    ----------
    samples : ndarray of int16
    sample_rate : int
    threshold_db : float
        Frame RMS level (dBFS) above which a frame counts as sound.
    frame_s : float
        Frame length for the level measurement.
    keep_s : float
        Margin kept before the first and after the last loud frame, so that
        soft onsets and releases are not clipped.

    Returns
    -------
    ndarray of int16
        A view of ``samples``; empty when no frame is above the threshold.
    """
    frame = max(1, round(frame_s * sample_rate))
    loud = np.flatnonzero(frame_levels(samples, frame=frame) > threshold_db)
    if loud.size == 0:
        return samples[:0]
    keep = round(keep_s * sample_rate)
    start = max(0, loud[0] * frame - keep)
    stop = min(len(samples), (loud[-1] + 1) * frame + keep)
    return samples[start:stop]


# -- PyAudio ------------------------------------------------------------------------


def _import_pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as exc:  # not installed, or libportaudio missing
        raise CaptureSetupError(f"PyAudio is not available ({exc}); {INSTALL_HINT}") from None
    return pyaudio


@contextlib.contextmanager
def _quiet_c_stderr() -> Iterator[None]:
    # PortAudio probes every ALSA/JACK/OSS backend at start-up and each one
    # prints to the C-level stderr; keep that noise out of the terminal but
    # in the debug log, where it helps with a device that will not open.
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            noise = sink.read().decode("utf-8", "replace").strip()
            if noise:
                log.debug("PortAudio start-up messages:\n%s", noise)


@contextlib.contextmanager
def _portaudio() -> Iterator[Any]:
    pyaudio = _import_pyaudio()
    with _quiet_c_stderr():
        pa = pyaudio.PyAudio()
    try:
        yield pa
    finally:
        pa.terminate()


def _input_devices(pa: Any) -> list[InputDevice]:
    try:
        default = pa.get_default_input_device_info()["index"]
    except OSError:
        default = None
    out = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        if d["maxInputChannels"] > 0:
            out.append(
                InputDevice(i, str(d["name"]), int(d["maxInputChannels"]), float(d["defaultSampleRate"]), i == default)
            )
    return out


def list_input_devices() -> list[InputDevice]:
    """Input devices PortAudio sees, the default one flagged.

    Raises
    ------
    CaptureSetupError
        PyAudio or PortAudio is missing.
    """
    with _portaudio() as pa:
        return _input_devices(pa)


def check_input(device: str | int | None = None) -> InputDevice:
    """The input device a capture would use, before anyone is asked to speak.

    Raises
    ------
    CaptureSetupError
        PyAudio is missing, there is no input device, or ``device`` matches none.
    """
    return _choose(list_input_devices(), device)


def _choose(devices: list[InputDevice], device: str | int | None) -> InputDevice:
    if not devices:
        raise CaptureSetupError(
            "no audio input device found; connect a microphone (or check that this user may use "
            "the sound card), then see `python -m batchser capture --list-devices`"
        )
    if device is None:
        chosen = next((d for d in devices if d.is_default), None)
        if chosen is None:
            raise CaptureSetupError(
                "there is no default input device; choose one with --device (see --list-devices): "
                + ", ".join(f"{d.index}: {d.name}" for d in devices)
            )
        return chosen
    if isinstance(device, int) or str(device).isdigit():
        hits = [d for d in devices if d.index == int(device)]
    else:
        hits = [d for d in devices if d.name == device] or [d for d in devices if str(device).lower() in d.name.lower()]
    if len(hits) != 1:
        what = "matches no" if not hits else "matches more than one"
        raise CaptureSetupError(
            f"--device {device!r} {what} input device; choose one of: "
            + ", ".join(f"{d.index}: {d.name}" for d in devices)
        )
    return hits[0]


def _open_stream(pa: Any, dev: InputDevice, sample_rate: int, frame: int) -> tuple[Any, int]:
    pyaudio = _import_pyaudio()
    rates = [sample_rate] + ([int(dev.default_sample_rate)] if int(dev.default_sample_rate) != sample_rate else [])
    last: Exception | None = None
    for rate in rates:
        try:
            with _quiet_c_stderr():
                stream = pa.open(
                    format=pyaudio.paInt16,
                    channels=1,
                    rate=rate,
                    input=True,
                    input_device_index=dev.index,
                    frames_per_buffer=frame if rate == sample_rate else round(frame * rate / sample_rate),
                )
        except (OSError, ValueError) as exc:
            last = exc
            continue
        if rate != sample_rate:
            # The job resamples every file anyway; a clip at the device's rate loses nothing.
            log.warning("%s cannot record at %d Hz; recording at %d Hz", dev.name, sample_rate, rate)
        return stream, rate
    raise CaptureSetupError(f"cannot open input device {dev.index} ({dev.name}) for 16-bit mono: {last}")


def record_utterance(
    *,
    sample_rate: int = 16000,
    device: str | int | None = None,
    seconds: float | None = None,
    threshold_db: float = -40.0,
    silence_s: float = 1.0,
    wait_s: float = 10.0,
    max_seconds: float = 30.0,
    keep_s: float = 0.1,
    frame_s: float = 0.03,
) -> Clip:
    """Record one utterance: from the first loud frame until ``silence_s`` of quiet, or for ``seconds``.

    Parameters
    ----------
    sample_rate : int
        Requested rate; when the device cannot do it, its default rate is used.
    device : int, str or None
        Device index, exact name or unique part of a name; None for the default input.
    seconds : float or None
        Fixed recording length instead of the silence rule.
    threshold_db : float
        Frame RMS level (dBFS) that counts as sound.
    silence_s : float
        Quiet time after the utterance that ends the recording.
    wait_s : float
        Give up when nothing loud is heard for this long.
    max_seconds : float
        Hard limit on one recording.
    keep_s, frame_s : float
        See :func:`trim_silence`.

    Returns
    -------
    Clip
        Silence trimmed from both ends.

    Raises
    ------
    CaptureSetupError
        No PyAudio/PortAudio, no such device, or the device cannot be opened.
    CaptureError
        Nothing louder than the threshold was heard.
    """
    with _portaudio() as pa:
        dev = _choose(_input_devices(pa), device)
        frame = max(1, round(frame_s * sample_rate))
        stream, rate = _open_stream(pa, dev, sample_rate, frame)
        frame = max(1, round(frame_s * rate))
        log.info("recording from %s at %d Hz", dev.name, rate)
        chunks: list[np.ndarray] = []
        n = 0
        heard_at: int | None = None  # sample index of the first loud frame
        quiet = 0  # consecutive quiet samples after it
        limit = round((seconds if seconds is not None else max_seconds) * rate)
        stopped_by = "seconds" if seconds is not None else "max_seconds"
        t0 = time.monotonic()
        try:
            while n < limit:
                chunk = np.frombuffer(stream.read(frame, exception_on_overflow=False), dtype="<i2").copy()
                chunks.append(chunk)
                n += len(chunk)
                if seconds is not None:
                    continue
                loud = bool(frame_levels(chunk, frame=len(chunk))[0] > threshold_db) if len(chunk) else False
                if loud:
                    heard_at = n - len(chunk) if heard_at is None else heard_at
                    quiet = 0
                elif heard_at is not None:
                    quiet += len(chunk)
                    if quiet >= silence_s * rate:
                        stopped_by = "silence"
                        break
                elif n >= wait_s * rate:
                    break
        finally:
            with contextlib.suppress(OSError):
                stream.stop_stream()
            stream.close()
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    log.debug("read %.2f s of audio in %.2f s", len(audio) / rate, time.monotonic() - t0)
    if seconds is None and heard_at is None:
        raise CaptureError(
            f"heard nothing louder than {threshold_db:g} dBFS in {wait_s:g} s from {dev.name}; "
            "speak closer, lower --threshold-db, or choose another --device"
        )
    trimmed = trim_silence(audio, sample_rate=rate, threshold_db=threshold_db, frame_s=frame_s, keep_s=keep_s)
    if trimmed.size == 0:
        raise CaptureError(
            f"the {len(audio) / rate:.1f} s recorded from {dev.name} are all quieter than {threshold_db:g} dBFS; "
            "nothing was queued (lower --threshold-db or check the microphone)"
        )
    if stopped_by == "max_seconds":
        log.warning("stopped at the %g s limit before a pause; the clip may cut a word", max_seconds)
    return Clip(np.ascontiguousarray(trimmed), rate, dev.name, stopped_by)
