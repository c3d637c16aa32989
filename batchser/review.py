"""Review: which files a person checks, and the answers they give, kept so that none is ever lost.

The sample is drawn from a job's reports, stratified by the model's label so
that rare labels are reviewed too, and at random within each label: such a
sample gives an unbiased estimate of accuracy on the archive, and it taught the
model as much as the files it was least sure of did (``choose`` can still mix
those in; bench/review.py measures both). The sample is
written to ``review/sample.csv`` in the job's output folder, so a review that
stops and starts again goes through the same files; asking for more adds to it.

Answers are appended to ``review/answers.csv`` the moment they are given, one
flushed and synced line each: a crash, a ``kill -9`` or a closed tab loses at
most the answer being written. The latest answer for a file counts. Any CSV
with ``path`` and ``label`` columns is read the same way (``--reviewed``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from batchser.report import read_csv_report

__all__ = [
    "ANSWERS",
    "NONE",
    "SAMPLE",
    "SKIP",
    "Answer",
    "AnswersFile",
    "choose",
    "extend_sample",
    "read_answers",
    "read_sample",
]

log = logging.getLogger(__name__)

SAMPLE = Path("review") / "sample.csv"
ANSWERS = Path("review") / "answers.csv"
NONE = "none"  # "none of these": the file holds none of the model's emotions
SKIP = "skip"  # the person could not tell; asked again at the end
PER_LABEL = 20  # files per model label in a first sample (bench/review.py: what that buys)
# Of them drawn at random; the rest would be the least sure. At random taught the model as much
# as the least sure or a mix did, and every answer then serves the estimate (bench/review.py).
RANDOM_SHARE = 1.0
_ANSWER_COLUMNS = ["path", "content_hash", "label", "answered_at", "model_label", "confidence"]
_SAMPLE_COLUMNS = ["order", "path", "content_hash", "model_label", "confidence", "part", "stratum_size"]


def choose(
    labels: Sequence[str],
    confidence: Sequence[float],
    *,
    per_label: int = PER_LABEL,
    random_share: float = RANDOM_SHARE,
    exclude: Iterable[int] = (),
    seed: int = 0,
) -> list[tuple[int, str]]:
    """(row, part) of the files to review: ``per_label`` per model label, part "random", part "unsure".

    Parameters
    ----------
    labels, confidence : sequences
        The model's label and top probability of each labelled file.
    per_label : int
        Files per label (fewer when a label has fewer files).
    random_share : float
        Of each label's files, this share is drawn at random; the rest are the
        least confident of those left.
    exclude : iterable of int
        Rows already in the sample.
    seed : int
    """
    labels_arr, conf = np.asarray(labels), np.asarray(confidence, dtype=np.float64)
    taken = set(exclude)
    rng = np.random.default_rng(seed)
    out: list[tuple[int, str]] = []
    for label in sorted(set(labels_arr.tolist())):
        rows = np.array([i for i in np.flatnonzero(labels_arr == label) if i not in taken], dtype=np.intp)
        n_random = min(len(rows), math.ceil(per_label * random_share))
        drawn = rng.choice(rows, size=n_random, replace=False) if n_random else np.empty(0, np.intp)
        out += [(int(i), "random") for i in sorted(drawn.tolist())]
        left = np.setdiff1d(rows, drawn)
        n_unsure = min(len(left), per_label - n_random)
        unsure = left[np.argsort(conf[left], kind="stable")[:n_unsure]]
        out += [(int(i), "unsure") for i in unsure.tolist()]
    return out


def read_sample(out_dir: Path) -> pd.DataFrame:
    """The review sample of a job's output folder (empty when there is none)."""
    path = out_dir / SAMPLE
    if not path.is_file():
        return pd.DataFrame(columns=_SAMPLE_COLUMNS)
    return read_csv_report(path)


def extend_sample(out_dir: Path, report: pd.DataFrame, *, per_label: int, seed: int = 0) -> pd.DataFrame:
    """The sample with at least ``per_label`` files per model label, drawn from ``report`` and saved.

    Files already in the sample stay, in their order; new ones come after,
    drawn at random from each label's files not yet in it.
    ``report`` is the job's annotations table (``path``, ``status``, ``label``,
    ``confidence``, ``content_hash``).
    """
    import pyarrow as pa

    from batchser.report import write_annotations

    ok = report[report["status"] == "ok"].reset_index(drop=True)
    have = read_sample(out_dir)
    known = set(have["path"].tolist())
    have_per = have.groupby("model_label").size().to_dict() if len(have) else {}
    sizes = ok.groupby("label").size().to_dict()
    labels, conf, paths = ok["label"].to_numpy(), ok["confidence"].to_numpy(), ok["path"].tolist()
    new: list[tuple[int, str]] = []
    for label in sorted(sizes):
        need = per_label - int(have_per.get(label, 0))
        if need <= 0:
            continue
        rows = np.flatnonzero(labels == label)
        seen = [j for j, i in enumerate(rows) if paths[i] in known]
        picked = choose([label] * len(rows), conf[rows], per_label=need, exclude=seen, seed=seed + len(have))
        new += [(int(rows[j]), part) for j, part in picked]
    start = int(have["order"].max()) + 1 if len(have) else 0
    added = pd.DataFrame(
        {
            "order": range(start, start + len(new)),
            "path": [paths[i] for i, _ in new],
            "content_hash": [ok.at[i, "content_hash"] for i, _ in new],
            "model_label": [labels[i] for i, _ in new],
            "confidence": [float(conf[i]) for i, _ in new],
            "part": [part for _, part in new],
            "stratum_size": [int(sizes[labels[i]]) for i, _ in new],
        },
        columns=_SAMPLE_COLUMNS,
    )
    sample = pd.concat([have, added], ignore_index=True) if len(have) else added
    folder = (out_dir / SAMPLE).parent
    folder.mkdir(parents=True, exist_ok=True)
    write_annotations(pa.Table.from_pandas(sample, preserve_index=False), folder, ["csv"], stem=SAMPLE.stem)
    return sample


@dataclass(frozen=True)
class Answer:
    path: str
    content_hash: str
    label: str
    answered_at: float


class AnswersFile:
    """The append-only answers file of a review: every answer written and synced as it is given.

    Safe to share between threads (the web server's); each line is one
    ``write`` of a complete CSV row, flushed and ``fsync``-ed before
    :meth:`add` returns.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def add(
        self, path: str, content_hash: str, label: str, *, model_label: str = "", confidence: float = math.nan
    ) -> Answer:
        answer = Answer(path, content_hash, label, time.time())
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(
            [path, content_hash, label, f"{answer.answered_at:.3f}", model_label, f"{confidence:.6g}"]
        )
        line = buf.getvalue().encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size == 0:
                    line = (",".join(_ANSWER_COLUMNS) + "\n").encode() + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return answer


def read_answers(path: Path) -> dict[str, Answer]:
    """path -> the latest answer, from a review's answers file or any CSV with ``path`` and ``label`` columns.

    A last line cut short (the machine lost power while writing it) is left out.

    Raises
    ------
    ValueError
        When the file has no ``path`` or no ``label`` column.
    """
    text = path.read_text(encoding="utf-8-sig")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a torn last line
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    if "path" not in fields or "label" not in fields:
        raise ValueError(f"{path} needs path and label columns (it has {', '.join(fields) or 'none'})")
    out: dict[str, Answer] = {}
    for row in reader:
        if not row.get("path") or not row.get("label"):
            continue
        when = float(row.get("answered_at") or 0.0)
        out[row["path"]] = Answer(row["path"], row.get("content_hash") or "", row["label"].strip(), when)
    return out
