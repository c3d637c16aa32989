"""The cache at archive scale: an index instead of a full load, merges and gc that lose nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from batchser.cache import FeatureRecord, FeatureStore
from batchser.cache.index import today
from batchser.cache.maintain import ROW_GROUP, compact, gc, stats
from batchser.cli import main
from batchser.features import FeatureSpec
from batchser.segments import Segments, SegmentSpec
from tests.conftest import PROJECT

SPEC = FeatureSpec(("mfcc", "chroma"), 16000)
SEG = SegmentSpec()
SHIPPED = ("mfcc_stats", "logmel_stats", "spectral_stats", "prosody", "voice_stats")


def _rec(i: int, *, windows: int = 0) -> FeatureRecord:
    vec = np.arange(SPEC.dim, dtype=np.float32) + i
    segs = None
    if windows:
        t = np.arange(windows) * 2.0
        segs = Segments(t, t + 4, np.ones(windows, bool), np.tile(vec, (windows, 1)) + np.arange(windows)[:, None])
    return FeatureRecord(f"h{i:07d}", "ok", "", 16000, 1, 1.5, vec, segments=segs)


def _fill(root: Path, ids: range, *, segments: SegmentSpec | None = None, **kw: object) -> None:
    with FeatureStore(root, SPEC, segments=segments, compact_parts=10**6, **kw) as s:  # type: ignore[arg-type]
        s.add([_rec(i, windows=3 if segments is not None and i % 5 == 0 else 0) for i in ids])


@pytest.fixture
def synthetic_rows(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """bench/_common.py's writer of random rows in the real schema (one copy for the bench and the tests)."""
    monkeypatch.syspath_prepend(str(PROJECT / "bench"))
    from _common import synthetic_rows

    return synthetic_rows


def test_a_store_is_indexed_not_loaded_and_the_index_is_rebuilt_from_the_parts(tmp_path: Path) -> None:
    _fill(tmp_path, range(0, 50), segments=SEG)
    _fill(tmp_path, range(50, 120), segments=SEG)
    store = FeatureStore(tmp_path, SPEC, segments=SEG)
    assert len(store) == 120 and not store._records  # counted in the index; nothing read
    got = store.get_many([f"h{i:07d}" for i in (3, 10, 77, 999)])
    assert sorted(got) == ["h0000003", "h0000010", "h0000077"] and len(store._records) == 3
    np.testing.assert_array_equal(got["h0000077"].vector, _rec(77).vector)
    ten = got["h0000010"].segments
    assert ten is not None and len(ten) == 3
    np.testing.assert_array_equal(ten.vectors, _rec(10, windows=3).segments.vectors)  # type: ignore[union-attr]
    store.close()

    # The parts are the truth: without its index (deleted, or garbage) a store rebuilds it, quietly or with a warning.
    index_dir = tmp_path / "index"
    for damage in ("delete", "garbage"):
        (db,) = index_dir.glob("*.sqlite")
        if damage == "delete":
            for f in index_dir.iterdir():
                f.unlink()
        else:
            db.write_bytes(b"not a database" * 100)
        again = FeatureStore(tmp_path, SPEC, segments=SEG)
        assert len(again) == 120
        np.testing.assert_array_equal(again.get("h0000115").vector, _rec(115).vector)
        assert len(again.get("h0000115").segments) == 3  # type: ignore[arg-type]
        again.close()
    assert list((tmp_path / "quarantine").glob("index-*"))  # the garbage, set aside


