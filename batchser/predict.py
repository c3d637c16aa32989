"""The predict stage: report rows from each file's features, the model and the job's adaptation.

Files are standardised within the groups ``model.adapt`` chooses over this
job's files (:mod:`batchser.model.adapt`); long files are labelled window by
window; each row says which rule normalised it and how far the file lies from
the training data.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchser.cache import NO_SPEECH, FeatureRecord
from batchser.discover import SourceFile
from batchser.features import FeatureSpec
from batchser.hashing import display_path
from batchser.labels import Label
from batchser.model import TrainedModel
from batchser.model.adapt import GroupStats, RunningStats, group_rows, voice_columns
from batchser.model.domain import NO_LIMIT, distances, scaler_of
from batchser.report import ReportRow, SegmentRow

__all__ = ["PREDICT_CHUNK", "UNCERTAIN", "FileOutcome", "JobAdaptation", "annotate_rows", "domain_summary"]

log = logging.getLogger(__name__)

PREDICT_CHUNK = 2048  # files per predict_proba call
# Group names that say an emotion, not a person (a folder per emotion given as speaker folders).
_EMOTION_WORDS = re.compile(
    r"(?<![a-z])(ang(ry|er)|happ(y|iness)|joy(ful)?|sad(ness)?|neutral|calm|fear(ful)?|disgust(ed)?"
    r"|surprised?|bored(om)?|excited|frustrat(ed|ion)|contempt)(?![a-z])",
    re.IGNORECASE,
)
MIN_GAP_S = 0.05  # a shorter stretch between speech segments is not reported as one
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
    groups: JobAdaptation | None = None,
    start: int = 0,
    reviewed: dict[str, str] | None = None,
    reviewed_segments: dict[str, list[tuple[float, float, str]]] | None = None,
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
        groups = JobAdaptation(model, mode=adapt, allowed=allowed or {})
        groups.measure([(0, outcomes, labels)], model)
    adaptation = groups.keys_for(start, outcomes, labels)
    norm, keys = adaptation.stats, adaptation.keys
    seg_rows: list[SegmentRow] = []
    aggregated: dict[int, np.ndarray] = {}
    dominant: dict[int, tuple[str, int]] = {}
    speech_share: dict[int, float] = {}
    nan = dict.fromkeys(classes, math.nan)
    for i, o in enumerate(outcomes):
        segs = o.record.segments if o.ok and o.record is not None else None
        if segs is None:
            continue
        p, _ = model.predict_proba_by_speaker(segs.vectors.astype(np.float64), [keys[i]] * len(segs), norm)
        use = segs.voiced if segs.voiced.any() else np.ones(len(segs), dtype=bool)
        # Weighted by length: a 6 s utterance says more than a 0.5 s one (windows are all one length).
        aggregated[i] = np.average(p[use], axis=0, weights=(segs.end_s - segs.start_s)[use])
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
            "used_for_training": (start + i in used) if train else None,
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
        if i in speech_share:
            common["speech_share"] = speech_share[i]
        p = proba[proba_row[i]] if i in proba_row else aggregated.get(i)
        if p is not None:
            label, conf = top(p)
            answer = reviewed.get(common["path"]) if reviewed else None
            probabilities = dict(zip(classes, map(float, p), strict=True))
            rows.append(
                ReportRow(
                    status="ok",
                    label=answer or label,
                    reviewed=answer is not None,
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


@dataclass(frozen=True)
class _Adaptation:
    """Each file's normalisation group key (or None) and rule, and the groups' statistics."""

    keys: list[str | None]
    how: list[str]
    stats: GroupStats | None


Chunk = tuple[int, Sequence[FileOutcome], Sequence[Label]]  # the index of the first file, files, labels


class JobAdaptation:
    """The job's normalisation groups (see :mod:`batchser.model.adapt`), measured over all its files.

    A job labels its files a chunk at a time, but a group's statistics need all
    of the group's files first: :meth:`observe` each chunk (a first pass),
    then, in cluster mode, :meth:`cluster` and :meth:`observe_clusters` (a
    second), then :meth:`keys_for` each chunk while labelling it. A group's
    statistics come from its files' vectors: each short file's, each voiced
    window's of a long file; only the file vectors' voice columns are kept
    between passes, and only in cluster mode.

    Parameters
    ----------
    model : TrainedModel
    mode : {"none", "speaker", "cluster", "corpus"}
        ``model.adapt``; "none" when the model has no normalising network.
    allowed : dict
        Corpus → whether its speaker ids may be used.
    """

    def __init__(self, model: TrainedModel, *, mode: str, allowed: dict[str, bool]) -> None:
        self.mode = mode if model.speaker_pipeline is not None else "none"
        self.min_files = model.min_speaker_files
        self.allowed = allowed
        self._running = RunningStats()
        self._files: Counter[str] = Counter()  # files with features per candidate group
        self._voice_cols = (
            voice_columns(FeatureSpec.columns_of(model.meta.feature_spec)) if self.mode == "cluster" else None
        )
        self._voice: list[np.ndarray] = []  # per chunk, a row per file with features
        self._voice_at: list[int] = []  # the job index of each voice row
        self._voice_corpus: list[str | None] = []
        self._cluster_at = np.empty(0, dtype=np.int64)  # job indices with a cluster, sorted
        self._cluster_key: list[str] = []
        self.stats: GroupStats | None = None
        self._corpus_of: dict[str, str] = {}  # speaker group key -> its corpus
        self._not_speakers: set[str] = set()  # corpora whose speaker groups are emotion groups

    def _candidates(self, label: Label) -> list[str]:
        keys = [f"corpus:{label.corpus}"]
        corpus = label.corpus or ""
        if (
            self.mode == "speaker"
            and label.group
            and self.allowed.get(corpus, True)
            and corpus not in self._not_speakers
        ):
            keys.append(f"speaker:{label.group}")
            self._corpus_of[keys[-1]] = corpus
        return keys

    @staticmethod
    def _blocks(outcomes: Sequence[FileOutcome]) -> tuple[list[int], np.ndarray, list[tuple[int, int]]]:
        """The files with features, their rows stacked, and each one's span of rows."""
        ok = [j for j, o in enumerate(outcomes) if o.ok and o.record is not None]
        blocks, spans, at = [], [], 0
        for j in ok:
            rec = outcomes[j].record
            segs = rec.segments  # type: ignore[union-attr]
            block = rec.vector[None, :] if segs is None else segs.vectors[segs.voiced]  # type: ignore[union-attr,index]
            blocks.append(block)
            spans.append((at, at + len(block)))
            at += len(block)
        X = np.concatenate(blocks).astype(np.float64) if blocks else np.empty((0, 0))
        return ok, X, spans

    def _fold(self, rows: dict[str, list[tuple[int, int]]], X: np.ndarray) -> None:
        for key, spans in rows.items():
            idx = np.concatenate([np.arange(a, b) for a, b in spans]) if spans else np.empty(0, dtype=np.intp)
            self._running.add(key, X[idx])

    def observe(self, start: int, outcomes: Sequence[FileOutcome], labels: Sequence[Label]) -> None:
        """First pass: fold one chunk of files into its groups' statistics."""
        if self.mode == "none":
            return
        ok, X, spans = self._blocks(outcomes)
        rows: dict[str, list[tuple[int, int]]] = {}
        for j, span in zip(ok, spans, strict=True):
            for key in self._candidates(labels[j]):
                self._files[key] += 1
                rows.setdefault(key, []).append(span)
        self._fold(rows, X)
        if self._voice_cols is not None and ok:  # a chunk's voice columns in one float32 block
            self._voice.append(np.stack([outcomes[j].record.vector[self._voice_cols] for j in ok]).astype(np.float32))  # type: ignore[union-attr,index]
            self._voice_at += [start + j for j in ok]
            self._voice_corpus += [labels[j].corpus for j in ok]

    def check_groups(self, model: TrainedModel) -> list[dict[str, Any]]:
        """Between the passes: find speaker groups that are really emotion groups, and stop using them.

        Standardising within a group that holds one emotion subtracts that
        emotion (folders named by emotion given as speaker folders labelled
        23 % instead of 78 %). A corpus's speaker groups are taken for
        emotion groups when most of their names are emotion words, or when
        there are 4 or more of them, at most one per class, each of at least
        three times ``min_files`` files, and the plain network, reading each
        group's mean against the corpus's mean, names a different emotion for
        every one of them. Their files are then standardised over the corpus
        (``normalized_by`` says ``corpus``).

        Returns
        -------
        list of dict
            Per flagged corpus: ``corpus``, ``groups`` (names), ``why``, and the
            emotion the network read in each group (``reads_as``).
        """
        if self.mode != "speaker":
            return []
        stats = self._running.stats()
        classes = list(model.meta.classes)
        found = []
        for corpus_key in [k for k in stats.mean if k.startswith("corpus:")]:
            corpus = corpus_key.removeprefix("corpus:")
            groups = [
                k
                for k in stats.mean
                if k.startswith("speaker:") and self._corpus_of.get(k) == corpus and stats.count[k] >= self.min_files
            ]
            if len(groups) < 2:
                continue
            names = [k.removeprefix("speaker:").rsplit("/", 1)[-1] for k in groups]
            means = np.stack([stats.mean[k] for k in groups] + [stats.mean[corpus_key]])
            logp = np.log(model.predict_proba(means))
            reads = (logp[:-1] - logp[-1]).argmax(axis=1)  # each group against its corpus
            worded = sum(bool(_EMOTION_WORDS.search(n)) for n in names) > len(names) / 2
            distinct = (
                4 <= len(groups) <= len(classes)
                and len(set(reads.tolist())) == len(groups)
                and min(stats.count[k] for k in groups) >= 3 * self.min_files
            )
            if not (worded or distinct):
                continue
            why = "their names are emotion words" if worded else "each reads as a different emotion"
            found.append(
                {
                    "corpus": corpus,
                    "groups": names,
                    "why": why,
                    "reads_as": {n: classes[r] for n, r in zip(names, reads.tolist(), strict=True)},
                }
            )
            self._not_speakers.add(corpus)
            log.info(
                "the speaker groups of %s look like emotion groups (%s: %s); standardising those files over "
                "the whole input instead, since standardising within one emotion subtracts it",
                corpus,
                why,
                ", ".join(names[:8]) + (" …" if len(names) > 8 else ""),
            )
        return found

    def cluster(self) -> None:
        """Cluster mode, between the passes: pseudo-speakers per corpus from the voice columns seen."""
        if self.mode != "cluster" or not self._voice:
            return
        g = group_rows(
            np.concatenate(self._voice).astype(np.float64),
            mode="cluster",
            corpora=self._voice_corpus,
            min_files=self.min_files,
        )
        at = [(i, k) for i, k, how in zip(self._voice_at, g.keys, g.how, strict=True) if how == "cluster"]
        self._cluster_at = np.array([i for i, _ in at], dtype=np.int64)
        self._cluster_key = [k for _, k in at]  # type: ignore[misc]
        self._voice, self._voice_at, self._voice_corpus = [], [], []

    def _cluster_of(self, i: int) -> str | None:
        k = int(np.searchsorted(self._cluster_at, i))
        return self._cluster_key[k] if k < len(self._cluster_at) and self._cluster_at[k] == i else None

    def observe_clusters(self, start: int, outcomes: Sequence[FileOutcome]) -> None:
        """Second pass (cluster mode): fold one chunk of files into their clusters' statistics."""
        if not len(self._cluster_at):
            return
        ok, X, spans = self._blocks(outcomes)
        rows: dict[str, list[tuple[int, int]]] = {}
        for j, span in zip(ok, spans, strict=True):
            if (key := self._cluster_of(start + j)) is not None:
                self._files[key] += 1
                rows.setdefault(key, []).append(span)
        self._fold(rows, X)

    def measure(self, chunks: Sequence[Chunk], model: TrainedModel | None = None) -> list[dict[str, Any]]:
        """Both passes over chunks held in memory; returns :meth:`check_groups`'s findings (with ``model``)."""
        for start, outcomes, labels in chunks:
            self.observe(start, outcomes, labels)
        found = self.check_groups(model) if model is not None else []
        self.cluster()
        for start, outcomes, _ in chunks:
            self.observe_clusters(start, outcomes)
        return found

    def keys_for(self, start: int, outcomes: Sequence[FileOutcome], labels: Sequence[Label]) -> _Adaptation:
        """Each file's group and rule: its speaker's or cluster's, else its corpus's, else none."""
        if self.stats is None:
            self.stats = self._running.stats()
        keys: list[str | None] = [None] * len(outcomes)
        how = [""] * len(outcomes)
        if self.mode == "none":
            return _Adaptation(keys, how, None)
        for j, (o, lab) in enumerate(zip(outcomes, labels, strict=True)):
            if not o.ok:
                continue
            choices = []
            if self.mode == "cluster":
                choices.append((self._cluster_of(start + j), "cluster"))
            choices += [(k, k.split(":", 1)[0]) for k in reversed(self._candidates(lab))]
            for key, rule in choices:
                if key is not None and self._files[key] >= self.min_files and self.stats.covers(key):
                    keys[j], how[j] = key, rule
                    break
        return _Adaptation(keys, how, self.stats)


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
