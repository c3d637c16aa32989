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


def encode(path: Path, y: np.ndarray, sr: int, kind: Kind) -> np.ndarray:
    """Write mono float32 ``y`` (at ``sr``) as ``kind``; returns the samples the encoder got (at ``kind.rate``)."""
    x = y if sr == kind.rate else soxr.resample(y, sr, kind.rate, quality="HQ")
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=kind.container, options=dict(kind.options)) as out:
        audio = out.add_stream(kind.codec, rate=kind.rate, layout="mono")
        if kind.bit_rate:
            audio.bit_rate = kind.bit_rate
        video = None
        if kind.video:
            video = out.add_stream(kind.video, rate=10)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        shown = 0  # pictures written: ten a second, a grey that brightens
        block = 1 << 14
        for i in range(0, len(x), block):
            frame = av.AudioFrame.from_ndarray(x[None, i : i + block], format="flt", layout="mono")
            frame.sample_rate, frame.pts = kind.rate, i
            out.mux(audio.encode(frame))
            while video is not None and shown <= (i + block) / kind.rate * 10:
                picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), shown % 256, np.uint8), format="rgb24")
                picture.pts = shown
                out.mux(video.encode(picture))
                shown += 1
        out.mux(audio.encode(None))
        if video is not None:
            out.mux(video.encode(None))
    return x
