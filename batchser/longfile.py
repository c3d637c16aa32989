"""Long recordings: analysed piece by piece as they stream, or in parts on every core.

A file longer than ``SegmentSpec.over_s`` is never decoded whole. With fixed
windows (``method: windows``) each part of the file gives its windows and the
parts' windows are joined. With speech segments (the default), a long file
split in parts is done in two passes: every part finds its frames' speech
probabilities (:func:`vad_part`), the file's segments are drawn from all of them
at once (so a segment crossing a part boundary is one segment), and then
every part that holds the start of a segment extracts its segments' features
(:func:`speech_part`). A file in one piece does both in one pass
(:func:`analyse_speech`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from batchser.audio import AudioError, AudioStream, aligned, check_signal, clip_warning, seekable
from batchser.cache import NO_SPEECH, FeatureRecord
from batchser.decoders import MP4_EXTENSIONS
from batchser.features import FeatureSpec, SlidingExtractor, extract
from batchser.segments import Segments, SegmentSpec, is_voiced, split_at, windows
from batchser.storage import (
    ObjectChangedError,
    ObjectNotFoundError,
    StorageError,
    is_url,
    raise_read_error,
    storage_for,
)
from batchser.tasks import CHANGED, VANISHED, ExtractTask, decoded_by
from batchser.vad import FRAME, FRAME_S, HANG, Segmenter, SpeechProbabilities, detector, speech_segments

__all__ = [
    "HASHED_ON_READ_BYTES",
    "PART_S",
    "PartResult",
    "extract_part",
    "extract_segmented",
    "hashed_on_read",
    "merge_parts",
    "part_seconds",
    "plan_parts",
]


def _analyse_windows(
    chunks: Iterable[np.ndarray], *, start: int, spec: FeatureSpec, seg: SegmentSpec, min_tail_s: float
) -> Segments | None:
    """Each window's vector and voiced flag over ``chunks``, a stream beginning at sample ``start``."""
    sr = spec.sample_rate
    sliding = SlidingExtractor(spec)  # overlapping windows share their common frames
    # A window of one constant value (digital silence, a stuck converter) has the
    # same vector wherever it stands: computed once. Hours of zeros padded into
    # a file (or a zip bomb of them) then cost a min and a max per window.
    constant: dict[tuple[float, int], np.ndarray] = {}
    starts, ends, voiced, vectors = [], [], [], []
    for rel, samples in windows(chunks, sample_rate=sr, window_s=seg.window_s, hop_s=seg.hop_s, min_tail_s=min_tail_s):
        if samples.size < spec.n_fft:
            continue
        if samples[0] == samples.min() == samples.max():
            key = (float(samples[0]), samples.size)
            if key not in constant:
                constant[key] = sliding.extract(start + rel, samples)
            vectors.append(constant[key])
        else:
            vectors.append(sliding.extract(start + rel, samples))
        starts.append((start + rel) / sr)
        ends.append((start + rel + samples.size) / sr)
        voiced.append(is_voiced(samples, sample_rate=sr, voiced_db=seg.voiced_db, fraction=seg.voiced_fraction))
    if not vectors:
        return None
    return Segments(np.array(starts), np.array(ends), np.array(voiced, dtype=bool), np.stack(vectors))


def _long_file_record(
    task: ExtractTask, segments: Segments | None, *, rate: int, channels: int, duration: float, warning: str
) -> FeatureRecord:
    """The record of a long file from its windows.

    Raises
    ------
    AudioError
        No window (the file is too short to segment), or features that are not finite.
    """
    if segments is None:
        raise AudioError(f"too short to segment: {duration:.3f} s")
    if not np.isfinite(segments.vectors).all():
        raise AudioError("features are not finite")
    vector = segments.summary_vector()
    return FeatureRecord(task.content_hash, "ok", "", rate, channels, duration, vector, warning, segments)


def extract_segmented(task: ExtractTask, stream: AudioStream, *, spec: FeatureSpec, seg: SegmentSpec) -> FeatureRecord:
    """A long file, segment by segment (or window by window) as it decodes, in bounded memory."""
    if seg.speech:
        return extract_speech(task, stream, spec=spec, seg=seg)
    segments = _analyse_windows(stream, start=0, spec=spec, seg=seg, min_tail_s=seg.min_tail_s)
    duration = stream.frames / stream.orig_sample_rate
    stream.check_decoded()
    return _long_file_record(
        task,
        segments,
        rate=stream.orig_sample_rate,
        channels=stream.channels,
        duration=duration,
        warning="; ".join(stream.warnings),
    )


