"""The engine's worker set-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
import numpy as np
from batchser.engine import keep_freed_memory

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
free_before = libc.mallinfo2().fordblks
a = np.ones(1 << 20, dtype=np.float32)  # 4 MiB: glibc mmaps this size by default
mapped = libc.mallinfo2().hblkhd
del a
kept = libc.mallinfo2().fordblks - free_before  # freed, and still the process's to reuse
print(tuned, mapped >= 4 << 20, kept >= 3 << 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt thresholds are glibc's")
@pytest.mark.parametrize(("mode", "expected"), [("tuned", "True False True"), ("default", "False True False")])
def test_freed_arrays_stay_on_the_heap_in_a_tuned_process(mode: str, expected: str) -> None:
    # A fresh interpreter each: the setting is process-wide and set once. The
    # untuned control shows what the setting changes: a file-sized array is
    # mmapped (page-faulted in, then unmapped) instead of reusing heap memory.
    try:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as exc:
        if "mallinfo2" in exc.stderr:
            pytest.skip("glibc older than 2.33 has no mallinfo2 to inspect the heap with")
        raise
    assert out.stdout.split() == expected.split()


def test_small_jobs_run_in_process_and_large_ones_start_workers() -> None:
    from batchser.engine import ExtractTask, too_small_for_workers

    def tasks(n: int, size: int) -> list[ExtractTask]:
        return [ExtractTask(f"f{i}.wav", f"h{i}", size=size) for i in range(n)]

    assert too_small_for_workers(tasks(31, 50 << 20))  # few files, however large
    assert too_small_for_workers(tasks(120, 400_000))  # RAVDESS 48 kHz: 48 MB
    assert not too_small_for_workers(tasks(120, 2 << 20))  # 240 MB of audio: worth workers
    assert not too_small_for_workers(tasks(1440, 37_000))  # the 16 kHz corpus: many files
    assert not too_small_for_workers(tasks(10, 1000), in_process_below=0)  # forced


def test_batches_run_with_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two workers on two cores must not each start a multi-threaded BLAS, and a
    # threaded matmul would sum in another order (features would differ by backend).
    from threadpoolctl import threadpool_info, threadpool_limits

    from batchser import engine
    from batchser.features import FeatureSpec

    if not threadpool_info():
        pytest.skip("numpy has no BLAS thread pool to limit here")
    seen = []
    monkeypatch.setattr(
        engine, "extract_one", lambda task, **kw: seen.append(max(i["num_threads"] for i in threadpool_info()))
    )
    tasks = [engine.ExtractTask("a.wav", "h1"), engine.ExtractTask("b.wav", "h2")]
    with threadpool_limits(limits=2):  # what a process would otherwise run with
        engine._extract_batch(tasks, FeatureSpec(("mfcc",), 16000))
        assert max(i["num_threads"] for i in threadpool_info()) == 2  # restored after the batch
    assert seen == [1, 1]


def test_received_batches_keep_their_vectors_in_one_array() -> None:
    import numpy as np

    from batchser.cache import FeatureRecord
    from batchser.engine import _compact

    def rec(h: str, v: np.ndarray | None) -> FeatureRecord:
        return FeatureRecord(h, "ok" if v is not None else "error", "" if v is not None else "bad", 16000, 1, 1.0, v)

    vectors = [np.arange(4, dtype=np.float32) + k for k in range(3)]
    batch = [rec("a", vectors[0]), rec("b", None), rec("c", vectors[1]), rec("d", vectors[2])]
    out = _compact(batch)
    assert [r.content_hash for r in out] == ["a", "b", "c", "d"] and out[1] is batch[1]
    got = [r.vector for r in out if r.vector is not None]
    assert all(np.array_equal(g, v) for g, v in zip(got, vectors, strict=True))
    assert got[0].base is got[1].base is got[2].base is not None  # rows of one array, not three
