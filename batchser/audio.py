"""Decode a recording, mix to mono, resample with soxr.

libsndfile decodes every format it reads (WAV at any bit depth, FLAC, OGG,
MP3, AIFF…); a file it does not recognise goes to FFmpeg through PyAV
(:mod:`batchser.decoders`: AAC/M4A, MP4/MOV audio tracks, WMA, AMR, WebM…),
read through the same :class:`AudioStream`. One function decodes a file whole,
:func:`load`; failures raise :class:`AudioError` with a reason meant for the
report's ``error`` column, and oddities that still allow a label (a truncated
file, clipping, damaged packets skipped) come back as ``Audio.warnings``.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from batchser.decoders import FFMPEG_EXTENSIONS, FFmpegDecodeError, FFmpegFile, NotFFmpegFormatError, decoder_tag

__all__ = [
    "EXACT_SEEK_FORMATS",
    "LIBSNDFILE",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "SILENCE_DBFS",
    "UNRECOGNISED",
    "Audio",
    "AudioError",
    "AudioStream",
    "Seekable",
    "aligned",
    "check_signal",
    "clip_warning",
    "damaged_warning",
    "load",
    "seekable",
]

SILENCE_DBFS = -100
SILENCE_PEAK = 10 ** (SILENCE_DBFS / 20)
# Float files may go past full scale (±1) a little; past this (+80 dBFS) the
# numbers are broken data or the wrong scale, and every feature would overflow.
MAX_PEAK = 1e4
# Outside this range a header's rate is a lie or a corruption, not a recording.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000
# Decode in blocks of about 1 Mi samples (4 MiB) whatever the channel count:
# memory follows the data actually present, never what a header claims.
BLOCK_SAMPLES = 1 << 20
CLIP_FRACTION = 0.01  # warn when more than 1 % of samples sit at full scale


class AudioError(Exception):
    """A file that cannot be turned into usable audio; ``str()`` is the reason.

    ``transient`` is true when the cause was the system (a read error, a file
    gone or locked, a decoder not installed), not the bytes: such a failure is
    retried by the next run, never cached as the file's verdict. ``decoder``
    is :func:`~batchser.decoders.decoder_tag` when FFmpeg was asked too (the
    verdict is then FFmpeg's as much as libsndfile's), else "".
    """

    def __init__(self, reason: str, *, transient: bool = False, decoder: str = "") -> None:
        super().__init__(reason)
        self.transient = transient
        self.decoder = decoder


# libsndfile's SFE_SYSTEM: the OS failed it (open or read), the bytes said nothing.
_SFE_SYSTEM = 2
# SF_ERR_UNRECOGNISED_FORMAT: not a format libsndfile reads (FFmpeg is asked next).
_SF_ERR_UNRECOGNISED = 1
# The reason libsndfile gives such a file, as the report writes it. Cache rows
# with it predate FFmpeg decoding: the store reads them as absent.
UNRECOGNISED = "cannot decode: Format not recognised"
LIBSNDFILE = ""  # what AudioStream.decoder says when libsndfile decodes


@dataclass(frozen=True)
class Audio:
    """Decoded mono audio and what the file was before conversion."""

    samples: np.ndarray  # float32, mono, at sample_rate
    sample_rate: int
    orig_sample_rate: int
    channels: int
    duration_s: float  # of the data decoded, at the original rate
    warnings: tuple[str, ...] = ()


def _open_error(exc: Exception) -> AudioError:
    msg = str(exc).strip()
    # libsndfile's messages start with the file name; keep only the reason.
    if ": " in msg and isinstance(exc, sf.LibsndfileError):
        msg = msg.split(": ", 1)[1]
    if isinstance(exc, sf.LibsndfileError) and exc.code == _SFE_SYSTEM:
        return AudioError(f"cannot read: {msg or 'system error'}", transient=True)
    if "possibly a pipe" in msg:
        # What libsndfile says of a regular file in which it finds no audio at all
        # (an MP3 that is only an ID3 tag, for one); the file itself is there.
        return AudioError("cannot decode: no audio data found (a header or tag without any audio frames?)")
    return AudioError(f"cannot decode: {msg}" if msg else f"cannot decode: {type(exc).__name__}")


QUIET_ENV = "BATCHSER_QUIET"  # set by `--quiet`; inherited by worker processes
_mute_lock = threading.Lock()
_mute_depth = 0
_saved_fd: int | None = None


@contextlib.contextmanager
def _codec_messages_muted() -> Iterator[None]:
    """With ``BATCHSER_QUIET=1``, silence what C decoders print (libmpg123's "Note: …" lines).

    They write to file descriptor 2 directly, past Python's ``sys.stderr``;
    the descriptor points at /dev/null while any thread decodes, and is
    restored when the last one is done.
    """
    global _mute_depth, _saved_fd
    if os.environ.get(QUIET_ENV) != "1":
        yield
        return
    with _mute_lock:
        if _mute_depth == 0:
            try:
                _saved_fd = os.dup(2)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 2)
                os.close(null)
            except OSError:
                _saved_fd = None
        _mute_depth += 1
    try:
        yield
    finally:
        with _mute_lock:
            _mute_depth -= 1
            if _mute_depth == 0 and _saved_fd is not None:
                os.dup2(_saved_fd, 2)
                os.close(_saved_fd)
                _saved_fd = None


@contextlib.contextmanager
def _decode_errors() -> Iterator[None]:
    """Turn what libsndfile or the OS raises while opening or reading into an :class:`AudioError`."""
    try:
        with _codec_messages_muted():
            yield
    except AudioError:
        raise
    except FFmpegDecodeError as exc:
        raise AudioError(str(exc), transient=exc.transient) from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise _open_error(exc) from None
    except OSError as exc:
        raise AudioError(f"cannot read: {exc.strerror or exc}", transient=True) from None
    except MemoryError:
        raise AudioError("cannot decode: out of memory", transient=True) from None


def _riff_shortfall(path: str | Path | BinaryIO) -> tuple[int, int] | None:
    """(declared, present) bytes of a WAV's data chunk when the file ends early.

    libsndfile quietly clamps a truncated WAV to the bytes present, so the
    header is read here: a cut-off download should be flagged, not hidden.
    """
    try:
        with contextlib.ExitStack() as stack:
            fh = path if hasattr(path, "read") else stack.enter_context(open(path, "rb"))  # type: ignore[arg-type]
            size = fh.seek(0, os.SEEK_END)
            fh.seek(0)
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                cid, clen = chunk[:4], int.from_bytes(chunk[4:8], "little")
                if cid == b"data":
                    present = size - pos - 8
                    # 0 and 0xFFFFFFFF mark a stream written without a final size.
                    return (clen, present) if clen not in (0, 0xFFFFFFFF) and clen > present else None
                pos += 8 + clen + (clen & 1)
    except (OSError, ValueError):
        return None
    return None


# A mix this far (-40 dB) below its loudest channel is channels cancelling (opposite phase), not a quiet file.
CANCEL_RATIO = 0.01


def _read_mono(f: sf.SoundFile, channel: int | None = None) -> tuple[np.ndarray, int, int, np.ndarray]:
    """Mono float32 samples (the channels' mean, or ``channel`` alone), frames decoded, samples at full
    scale, and each channel's peak."""
    blocks, frames, clipped = [], 0, 0
    peaks = np.zeros(max(1, f.channels), dtype=np.float64)
    block_frames = max(1, BLOCK_SAMPLES // max(1, f.channels))
    while True:
        block = f.read(block_frames, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            break
        if not np.isfinite(block).all():
            raise AudioError("non-finite samples (NaN or inf) in the audio data")
        clipped += int(np.count_nonzero(np.abs(block) >= 0.999))
        frames += block.shape[0]
        peaks = np.maximum(peaks, np.abs(block).max(axis=0))
        if channel is not None:
            blocks.append(block[:, channel].copy())
        else:
            blocks.append(block.mean(axis=1) if block.shape[1] > 1 else block[:, 0].copy())
        if block.shape[0] < block_frames:
            break
    mono = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return mono, frames, clipped, peaks


def cancel_warning(mono_peak: float, channel_peaks: np.ndarray) -> str:
    """The warning when a multichannel file's channels cancel in the mono mix ("" when they do not)."""
    loud = float(channel_peaks.max()) if len(channel_peaks) else 0.0
    if len(channel_peaks) < 2 or loud < SILENCE_PEAK or mono_peak >= loud * CANCEL_RATIO:
        return ""
    k = int(channel_peaks.argmax())
    below = 20 * np.log10(loud / max(mono_peak, 1e-12))
    return (
        f"channels cancel in the mono mix (opposite phase: the mix peaks {below:.0f} dB below channel {k + 1}); "
        f"labelled from channel {k + 1}, the loudest, alone"
    )


def load(source: str | Path | BinaryIO, *, sample_rate: int) -> Audio:
    """Decode ``source`` to mono float32 at ``sample_rate``.

    Parameters
    ----------
    source : path or binary file object
        Anything libsndfile reads (WAV at any bit depth, FLAC, OGG, MP3, AIFF, …).
    sample_rate : int
        Target rate; soxr (high quality) resamples when the file differs.

    Returns
    -------
    Audio
        With ``warnings`` for a truncated file (decoded up to where data ends)
        or heavy clipping.

    Raises
    ------
    AudioError
        Unreadable, empty, non-finite or silent (peak below ``SILENCE_DBFS``)
        audio, or an implausible sample rate, with the reason.
    """
    with AudioStream(source, sample_rate=sample_rate) as stream:
        return stream.read_all()


class AudioStream:
    """An open audio file: decode it whole (:meth:`read_all`) or block by block, for files too long to hold.

    Iterate once for mono float32 blocks at ``sample_rate``; afterwards ``frames``, ``peak`` and
    ``warnings`` describe what was decoded. Memory is one block, whatever the
    file's length. Use as a context manager.

    Raises
    ------
    AudioError
        On opening (unreadable file, implausible rate) or while decoding
        (non-finite samples, a read error).
    """

    def __init__(self, source: str | Path | BinaryIO, *, sample_rate: int) -> None:
        # Bytes paths: soundfile encodes str paths strictly, and a name with bytes
        # that are not UTF-8 (kept by Python as lone surrogates) would not open.
        target = os.fsencode(source) if isinstance(source, (str, Path)) else source
        self.decoder = LIBSNDFILE  # or decoder_tag(): FFmpeg's, which the cache keys such files' rows by
        self._f: sf.SoundFile | FFmpegFile
        with _decode_errors():
            if isinstance(target, bytes) and os.path.getsize(target) == 0:
                raise AudioError("cannot decode: empty file (0 bytes)")
            try:
                self._f = sf.SoundFile(target)
            except sf.LibsndfileError as exc:
                # FFmpeg is asked about a format libsndfile does not know, and about any file named
                # as FFmpeg's (libsndfile's MP3 probe can take a damaged M4A for MPEG audio).
                if exc.code == _SFE_SYSTEM or (exc.code != _SF_ERR_UNRECOGNISED and not _ffmpeg_named(source)):
                    raise
                self._f = _open_ffmpeg(target, source, refused=exc)
                self.decoder = decoder_tag() or ""
        self.source = source
        self.sample_rate = sample_rate
        self.orig_sample_rate, self.channels = int(self._f.samplerate), int(self._f.channels)
        self.declared_frames = int(self._f.frames)
        # Whether declared_frames counts the samples (not an estimate), so that fewer decoded means truncated.
        # (FFmpeg's: only the stream's own count; a container's duration counts the encoder's priming too.)
        self._declared_exact = getattr(self._f, "frames_exact", True)
        if not MIN_SAMPLE_RATE <= self.orig_sample_rate <= MAX_SAMPLE_RATE:
            self._f.close()
            raise AudioError(f"implausible sample rate {self.orig_sample_rate} Hz in the header", decoder=self.decoder)
        self.frames = 0  # input frames decoded
        self.end_frame = 0  # input frame where decoding stopped
        self.peak = 0.0
        self.channel_peak = 0.0  # the loudest channel's peak, where the mix may cancel
        self._cancelled = ""  # the warning when channels cancelled and one was labelled alone
        self._clipped = 0
        self._at_end = False  # decoding reached the end of the data

    def read_all(self) -> Audio:
        """Decode the whole file at once (see :func:`load`).

        Channels that cancel in the mono mix (one in opposite phase to another) are not a silent file:
        the loudest channel is labelled alone, with a warning.
        """
        with _decode_errors():
            mono, frames, clipped, peaks = _read_mono(self._f)
        self.frames, self.end_frame, self._clipped, self._at_end = frames, frames, clipped, True
        self.peak = float(np.abs(mono).max()) if frames else 0.0
        self._cancelled = cancel_warning(self.peak, peaks) if frames else ""
        if self._cancelled:
            with _decode_errors():
                self._f.seek(0)
                mono, _, _, _ = _read_mono(self._f, channel=int(peaks.argmax()))
            self.peak = float(np.abs(mono).max())
        self.check_decoded()
        if self.orig_sample_rate != self.sample_rate:
            # What librosa.resample(res_type="soxr_hq") calls, without its input checks (done above).
            mono = soxr.resample(mono, self.orig_sample_rate, self.sample_rate, quality="HQ")
        return Audio(
            samples=np.ascontiguousarray(mono, dtype=np.float32),
            sample_rate=self.sample_rate,
            orig_sample_rate=self.orig_sample_rate,
            channels=self.channels,
            duration_s=frames / self.orig_sample_rate,
            warnings=self.warnings,
        )

    def check_decoded(self) -> None:
        """Refuse what was decoded when it holds nothing to label (see :func:`check_signal`).

        A long recording decoded block by block is not read again one channel at a time: channels that
        cancel in its mix are said so, with the fix, instead of "silent".
        """
        if self.frames and self.channel_peak >= SILENCE_PEAK and self.peak < self.channel_peak * CANCEL_RATIO:
            raise AudioError(
                f"channels cancel in the mono mix (opposite phase: the mix peaks "
                f"{20 * np.log10(max(self.peak, 1e-12)):.0f} dBFS, a channel {20 * np.log10(self.channel_peak):.0f} "
                "dBFS); save one channel (e.g. sox in.wav out.wav remix 1) and label that"
            )
        check_signal(self.frames, self.peak)

    @property
    def declared_duration_s(self) -> float:
        return self.declared_frames / self.orig_sample_rate

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.span()

    def span(self, start: int = 0, stop: int | None = None, *, preroll: int = 0) -> Iterator[np.ndarray]:
        """Blocks of the samples ``[start, stop)`` at ``sample_rate`` (``stop`` None: to the end).

        Decoding starts from a seek, at least ``preroll`` output samples
        before ``start`` (and reads as far past ``stop``), so that the
        resampler's filter is settled at both edges and the samples equal
        those of a whole-file decode up to float rounding. The seek lands on
        the last output sample at or before ``start - preroll`` that falls on
        an input sample (:func:`aligned`: every 160th at 44.1 kHz to 16 kHz),
        so the output keeps the whole file's sample grid. Iterate once.
        """
        ratio = Fraction(self.orig_sample_rate, self.sample_rate)
        first = max(0, start - preroll)
        first -= first % ratio.denominator  # on an input sample
        in_first = int(first * ratio)
        in_stop = None if stop is None else math.ceil((stop + preroll) * ratio)
        if in_first:
            with _decode_errors():
                self._f.seek(in_first)
        resampler = (
            soxr.ResampleStream(self.orig_sample_rate, self.sample_rate, 1, dtype="float32", quality="HQ")
            if self.orig_sample_rate != self.sample_rate
            else None
        )
        block_frames = max(1, BLOCK_SAMPLES // max(1, self.channels))
        pos = in_first  # next input frame
        skip = start - first  # preroll outputs still to drop
        left = None if stop is None else stop - start  # outputs still to give
        while left is None or left > 0:
            want = block_frames if in_stop is None else max(0, min(block_frames, in_stop - pos))
            with _decode_errors():
                block = self._f.read(want, dtype="float32", always_2d=True)
            last = block.shape[0] < block_frames or (in_stop is not None and pos + block.shape[0] >= in_stop)
            self._at_end = block.shape[0] < want
            if block.shape[0]:
                if not np.isfinite(block).all():
                    raise AudioError("non-finite samples (NaN or inf) in the audio data")
                self._clipped += int(np.count_nonzero(np.abs(block) >= 0.999))
                self.frames += block.shape[0]
                pos += block.shape[0]
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0].copy()
                self.peak = max(self.peak, float(np.abs(mono).max()))
                if block.shape[1] > 1:
                    self.channel_peak = max(self.channel_peak, float(np.abs(block).max()))
            else:
                mono = np.zeros(0, dtype=np.float32)
            out = resampler.resample_chunk(mono, last=last) if resampler is not None else mono
            if skip:
                dropped = min(skip, out.size)
                out, skip = out[dropped:], skip - dropped
            if left is not None:
                out = out[:left]
                left -= out.size
            if out.size:
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                break
        self.end_frame = pos

    @property
    def clipped(self) -> int:
        """Samples (over all channels) at full scale among those decoded."""
        return self._clipped

    @property
    def warnings(self) -> tuple[str, ...]:
        out = []
        if self._at_end:  # truncation can only be judged where the data ended
            short = (
                _riff_shortfall(self.source) if isinstance(self.source, (str, Path)) or self.source.seekable() else None
            )
            if short is not None:
                out.append(f"truncated: header declares {short[0]} bytes of audio, the file holds {short[1]}")
            elif 0 < self.end_frame < self.declared_frames and self._declared_exact:
                out.append(
                    f"truncated: header declares {self.declared_duration_s:.3f} s, "
                    f"data holds {self.end_frame / self.orig_sample_rate:.3f} s"
                )
            elif getattr(self._f, "unread_packets", 0):  # an index whose times are damaged: its count still says
                listed = self._f.packets + self._f.unread_packets  # type: ignore[union-attr]
                out.append(
                    f"damaged: the MP4 index lists {listed} audio packets, {self._f.packets} could be read "  # type: ignore[union-attr]
                    f"({self.end_frame / self.orig_sample_rate:.3f} s of audio)"
                )
        damaged = getattr(self._f, "damaged", 0)
        if damaged:
            out.append(damaged_warning(damaged, self._f.packets))  # type: ignore[union-attr]
        clip = clip_warning(self._clipped, self.frames * self.channels)
        if clip:
            out.append(clip)
        if self._cancelled:
            out.append(self._cancelled)
        return tuple(out)


# libsndfile formats whose seek lands on the exact sample (PCM containers, FLAC); MP3 and OGG do not.
EXACT_SEEK_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AIFC", "CAF", "FLAC"})


@dataclass(frozen=True)
class Seekable:
    """A file whose seeks land on the exact sample: its declared length and rate."""

    frames: int
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def seekable(path: str | Path | BinaryIO) -> Seekable | None:
    """The length and rate of ``path`` (or an open file) when its seeks are sample-exact, else None.

    PCM containers and FLAC through libsndfile; the MP4 family (M4A, MP4,
    MOV, 3GP) through FFmpeg, whose sample tables time every sample
    (:class:`~batchser.decoders.FFmpegFile`). A long file is split into parts
    across cores only then (:func:`batchser.longfile.plan_parts`).
    """
    target = path if hasattr(path, "read") else os.fsencode(path)  # type: ignore[arg-type]
    if hasattr(target, "seek"):
        target.seek(0)  # type: ignore[union-attr]
    try:
        info = sf.info(target)
    except sf.LibsndfileError as exc:
        if exc.code != _SF_ERR_UNRECOGNISED:
            return None
    except (RuntimeError, OSError):
        return None
    else:
        ok = info.format in EXACT_SEEK_FORMATS and info.samplerate > 0
        return Seekable(int(info.frames), int(info.samplerate)) if ok else None
    try:
        with FFmpegFile(target) as f:
            return Seekable(f.frames, f.samplerate) if f.exact and f.samplerate > 0 else None
    except (FFmpegDecodeError, NotFFmpegFormatError, OSError):
        return None


def damaged_warning(damaged: int, packets: int) -> str:
    """The warning for ``damaged`` of ``packets`` compressed packets whose data the decoder refused (skipped)."""
    return f"damaged: {damaged} of {packets} packets could not be decoded and were skipped"


def _open_ffmpeg(target: bytes | BinaryIO, source: str | Path | BinaryIO, *, refused: Exception) -> FFmpegFile:
    """``target`` opened with FFmpeg, after libsndfile did not recognise its format.

    Raises
    ------
    AudioError
        With FFmpeg's reason, or libsndfile's when FFmpeg finds nothing either (or
        takes the file for a format libsndfile reads itself); ``decoder`` says
        FFmpeg was asked, so the verdict is cached as FFmpeg's.
    """
    tag = decoder_tag() or ""
    try:
        return FFmpegFile(target)
    except FFmpegDecodeError as exc:
        if exc.transient and not _ffmpeg_named(source):
            raise refused from None  # no PyAV: a file not named as FFmpeg's keeps libsndfile's verdict
        raise AudioError(str(exc), transient=exc.transient, decoder="" if exc.transient else tag) from None
    except NotFFmpegFormatError as exc:
        reason = str(_open_error(refused))
        if _ffmpeg_named(source) and not exc.demuxer:
            reason = f"cannot decode: neither libsndfile nor FFmpeg recognises it as audio ({exc})"
        raise AudioError(reason, decoder=tag) from None


def _ffmpeg_named(source: str | Path | BinaryIO) -> bool:
    name = source if isinstance(source, (str, Path)) else getattr(source, "name", "")
    return isinstance(name, (str, Path)) and os.path.splitext(str(name))[1].lower() in FFMPEG_EXTENSIONS


def clip_warning(clipped: int, samples: int) -> str:
    """The warning for ``clipped`` of ``samples`` at full scale, or "" below ``CLIP_FRACTION``."""
    if clipped > CLIP_FRACTION * samples:
        return f"clipped: {100 * clipped / samples:.0f}% of samples at full scale"
    return ""


def aligned(sample: int, orig_sample_rate: int, sample_rate: int) -> bool:
    """Whether output ``sample`` at ``sample_rate`` falls exactly on an input sample."""
    return (sample * orig_sample_rate) % sample_rate == 0


def check_signal(frames: int, peak: float) -> None:
    """Refuse decoded audio that holds nothing to label.

    Raises
    ------
    AudioError
        No samples, a peak below ``SILENCE_DBFS`` (any emotion label for
        silence would be a guess, so say so instead), or one above ``MAX_PEAK``.
    """
    if frames == 0:
        raise AudioError("no audio samples (empty or header-only file)")
    if peak < SILENCE_PEAK:
        raise AudioError(f"silent: peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS, below {SILENCE_DBFS} dBFS")
    if peak > MAX_PEAK:
        raise AudioError(
            f"samples reach {peak:.3g}, far beyond full scale (1.0): a float file holding broken data or samples "
            "on another scale; rescale it to -1..1 (e.g. sox --norm) to label it"
        )
