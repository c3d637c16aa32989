"""Claims: which content hashes each running job is extracting, so others wait instead of repeating them."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import IO

from batchser.cache.errors import CacheError
from batchser.pids import pid_alive

__all__ = ["CLAIM_STALE_S", "Claims"]

CLAIM_STALE_S = 30.0  # a claim file whose heartbeat has not moved for this long belongs to a dead job


def _dead_here(claim_file: Path) -> bool:
    """Whether a claim file's job ran on this host under a pid that no longer exists.

    Claim files are named ``<host>-<pid>-<random>.claims``. A job on another
    host, or one whose pid is alive (even if reused), counts as live until its
    heartbeat goes stale; at worst a file is then extracted twice.
    """
    parts = claim_file.stem.rsplit("-", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    return not pid_alive(int(parts[1]))


class Claims:
    """Which content hashes each running job is extracting, so others wait instead of repeating them.

    Each job appends the hashes it is about to extract to its own file in
    ``claims/<fingerprint>/`` and touches it every few seconds while it runs;
    a file not touched for ``stale_s`` belongs to a job that died, and its
    claims no longer count (at once when that job ran on this host and its
    process is gone). The file is removed when the job closes the store,
    after its last part is written.
    """

    def __init__(self, folder: Path, *, heartbeat_s: float = 2.0, stale_s: float = CLAIM_STALE_S) -> None:
        self.folder = folder
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.own = folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.claims"
        self._fh: IO[str] | None = None
        self._offsets: dict[Path, int] = {}
        self._owner: dict[str, Path] = {}  # hash -> claim file of another job
        self._beats: dict[Path, tuple[float, float]] = {}  # claim file -> (mtime, when we saw it change)
        self._stop = threading.Event()
        self._guard = threading.Lock()  # add() from joblib's dispatch thread against release() as the job stops
        self._beat: threading.Thread | None = None

    def _open(self) -> IO[str]:
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.own, "a", encoding="ascii")  # noqa: SIM115 - kept open for the job's life
            self._beat = threading.Thread(target=self._heartbeat, name="batchser-claims", daemon=True)
            self._beat.start()
        return self._fh

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(self.own)

    def add(self, content_hash: str) -> bool:
        """Claim ``content_hash``; False once released (a thread still dispatching as the job stops)."""
        with self._guard:
            if self._stop.is_set():
                return False  # never recreate the file release() removed
            try:
                fh = self._open()
                fh.write(content_hash + "\n")
                fh.flush()
                return True
            except OSError as exc:
                raise CacheError(
                    f"cannot write the claim file {self.own}: {exc.strerror or exc}"
                    f"{' (the disk is full)' if exc.errno == errno.ENOSPC else ''}"
                ) from None

    def read_others(self) -> None:
        if not self.folder.is_dir():
            return
        for p in self.folder.glob("*.claims"):
            if p == self.own:
                continue
            with contextlib.suppress(OSError), open(p, encoding="ascii") as fh:
                fh.seek(self._offsets.get(p, 0))
                chunk = fh.read()
                complete = chunk[: chunk.rfind("\n") + 1]  # a line being written is read next time
                self._offsets[p] = self._offsets.get(p, 0) + len(complete)
                for h in complete.split():
                    self._owner.setdefault(h, p)

    def held_by_live_job(self, content_hash: str) -> bool:
        owner = self._owner.get(content_hash)
        if owner is None:
            return False
        if _dead_here(owner):
            return False  # killed on this machine: no need to wait for its heartbeat to go stale
        try:
            mtime = owner.stat().st_mtime
        except FileNotFoundError:
            return False  # its job finished (its parts are written) or was cleaned up
        # Staleness on our own clock: the heartbeat must *move* the mtime. Comparing it with
        # our wall clock alone fails when the other host's clock is ahead (a claim that
        # looks fresh forever) or behind.
        now = time.monotonic()
        seen = self._beats.get(owner)
        if seen is None or seen[0] != mtime:
            self._beats[owner] = (mtime, now)
            seen = self._beats[owner]
        old_by_wall = 0 <= time.time() - mtime >= self.stale_s
        unchanged = now - seen[1] >= self.stale_s
        return not (old_by_wall or unchanged)

    def waiting_for(self) -> list[Path]:
        """The claim files of other jobs this job has seen, for a message saying what it waits for."""
        return sorted(set(self._owner.values()))

    def remove_stale(self, *, older_than_s: float = 3600.0) -> None:
        if self.folder.is_dir():
            cutoff = time.time() - older_than_s
            for p in self.folder.glob("*.claims"):
                with contextlib.suppress(OSError):
                    if p.stat().st_mtime < cutoff:
                        p.unlink()

    def release(self) -> None:
        with self._guard:
            self._stop.set()
            if self._fh is not None:
                self._fh.close()
                self._fh = None
                with contextlib.suppress(FileNotFoundError):
                    self.own.unlink()