PART_S = 300.0  # audio per part of a long file: a few seconds of work, so progress moves and cores share it
PARTS_IN_PROCESS_S = 3600.0
PREROLL_S = 1.0  # decoded before (and after) a part, then dropped: the resampler settles
# Names of the formats whose seek lands on the exact sample (PCM containers, FLAC, the MP4 family:
# batchser.audio.seekable); others stream whole. Other names are not even opened to ask.
SPLIT_SUFFIXES = frozenset({".wav", ".wave", ".rf64", ".w64", ".aif", ".aiff", ".aifc", ".caf", ".flac"}) | (
    MP4_EXTENSIONS
)
PROBE_BYTES = 1 << 20  # smaller files cannot hold two parts' worth of audio


@dataclass(frozen=True)
class PartResult:
    """What one part of a long file gave; :func:`merge_parts` joins a file's parts into its record."""

    task: ExtractTask
    status: str  # "ok", "error" or "retry", as FeatureRecord
    error: str
    orig_sample_rate: int = 0
    channels: int = 0
    end_frame: int = 0  # input frame where this part's decoding stopped
    frames: int = 0
    clipped: int = 0
    peak: float = 0.0
    warnings: tuple[str, ...] = ()  # from the part that reached the end of the data
    segments: Segments | None = None
    probs: np.ndarray | None = None  # speech segments' first pass: each frame's speech probability
    decoder: str = ""  # AudioStream.decoder: what decoded the part


def _decoder_of(parts: Sequence[PartResult]) -> str:
    return next((p.decoder for p in parts if p.decoder), "")


def part_seconds(task: ExtractTask, seg: SegmentSpec) -> float:
    """Seconds of audio in which one part of ``task``'s file starts its windows or frames (see :func:`plan_parts`)."""
    return task.part_windows * (FRAME_S if seg.speech else seg.hop_s)


def plan_parts(task: ExtractTask, *, spec: FeatureSpec, seg: SegmentSpec) -> list[ExtractTask]:
    """``task`` as the parts a long file is analysed in (``[task]`` when it is not split).

    A file is split when its seeks are sample-exact (PCM, FLAC, or the MP4
    family through FFmpeg: :func:`~batchser.audio.seekable`), it holds at
    least two parts' worth of windows, its listing stamp is known (each part
    checks it), and part starts fall on input samples. The plan depends on
    the file alone, never on the workers, so reports do not either.
    """
    if task.member or task.stamp is None or task.size < PROBE_BYTES or task.read_hash:
        return [task]
    if os.path.splitext(task.path)[1].lower() not in SPLIT_SUFFIXES:
        return [task]
    try:
        with _part_source(task) as source:
            info = seekable(source)
    except OSError:
        return [task]  # streamed in one pass; the worker says what is wrong
    if info is None:
        return [task]  # streamed in one pass; the worker says what is wrong with a broken file
    sr = spec.sample_rate
    total = round(info.frames * sr / info.sample_rate)
    if seg.speech:  # parts of whole 32 ms frames, so the frames of all parts are the file's
        hop = FRAME
        per = max(1, round(PART_S / FRAME_S))
        n_windows = total // FRAME
    else:
        hop = round(seg.hop_s * sr)
        per = max(1, round(PART_S / seg.hop_s))
        n_windows = (total - round(seg.window_s * sr)) // hop + 1 if total >= round(seg.window_s * sr) else 0
    n_parts = n_windows // per
    if info.duration_s <= seg.over_s or n_parts < 2:
        return [task]
    preroll = round(PREROLL_S * sr)
    if not all(aligned(max(0, k * per * hop - preroll), info.sample_rate, sr) for k in range(n_parts)):
        return [task]
    return [dataclasses.replace(task, part=k, n_parts=n_parts, part_windows=per) for k in range(n_parts)]


