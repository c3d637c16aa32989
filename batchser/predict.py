"""The predict stage: report rows from each file's features, the model and the job's adaptation.

Files are standardised within the groups ``model.adapt`` chooses over this
job's files (:mod:`batchser.model.adapt`); long files are labelled window by
window; each row says which rule normalised it and how far the file lies from
the training data.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchser.cache import FeatureRecord
from batchser.discover import SourceFile
from batchser.features import FeatureSpec
from batchser.hashing import display_path
from batchser.labels import Label
from batchser.model import TrainedModel
from batchser.model.adapt import GroupStats, group_rows, voice_columns
from batchser.model.domain import distances, scaler_of
from batchser.report import ReportRow, SegmentRow

__all__ = ["PREDICT_CHUNK", "UNCERTAIN", "FileOutcome", "annotate_rows", "domain_summary"]

PREDICT_CHUNK = 2048  # files per predict_proba call
UNCERTAIN = "uncertain"  # the label of a file under model.min_confidence


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """A discovered file with its content hash and feature record (or why it has none)."""

    source: SourceFile
    content_hash: str = ""
    record: FeatureRecord | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.record is not None and self.record.ok


def annotate_rows(
    outcomes: Sequence[FileOutcome],
    labels: Sequence[Label],
    model: TrainedModel,
    *,
    root: Path,
    train: bool,
    used: Collection[int] = (),
    min_confidence: float | None = None,
    adapt: str = "speaker",
    allowed: dict[str, bool] | None = None,
) -> tuple[list[ReportRow], list[SegmentRow]]:
    """One report row per outcome (the model's label and probabilities, or why there are none),
    and one segment row per window of each long file.

    A long file's row carries the mean probabilities of its voiced windows (of
    all windows when none is voiced), the label they favour, and the most
    frequent window label as ``dominant_label``. A file (or window) whose top
    probability is below ``min_confidence`` is labelled ``uncertain``; its
    probabilities are still reported. With a normalising model, files are
    standardised within the groups ``adapt`` chooses (``allowed``: corpus →
    whether its speaker ids may be used).
    """

    def top(p: np.ndarray) -> tuple[str, float]:
        k = int(np.argmax(p))
        label = classes[k] if min_confidence is None or p[k] >= min_confidence else UNCERTAIN
        return label, float(p[k])

    classes = list(model.meta.classes)
    prefix = os.path.join(root, "")  # with its trailing slash
    adaptation = _adaptation(outcomes, labels, model, mode=adapt, allowed=allowed or {})
    norm, keys = adaptation.stats, adaptation.keys
    seg_rows: list[SegmentRow] = []
    aggregated: dict[int, np.ndarray] = {}
    dominant: dict[int, tuple[str, int]] = {}
    for i, o in enumerate(outcomes):
        segs = o.record.segments if o.ok and o.record is not None else None
        if segs is None:
            continue
        p, _ = model.predict_proba_by_speaker(segs.vectors.astype(np.float64), [keys[i]] * len(segs), norm)
        use = segs.voiced if segs.voiced.any() else np.ones(len(segs), dtype=bool)
        aggregated[i] = p[use].mean(axis=0)
        seg_labels = [classes[k] for k in np.argmax(p, axis=1)]
        counts = Counter(lab for lab, u in zip(seg_labels, use, strict=True) if u)
        dominant[i] = (max(classes, key=lambda c: (counts[c], -classes.index(c))), len(segs))
        path = display_path(o.source, prefix)
        for j in range(len(segs)):
            label, conf = top(p[j])
            seg_rows.append(
                SegmentRow(
                    path=path,
                    start_s=float(segs.start_s[j]),
                    end_s=float(segs.end_s[j]),
                    voiced=bool(segs.voiced[j]),
                    label=label,
                    confidence=conf,
                    probabilities=dict(zip(classes, map(float, p[j]), strict=True)),
                )
            )
    ok_idx = [i for i, o in enumerate(outcomes) if o.ok and i not in aggregated]
    # In chunks: the network's float64 activations for all files at once would
    # grow the job's peak memory with the archive (about 4 KB per file).
    chunks = chunks_of(ok_idx, PREDICT_CHUNK)
    proba = np.concatenate(
        [np.empty((0, len(classes)))]
        + [
            model.predict_proba_by_speaker(
                np.stack([outcomes[i].record.vector for i in c]).astype(np.float64),  # type: ignore[union-attr]
                [keys[i] for i in c],
                norm,
            )[0]
            for c in chunks
        ]
    )
    # Row numbers, not row views: a view per file weighs more than its 4 numbers.
    proba_row = {i: k for k, i in enumerate(ok_idx)}
    scaler = scaler_of(model.pipeline)
    distance = {
        i: float(d)
        for c in chunks_of([i for i, o in enumerate(outcomes) if o.ok], PREDICT_CHUNK)
        for i, d in zip(c, distances(np.stack([outcomes[i].record.vector for i in c]), *scaler), strict=True)  # type: ignore[union-attr]
    }
    rows = []
    for i, (o, lab) in enumerate(zip(outcomes, labels, strict=True)):
        rec = o.record
        common: dict[str, Any] = {
            "path": display_path(o.source, prefix),
            "true_label": lab.emotion or "",
            "content_hash": o.content_hash,
            "model": model.id,
            "used_for_training": (i in used) if train else None,
            "speaker": lab.speaker or "",
            "corpus": lab.corpus or "",
        }
        if rec is not None:
            common |= {
                "duration_s": rec.duration_s,
                "orig_sample_rate": rec.orig_sample_rate,
                "channels": rec.channels,
                "warning": rec.warning,
            }
        if i in dominant:
            common |= {"dominant_label": dominant[i][0], "segments": dominant[i][1]}
        p = proba[proba_row[i]] if i in proba_row else aggregated.get(i)
        if p is not None:
            label, conf = top(p)
            probabilities = dict(zip(classes, map(float, p), strict=True))
            rows.append(
                ReportRow(
                    status="ok",
                    label=label,
                    confidence=conf,
                    probabilities=probabilities,
                    speaker_normalized=adaptation.how[i] == "speaker",
                    normalized_by=adaptation.how[i],
                    domain_distance=distance[i],
                    **common,
                )
            )
        else:
            reason = o.error or (rec.error if rec is not None else "no features")
            # "retry": this run could not read the file (it vanished, changed, or the disk failed).
            status = "retry" if rec is not None and rec.status == "retry" else "error"
            rows.append(ReportRow(status=status, error=reason, **common))
    return rows, seg_rows


@dataclass(frozen=True)
class _Adaptation:
    """Each file's normalisation group key (or None) and rule, and the groups' statistics."""

    keys: list[str | None]
    how: list[str]
    stats: GroupStats | None


def _adaptation(
    outcomes: Sequence[FileOutcome],
    labels: Sequence[Label],
    model: TrainedModel,
    *,
    mode: str,
    allowed: dict[str, bool],
) -> _Adaptation:
    """Normalisation groups over this job's files (see :mod:`batchser.model.adapt`).

    A group's statistics come from its files' vectors: each short file's, each
    voiced window's of a long file.
    """
    none = _Adaptation([None] * len(outcomes), [""] * len(outcomes), None)
    if model.speaker_pipeline is None or mode == "none":
        return none
    ok = [i for i, o in enumerate(outcomes) if o.ok and o.record is not None]
    if not ok:
        return none
    X = np.stack([outcomes[i].record.vector for i in ok]).astype(np.float64)  # type: ignore[union-attr]
    g = group_rows(
        X,
        mode=mode,
        corpora=[labels[i].corpus for i in ok],
        speakers=[labels[i].group for i in ok],
        speaker_ok=[allowed.get(labels[i].corpus or "", True) for i in ok],
        min_files=model.min_speaker_files,
        voice=voice_columns(FeatureSpec.columns_of(model.meta.feature_spec)) if mode == "cluster" else None,
    )
    blocks, owner = [], []
    for j, i in enumerate(ok):
        segs = outcomes[i].record.segments  # type: ignore[union-attr]
        block = X[j : j + 1] if segs is None else segs.vectors[segs.voiced].astype(np.float64)
        blocks.append(block)
        owner += [j] * len(block)
    stats = g.stats(np.concatenate(blocks), np.array(owner))
    keys: list[str | None] = [None] * len(outcomes)
    how = [""] * len(outcomes)
    for j, i in enumerate(ok):
        if g.keys[j] is not None and g.keys[j] in stats.mean:
            keys[i], how[i] = g.keys[j], g.how[j]
    return _Adaptation(keys, how, stats)


def chunks_of(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def domain_summary(rows: Sequence[ReportRow], model: TrainedModel) -> dict[str, Any] | None:
    """The job's median distance from the training data against the model's reference."""
    d = [r.domain_distance for r in rows if r.status == "ok"]
    ref = model.meta.metrics.get("domain")
    if not d or not ref:
        return None
    median, limit = float(np.median(d)), ref.get("limit")
    return {
        "median_distance": round(median, 3),
        "training_median": round(ref["training_median"], 3),
        "held_out_limit": None if limit is None else round(limit, 3),
        "out_of_domain": limit is not None and median > limit,
    }
