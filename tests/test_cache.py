"""The Parquet feature store: real files, plain pandas readability, atomic parts."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchser.cache import FeatureRecord, FeatureStore, hash_file
from batchser.features import FeatureSpec

SPEC = FeatureSpec(("mfcc", "chroma"), 16000)


def _rec(i: int, ok: bool = True) -> FeatureRecord:
    vec = np.arange(SPEC.dim, dtype=np.float32) + i if ok else None
    return FeatureRecord(f"h{i:04d}", "ok" if ok else "error", "" if ok else "cannot decode: x", 16000, 1, 1.5, vec)


def test_roundtrip_and_pandas_readable(tmp_path: Path) -> None:
    with FeatureStore(tmp_path, SPEC) as store:
        store.add([_rec(i) for i in range(10)] + [_rec(99, ok=False)])
        store.remember_hash("/a.wav", (10, 123, 7), "h0000")
    again = FeatureStore(tmp_path, SPEC)
    assert len(again) == 11
    np.testing.assert_array_equal(again.get("h0003").vector, np.arange(SPEC.dim, dtype=np.float32) + 3)
    bad = again.get("h0099")
    assert bad.status == "error" and bad.vector is None and bad.error == "cannot decode: x"
    assert again.known_hash("/a.wav", (10, 123, 7)) == "h0000"
    assert again.known_hash("/a.wav", (10, 124, 7)) is None  # touched file: hash again
    assert again.known_hash("/a.wav", (10, 123, 8)) is None  # rewritten, mtime set back: hash again
    df = pd.read_parquet(tmp_path / "features" / SPEC.fingerprint())
    assert len(df) == 11 and list(df.columns[:3]) == ["content_hash", "status", "error"]
    assert "mfcc_39" in df.columns and "chroma_11" in df.columns


def test_other_fingerprint_does_not_see_rows(tmp_path: Path) -> None:
    with FeatureStore(tmp_path, SPEC) as store:
        store.add([_rec(1)])
    assert len(FeatureStore(tmp_path, FeatureSpec(("mfcc", "chroma"), 22050))) == 0


def test_parts_are_written_incrementally(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, SPEC, flush_rows=4)
    store.add([_rec(i) for i in range(10)])  # no close: as if the process died here
    parts = list((tmp_path / "features" / SPEC.fingerprint()).glob("part-*.parquet"))
    assert len(parts) == 1 and len(FeatureStore(tmp_path, SPEC)) == 10
    assert not list(tmp_path.rglob(".*.tmp"))


def test_compaction_keeps_every_row_once(tmp_path: Path) -> None:
    for i in range(6):
        with FeatureStore(tmp_path, SPEC, compact_parts=1000) as s:
            s.add([_rec(i), _rec(100 + i)])
    folder = tmp_path / "features" / SPEC.fingerprint()
    assert len(list(folder.glob("part-*"))) == 6
    with FeatureStore(tmp_path, SPEC, compact_parts=5) as s:
        assert len(s) == 12
    assert len(list(folder.glob("part-*"))) == 1
    assert len(FeatureStore(tmp_path, SPEC)) == 12


def test_hash_file(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"abc" * 1_000_000)
    assert hash_file(p) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()


def test_a_live_claim_defers_and_a_stale_one_is_taken_over(tmp_path: Path) -> None:
    a, b = FeatureStore(tmp_path, SPEC), FeatureStore(tmp_path, SPEC)
    assert a.claim("h0001") and a.claim("h0002")
    time.sleep(0.06)  # claims of others are re-read at most every 50 ms
    assert not b.claim("h0001") and b.held_elsewhere("h0001")
    assert b.claim("h0003")
    time.sleep(0.06)
    assert not a.claim("h0003")
    a.add([_rec(1)])
    a.flush()
    assert b.lookup("h0001", refresh_after_s=0) is not None and not b.claim("h0001")  # done: nothing to claim
    # A claim file nobody touches for 30 s belongs to a job that died.
    own = next(p for p in (tmp_path / "claims").rglob("*.claims") if "h0002" in p.read_text())
    a._claims._stop.set()  # the heartbeat of a killed process stops too
    old = time.time() - 60
    os.utime(own, (old, old))
    assert not b.held_elsewhere("h0002") and b.claim("h0002")
    b.close()
    assert not [p for p in (tmp_path / "claims").rglob("*.claims") if "h0003" in p.read_text()]  # released


def test_claims_are_released_even_when_the_job_fails(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), FeatureStore(tmp_path, SPEC) as s:
        assert s.claim("h0001")
        raise KeyboardInterrupt
    assert not list((tmp_path / "claims").rglob("*.claims"))
    assert FeatureStore(tmp_path, SPEC).claim("h0001")


def test_claims_of_a_process_gone_from_this_host_are_taken_over_at_once(tmp_path: Path) -> None:
    # A job killed with -9 leaves its claim file, still fresh; on the same host its
    # pid is checked, so the resumed job need not wait for the heartbeat to go stale.
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "claims" / SPEC.fingerprint()
    folder.mkdir(parents=True)
    host = socket.gethostname()
    (folder / f"{host}-{gone.stdout.strip()}-deadbeef.claims").write_text("h0001\n")
    (folder / f"{host}-{os.getppid()}-0badf00d.claims").write_text("h0002\n")  # alive: pytest's parent
    (folder / f"elsewhere-{gone.stdout.strip()}-cafe0001.claims").write_text("h0003\n")  # another host: trusted
    s = FeatureStore(tmp_path, SPEC)
    assert not s.held_elsewhere("h0001") and s.claim("h0001")
    assert s.held_elsewhere("h0002") and not s.claim("h0002")
    assert s.held_elsewhere("h0003") and not s.claim("h0003")


def test_a_claim_from_a_clock_ahead_goes_stale_once_its_heartbeat_stops(tmp_path: Path) -> None:
    a, b = FeatureStore(tmp_path, SPEC), FeatureStore(tmp_path, SPEC)
    assert a.claim("h0001")
    a._claims._stop.set()  # its job died (on another host: no pid to look up)
    own = next((tmp_path / "claims").rglob("*.claims"))
    ahead = time.time() + 3600  # that host's clock is an hour ahead of ours
    os.utime(own, (ahead, ahead))
    b._claims.stale_s = 0.3
    time.sleep(0.06)
    assert not b.claim("h0001") and b.held_elsewhere("h0001")  # first sight: it may be alive
    assert [p.name for p in b.claimants()] == [own.name]
    time.sleep(0.35)
    assert not b.held_elsewhere("h0001") and b.claim("h0001")  # its mtime never moved: taken over
    os.utime(own, (ahead + 5, ahead + 5))  # …unless it beats again
    assert b.held_elsewhere("h0001")
