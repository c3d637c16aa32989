"""Where extraction runs: a joblib backend on this machine, or a Dask cluster (:func:`open_executor`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import joblib

__all__ = ["CONNECT_TIMEOUT_S", "EngineError", "Executor", "n_workers", "open_executor"]

log = logging.getLogger(__name__)

DASK_HINT = "install it with: pip install 'batchser[dask]'"
CONNECT_TIMEOUT_S = 10  # a scheduler that is up answers in milliseconds; retries cover a busy one


class EngineError(RuntimeError):
    """The execution engine cannot start (a missing extra, an unreachable scheduler)."""


@dataclass(frozen=True)
class Executor:
    """Where :func:`batchser.engine.run_tasks` runs: a joblib backend and how many workers it has."""

    backend: str
    n_workers: int
    description: str = ""


@contextlib.contextmanager
def open_executor(
    backend: str, *, n_jobs: int = -1, scheduler: str | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S
) -> Iterator[Executor]:
    """Set up ``backend`` for the duration of a job.

    For ``dask``, connects a ``distributed.Client`` to ``scheduler``
    (``tcp://host:port``) or, for ``"local"``, starts a ``LocalCluster`` of
    ``n_jobs`` single-threaded worker processes (-1: one per core) on loopback,
    and closes what it started on exit; a remote scheduler that does not answer
    within ``connect_timeout_s`` fails the job. Other backends need no set-up.

    Raises
    ------
    EngineError
        dask/distributed is not installed, or the scheduler cannot be reached.
    """
    if backend != "dask":
        yield Executor(backend, n_workers(backend, n_jobs), backend)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise EngineError(f"engine.backend dask needs dask.distributed ({exc}); {DASK_HINT}") from None
    # distributed sets its loggers to INFO on import and would report every
    # worker and connection; follow batchser's verbosity instead (INFO at -vv).
    ours = logging.getLogger("batchser").getEffectiveLevel()
    logging.getLogger("distributed").setLevel(logging.INFO if ours <= logging.DEBUG else logging.WARNING)
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            workers = joblib.cpu_count() if n_jobs < 0 else n_jobs
            cluster: Any = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.WARNING,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=f"{connect_timeout_s}s"))
            except (OSError, TimeoutError) as exc:
                raise EngineError(
                    f"cannot reach the Dask scheduler at {scheduler}: {exc}; start one "
                    "(dask scheduler; dask worker <address>) or use engine.scheduler: local"
                ) from None
        threads = sum(client.nthreads().values())
        if threads == 0:
            raise EngineError(f"the Dask cluster at {scheduler} has no workers; start some with dask worker")
        log.info("dask: %d worker threads at %s", threads, client.scheduler.address)
        yield Executor("dask", threads, f"dask {client.scheduler.address}")


def n_workers(backend: str, n_jobs: int) -> int:
    """Workers of ``backend`` for ``n_jobs`` (-1: one per core)."""
    if backend == "sequential":
        return 1
    return joblib.cpu_count() if n_jobs < 0 else n_jobs
