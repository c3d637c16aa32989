"""Command line: ``python -m batchser run MANIFEST [--quiet] [--watch]``, ``annotate``, ``review``, ``capture`` …

``commands`` holds what each command does, ``parser`` the options, ``console``
what a finished job prints. Exit codes: 0 job completed (per-file failures are
report rows), 2 invalid manifest or answers (nothing was done), 3 capture set-up
missing (no PyAudio, no input device), 1 any other fatal error, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from batchser.cache import CacheError
from batchser.capture import CaptureError, CaptureSetupError
from batchser.cli.commands import (
    EXIT_FATAL,
    EXIT_MANIFEST,
    EXIT_OK,
    EXIT_SETUP,
    EXIT_TERMINATED,
    _cmd_capture,
    _codecs_muted,
)
from batchser.cli.parser import build_parser
from batchser.engine import EngineError
from batchser.hashing import shown_text
from batchser.job import NoInputError
from batchser.manifest import ManifestError
from batchser.model import ModelError
from batchser.report import ReportError
from batchser.review import AnswersError
from batchser.spool import SpoolError
from batchser.terms import OptionError

__all__ = ["build_parser", "main"]

log = logging.getLogger("batchser")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: workers stopped, claims released, finished features kept."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _ShownFormatter(logging.Formatter):
    """Log lines as shown to a person: bidirectional controls in the names they hold written as escapes."""

    def format(self, record: logging.LogRecord) -> str:
        return shown_text(super().format(record))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    level = logging.WARNING - 10 * args.verbose if not getattr(args, "quiet", False) else logging.ERROR
    logging.basicConfig(level=max(level, logging.DEBUG), format=_LOG_FORMAT)
    for handler in logging.getLogger().handlers:  # warnings name files: their bidirectional controls escaped
        if type(handler.formatter) is logging.Formatter and handler.formatter._fmt == _LOG_FORMAT:
            handler.setFormatter(_ShownFormatter(_LOG_FORMAT))
    try:
        with _codecs_muted(not getattr(args, "verbose", 0)):  # decoders' own notes only with -v
            return int(args.func(args))
    except (ManifestError, AnswersError) as exc:
        print(f"batchser: {shown_text(str(exc))}", file=sys.stderr)
        return EXIT_MANIFEST
    except OptionError as exc:
        print(shown_text(str(exc)), file=sys.stderr)
        return EXIT_MANIFEST
    except CaptureSetupError as exc:
        print(f"batchser: {shown_text(str(exc))}", file=sys.stderr)
        return EXIT_SETUP
    except (ModelError, ReportError, CacheError, CaptureError, EngineError, NoInputError, SpoolError) as exc:
        print(f"batchser: {shown_text(str(exc))}", file=sys.stderr)
        return EXIT_FATAL
    except BrokenPipeError:  # the reader went away (`batchser review --list | head`): nothing left to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
        return EXIT_OK
    except KeyboardInterrupt as exc:
        code, how = (EXIT_TERMINATED, "terminated (SIGTERM)") if isinstance(exc, Terminated) else (130, "interrupted")
        if args.func is _cmd_capture:
            print(f"batchser: capture {how}; nothing was queued", file=sys.stderr)
            return code
        print(f"batchser: {how}; finished features are cached, rerun to resume", file=sys.stderr)
        return code
    except Exception as exc:
        log.debug("fatal error", exc_info=True)
        said = shown_text(str(exc))
        print(f"batchser: error: {type(exc).__name__}: {said} (run with -vv for a traceback)", file=sys.stderr)
        return EXIT_FATAL
