"""Standardisation within groups (speakers here): who is covered, what it removes, what it leaves alone."""

from __future__ import annotations

import numpy as np
import pytest

from batchser.model.adapt import GroupStats


def _data(rng: np.random.Generator) -> tuple[np.ndarray, list[str | None]]:
    X = rng.normal(size=(40, 5))
    speakers: list[str | None] = ["a"] * 12 + ["b"] * 20 + ["c"] * 3 + [None] * 5
    return X, speakers


def test_covered_speakers_are_standardised_over_their_own_rows() -> None:
    X, speakers = _data(np.random.default_rng(0))
    norm = GroupStats.fit(X, speakers, min_files=10)
    assert norm.count == {"a": 12, "b": 20}  # c has 3 rows, None is nobody
    Xn, covered = norm.transform(X, speakers)
    assert covered.tolist() == [True] * 32 + [False] * 8
    for s in ("a", "b"):
        rows = Xn[[i for i, sp in enumerate(speakers) if sp == s]]
        np.testing.assert_allclose(rows.mean(axis=0), 0, atol=1e-12)
        np.testing.assert_allclose(rows.std(axis=0), 1, atol=1e-12)
    np.testing.assert_array_equal(Xn[~covered], X[~covered])  # the others pass through


def test_a_speakers_voice_offset_and_scale_are_removed() -> None:
    # The same recordings from a deeper, louder voice: after normalisation, identical.
    X, speakers = _data(np.random.default_rng(1))
    voiced = X.copy()
    a = np.array([s == "a" for s in speakers])
    voiced[a] = 3.0 * X[a] + np.array([5.0, -2.0, 0.0, 100.0, 1.0])
    before = GroupStats.fit(X, speakers, min_files=10).transform(X, speakers)[0]
    after = GroupStats.fit(voiced, speakers, min_files=10).transform(voiced, speakers)[0]
    np.testing.assert_allclose(after, before, atol=1e-9)


def test_a_constant_feature_does_not_blow_up() -> None:
    X = np.ones((10, 3))
    X[:, 0] = np.arange(10)
    Xn, covered = GroupStats.fit(X, ["s"] * 10, min_files=5).transform(X, ["s"] * 10)
    assert covered.all() and np.isfinite(Xn).all()
    np.testing.assert_array_equal(Xn[:, 1:], 0.0)


def test_unknown_speakers_at_transform_time_pass_through() -> None:
    X, speakers = _data(np.random.default_rng(2))
    norm = GroupStats.fit(X, speakers, min_files=10)
    Xn, covered = norm.transform(X[:2], ["zed", None])
    assert not covered.any()
    np.testing.assert_array_equal(Xn, X[:2])


def test_bad_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="min_files must be at least 2"):
        GroupStats.fit(np.zeros((3, 2)), ["a"] * 3, min_files=1)
    with pytest.raises(ValueError, match="2 group keys for 3 rows"):
        GroupStats.fit(np.zeros((3, 2)), ["a", "b"], min_files=2)
