"""The predict stage: report rows from each file's features, the model and the job's adaptation.

Files are standardised within the groups :mod:`batchser.adaptation` chooses
over this job's files; long files are labelled segment by segment (each
segment by its own group: its speaker's, the recording's own speech…); each
row says which rule normalised it and how far the file lies from the
training data.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from batchser.adaptation import JobAdaptation
from batchser.cache import NO_SPEECH
from batchser.hashing import display_path
from batchser.labels import Label
from batchser.model import TrainedModel
from batchser.model.domain import NO_LIMIT, distances, scaler_of
from batchser.outcome import FileOutcome
from batchser.report import ReportRow, SegmentRow

# FileOutcome and JobAdaptation live in batchser.outcome and batchser.adaptation; named here as before.
__all__ = ["PREDICT_CHUNK", "UNCERTAIN", "FileOutcome", "JobAdaptation", "annotate_rows", "domain_summary"]

log = logging.getLogger(__name__)

PREDICT_CHUNK = 2048  # files per predict_proba call
MIN_GAP_S = 0.05  # a shorter stretch between speech segments is not reported as one
UNCERTAIN = "uncertain"  # the label of a file under model.min_confidence


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
    groups: JobAdaptation | None = None,
    start: int = 0,
    reviewed: dict[str, str] | None = None,
    reviewed_segments: dict[str, list[tuple[float, float, str]]] | None = None,
    min_segments: int | None = None,
) -> tuple[list[ReportRow], list[SegmentRow]]:
    """One report row per outcome (the model's label and probabilities, or why there are none),
    and one segment row per window of each long file.

    A long file's row carries the mean probabilities of its voiced windows (of
    all windows when none is voiced), the label they favour, and the most
    frequent window label as ``dominant_label``. A file (or window) whose top
    probability is below ``min_confidence`` is labelled ``uncertain``; its
    probabilities are still reported. With a normalising model, files are
    standardised within the groups ``adapt`` chooses (``allowed``: corpus →
    whether its speaker ids may be used): over ``outcomes`` alone, or, with
    ``groups``, over every file of the job, measured before (``outcomes`` are
    then its files ``start``, ``start + 1``, …; so are the indices in ``used``).
    A long file's segments are standardised by their own groups
    (:meth:`JobAdaptation.segment_keys`: ``min_segments`` when ``groups`` is
    not given); its row's ``normalized_by`` is the rule of most of its speech.
    ``reviewed`` maps report paths to a person's answers: such a file's label
    is the answer (``reviewed`` true); its probabilities stay the model's.
    ``reviewed_segments`` maps report paths to answered speech segments
    (start, end, answer): such a segment's label is the answer.
    """

    def top(p: np.ndarray) -> tuple[str, float]:
        k = int(np.argmax(p))
        label = classes[k] if min_confidence is None or p[k] >= min_confidence else UNCERTAIN
        return label, float(p[k])

    classes = list(model.meta.classes)
    prefix = os.path.join(root, "")  # with its trailing slash
    if groups is None:
        groups = JobAdaptation(model, mode=adapt, allowed=allowed or {}, min_segments=min_segments)
        groups.measure([(0, outcomes, labels)], model)
    adaptation = groups.keys_for(start, outcomes, labels)
    norm, keys = adaptation.stats, adaptation.keys
    how = list(adaptation.how)
    seg_rows: list[SegmentRow] = []
    aggregated: dict[int, np.ndarray] = {}
    dominant: dict[int, tuple[str, int]] = {}
    speech_share: dict[int, float] = {}
    file_dims: dict[int, dict[str, float]] = {}  # arousal and valence of each file, when the model has them
    nan = dict.fromkeys(classes, math.nan)
    for i, o in enumerate(outcomes):
        segs = o.record.segments if o.ok and o.record is not None else None
        if segs is None:
            continue
        pieces = groups.segment_keys(o, labels[i], (keys[i], how[i]))
        X = segs.vectors.astype(np.float64)
        p, _ = model.predict_proba_by_speaker(X, pieces.keys, pieces.stats)
        dims = model.predict_dimensions(X, pieces.keys, pieces.stats, proba=p)
        how[i] = pieces.file_rule(segs.end_s - segs.start_s)
        use = segs.voiced if segs.voiced.any() else np.ones(len(segs), dtype=bool)
        # Weighted by length: a 6 s utterance says more than a 0.5 s one (windows are all one length).
        weights = (segs.end_s - segs.start_s)[use]
        aggregated[i] = np.average(p[use], axis=0, weights=weights)
        file_dims[i] = {d: float(np.average(v[use], weights=weights)) for d, v in dims.items()}
        seg_labels = [classes[k] for k in np.argmax(p, axis=1)]
        counts = Counter(lab for lab, u in zip(seg_labels, use, strict=True) if u)
        dominant[i] = (max(classes, key=lambda c: (counts[c], -classes.index(c))), len(segs))
        path = display_path(o.source, prefix)
        speech = segs.speech_prob is not None  # speech segments: the stretches between are reported as such
        if speech:
            speech_share[i] = float(np.sum(segs.end_s - segs.start_s) / o.record.duration_s)  # type: ignore[union-attr]
        at = 0.0
        answered = _answered(segs, (reviewed_segments or {}).get(path, ()))
        for j in range(len(segs)):
            if speech and segs.start_s[j] - at >= MIN_GAP_S:
                seg_rows.append(SegmentRow(path, at, float(segs.start_s[j]), False, "", math.nan, nan))
            label, conf = top(p[j])
            if j in answered:  # as for a file: the model's probability of the answer (none: no class)
                conf = float(p[j][classes.index(answered[j])]) if answered[j] in classes else math.nan
            seg_rows.append(
                SegmentRow(
                    path=path,
                    start_s=float(segs.start_s[j]),
                    end_s=float(segs.end_s[j]),
                    voiced=bool(segs.voiced[j]),
                    label=answered.get(j, label),
                    confidence=conf,
                    probabilities=dict(zip(classes, map(float, p[j]), strict=True)),
                    speech_prob=float(segs.speech_prob[j]) if speech else math.nan,  # type: ignore[index]
                    reviewed=j in answered,
                    speaker=pieces.speakers[j],
                    normalized_by=pieces.how[j],
                    dimensions={d: float(v[j]) for d, v in dims.items()},
                )
            )
            at = float(segs.end_s[j])
        end = o.record.duration_s  # type: ignore[union-attr]
        if speech and end - at >= MIN_GAP_S:
            seg_rows.append(SegmentRow(path, at, end, False, "", math.nan, nan))
    ok_idx = [i for i, o in enumerate(outcomes) if o.ok and i not in aggregated]
    # In chunks: the network's float64 activations for all files at once would
    # grow the job's peak memory with the archive (about 4 KB per file).
    chunks = chunks_of(ok_idx, PREDICT_CHUNK)
    parts = [np.empty((0, len(classes)))]
    for c in chunks:
        X = np.stack([outcomes[i].record.vector for i in c]).astype(np.float64)  # type: ignore[union-attr]
        p, _ = model.predict_proba_by_speaker(X, [keys[i] for i in c], norm)
        parts.append(p)
        dims = model.predict_dimensions(X, [keys[i] for i in c], norm, proba=p)
        for k, i in enumerate(c):
            file_dims[i] = {d: float(v[k]) for d, v in dims.items()}
    proba = np.concatenate(parts)
    # Row numbers, not row views: a view per file weighs more than its 4 numbers.
    proba_row = {i: k for k, i in enumerate(ok_idx)}
    scaler = scaler_of(model.pipeline)
    distance = {
        i: float(d)
        for c in chunks_of([i for i, o in enumerate(outcomes) if o.ok], PREDICT_CHUNK)
        for i, d in zip(c, distances(np.stack([outcomes[i].record.vector for i in c]), *scaler), strict=True)  # type: ignore[union-attr]
    }
    ref = model.meta.metrics.get("domain") or {}
    far = 2 * ref["limit"] if ref.get("limit") else math.inf  # twice as far as the furthest corpus it was scored on
    rows = []
    for i, (o, lab) in enumerate(zip(outcomes, labels, strict=True)):
        rec = o.record
        common: dict[str, Any] = {
            "path": display_path(o.source, prefix),
            "true_label": lab.emotion or "",
            "content_hash": o.content_hash,
            "model": model.id,
            "used_for_training": (start + i in used) if train else None,
            "speaker": groups.label_of(o, lab).speaker or "",  # a short file's from its turns, if given
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
        if i in speech_share:
            common["speech_share"] = speech_share[i]
        p = proba[proba_row[i]] if i in proba_row else aggregated.get(i)
        if p is not None:
            label, conf = top(p)
            answer = reviewed.get(common["path"]) if reviewed else None
            probabilities = dict(zip(classes, map(float, p), strict=True))
            if answer is not None:  # the confidence beside a person's label: the model's in that label (none: no class)
                conf = probabilities.get(answer, math.nan)
            if distance[i] > far:  # silence with a dither, hiss, a tone: confident labels that mean nothing
                note = (
                    f"unlike any speech the model was trained on (distance {distance[i]:.1f}, its training files "
                    f"{ref['training_median']:.1f}): the label is a guess; --check-speech tells whether it holds speech"
                )
                common["warning"] = "; ".join(w for w in (common.get("warning", ""), note) if w)
            rows.append(
                ReportRow(
                    status="ok",
                    label=answer or label,
                    reviewed=answer is not None,
                    confidence=conf,
                    probabilities=probabilities,
                    speaker_normalized=how[i] in ("speaker", "file-speaker"),
                    normalized_by=how[i],
                    domain_distance=distance[i],
                    dimensions=file_dims.get(i, {}),
                    **common,
                )
            )
        else:
            reason = o.error or (rec.error if rec is not None else "no features")
            # "retry": this run could not read the file (it vanished, changed, or the disk failed);
            # "no speech": the voice-activity model heard none (not a failure).
            status = rec.status if rec is not None and rec.status in ("retry", NO_SPEECH) else "error"
            if status == NO_SPEECH:
                common["speech_share"] = 0.0
            rows.append(ReportRow(status=status, error=reason, **common))
    return rows, seg_rows


def _answered(segs: Any, given: Sequence[tuple[float, float, str]]) -> dict[int, str]:
    """Segment index -> a person's answer, for the answered stretches (times to the millisecond)."""
    out = {}
    for start, end, label in given:
        k = np.flatnonzero((np.abs(segs.start_s - start) < 2e-3) & (np.abs(segs.end_s - end) < 2e-3))
        if len(k):
            out[int(k[0])] = label
    return out


def chunks_of(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def domain_summary(d: np.ndarray, model: TrainedModel) -> dict[str, Any] | None:
    """The job's median distance from the training data (``d``, one per labelled file) against the model's reference.

    ``out_of_domain`` is True or False against the furthest held-out corpus
    of the model's evaluation, and None (unknown, ``out_of_domain_why`` says
    why) for a model that held no corpus out: a distance alone cannot say.
    """
    ref = model.meta.metrics.get("domain")
    if not len(d) or not ref:
        return None
    median, limit = float(np.median(d)), ref.get("limit")
    out: dict[str, Any] = {
        "median_distance": round(median, 3),
        "training_median": round(ref["training_median"], 3),
        "held_out_limit": None if limit is None else round(limit, 3),
        "out_of_domain": None if limit is None else bool(median > limit),
    }
    if limit is None:
        out["out_of_domain_why"] = ref.get("no_limit_why", NO_LIMIT)
    return out
