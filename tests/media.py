"""Recordings in the formats FFmpeg reads, written by PyAV's own encoders (tests and bench/formats.py).

PyAV's wheels bundle encoders for AAC, Opus, WMA (wmav2), AMR-NB (opencore),
H.264 (x264) and VP8/VP9; they have none for AMR-WB or HE-AAC, so those are
decoded in the field but not made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soxr


@dataclass(frozen=True)
class Kind:
    """One way of writing a recording: container, audio codec, its rate, and optionally a video track."""

    suffix: str
    container: str
    codec: str
    rate: int
    bit_rate: int | None = None
    video: str = ""  # a video codec: the file gets a picture track beside the sound
    options: tuple[tuple[str, str], ...] = ()


KINDS = {
    "m4a": Kind(".m4a", "ipod", "aac", 44100, 128_000),
    "m4a-faststart": Kind(".m4a", "ipod", "aac", 44100, 128_000, options=(("movflags", "faststart"),)),
    "mp4-video": Kind(".mp4", "mp4", "aac", 48000, 128_000, video="libx264"),
    "mov": Kind(".mov", "mov", "aac", 48000, 128_000),
    "webm": Kind(".webm", "webm", "libopus", 48000, 64_000),
    "wma": Kind(".wma", "asf", "wmav2", 44100, 128_000),
    "amr": Kind(".amr", "amr", "libopencore_amrnb", 8000, 12_200),
}


class MediaWriter:
    """A recording of ``kind`` written block by block (mono float32 at ``kind.rate``), in bounded memory."""

    def __init__(self, path: Path, kind: Kind) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.kind, self.written, self._shown = kind, 0, 0
        self._out = av.open(str(path), "w", format=kind.container, options=dict(kind.options))
        self._audio = self._out.add_stream(kind.codec, rate=kind.rate, layout="mono")
        if kind.bit_rate:
            self._audio.bit_rate = kind.bit_rate
        self._video = None
        if kind.video:  # ten pictures a second, a grey that brightens
            self._video = self._out.add_stream(kind.video, rate=10)
            self._video.width, self._video.height, self._video.pix_fmt = 64, 48, "yuv420p"

    def write(self, x: np.ndarray) -> None:
        for i in range(0, len(x), 1 << 14):
            block = np.ascontiguousarray(np.clip(x[i : i + (1 << 14)], -1.0, 1.0), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
            frame.sample_rate, frame.pts = self.kind.rate, self.written
            self._out.mux(self._audio.encode(frame))
            self.written += len(block)
            while self._video is not None and self._shown <= self.written / self.kind.rate * 10:
                picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), self._shown % 256, np.uint8), format="rgb24")
                picture.pts = self._shown
                self._out.mux(self._video.encode(picture))
                self._shown += 1

    def close(self) -> None:
        self._out.mux(self._audio.encode(None))
        if self._video is not None:
            self._out.mux(self._video.encode(None))
        self._out.close()

    def __enter__(self) -> MediaWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode(path: Path, y: np.ndarray, sr: int, kind: Kind) -> np.ndarray:
    """Write mono float32 ``y`` (at ``sr``) as ``kind``; returns the samples the encoder got (at ``kind.rate``)."""
    x = y if sr == kind.rate else soxr.resample(y, sr, kind.rate, quality="HQ")
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    with MediaWriter(path, kind) as out:
        out.write(x)
    return x
