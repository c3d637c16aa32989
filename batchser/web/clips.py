"""The audio a review page plays: a job's own files, found from its reports, never from a request's path.

A report names a file by its report path (relative to the job's root, or
absolute, or an object's URL); :func:`locate` turns that back into the file's
bytes path and refuses anything outside the job's inputs (an object outside
every input's prefix too). :func:`clip_wav` decodes at most
:data:`MAX_CLIP_S` seconds of it (a long recording's chosen segment) into a
16-bit mono WAV any browser plays, whatever the source format.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from batchser.archive import SEPARATOR, read_members
from batchser.audio import AudioError, AudioStream
from batchser.hashing import path_from_text
from batchser.storage import is_url, raise_read_error, storage_for

__all__ = ["MAX_CLIP_S", "ClipError", "clip_wav", "locate"]

MAX_CLIP_S = 20.0  # the longest stretch a page plays
MAX_START_S = 1e7  # 116 days: no recording is longer (the reports' own bound, batchser.web.tables.MAX_SECONDS)
RATE = 16000


class ClipError(Exception):
    """The clip cannot be served; ``str()`` says why (shown on the page)."""


def locate(report_path: str, *, root: str, inputs: list[str]) -> tuple[bytes, str]:
    """(file path as bytes, archive member or "") of a report path, checked to lie inside the job's inputs.

    Raises
    ------
    ClipError
        A path that is no report path, or that resolves outside every input.
    """
    archive, sep, member = report_path.partition(SEPARATOR)
    if is_url(archive):  # an object: its address must lie under an input's (a prefix, or the object itself)
        prefixes = [i for i in inputs if is_url(i)]
        if not any(archive == i or archive.startswith(i.rstrip("/") + "/") for i in prefixes):
            raise ClipError("the file lies outside the job's inputs")
        return archive.encode(), member if sep else ""
    try:
        raw = path_from_text(archive if sep else report_path)
    except ValueError as exc:
        raise ClipError(str(exc)) from None
    full = raw if raw.startswith(b"/") else os.path.join(os.fsencode(root), raw)
    real = os.path.realpath(full)
    allowed = [os.path.realpath(os.fsencode(i)) for i in inputs]
    if not any(real == a or real.startswith(os.path.join(a, b"")) for a in allowed):
        raise ClipError("the file lies outside the job's inputs")
    return real, member if sep else ""


def clip_wav(
    path: bytes,
    member: str = "",
    *,
    start_s: float = 0.0,
    seconds: float = MAX_CLIP_S,
    context: tuple[float, float] = (0.0, 0.0),
) -> bytes:
    """At most ``seconds`` (capped at :data:`MAX_CLIP_S`) of the file from ``start_s``, as a 16 kHz mono WAV.

    ``context``: seconds at the start and at the end that are context, not the stretch asked about:
    played 12 dB quieter, so the ear tells them apart.

    Raises
    ------
    ClipError
        The file is gone or no longer decodes.
    """
    # From the sample or segments report, which may have been edited: a time past any recording
    # would overflow the sample position it becomes.
    if not (math.isfinite(start_s) and 0 <= start_s <= MAX_START_S):
        raise ClipError(f"the stretch to play starts at {start_s!r} s, no time in a recording (the review sample "
                        "or segments report was edited)")  # fmt: skip
    if not (math.isfinite(seconds) and seconds > 0):
        raise ClipError(f"the stretch to play lasts {seconds!r} s (the review sample or segments report was edited)")
    if not all(math.isfinite(c) and 0 <= c <= MAX_CLIP_S for c in context):
        raise ClipError(f"the context around the stretch, {context!r} s, is no length to play")
    seconds = min(seconds, MAX_CLIP_S)
    where: Path | str = os.fsdecode(path)
    try:
        if is_url(where):
            store = storage_for(where)
            info = store.stat(str(where))
            if not member:  # the stretch asked for is read in ranges, not the whole recording
                with store.open(str(where), size=info.size, stamp=info.stamp) as fh:
                    wav = _encode(fh, start_s, seconds, context)
                    raise_read_error(fh)
                return wav
        else:
            where = Path(where)
        if member:
            ((_, data, error),) = list(read_members(where, [member]))
            if data is None:
                raise ClipError(error)
            source = data.spill if data.spill is not None else io.BytesIO(data.data or b"")
            return _encode(source, start_s, seconds, context)
        return _encode(path, start_s, seconds, context)
    except (OSError, RuntimeError, ValueError, OverflowError, AudioError) as exc:
        raise ClipError(f"cannot play it: {exc}") from None


CONTEXT_GAIN = 10 ** (-12 / 20)  # context is played 12 dB below the stretch asked about
_RAMP_S = 0.01  # the gain changes over 10 ms: no click at the edges of the stretch


def _encode(source: object, start_s: float, seconds: float, context: tuple[float, float]) -> bytes:
    with AudioStream(source, sample_rate=RATE) as stream:  # type: ignore[arg-type]
        first = round(start_s * RATE)
        first -= first % max(1, RATE // np.gcd(RATE, stream.orig_sample_rate))  # on an input sample
        blocks = list(stream.span(max(0, first), max(0, first) + int(seconds * RATE)))
    y = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if any(context) and len(y):
        t = np.arange(len(y)) / RATE
        before, after = context[0], len(y) / RATE - context[1]
        ramp = np.clip(np.minimum((t - before) / _RAMP_S + 0.5, (after - t) / _RAMP_S + 0.5), 0.0, 1.0)
        gain = CONTEXT_GAIN + (1 - CONTEXT_GAIN) * ramp.astype(np.float32)
        y = y * gain
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()
