"""Where batchser keeps things by default: the shipped model and the per-user feature cache.

A leaf module (it imports nothing of batchser), so every stage can ask for a
default location without reaching up into the public interface.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED_MODEL", "default_cache_dir", "default_model_path"]

SHIPPED_MODEL = "pooled-4emo.skops"


def default_model_path() -> Path:
    """The shipped model, installed with the package (trained by ``jobs/train-pooled.yaml``).

    Raises
    ------
    FileNotFoundError
        When batchser runs from an installation without the model file.
    """
    path = Path(__file__).resolve().parent / "models" / SHIPPED_MODEL  # package data (pyproject.toml)
    if not path.is_file():
        raise FileNotFoundError(f"the shipped model {path} is missing from this installation; pass model=")
    return path


def default_cache_dir() -> Path:
    """The per-user feature cache used when none is given."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("batchser")) / "features"
