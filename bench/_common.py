"""What the benchmark scripts share: where the corpora and the shipped model are, and their console."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
RAVDESS = CORPORA / "ravdess"
MODEL = ROOT / "result" / "models" / "ravdess-4emo.skops"


def shipped_features() -> list[str]:
    """The feature groups the shipped model was trained on: what a default job extracts."""
    return json.loads(MODEL.with_name(MODEL.name + ".json").read_text())["feature_spec"]["names"]


def have(folder: Path, what: str) -> bool:
    """Whether ``folder`` exists; if not, say so on stderr (the caller exits 2)."""
    if folder.is_dir():
        return True
    print(f"needs {what} in {folder}", file=sys.stderr)
    return False


def progress_log(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr, so that stdout holds only the table; none with ``--quiet``."""

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return log
