"""Whether a job's leftovers are still someone's: how temp folders of killed jobs are told from live ones.

A pid alone cannot say: containers sharing ``/tmp`` (or a shared ``TMPDIR``)
each count pids from 1, so a live job in one namespace looks dead, or its pid
taken, from another. Each job's folder instead holds a lock file that the job
keeps an exclusive ``flock`` on for its life. The kernel drops the lock when
the process dies however it dies (``kill -9`` included), and the lock is seen
from every pid namespace that shares the file system. A folder whose lock can
be taken is a dead job's; one whose lock is held is alive, whoever holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

__all__ = ["OWNER_FILE", "OwnerLock", "owner_state", "pid_alive"]

OWNER_FILE = ".owner"  # inside the folder it guards
# A folder without a lock file may be one a job has just made (the lock comes a
# moment after the folder): left alone unless it is older than this.
LOCKLESS_GRACE_S = 24 * 3600.0


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists in this pid namespace (another user's counts: it may be a job too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OwnerLock:
    """An exclusive lock on ``<folder>/.owner`` held while the folder's job runs.

    The file also names its owner (host, pid) for a person looking at it; the
    lock, not the name, decides whether the folder is alive.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / OWNER_FILE
        self._fh: IO[str] | None = None

    def acquire(self) -> OwnerLock:
        # Locked under a temporary name, then renamed into place: ``.owner``
        # never exists unlocked, so no cleaner can mistake a starting job for a dead one.
        tmp = self.path.with_name(f"{OWNER_FILE}.{os.getpid()}.{time.time_ns()}")
        fh = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fh.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
            fh.flush()
            os.replace(tmp, self.path)
        except BaseException:
            fh.close()
            tmp.unlink(missing_ok=True)
            raise
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock
            self._fh = None

    def __enter__(self) -> OwnerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def owner_state(folder: Path) -> str:
    """``"alive"``, ``"dead"`` or ``"unknown"`` for a job folder guarded by :class:`OwnerLock`.

    ``"dead"`` only when the lock could be taken (its owner is gone) or, with
    no lock file at all, when the folder is older than a day (an older
    version's leftover). Anything else may be alive and must be left alone.
    """
    lock = folder / OWNER_FILE
    try:
        fh = open(lock, encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        try:
            age = time.time() - folder.stat().st_mtime
        except OSError:
            return "unknown"
        return "dead" if age > LOCKLESS_GRACE_S else "unknown"
    except OSError:
        return "unknown"
    with fh:
        try:
            # A shared lock is enough to learn that nobody holds the exclusive one.
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return "alive" if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else "unknown"
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return "dead"
