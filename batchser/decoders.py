"""FFmpeg's decoders, through PyAV, for the recordings libsndfile cannot read.

AAC/M4A, the audio track of MP4/MOV/3GP videos, WMA, AMR, Opus or Vorbis in
WebM/Matroska, AC-3, Monkey's Audio, WavPack…: what phones, voice memos,
video interviews and podcasts are. libsndfile stays the decoder of every
format it reads (WAV, FLAC, OGG, MP3, AIFF…), so their samples, cache rows and
results are what they were; :class:`FFmpegFile` is opened only for a file
libsndfile does not recognise, and refuses one FFmpeg takes for a format of
libsndfile's own (a broken WAV keeps libsndfile's verdict).

:class:`FFmpegFile` has the face of the part of ``soundfile.SoundFile`` that
:class:`batchser.audio.AudioStream` reads through (``samplerate``,
``channels``, ``frames``, ``read``, ``seek``, ``close``), so a long M4A is
decoded block by block in bounded memory like a long FLAC. Seeking is
sample-exact where the container gives every sample a timestamp (the MP4
family: M4A, MP4, MOV, 3GP, whose sample tables count samples): a seek lands on
a packet before the target, decodes :data:`DECODER_PREROLL_S` of audio to
settle the decoder, and drops samples up to the target by their timestamps
(measured: equal to a decode from the start, to the last bit, for AAC). Elsewhere
(WebM and Matroska count milliseconds, ASF and AMR estimate) a seek decodes
from the start, and such files are analysed in one pass.

PyAV is imported on first use: a job over WAV and FLAC files never loads it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
from collections.abc import Iterator
from fractions import Fraction
from functools import lru_cache
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "DECODER_PREROLL_S",
    "FFMPEG_EXTENSIONS",
    "MP4_EXTENSIONS",
    "FFmpegDecodeError",
    "FFmpegFile",
    "NotFFmpegFormatError",
    "decoder_tag",
    "looks_like_ffmpeg_media",
]

# Extensions of recordings FFmpeg reads and libsndfile does not: files named so
# are audio to discovery (kept even when broken, so that the report says why).
MP4_EXTENSIONS = frozenset({".m4a", ".m4b", ".mp4", ".m4v", ".mov", ".3gp", ".3g2"})
FFMPEG_EXTENSIONS = MP4_EXTENSIONS | frozenset(
    {".aac", ".ac3", ".eac3", ".amr", ".awb", ".ape", ".wv", ".tta", ".mpc", ".mp2", ".dts",
     ".wma", ".wmv", ".asf", ".webm", ".mka", ".mkv", ".avi", ".flv"}
)  # fmt: skip
# The only demuxers FFmpeg may use (its format_whitelist): the containers of the
# recordings above. Not libsndfile's own formats (WAV, MP3, OGG…: a file libsndfile
# refused that FFmpeg would take for one is broken, or random bytes that look like an
# MP3 frame, and keeps libsndfile's verdict), and none that open other files or
# addresses named inside the file (playlists, concat lists); only the file protocol.
DEMUXERS = ("mov", "asf", "amr", "amrnb", "amrwb", "matroska", "aac", "ac3", "eac3", "ape", "wv", "tta", "mpc",
            "mpc8", "dts", "avi", "flv")  # fmt: skip
_OPEN_OPTIONS = {"format_whitelist": ",".join(DEMUXERS), "protocol_whitelist": "file"}
MP4_DEMUXER = "mov,mp4,m4a,3gp,3g2,mj2"
# MP4 brands of images (HEIF, AVIF, JPEG 2000…), which share the container: not recordings.
_IMAGE_BRANDS = (b"hei", b"hev", b"mif1", b"msf1", b"avif", b"avis", b"jp2 ", b"jpx ", b"crx ")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_EBML = b"\x1a\x45\xdf\xa3"
# FFmpeg errors that are the system's (the disk, the network mount, a file gone), not the bytes':
# only these make a failure transient. FFmpeg's demuxers and decoders also return other
# codes (AVERROR(EPERM), ENOMEM…) for damaged data: those are the file's verdict.
_SYSTEM_ERRNOS = frozenset(
    {errno.EIO, errno.EACCES, errno.ENOENT, errno.ESTALE, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT,
     errno.ENXIO, errno.EBADF, errno.EMFILE, errno.ENFILE, errno.ENODEV, errno.ENOLCK}
)  # fmt: skip
MP4_UNREADABLE = "not a readable MP4/M4A"
DECODER_PREROLL_S = 0.1  # decoded before a seek target and dropped: one AAC frame is enough, Opus wants 80 ms
# Bump when how decoded frames become samples changes (mixing, scaling, gaps):
# rows decoded the old way then miss in the cache.
REVISION = 1
BLOCK_PACKETS_NO_TIME = 1 << 16  # a stream without durations is measured by demuxing this many packets at a time
MAX_GAP_S = 60.0  # a timestamp jump filled with silence at most this long; beyond, the file is damaged


class FFmpegDecodeError(Exception):
    """FFmpeg could not open or decode a file; ``str()`` is the reason for the report.

    ``transient`` is true when the cause is this run's (PyAV missing, a read
    error), never cached as the file's verdict.
    """

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


class NotFFmpegFormatError(Exception):
    """FFmpeg finds no recording in the file, or takes it for a format libsndfile reads: libsndfile's verdict stands.

    ``demuxer`` names the format FFmpeg recognised ("" when it recognised none);
    ``str()`` is FFmpeg's reason.
    """

    def __init__(self, reason: str, *, demuxer: str = "") -> None:
        super().__init__(reason)
        self.demuxer = demuxer


@lru_cache(maxsize=1)
def _av() -> Any:
    """The ``av`` module, or None when PyAV is not installed."""
    try:
        import av
    except ImportError:
        return None
    return av


@lru_cache(maxsize=1)
def decoder_tag() -> str | None:
    """What decodes through FFmpeg here, as cache rows of such files are keyed: ``ffmpeg-8.1.2-r1``.

    FFmpeg's version decides the samples its decoders give (and which
    packets a demuxer trims), so a row decoded by another FFmpeg never
    serves this one; ``r`` is :data:`REVISION`. None without PyAV.
    """
    av = _av()
    if av is None:
        return None
    version = getattr(av, "ffmpeg_version_info", "") or ".".join(
        map(str, av.library_versions.get("libavcodec", ()))
    )  # fmt: skip
    return f"ffmpeg-{re.sub(r'[^0-9A-Za-z.]+', '.', str(version)).strip('.')}-r{REVISION}"


def looks_like_ffmpeg_media(head: bytes) -> bool:
    """Whether a file's first 16 bytes are those of a container FFmpeg reads and libsndfile does not.

    MP4/M4A/MOV/3GP (an ``ftyp`` box whose brand is no image's), ASF
    (WMA/WMV), Matroska/WebM and AMR: recordings named without (or with an
    unexpected) extension. Other formats are known by extension only.
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return not head[8:12].startswith(_IMAGE_BRANDS)
    return head.startswith((_ASF_GUID, _EBML, b"#!AMR"))


_BOX_NAME = re.compile(rb"[A-Za-z0-9 \xa9]{4}")  # an MP4 box's four-letter type (\xa9: QuickTime's metadata)


def _mp4_problem(fh: BinaryIO) -> str:
    """Why an MP4-family file FFmpeg cannot open (or finds no audio in) is broken, from its top-level boxes.

    "" when its boxes show nothing wrong. A recording cut short (a phone that died, a
    download stopped) ends inside its ``mdat`` box, before the ``moov`` index that a
    recorder writes last.
    """
    try:
        size = fh.seek(0, os.SEEK_END)
        pos, boxes, audio_bytes = 0, [], 0
        while pos + 8 <= size:
            fh.seek(pos)
            n, kind = struct.unpack(">I4s", fh.read(8))
            head = 8
            if n == 1:
                n, head = struct.unpack(">Q", fh.read(8))[0], 16
            elif n == 0:
                n = size - pos
            if not _BOX_NAME.fullmatch(kind):
                if "moov" in boxes:
                    break  # bytes after the index: FFmpeg's verdict stands
                return f"{MP4_UNREADABLE}: the bytes at offset {pos} are not an MP4 box (damaged after its header)"
            name = kind.decode("latin-1")
            if n < head:
                return f"{MP4_UNREADABLE}: a damaged box '{name}' at offset {pos} (size {n})"
            boxes.append(name)
            if pos + n > size:
                if name == "moov":
                    return f"{MP4_UNREADABLE}: the file ends inside its 'moov' index ({size - pos} of {n} bytes)"
                if "moov" in boxes:
                    return ""
                return (
                    f"truncated: the file ends inside its '{name}' box ({size - pos} of {n} bytes) and has no "
                    "'moov' index, which a recorder writes last: a recording that was not finished or a "
                    "download cut short"
                )
            if name == "mdat":
                audio_bytes += n - head
            pos += n
        if boxes and "moov" not in boxes:
            return f"{MP4_UNREADABLE}: no 'moov' index box: an MP4 whose recording was not finished"
        if "moov" in boxes and audio_bytes == 0:
            return f"{MP4_UNREADABLE}: its 'mdat' box, which holds the audio, is empty or missing"
    except (OSError, struct.error, ValueError):
        return ""
    return ""


def _is_system(exc: BaseException) -> bool:
    """Whether an FFmpeg error is the system's (a read error, a file gone), not the file's bytes."""
    return isinstance(exc, OSError) and getattr(exc, "errno", None) in _SYSTEM_ERRNOS


def _mp4_says(exc: BaseException) -> str:
    """What an FFmpeg error opening an MP4 means, in words (its own message names C functions)."""
    if isinstance(exc, EOFError):
        return "its index ends before its boxes say (a box cut short)"
    if isinstance(exc, MemoryError):
        return "its index declares sizes no recording has (a damaged sample table)"
    if isinstance(exc, ValueError):
        return "its boxes hold invalid data"
    return "its 'moov' index is damaged"


def _source(source: str | bytes | os.PathLike[str] | BinaryIO) -> tuple[Any, BinaryIO | None]:
    """What to hand ``av.open``: a str path FFmpeg can open itself (fastest), else an open file object."""
    if hasattr(source, "read"):
        source.seek(0)  # type: ignore[union-attr]
        return source, None
    path = os.fsdecode(source)  # type: ignore[arg-type]
    try:
        path.encode("utf-8")
        return "file:" + path, None  # the file protocol, whatever the name holds (no "http:" prefix is read)
    except UnicodeEncodeError:  # a name that is not UTF-8: FFmpeg could not open it by name
        fh = open(os.fsencode(source), "rb")  # type: ignore[arg-type]  # noqa: SIM115 - closed with the file
        return fh, fh


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return re.sub(r"\s*\[Errno -?\d+\]\s*", "", str(text)).rstrip(".")


_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}
_DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32, "dbl": np.float64}
CHUNK = 1 << 15  # decoded frames (1,024 samples each for AAC) are handed on in blocks of about this many samples