def _stamp_of(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


HASHED_ON_READ_BYTES = 16 << 20  # objects up to this are read whole by the worker that analyses them


def hashed_on_read(path: str, size: int, member: str = "") -> bool:
    """Whether an object's content hash is best taken by the worker that reads it (read once, not twice).

    Objects in storage up to :data:`HASHED_ON_READ_BYTES` that can never be
    split into parts (smaller than :data:`PROBE_BYTES`, or of a format whose
    seeks are not sample-exact): a part needs the file's hash before any
    worker reads it, and a file split here must be split there too.
    """
    if member or not is_url(path) or size > HASHED_ON_READ_BYTES:
        return False
    return size < PROBE_BYTES or os.path.splitext(path)[1].lower() not in SPLIT_SUFFIXES


@contextlib.contextmanager
def _part_source(task: ExtractTask) -> Iterator[str | BinaryIO]:
    """What a part decodes: the local path (its stamp checked before and after), or the object in ranges.

    An object's reads are checked against the stamp it was listed with, so a
    part of a replaced object raises :class:`~batchser.storage.ObjectChangedError`;
    a read that failed is raised in place of what the decoder made of the
    missing bytes.

    Raises
    ------
    OSError
        The file changed (:class:`~batchser.storage.ObjectChangedError`), vanished or cannot be read.
    """
    if is_url(task.path):
        with storage_for(task.path).open(task.path, size=task.size, stamp=task.stamp) as fh:
            try:
                yield fh
            except AudioError:
                raise_read_error(fh)
                raise
            raise_read_error(fh)
        return
    if _stamp_of(task.path) != task.stamp:
        raise ObjectChangedError(CHANGED, transient=False)
    yield task.path
    if _stamp_of(task.path) != task.stamp:
        raise ObjectChangedError(CHANGED, transient=False)


def _read_failure(task: ExtractTask, exc: OSError) -> PartResult:
    """A part that could not read its bytes: a ``retry``, never a verdict on them."""
    if isinstance(exc, ObjectChangedError):
        return PartResult(task, "retry", CHANGED)
    if isinstance(exc, (FileNotFoundError, ObjectNotFoundError)):
        return PartResult(task, "retry", VANISHED)
    why = str(exc) if isinstance(exc, StorageError) else (exc.strerror or str(exc))
    return PartResult(task, "retry", f"cannot read: {why}; rerun to retry")


def extract_part(task: ExtractTask, *, spec: FeatureSpec, seg: SegmentSpec) -> PartResult:
    """Windows ``part * P`` to ``(part + 1) * P - 1`` of a long file, ``P = task.part_windows``.

    The last part runs to the end of the data and adds the tail window. The
    file's stamp is checked before and after: a file rewritten meanwhile
    gives a ``retry``, as :func:`extract_one` does.
    """
    sr = spec.sample_rate
    hop, win, per = round(seg.hop_s * sr), round(seg.window_s * sr), task.part_windows
    last = task.part == task.n_parts - 1
    start = task.part * per * hop
    stop = None if last else start + (per - 1) * hop + win
    try:
        with _part_source(task) as source, AudioStream(source, sample_rate=sr) as stream:
            # Past the data's end (a header that overstates it) the stream gives
            # less; the windows then end where the data does, as a whole read's.
            chunks = stream.span(start, stop, preroll=round(PREROLL_S * sr))
            tail = seg.min_tail_s if last else max(seg.min_tail_s, 1 / sr)  # a tail only where the data ends
            segments = _analyse_windows(chunks, start=start, spec=spec, seg=seg, min_tail_s=tail)
            warnings = stream.warnings
    except OSError as exc:
        return _read_failure(task, exc)
    except AudioError as exc:
        return PartResult(task, "retry" if exc.transient else "error", str(exc), decoder=exc.decoder)
    return PartResult(
        task,
        "ok",
        "",
        stream.orig_sample_rate,
        stream.channels,
        stream.end_frame,
        stream.frames,
        stream.clipped,
        stream.peak,
        tuple(w for w in warnings if not w.startswith("clipped")),  # clipping is summed over parts
        segments,
        decoder=stream.decoder,
    )


def _merge_meta(parts: Sequence[PartResult]) -> FeatureRecord | tuple[ExtractTask, int, int, float, str]:
    """A file's task, rate, channels, duration and warning from its parts (in order), or its failure record."""
    task = parts[0].task
    for status in ("retry", "error"):  # this run's failures first: they say nothing of the bytes
        bad = next((p for p in parts if p.status == status), None)
        if bad is not None:
            return FeatureRecord(task.content_hash, status, bad.error, 0, 0, 0.0, None)
    first = parts[0]
    duration = max(p.end_frame for p in parts) / first.orig_sample_rate
    frames = sum(p.frames for p in parts)
    warnings = list(dict.fromkeys(w for p in parts for w in p.warnings))  # each part that reached the end says it
    clip = clip_warning(sum(p.clipped for p in parts), frames * first.channels)
    if clip:
        warnings.append(clip)
    rate, channels, warning = first.orig_sample_rate, first.channels, "; ".join(warnings)
    try:
        check_signal(frames, max(p.peak for p in parts))
    except AudioError as exc:
        return FeatureRecord(task.content_hash, "error", str(exc), rate, channels, duration, None, warning)
    return task, rate, channels, duration, warning


def merge_parts(parts: Sequence[PartResult]) -> FeatureRecord:
    """The record of a long file from all its windows' parts (any order), as :func:`extract_one` would give it."""
    return decoded_by(_merge_parts(parts), _decoder_of(parts))


def _merge_parts(parts: Sequence[PartResult]) -> FeatureRecord:
    meta = _merge_meta(sorted(parts, key=lambda p: p.task.part))
    if isinstance(meta, FeatureRecord):
        return meta
    task, rate, channels, duration, warning = meta
    pieces = [p.segments for p in sorted(parts, key=lambda p: p.task.part) if p.segments is not None]
    joined = None
    if pieces:
        joined = Segments(
            *(np.concatenate([getattr(g, f) for g in pieces]) for f in ("start_s", "end_s", "voiced", "vectors"))
        )
    try:
        return _long_file_record(task, joined, rate=rate, channels=channels, duration=duration, warning=warning)
    except AudioError as exc:
        return FeatureRecord(task.content_hash, "error", str(exc), rate, channels, duration, None, warning)


# Speech segments ---------------------------------------------------------------------------------


class _Buffer:
    """The recent samples of a stream: appended chunk by chunk, cut by stream index, dropped from the front."""

    def __init__(self, start: int = 0) -> None:
        self.start = start  # stream index of data[0]
        self.data = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def add(self, chunk: np.ndarray) -> None:
        self.data = np.concatenate([self.data, chunk]) if self.data.size else np.array(chunk, dtype=np.float32)

    def take(self, a: int, b: int) -> np.ndarray:
        return self.data[max(0, a - self.start) : max(0, b - self.start)]

    def drop_before(self, a: int) -> None:
        a = min(a, self.end)
        if a > self.start:
            self.data = self.data[a - self.start :].copy()
            self.start = a


def _spans(
    frames: list[tuple[int, int, float]], *, seg: SegmentSpec, total: int, sr: int
) -> list[tuple[int, int, float]]:
    """Segments in frames as padded sample spans ``(a, b, prob)``, clipped to the stream and to each other."""
    pad = round(seg.pad_s * sr)
    out: list[tuple[int, int, float]] = []
    for s0, e0, prob in frames:
        a = max(0, s0 * FRAME - pad, out[-1][1] if out else 0)
        b = min(total, e0 * FRAME + pad)
        if b > a:
            out.append((a, b, prob))
    return out


def _cut(
    spans: list[tuple[int, int, float]], cuts: Sequence[float], *, seg: SegmentSpec, sr: int
) -> list[tuple[int, int, float]]:
    """``spans`` cut where the speaker changes (``cuts``, seconds); each piece keeps its segment's probability."""
    if not cuts:
        return spans
    at = np.round(np.asarray(sorted(cuts)) * sr).astype(np.int64)
    min_len = round(seg.min_speech_s * sr)
    return [(a, b, prob) for a0, b0, prob in spans for a, b in split_at(a0, b0, at, min_len=min_len)]


def _segment_vector(samples: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    if samples.size < spec.n_fft:  # a segment cut at the very end of the data
        samples = np.pad(samples, (0, spec.n_fft - samples.size))
    return extract(samples, spec=spec)


def _segments_of(spans: list[tuple[int, int, float]], vectors: list[np.ndarray], sr: int) -> Segments:
    n = len(spans)
    return Segments(
        np.array([a / sr for a, _, _ in spans], dtype=np.float64),
        np.array([b / sr for _, b, _ in spans], dtype=np.float64),
        np.ones(n, dtype=bool),
        np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32),
        np.array([p for _, _, p in spans], dtype=np.float32),
    )


def _probe(seg: SegmentSpec, *, start_frame: int = 0, reset_every: int | None = None) -> SpeechProbabilities:
    every = max(1, round(PART_S / FRAME_S)) if reset_every is None else reset_every  # as plan_parts cuts
    return SpeechProbabilities(gate_db=seg.gate_db, voiced_db=seg.voiced_db, start_frame=start_frame, reset_every=every)


def analyse_speech(
    chunks: Iterable[np.ndarray], *, spec: FeatureSpec, seg: SegmentSpec, cuts: Sequence[float] = ()
) -> tuple[Segments, int]:
    """Speech segments of a stream and their vectors, in one pass; and the stream's length in samples.

    Holds at most a segment's worth of audio (``max_segment_s`` plus the pause
    that ends it and the detector's look-ahead), however long the stream. A
    segment crossing one of ``cuts`` (seconds: where speaker turns change) is
    cut there.
    """
    sr = spec.sample_rate
    probe, segmenter, buf = _probe(seg), Segmenter(seg.segmenter()), _Buffer()
    spans: list[tuple[int, int, float]] = []
    vectors: list[np.ndarray] = []
    keep = (seg.segmenter().max_len + seg.segmenter().min_silence + 4) * FRAME + round(seg.pad_s * sr)
    decided = 0

    def cut(found: list[tuple[int, int, float]], total: int) -> None:
        for a, b, prob in _cut(_spans(found, seg=seg, total=total, sr=sr), cuts, seg=seg, sr=sr):
            a = max(a, spans[-1][1]) if spans else a
            spans.append((a, b, prob))
            vectors.append(_segment_vector(buf.take(a, b), spec))

    for chunk in chunks:
        buf.add(chunk)
        probs = probe.feed(chunk)
        decided += len(probs)
        cut(segmenter.push(probs), buf.end)
        buf.drop_before(decided * FRAME - keep)
    probs = probe.flush()
    cut(segmenter.push(probs) + segmenter.close(), buf.end)
    return _segments_of(spans, vectors, sr), buf.end


def no_speech_record(task: ExtractTask, *, rate: int, channels: int, duration: float, warning: str) -> FeatureRecord:
    """A file in which the voice-activity model heard no speech: a status of its own, never an emotion."""
    reason = f"no speech: {detector()} heard none in {duration:.1f} s"
    return FeatureRecord(task.content_hash, NO_SPEECH, reason, rate, channels, duration, None, warning, None)


def short_file_has_speech(samples: np.ndarray, seg: SegmentSpec) -> bool:
    """Whether a short file holds any speech segment (``segments.short_files``)."""
    probe = _probe(seg)
    probs = np.concatenate([probe.feed(samples), probe.flush()])
    return bool(speech_segments(probs, seg.segmenter()))


def extract_speech(task: ExtractTask, stream: AudioStream, *, spec: FeatureSpec, seg: SegmentSpec) -> FeatureRecord:
    """A long file in one pass: its speech segments and their vectors as it decodes."""
    segments, _ = analyse_speech(stream, spec=spec, seg=seg, cuts=task.cuts)
    duration = stream.frames / stream.orig_sample_rate
    stream.check_decoded()
    meta = {"rate": stream.orig_sample_rate, "channels": stream.channels, "duration": duration,
            "warning": "; ".join(stream.warnings)}  # fmt: skip
    if not len(segments):
        return no_speech_record(task, **meta)
    return _long_file_record(task, segments, **meta)


def vad_part(task: ExtractTask, *, spec: FeatureSpec, seg: SegmentSpec) -> PartResult:
    """First pass over one part of a long file: the speech probability of each of its frames.

    The model restarts where the part starts, as one pass over the file
    restarts it there too; the gate looks ``HANG`` frames before and after
    the part. So the parts' frames are the ones one pass gives.
    """
    sr = spec.sample_rate
    first = task.part * task.part_windows
    last = task.part == task.n_parts - 1
    look = min(first, HANG)
    probe = _probe(seg, start_frame=first - look, reset_every=task.part_windows)
    stop = None if last else (first + task.part_windows + HANG) * FRAME
    result = _read_part(task, (first - look) * FRAME, stop, sr, lambda c: _all_probs(c, probe))
    if result.probs is not None:
        result = dataclasses.replace(result, probs=result.probs[look:][: None if last else task.part_windows])
    return result


def _all_probs(chunks: Iterable[np.ndarray], probe: SpeechProbabilities) -> np.ndarray:
    got = [probe.feed(c) for c in chunks]
    return np.concatenate([*got, probe.flush()])


def speech_part(task: ExtractTask, *, spec: FeatureSpec, seg: SegmentSpec) -> PartResult:
    """Second pass over one part of a long file: the vectors of the segments that start in it."""
    sr = spec.sample_rate
    spans = [(round(a * sr), round(b * sr), p) for a, b, p in task.spans or ()]

    def cut(chunks: Iterable[np.ndarray]) -> Segments:
        buf, vectors, k = _Buffer(spans[0][0]), [], 0
        for chunk in chunks:
            buf.add(chunk)
            while k < len(spans) and spans[k][1] <= buf.end:
                vectors.append(_segment_vector(buf.take(spans[k][0], spans[k][1]), spec))
                k += 1
            if k < len(spans):
                buf.drop_before(spans[k][0])
        while k < len(spans):  # past the data's end: what there is
            vectors.append(_segment_vector(buf.take(spans[k][0], spans[k][1]), spec))
            k += 1
        return _segments_of(spans, vectors, sr)

    return _read_part(task, spans[0][0], spans[-1][1], sr, cut)


def _read_part(task: ExtractTask, start: int, stop: int | None, sr: int, analyse) -> PartResult:  # type: ignore[no-untyped-def]
    """Decode samples ``[start, stop)`` of a long file and ``analyse`` them; the file's stamp is checked around it."""
    try:
        with _part_source(task) as source, AudioStream(source, sample_rate=sr) as stream:
            got = analyse(stream.span(start, stop, preroll=round(PREROLL_S * sr)))
            warnings = stream.warnings
    except OSError as exc:
        return _read_failure(task, exc)
    except AudioError as exc:
        return PartResult(task, "retry" if exc.transient else "error", str(exc), decoder=exc.decoder)
    segments, probs = (got, None) if isinstance(got, Segments) else (None, got)
    return PartResult(
        task,
        "ok",
        "",
        stream.orig_sample_rate,
        stream.channels,
        stream.end_frame,
        stream.frames,
        stream.clipped,
        stream.peak,
        tuple(w for w in warnings if not w.startswith("clipped")),
        segments,
        probs,
        decoder=stream.decoder,
    )


def speech_plan(
    parts: Sequence[PartResult], *, spec: FeatureSpec, seg: SegmentSpec
) -> FeatureRecord | list[ExtractTask]:
    """After the first pass: the file's record if it is done (failed, silent, no speech), else the second pass's tasks.

    The segments come from all parts' frames at once, so one crossing a part
    boundary is one segment; each goes to the part holding its start.
    """
    parts = sorted(parts, key=lambda q: q.task.part)
    meta = _merge_meta(parts)
    if isinstance(meta, FeatureRecord):
        return decoded_by(meta, _decoder_of(parts))
    task, rate, channels, duration, warning = meta
    sr = spec.sample_rate
    probs = np.concatenate([q.probs for q in parts if q.probs is not None])
    total = round(duration * sr)
    spans = _spans(speech_segments(probs, seg.segmenter()), seg=seg, total=total, sr=sr)
    spans = _cut(spans, task.cuts, seg=seg, sr=sr)
    if not spans:
        record = no_speech_record(task, rate=rate, channels=channels, duration=duration, warning=warning)
        return decoded_by(record, _decoder_of(parts))
    per = task.part_windows * FRAME
    by_part: dict[int, list[tuple[float, float, float]]] = {}
    for a, b, prob in spans:
        by_part.setdefault(min(a // per, task.n_parts - 1), []).append((a / sr, b / sr, prob))
    return [dataclasses.replace(parts[k].task, spans=tuple(v)) for k, v in sorted(by_part.items())]


def merge_speech(first: Sequence[PartResult], second: Sequence[PartResult]) -> FeatureRecord:
    """The record of a long file from both passes: the first's metadata, the second's segments."""
    return decoded_by(_merge_speech(first, second), _decoder_of([*first, *second]))


def _merge_speech(first: Sequence[PartResult], second: Sequence[PartResult]) -> FeatureRecord:
    meta = _merge_meta(sorted(first, key=lambda q: q.task.part))
    if isinstance(meta, FeatureRecord):
        return meta
    task, rate, channels, duration, warning = meta
    second = sorted(second, key=lambda q: q.task.part)
    for status in ("retry", "error"):
        bad = next((q for q in second if q.status == status), None)
        if bad is not None:
            return FeatureRecord(task.content_hash, status, bad.error, 0, 0, 0.0, None)
    pieces = [q.segments for q in second if q.segments is not None]
    joined = Segments(*(np.concatenate([getattr(g, f) for g in pieces])
                        for f in ("start_s", "end_s", "voiced", "vectors", "speech_prob")))  # fmt: skip
    try:
        return _long_file_record(task, joined, rate=rate, channels=channels, duration=duration, warning=warning)
    except AudioError as exc:
        return FeatureRecord(task.content_hash, "error", str(exc), rate, channels, duration, None, warning)
