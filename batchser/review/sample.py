"""The review sample: which recordings a person checks, drawn so that every stopping point is a random sample.

A unit is what one answer is about: a short recording, or one speech segment of a long
recording (its own stretch of time, labelled on its own).

The sample is stratified by the model's label (so rare labels are reviewed
too) and drawn at random within each label; its order then interleaves the
labels at random, so a person who stops after any number of answers has
answered a random sample of each label they reached. Recordings with the same
bytes are one unit: drawn once, answered once, one weight in an estimate.

It is written to ``review/sample.csv`` in the job's output folder, so a
review that stops and starts again goes through the same units; asking for
more appends new units after the old ones.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from batchser.report import ReportError, read_csv_report, write_annotations
from batchser.review.answers import AnswersError, review_folder

__all__ = [
    "PER_LABEL",
    "RANDOM_SHARE",
    "SAMPLE",
    "SAMPLE_COLUMNS",
    "SampleError",
    "choose",
    "extend_sample",
    "read_sample",
    "top_labels",
]

SAMPLE = Path("review") / "sample.csv"
PER_LABEL = 20  # units per model label in a first sample (bench/review.py: what that buys)
# Of them drawn at random; the rest would be the least sure. At random taught the model as much
# as the least sure or a mix did, and every answer then serves the estimate (bench/review.py).
RANDOM_SHARE = 1.0
SAMPLE_COLUMNS = [
    "order",
    "path",
    "content_hash",
    "start_s",
    "end_s",
    "model_label",
    "confidence",
    "part",
    "stratum_size",
    "copies",
    "model",
]
_MAX_SAMPLE_BYTES = 64 << 20


class SampleError(AnswersError):
    """A review sample that cannot be read as written: the message names the file, the row and the fix."""


def choose(
    labels: Sequence[str],
    confidence: Sequence[float],
    *,
    per_label: int = PER_LABEL,
    random_share: float = RANDOM_SHARE,
    exclude: Iterable[int] = (),
    seed: int = 0,
) -> list[tuple[int, str]]:
    """(row, part) of the units to review: ``per_label`` per model label, part "random", part "unsure".

    Parameters
    ----------
    labels, confidence : sequences
        The model's label and top probability of each unit.
    per_label : int
        Units per label (fewer when a label has fewer).
    random_share : float
        Of each label's units, this share is drawn at random; the rest are the
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


def top_labels(report: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top class and its probability, from the ``p_<class>`` columns.

    The model's own label: not ``uncertain`` (a confidence cut-off) and not a
    person's answer (a reviewed report's ``label``).
    """
    cols = [c for c in report.columns if c.startswith("p_")]
    P = report[cols].to_numpy(dtype=np.float64)
    top = np.nan_to_num(P, nan=-1.0).argmax(axis=1)
    names = np.array([c.removeprefix("p_") for c in cols], dtype=object)
    return names[top], P[np.arange(len(P)), top]


def _units(report: pd.DataFrame, segments: pd.DataFrame | None = None) -> pd.DataFrame:
    """What a person can answer, one row per content: each labelled short file, and each speech segment of a
    long file (its own stretch, its own label); copies of the same bytes counted once.

    ``segments`` is the job's segments report; a long file whose pieces are fixed windows (or with no segments
    report) is one unit, as a short file is.
    """
    ok = report[report["status"] == "ok"]
    speech = pd.DataFrame()
    if segments is not None and len(segments) and "speech_prob" in segments.columns:
        speech = segments[segments["speech_prob"].notna() & segments["label"].notna()]
        speech = speech[speech["path"].isin(ok["path"])]
    whole = ok[~ok["path"].isin(speech["path"])] if len(speech) else ok
    label, conf = top_labels(whole)
    parts = [
        pd.DataFrame(
            {
                "path": whole["path"].to_numpy(),
                "content_hash": whole["content_hash"].fillna("").to_numpy(),
                "start_s": math.nan,
                "end_s": math.nan,
                "model_label": label,
                "confidence": conf,
            }
        )
    ]
    if len(speech):
        hashes = ok.set_index("path")["content_hash"].fillna("")
        seg_label, seg_conf = top_labels(speech)
        parts.append(
            pd.DataFrame(
                {
                    "path": speech["path"].to_numpy(),
                    "content_hash": hashes.loc[speech["path"]].to_numpy(),
                    "start_s": speech["start_s"].round(3).to_numpy(),
                    "end_s": speech["end_s"].round(3).to_numpy(),
                    "model_label": seg_label,
                    "confidence": seg_conf,
                }
            )
        )
    units = pd.concat(parts, ignore_index=True)
    key = _unit_key(units)
    units["copies"] = key.map(key.value_counts())
    return units[~key.duplicated()].reset_index(drop=True)


def _unit_key(df: pd.DataFrame) -> pd.Series:
    """A unit's identity: its content (or its path, for rows without a hash) and, for a segment, its stretch."""
    content = df["content_hash"].where(df["content_hash"] != "", "path:" + df["path"])
    seg = df["start_s"].notna()
    if seg.any():  # formatted only where there are segments: a 100,000-file report has none to format
        stretch = [f"@{a:.3f}-{b:.3f}" for a, b in zip(df.loc[seg, "start_s"], df.loc[seg, "end_s"], strict=True)]
        content = content.copy()
        content[seg] = content[seg] + stretch
    return content