def _to_float(frame: Any, channels: int) -> np.ndarray:
    """A decoded frame's samples as float32 ``(samples, channels)``, integers scaled as libsndfile scales them.

    Read from the frame's planes (``to_ndarray`` stacks them through numpy, three times
    slower); float samples of one plane are a view of the frame's buffer (which the view
    keeps from the decoder), copied once when the blocks are joined.
    """
    name, n, planes, k = frame.format.name, frame.samples, frame.planes, len(frame.layout.channels)
    planar = name.endswith("p")
    base = name[:-1] if planar else name
    dtype = _DTYPES[base]
    if planar:
        # One plane per channel, and no more: past 8 channels (AAC decodes a damaged packet's
        # garbage as a 43-channel frame) PyAV lists planes beyond the channels, whose pointers
        # are stray memory; reading them crashed the process.
        if k == 1:
            x = np.frombuffer(planes[0], dtype=dtype, count=n)[:, None]
        else:
            x = np.stack([np.frombuffer(p, dtype=dtype, count=n) for p in planes[:k]], axis=1)
    else:
        x = np.frombuffer(planes[0], dtype=dtype, count=n * k).reshape(n, k)
    if base == "u8":
        y = (x.astype(np.float32) - 128.0) / 128.0
    elif base in _SCALE:
        y = x.astype(np.float32) / np.float32(_SCALE[base])
    else:
        y = x.astype(np.float32, copy=False)
    if y.shape[1] != channels:  # the layout changed inside the stream: its mix, on every channel
        y = np.repeat(y.mean(axis=1, keepdims=True), channels, axis=1)
    return y