@pytest.mark.parametrize("where", ["row group", "footer"])
def test_a_bit_flipped_after_indexing_is_caught_in_the_row_group_read(
    tmp_path: Path, where: str, synthetic_rows
) -> None:  # type: ignore[no-untyped-def]
    store = FeatureStore(tmp_path, SPEC)
    synthetic_rows(store, 3 * ROW_GROUP, per_part=3 * ROW_GROUP)
    (part,) = store._features.list()
    groups, footer = store._index.groups(store._fkey, part.name)
    assert len(groups) == 3
    hashes = [store._index.live_rows(store._fkey, part.name)[i][0] for i in (10, ROW_GROUP + 10)]
    store.close()
    data = bytearray(part.read_bytes())
    # One bit in the second row group, or in the footer (a flip there renamed a column in test_integrity).
    target = groups[1] if where == "row group" else footer
    data[target.offset + target.length // 2] ^= 0x04
    part.write_bytes(bytes(data))
    store = FeatureStore(tmp_path, SPEC)  # the part is indexed already: its name's checksum is not read again
    got = store.get_many(hashes)
    # The damaged group is never trusted: the part is set aside, its rows are recomputed by the next job.
    assert hashes[1] not in got and not part.exists() and list((tmp_path / "quarantine").glob(f"*-{part.name}"))
    assert len(store) == 0
    store.close()


def test_merges_keep_every_row_and_gc_drops_only_what_no_job_used(tmp_path: Path) -> None:
    for k in range(6):
        _fill(tmp_path, range(k * 10, k * 10 + 10), segments=SEG)
    _fill(tmp_path, range(0, 5), segments=SEG)  # duplicates: already in the first part, kept there
    store = FeatureStore(tmp_path, SPEC, segments=SEG)
    folder = store._features.folder
    assert len(store._features.list()) == 7 and len(store) == 60
    removed, dropped = compact(store._index, store._features, store._fkey)
    assert (removed, dropped) == (7, 5) and len(store._features.list()) == 1  # the 5 duplicates dropped
    compact(store._index, store._segments, store._skey)
    assert len(store) == 60 and all(store.get(f"h{i:07d}") is not None for i in range(60))
    assert len(store.get("h0000020").segments) == 3  # type: ignore[arg-type]
    store.close()

    # gc: rows last used long ago go, with their windows; rows used since stay.
    store = FeatureStore(tmp_path, SPEC, segments=SEG)
    store._index.db.execute("UPDATE rows SET used = ? WHERE hash < 'h0000030'", (today() - 200,))
    store.get_many(["h0000005"])  # a job uses one of them today
    store.close()  # records the use
    store = FeatureStore(tmp_path, SPEC, segments=SEG)
    assert gc(store._index, tmp_path, unused_days=90) == 29
    assert len(store) == 31 and store.get("h0000005") is not None and store.get("h0000010") is None
    (feat,) = stats(store._index, tmp_path)[:1]
    assert (feat.parts, feat.rows, feat.live) == (1, 31, 31)
    assert len(list(folder.glob("part-*"))) == 1
    store.close()


KILL_AT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from batchser.cache import maintain
    from batchser.cache.index import CacheIndex
    step, root = sys.argv[1], Path(sys.argv[2])
    seen = {"n": 0}
    def die_after(fn, k):
        def wrapped(*a, **kw):
            out = fn(*a, **kw)
            seen["n"] += 1
            if seen["n"] >= k:
                os._exit(9)
            return out
        return wrapped
    if step == "written":   # the merged part is renamed in, not yet indexed
        maintain.Parts.write = die_after(maintain.Parts.write, 1)
    elif step == "swapped":  # indexed, the old parts not yet deleted
        CacheIndex.swap_parts = die_after(CacheIndex.swap_parts, 1)
    elif step == "unlinking":  # some old parts deleted
        Path.unlink = die_after(Path.unlink, 3)
    elif step == "forgotten":  # gc forgot rows, the parts not yet rewritten
        CacheIndex.forget_rows = die_after(CacheIndex.forget_rows, 1)
    sys.exit(__import__("batchser.cli").cli.main(["cache", "gc" if step == "forgotten" else "compact", str(root)]))
    """
)


@pytest.mark.parametrize("step", ["written", "swapped", "unlinking", "forgotten"])
def test_kill_9_during_a_merge_or_gc_loses_nothing(tmp_path: Path, step: str) -> None:
    for k in range(5):
        _fill(tmp_path, range(k * 10, k * 10 + 10))
    before = {
        h: r.vector.copy() for h, r in FeatureStore(tmp_path, SPEC).get_many(f"h{i:07d}" for i in range(50)).items()
    }  # type: ignore[union-attr]
    res = subprocess.run([sys.executable, "-c", KILL_AT, step, str(tmp_path)], cwd=PROJECT, capture_output=True)
    assert res.returncode == 9, res.stderr  # killed where asked, not finished
    for attempt in range(2):  # as found after the kill, then after a clean merge
        store = FeatureStore(tmp_path, SPEC)
        after = store.get_many(before)
        assert sorted(after) == sorted(before)
        for h, v in before.items():
            np.testing.assert_array_equal(after[h].vector, v)
        if attempt == 0:
            compact(store._index, store._features, store._fkey)
        store.close()
    assert len(FeatureStore(tmp_path, SPEC)._features.list()) == 1  # and the leftovers are merged away


def test_cache_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for k in range(3):
        _fill(tmp_path, range(k * 10, k * 10 + 10))
    assert main(["cache", "stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"features/{SPEC.fingerprint()}" in out and "     3         30         30" in out
    assert main(["cache", "compact", str(tmp_path)]) == 0
    assert "3 parts rewritten, 0 duplicate or forgotten rows dropped" in capsys.readouterr().out
    assert main(["cache", "gc", str(tmp_path), "--unused-for", "12w"]) == 0
    assert "0 feature rows unused for 84 days dropped" in capsys.readouterr().out
    assert main(["cache", "stats", str(tmp_path), "--json"]) == 0
    assert '"rows": 30' in capsys.readouterr().out
    assert main(["cache", "stats", str(tmp_path / "nothing")]) == 1
    with pytest.raises(SystemExit):
        main(["cache", "gc", str(tmp_path), "--unused-for", "soon"])


def test_a_warm_job_on_a_large_cache_reads_only_its_rows(tmp_path: Path, synthetic_rows) -> None:  # type: ignore[no-untyped-def]
    """300,000 rows in the cache: a store opens, finds 6 hashes and reads them in bounded memory."""
    store = FeatureStore(
        tmp_path, FeatureSpec(("mfcc_stats", "logmel_stats", "spectral_stats", "prosody", "voice_stats"), 16000)
    )
    synthetic_rows(store, 300_000)
    live = [store._index.live_rows(store._fkey, p.name) for p in store._features.list()]
    wanted = [rows[7][0] for rows in live] + [live[0][5000][0]]  # one row in each of the 5 parts, two in one
    store.close()
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from batchser.cache import FeatureStore
        from batchser.features import FeatureSpec
        def hwm():  # this process's peak RSS in KiB (ru_maxrss would include the parent's, from before exec)
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
        base = hwm()
        spec = FeatureSpec(tuple(sys.argv[2].split(",")), 16000)
        store = FeatureStore(Path(sys.argv[1]), spec)
        got = store.get_many(sys.argv[4:])
        assert len(got) == 6 and len(store) == 300_000, (len(got), len(store))
        store.close()
        print(hwm() - base, hwm())
        """
    )
    cmd = [sys.executable, "-c", script, str(tmp_path), ",".join(SHIPPED), "-", *wanted]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    growth, peak = (int(v) / 1024 for v in res.stdout.split())
    print("peak RSS growth MiB", growth, "peak", peak)
    # The store before its index loaded all 300,000 rows on opening: 570 MiB more and 5 s (measured).
    assert growth < 64 and peak < 300, res.stdout


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:50 / /mnt/archive rw,relatime - nfs4 server:/export rw,vers=4.2
41 40 0:51 / /mnt/archive/local rw,relatime - xfs /dev/sdb1 rw
42 27 0:52 / /mnt/my\\040share rw - fuse.sshfs host:/x rw
"""


def test_the_index_stays_off_network_file_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchser.cache.index import filesystem_type, index_path

    assert filesystem_type(Path("/home/me/cache"), MOUNTINFO) == "ext4"
    assert filesystem_type(Path("/mnt/archive/cache"), MOUNTINFO) == "nfs4"
    assert filesystem_type(Path("/mnt/archive/local/cache"), MOUNTINFO) == "xfs"  # the longest mount point wins
    assert filesystem_type(Path("/mnt/my share/c"), MOUNTINFO) == "fuse"
    assert filesystem_type(Path("/mnt/archived"), MOUNTINFO) == "ext4"  # a prefix of a name is not a parent
    # A local disk keeps the index in the cache; a network share gets it in this user's local cache.
    assert index_path(Path("/home/me/cache"), mountinfo=MOUNTINFO).parent == Path("/home/me/cache/index")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    there = index_path(Path("/mnt/archive/cache"), mountinfo=MOUNTINFO)
    assert there.is_relative_to(tmp_path / "xdg") and there.parent.name == "indexes"
    assert there != index_path(Path("/mnt/archive/other"), mountinfo=MOUNTINFO)  # one index per cache
