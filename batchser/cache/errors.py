"""The one error the cache raises for its own trouble."""

from __future__ import annotations

__all__ = ["CacheError"]


class CacheError(RuntimeError):
    """The feature cache cannot be written (full disk, read-only folder)."""