class FFmpegFile:
    """A recording opened with FFmpeg, read as ``soundfile.SoundFile`` is: float32 ``(frames, channels)`` blocks.

    Parameters
    ----------
    source : path or binary file object

    Attributes
    ----------
    samplerate, channels : int
        Of the first decoded frame (a header can understate an AAC stream's rate).
    frames : int
        Samples per channel the container declares (an estimate unless ``exact``).
    exact : bool
        Whether timestamps count samples (the MP4 family): seeks are sample-exact.
    frames_exact : bool
        Whether ``frames`` is the stream's own sample count, so that fewer
        decoded means truncated (not when its duration field reads 0 and the
        length comes from the container or the packets).
    format : str
        FFmpeg's demuxer and codec, e.g. ``mov,mp4,m4a,3gp,3g2,mj2/aac``.
    packets, damaged : int
        Packets read, and those whose data the decoder refused (skipped).

    Raises
    ------
    FFmpegDecodeError
        PyAV is missing, or FFmpeg cannot open the file, finds no audio
        track, or has no decoder for its codec.
    NotFFmpegFormatError
        FFmpeg takes it for a format libsndfile reads itself.
    """

    def __init__(self, source: str | bytes | os.PathLike[str] | BinaryIO) -> None:
        av = _av()
        if av is None:
            raise FFmpegDecodeError(
                "needs FFmpeg's decoders, which come with PyAV: pip install av (then run the job again)",
                transient=True,
            )
        self._av = av
        self._target, self._own = _source(source)
        self.packets = self.damaged = 0
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        av = self._av
        try:
            self._c = self._container()
        except av.error.FFmpegError as exc:
            if _is_system(exc):
                raise FFmpegDecodeError(f"cannot read: {_reason(exc)}", transient=True) from None
            if isinstance(exc, av.error.ArgumentError):  # a demuxer off the list: one of libsndfile's formats
                raise NotFFmpegFormatError("a format libsndfile reads", demuxer="libsndfile's") from None
            head, problem = self._inspect()
            if head[4:8] == b"ftyp" and looks_like_ffmpeg_media(head):
                raise FFmpegDecodeError(problem or f"{MP4_UNREADABLE}: {_mp4_says(exc)}") from None
            if looks_like_ffmpeg_media(head):
                raise FFmpegDecodeError(f"cannot decode: FFmpeg cannot open it ({_reason(exc)})") from None
            raise NotFFmpegFormatError(_reason(exc)) from None
        demuxer = self._c.format.name
        self._mp4 = demuxer == MP4_DEMUXER
        streams = self._c.streams
        if not streams.audio:
            kinds = sorted({s.type for s in streams})
            if self._mp4 and "video" not in kinds:  # an index that describes no track it could hold
                held = f"only {' and '.join(kinds)} streams" if kinds else "no track at all"
                raise FFmpegDecodeError(
                    self._inspect()[1] or f"{MP4_UNREADABLE}: its index describes no audio track ({held}: damaged)"
                )
            held = " and ".join(kinds) + " streams only" if kinds else "no streams"
            raise FFmpegDecodeError(f"no audio track: the file holds {held}")
        self._s = streams.best("audio") or streams.audio[0]
        self._index = self._s.index  # kept: a closed container's streams are gone
        if self._s.codec_context is None:  # FFmpeg knows no decoder for the codec the track names
            why = "its audio track names a codec this FFmpeg has no decoder for"
            raise FFmpegDecodeError(f"{MP4_UNREADABLE}: {why} (a damaged track description?)" if self._mp4 else
                                    f"cannot decode: {why}")  # fmt: skip
        self.format = f"{demuxer}/{self._s.codec_context.name}"
        tb = self._s.time_base
        self._tb = Fraction(tb.numerator, tb.denominator) if tb else None
        header_rate = self._header_rate = self._s.codec_context.sample_rate or 0
        # Timestamps count samples: the MP4 family's sample tables, in units of the sample rate.
        self.exact = self._mp4 and header_rate > 0 and self._tb == Fraction(1, header_rate)
        self._pos = 0  # sample index of the next sample read() returns
        self._skip = 0  # samples still to drop after a seek
        self._blocks = self._decoded()
        self._prime()  # the rate and layout of what the decoder gives, not of the header
        if not self._pending:  # not one sample in the whole stream: the file's verdict, said by what is wrong
            raise FFmpegDecodeError(self._nothing_decoded())
        self.samplerate = int(self._rate or header_rate)
        self.channels = int(self._channels or self._s.codec_context.channels or 1)
        self.frames = self._declared_frames()

    def _inspect(self) -> tuple[bytes, str]:
        """The file's first 16 bytes, and what its MP4 boxes show wrong ("" when nothing, or not an MP4)."""
        fh = self._target if hasattr(self._target, "read") else None
        try:
            with contextlib.ExitStack() as stack:
                if fh is None:
                    fh = stack.enter_context(open(self._target.removeprefix("file:"), "rb"))
                fh.seek(0)
                head = fh.read(16)
                return head, _mp4_problem(fh) if head[4:8] == b"ftyp" else ""
        except OSError as exc:
            raise FFmpegDecodeError(f"cannot read: {_reason(exc)}", transient=True) from None

    def _nothing_decoded(self) -> str:
        """Why a stream that opened gave no sample at all."""
        problem = self._inspect()[1] if self._mp4 else ""
        if problem:
            return problem
        if self.packets and self.damaged >= self.packets:
            why = f"none of its {self.packets} audio packets could be decoded"
        elif self.packets:
            why = f"its {self.packets} audio packets decode to no samples"
        else:
            why = "its index lists no audio data that can be read (a damaged sample table?)"
        return f"{MP4_UNREADABLE}: {why}" if self._mp4 else f"cannot decode: {why}"

    def _prime(self) -> None:
        first = next(self._blocks, None)
        self._pending: list[np.ndarray] = [first] if first is not None else []

    # -- decoding ----------------------------------------------------------------
    _rate: int = 0
    _channels: int = 0
    _start_pts: int | None = None
    _mp4 = False
    _whole = True  # the packets are demuxed from the first (no timestamp seek since the last start)
    _demuxed = False  # the demuxer reached the end of the stream (or gave up on damaged data)
    frames_exact = False  # whether frames is the stream's own sample count (fewer decoded: truncated)

    def _container(self) -> Any:
        if hasattr(self._target, "read"):
            self._target.seek(0)  # type: ignore[union-attr]
        return self._av.open(self._target, "r", options=_OPEN_OPTIONS, metadata_errors="ignore")

    def _frames(self) -> Iterator[Any]:
        """Decoded frames with samples, in stream order; a packet the decoder refuses is counted and skipped."""
        av = self._av
        try:
            for packet in self._c.demux(self._s):
                if packet.size:
                    self.packets += 1
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    # The packet is in memory: whatever code the decoder gives (AVERROR_INVALIDDATA, or
                    # AVERROR(EPERM) from AAC on garbage), its data was refused. Skipped, and counted.
                    self.damaged += 1
                    continue
                for frame in frames:
                    if frame.samples:
                        yield frame
        except av.error.FFmpegError as exc:
            if _is_system(exc):
                raise FFmpegDecodeError(f"cannot read: {_reason(exc)}", transient=True) from None
            # A demuxer that meets damaged or missing data ends the stream there (truncation is judged by the caller).
        self._demuxed = True

    @property
    def unread_packets(self) -> int:
        """Packets the MP4 sample table lists that a decode from the first packet to the end never met (0 when
        the decode did not start at the first packet or has not ended, or for other containers)."""
        if not (self._mp4 and self._whole and self._demuxed):
            return 0
        return max(0, int(self._s.frames or 0) - self.packets)

    def _decoded(self, drop_before: int | None = None) -> Iterator[np.ndarray]:
        """Float32 ``(n, channels)`` blocks in stream order, about :data:`CHUNK` samples each.

        In an exact stream the frames are placed by their timestamps: a gap
        (a packet skipped as damaged) is filled with silence and an overlap
        dropped, so every sample keeps its time. After a timestamp seek,
        ``drop_before`` is the target: the samples before it are dropped.
        """
        pos: int | None = None  # sample index of the next sample placed (exact streams)
        out: list[np.ndarray] = []
        have = 0
        for frame in self._frames():
            if not self._rate:
                self._rate, self._channels = frame.sample_rate, len(frame.layout.channels)
                self._start_pts = frame.pts
                if self._rate != self._header_rate:  # implicit SBR: the header says half the rate decoded
                    self.exact = False  # timestamps no longer count output samples
            elif frame.sample_rate != self._rate:
                raise FFmpegDecodeError(
                    f"cannot decode: the sample rate changes inside the stream ({self._rate} to {frame.sample_rate} Hz)"
                )
            block = _to_float(frame, self._channels)
            if self.exact and frame.pts is not None and self._start_pts is not None:
                at = int(frame.pts - self._start_pts)
                if pos is None:
                    if drop_before is not None and at > drop_before:  # the seek landed past the target
                        raise FFmpegDecodeError(f"cannot seek to sample {drop_before}: the stream resumes at {at}")
                    pos = at
                elif at > pos:
                    gap = at - pos
                    if gap > MAX_GAP_S * self._rate:
                        raise FFmpegDecodeError(
                            f"damaged: timestamps jump by {gap / self._rate:.0f} s inside the stream"
                        )
                    block = np.concatenate([np.zeros((gap, self._channels), dtype=np.float32), block])
                elif at < pos:  # overlaps what was placed: drop the repeat
                    block = block[pos - at :]
                if drop_before is not None and pos < drop_before:  # before the seek's target
                    cut = min(len(block), drop_before - pos)
                    block, pos = block[cut:], pos + cut
                pos += len(block)
            if len(block):
                out.append(block)
                have += len(block)
                if have >= CHUNK:
                    yield np.concatenate(out)  # a copy, even of one block: no view of a frame escapes
                    out, have = [], 0
        if out:
            yield np.concatenate(out)

    def _declared_frames(self) -> int:
        s, c, rate = self._s, self._c, self.samplerate
        if not rate:
            return 0
        # A duration of 0 is a header that says nothing (or a damaged one), not an empty stream: it was decoded.
        if s.duration and self._tb is not None:
            self.frames_exact = self.exact
            return round(s.duration * self._tb * rate)
        if c.duration:
            return round(c.duration / 1_000_000 * rate)
        return self._measured_frames()

    def _measured_frames(self) -> int:
        """Samples per channel from the packets' durations (a stream whose header gives none, e.g. a browser's WebM).

        Demuxes the whole file (no decoding: milliseconds for an hour of Opus), then starts again.
        """
        av = self._av
        total, last = 0, None
        self._restart()  # from the first packet: priming has read some
        try:
            for packet in self._c.demux(self._s):
                if packet.duration:
                    total += packet.duration
                elif packet.pts is not None:
                    last = packet.pts
        except av.error.FFmpegError:
            pass  # what was demuxed counts
        self._restart()
        self._prime()
        total = total or last or 0
        return round(total * self._tb * self.samplerate) if self._tb is not None else 0

    # -- the SoundFile face ------------------------------------------------------
    def read(self, frames: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """Up to ``frames`` samples per channel from the current position, float32 ``(n, channels)``."""
        if dtype != "float32" or not always_2d:
            raise ValueError("FFmpegFile reads float32 (frames, channels) blocks only")
        out, have = [], 0
        while have < frames:
            block = self._pending.pop() if self._pending else next(self._blocks, None)
            if block is None:
                break
            if self._skip:
                dropped = min(self._skip, len(block))
                block, self._skip = block[dropped:], self._skip - dropped
                if not len(block):
                    continue
            take = block[: frames - have]
            if len(take) < len(block):
                self._pending.append(block[len(take) :])
            out.append(take)
            have += len(take)
        self._pos += have
        if not out:
            return np.zeros((0, self.channels), dtype=np.float32)
        return np.ascontiguousarray(out[0] if len(out) == 1 else np.concatenate(out))

    def seek(self, frame: int) -> int:
        """Go to sample ``frame`` (per channel): by timestamp where exact, else by decoding from the start."""
        if frame == self._pos and not self._skip:
            return frame
        self._pending, self._skip = [], 0
        if self.exact and frame > 0:
            # A fresh decoder: what it gives after the seek then depends on the target alone, not on what
            # was read before (AAC's noise substitution draws from a generator a flush does not reset).
            self._restart()
            lead = min(frame, round(DECODER_PREROLL_S * self.samplerate))
            target = frame - lead + (self._start_pts or 0)
            self._c.seek(int(target), stream=self._s, backward=True, any_frame=False)
            self._blocks = self._decoded(drop_before=frame)
            self._whole = False
        else:
            self._restart()
            self._skip = frame
        self._pos = frame
        return frame

    def _restart(self) -> None:
        """The container opened again, to decode from its first packet with a fresh decoder."""
        self._c.close()
        self._c = self._container()
        self._s = self._c.streams[self._index]
        self.packets = self.damaged = 0
        self._whole, self._demuxed = True, False
        self._blocks = self._decoded()

    def close(self) -> None:
        c = getattr(self, "_c", None)
        if c is not None:
            c.close()
        if self._own is not None:
            self._own.close()

    def __enter__(self) -> FFmpegFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