def read_sample(out_dir: Path) -> pd.DataFrame:
    """The review sample of a job's output folder (empty when there is none), checked as read.

    Raises
    ------
    SampleError
        ``review/sample.csv`` is damaged or not what a review wrote (named, with the fix).
    """
    path = out_dir / SAMPLE
    fix = f"move it away and run batchser review {out_dir} again to draw a new sample (answers.csv is kept)"
    if path.is_symlink():  # as answers.csv: never read through a link (nor written: the writer refuses it)
        raise SampleError(f"{path} is a link, not a regular file; a review sample is never read through one: {fix}")
    if not path.is_file():
        return pd.DataFrame(columns=SAMPLE_COLUMNS)
    review_folder(out_dir)
    if path.stat().st_size > _MAX_SAMPLE_BYTES:
        raise SampleError(f"{path} is over {_MAX_SAMPLE_BYTES >> 20} MB: not a review sample; {fix}")
    try:  # O_NOFOLLOW: a link put there since the check above is refused too
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SampleError(f"{path} cannot be opened as a regular file ({exc.strerror}); {fix}") from None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(_MAX_SAMPLE_BYTES + 1)
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise SampleError(f"{path} holds NUL bytes (line {line}): it was damaged; {fix}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SampleError(f"{path} is not UTF-8 text (line {line}): it was edited or damaged; {fix}") from None
    try:
        df = read_csv_report(io.BytesIO(raw)) if raw.strip() else pd.DataFrame(columns=SAMPLE_COLUMNS)  # type: ignore[arg-type]
    except (ValueError, pd.errors.ParserError) as exc:
        raise SampleError(f"{path} cannot be read as CSV ({exc}); {fix}") from None
    return _checked(df, path, fix)


def _checked(df: pd.DataFrame, path: Path, fix: str) -> pd.DataFrame:
    missing = [c for c in ("order", "path", "model_label", "stratum_size") if c not in df.columns]
    if missing:
        raise SampleError(f"{path} has no {', '.join(missing)} column; {fix}")
    for col, default in (
        ("content_hash", ""),
        ("part", "random"),
        ("copies", 1),
        ("confidence", math.nan),
        ("model", ""),
    ):
        if col not in df.columns:
            df[col] = default
    for col in ("start_s", "end_s"):  # samples written before segments could be units
        if col not in df.columns:
            df[col] = math.nan

    def bad(col: str, mask: pd.Series, what: str) -> None:
        if mask.any():
            row = int(np.flatnonzero(mask.to_numpy())[0])
            raise SampleError(f"{path} line {row + 2}: {col} {df[col].iloc[row]!r} is not {what}; {fix}")

    for col in ("order", "stratum_size", "copies"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad(col, num.isna() | (num < (0 if col == "order" else 1)) | (num % 1 != 0), "a whole number")
        df[col] = num.astype(np.int64)
    for col in ("confidence", "start_s", "end_s"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad(col, num.isna() & df[col].notna() & (df[col].astype(str) != ""), "a number")
        df[col] = num.astype(np.float64)
    for col in ("path", "model_label"):
        bad(col, df[col].isna() | (df[col].astype(str).str.strip() == ""), "a name")
        df[col] = df[col].astype(str)
    df["content_hash"] = df["content_hash"].fillna("").astype(str)
    df["model"] = df["model"].fillna("").astype(str)
    df["part"] = df["part"].fillna("random").astype(str)
    bad("part", ~df["part"].isin(["random", "unsure"]), "random or unsure")
    bad("order", df["order"].duplicated(), "unique")
    return df[SAMPLE_COLUMNS].sort_values("order", kind="stable").reset_index(drop=True)


def extend_sample(
    out_dir: Path,
    report: pd.DataFrame,
    *,
    per_label: int,
    seed: int = 0,
    segments: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The sample with at least ``per_label`` units per model label, drawn from ``report`` and saved.

    Units already in the sample stay, in their order; new ones come after, the
    labels interleaved in a random order. ``report`` is the job's annotations
    table (``path``, ``status``, ``content_hash``, ``p_<class>``); ``segments``
    its segments report, whose speech segments are units of their own.

    Raises
    ------
    AnswersError
        The review folder is a link or cannot be written (named, with the fix).
    """
    import pyarrow as pa

    units = _units(report, segments)
    have = read_sample(out_dir)
    ok = report.loc[report["status"] == "ok", "model"] if "model" in report.columns else pd.Series(dtype=str)
    model = str(ok.iloc[0]) if len(ok) else ""
    known = set(_unit_key(have))
    key = _unit_key(units)
    have_per = have.groupby("model_label").size().to_dict() if len(have) else {}
    # The strata keep the sizes they had when first drawn: an estimate weighs each by its share then.
    sizes = units.groupby("model_label").size().to_dict()
    sizes |= have.groupby("model_label")["stratum_size"].first().to_dict() if len(have) else {}
    new: list[tuple[int, str]] = []
    labels, conf = units["model_label"].to_numpy(), units["confidence"].to_numpy()
    drawn = key.isin(known).to_numpy()
    for label in sorted(set(labels.tolist())):
        need = per_label - int(have_per.get(label, 0))
        if need <= 0:
            continue
        rows = np.flatnonzero(labels == label)
        seen = np.flatnonzero(drawn[rows]).tolist()
        picked = choose([label] * len(rows), conf[rows], per_label=need, exclude=seen, seed=seed + len(have))
        new += [(int(rows[j]), part) for j, part in picked]
    drew = {m for m in have["model"].tolist() if m} if len(have) else set()
    if new and drew and drew != {model}:
        raise SampleError(
            f"{out_dir / SAMPLE} was drawn from the labels of {', '.join(sorted(drew))}; these reports are {model}'s "
            "(relearned from answers, or another model): adding to the sample would mix two models' labels and make "
            f"its estimates false. Review the reports the sample was drawn from, or move {out_dir / SAMPLE.parent} "
            "away to start a new review of these"
        )
    rng = np.random.default_rng(seed + 7919 * (len(have) + 1))
    new = [new[k] for k in rng.permutation(len(new))]  # the labels interleaved: random at every stopping point
    start = int(have["order"].max()) + 1 if len(have) else 0
    added = pd.DataFrame(
        {
            "order": range(start, start + len(new)),
            "path": [units.at[i, "path"] for i, _ in new],
            "content_hash": [units.at[i, "content_hash"] for i, _ in new],
            "start_s": [units.at[i, "start_s"] for i, _ in new],
            "end_s": [units.at[i, "end_s"] for i, _ in new],
            "model_label": [labels[i] for i, _ in new],
            "confidence": [float(conf[i]) for i, _ in new],
            "part": [part for _, part in new],
            "stratum_size": [int(sizes[labels[i]]) for i, _ in new],
            "copies": [int(units.at[i, "copies"]) for i, _ in new],
            "model": model,
        },
        columns=SAMPLE_COLUMNS,
    )
    sample = pd.concat([have, added], ignore_index=True) if len(have) else added
    folder = review_folder(out_dir, create=True)
    try:
        write_annotations(pa.Table.from_pandas(sample, preserve_index=False), folder, ["csv"], stem=SAMPLE.stem)
    except ReportError as exc:
        raise AnswersError(
            f"cannot write the review sample {out_dir / SAMPLE}: {exc}. A review keeps its sample and answers in "
            f"{folder}: make it writable, or copy the job's reports to a folder you can write and review that copy"
        ) from None
    return sample
