"""The job's normalisation groups: measured over its files, chosen per file and per speech segment.

:mod:`batchser.model.adapt` says why files are standardised within groups and
holds the statistics. This module decides the groups of one job's files:

- a short file: its speaker's files (a speaker folder, a label table, or the
  speaker whose turns cover it), its cluster, else its input's files;
- a long recording's speech segments, from the most particular group to the
  broadest: the speaker's own (a *named* speaker's segments and clips across
  the job, ``speaker``; a diarizer's ``SPEAKER_00`` only within the file,
  ``file-speaker``), the recording's own speech (``file``), then the groups
  a short file would get. A speaker's segments are a group when there are
  the model's ``min_speaker_files`` of them, as a speaker's recordings are;
  a recording's own speech when it has ``min_segments`` segments. The
  statistics of a recording's own groups come from its segments as it is
  labelled, so they cost no memory between passes.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchser.features import FeatureSpec
from batchser.labels import Label
from batchser.model import TrainedModel
from batchser.model.adapt import GroupStats, RunningStats, group_rows, voice_columns
from batchser.outcome import FileOutcome
from batchser.speakers import SpeakerTurns, is_anonymous

__all__ = ["RULES", "Adaptation", "JobAdaptation", "SegmentAdaptation"]

log = logging.getLogger(__name__)

# What ``normalized_by`` may say, from the most particular group to the broadest ("": none).
RULES = ("speaker", "file-speaker", "file", "cluster", "corpus")
# Group names that say an emotion, not a person (a folder per emotion given as speaker folders).
_EMOTION_WORDS = re.compile(
    r"(?<![a-z])(ang(ry|er)|happ(y|iness)|joy(ful)?|sad(ness)?|neutral|calm|fear(ful)?|disgust(ed)?"
    r"|surprised?|bored(om)?|excited|frustrat(ed|ion)|contempt)(?![a-z])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Adaptation:
    """Each file's normalisation group key (or None) and rule, and the groups' statistics."""

    keys: list[str | None]
    how: list[str]
    stats: GroupStats | None


@dataclass(frozen=True)
class SegmentAdaptation:
    """A long file's pieces: each one's speaker (``""``: unknown), group key (or None) and rule.

    ``stats`` holds every group the keys name (the job's, and the file's own).
    """

    speakers: list[str]
    keys: list[str | None]
    how: list[str]
    stats: GroupStats | None

    def file_rule(self, weights: np.ndarray) -> str:
        """The rule that standardised most of the file's speech (``weights``: each piece's seconds)."""
        time: Counter[str] = Counter()
        for rule, w in zip(self.how, weights.tolist(), strict=True):
            time[rule] += w
        if not time:
            return ""
        order = {r: k for k, r in enumerate((*RULES, ""))}
        return max(time, key=lambda r: (time[r], -order.get(r, len(order))))


Chunk = tuple[int, Sequence[FileOutcome], Sequence[Label]]  # the index of the first file, files, labels


class JobAdaptation:
    """The job's normalisation groups (see :mod:`batchser.model.adapt`), measured over all its files.

    A job labels its files a chunk at a time, but a group's statistics need all
    of the group's files first: :meth:`observe` each chunk (a first pass),
    then, in cluster mode, :meth:`cluster` and :meth:`observe_clusters` (a
    second), then :meth:`keys_for` each chunk while labelling it (and
    :meth:`segment_keys` each long file). A group's statistics come from its
    files' vectors: each short file's, each voiced window's of a long file;
    only the file vectors' voice columns are kept between passes, and only
    in cluster mode.

    Parameters
    ----------
    model : TrainedModel
    mode : {"none", "speaker", "cluster", "corpus"}
        ``model.adapt``; "none" when the model has no normalising network.
    allowed : dict
        Corpus → whether its speaker ids may be used.
    turns : SpeakerTurns or None
        Who speaks when in the job's recordings.
    min_segments : int or None
        Speech segments a long recording needs to be standardised over its
        own speech; None: never. (A speaker's segments need ``min_speaker_files``.)
    """

    def __init__(
        self,
        model: TrainedModel,
        *,
        mode: str,
        allowed: dict[str, bool],
        turns: SpeakerTurns | None = None,
        min_segments: int | None = None,
    ) -> None:
        self.mode = mode if model.speaker_pipeline is not None else "none"
        self.min_files = model.min_speaker_files
        self.min_segments = min_segments
        self.allowed = allowed
        self.turns = turns if turns else None
        self._running = RunningStats()
        self._files: Counter[str] = Counter()  # files with features per candidate group
        self._segments: Counter[str] = Counter()  # a named speaker's speech segments per group
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

    # -- who speaks --------------------------------------------------------------------------

    def speakers_of(self, o: FileOutcome) -> list[str] | None:
        """Who speaks in each piece of a long file (or in a short file, one name); None: no turns."""
        if self.turns is None or o.record is None:
            return None
        turns = self.turns.for_file(o.source)
        if turns is None:
            return None
        segs = o.record.segments
        if segs is None:
            return turns.speakers_of([0.0], [o.record.duration_s])
        return turns.speakers_of(segs.start_s, segs.end_s)

    def label_of(self, o: FileOutcome, label: Label) -> Label:
        """``label`` with a short file's speaker from its turns (the speaker covering most of it)."""
        if o.record is None or o.record.segments is not None:
            return label
        who = self.speakers_of(o)
        if not who or not who[0] or who[0] == label.speaker or is_anonymous(who[0]):
            return label  # a diarizer's SPEAKER_00 names a voice within one recording: no group of files
        return Label(emotion=label.emotion, speaker=who[0], corpus=label.corpus)

    def _speaker_key(self, corpus: str | None, name: str) -> str | None:
        """The job-wide group of a named speaker of the turns (a diarizer's SPEAKER_00 has none)."""
        c = corpus or ""
        if self.mode != "speaker" or not name or is_anonymous(name):
            return None
        if not self.allowed.get(c, True) or c in self._not_speakers:
            return None
        key = f"speaker:{Label(speaker=name, corpus=corpus).group}"
        self._corpus_of[key] = c
        return key

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

    # -- the first pass ----------------------------------------------------------------------

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

    def _fold(self, rows: dict[str, list[np.ndarray]], X: np.ndarray) -> None:
        for key, idx in rows.items():
            self._running.add(key, X[np.concatenate(idx)] if idx else X[:0])

    def observe(self, start: int, outcomes: Sequence[FileOutcome], labels: Sequence[Label]) -> None:
        """First pass: fold one chunk of files into its groups' statistics."""
        if self.mode == "none":
            return
        ok, X, spans = self._blocks(outcomes)
        rows: dict[str, list[np.ndarray]] = {}
        for j, (a, b) in zip(ok, spans, strict=True):
            o = outcomes[j]
            for key in self._candidates(self.label_of(o, labels[j])):
                self._files[key] += 1
                rows.setdefault(key, []).append(np.arange(a, b))
            segs = o.record.segments  # type: ignore[union-attr]
            who = self.speakers_of(o) if segs is not None else None
            if who is not None:  # a long file's named speakers: their segments join them across the job
                voiced = np.asarray(who, dtype=object)[segs.voiced]  # type: ignore[union-attr]
                for name in dict.fromkeys(voiced.tolist()):
                    key = self._speaker_key(labels[j].corpus, name)
                    if key is not None:
                        mine = a + np.flatnonzero(voiced == name)
                        self._segments[key] += len(mine)
                        rows.setdefault(key, []).append(mine)
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
        rows: dict[str, list[np.ndarray]] = {}
        for j, (a, b) in zip(ok, spans, strict=True):
            if (key := self._cluster_of(start + j)) is not None:
                self._files[key] += 1
                rows.setdefault(key, []).append(np.arange(a, b))
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

    # -- labelling ---------------------------------------------------------------------------

    def _usable(self, key: str | None) -> bool:
        if key is None or self.stats is None or not self.stats.covers(key):
            return False
        # A speaker's segments count as their recordings do: a speech segment is an utterance, as a clip is.
        return self._files[key] >= self.min_files or self._segments[key] >= self.min_files

    def keys_for(self, start: int, outcomes: Sequence[FileOutcome], labels: Sequence[Label]) -> Adaptation:
        """Each file's group and rule: its speaker's or cluster's, else its corpus's, else none.

        A long file's segments may be standardised otherwise (:meth:`segment_keys`);
        this is the group they fall back to.
        """
        if self.stats is None:
            self.stats = self._running.stats()
        keys: list[str | None] = [None] * len(outcomes)
        how = [""] * len(outcomes)
        if self.mode == "none":
            return Adaptation(keys, how, None)
        for j, (o, lab) in enumerate(zip(outcomes, labels, strict=True)):
            if not o.ok:
                continue
            choices = []
            if self.mode == "cluster":
                choices.append((self._cluster_of(start + j), "cluster"))
            choices += [(k, k.split(":", 1)[0]) for k in reversed(self._candidates(self.label_of(o, lab)))]
            for key, rule in choices:
                if self._usable(key):
                    keys[j], how[j] = key, rule
                    break
        return Adaptation(keys, how, self.stats)

    def segment_keys(
        self, o: FileOutcome, label: Label, fallback: tuple[str | None, str] = (None, "")
    ) -> SegmentAdaptation:
        """Each piece of long file ``o``: its speaker, and the group that standardises it.

        A named speaker's job-wide group (``speaker``), else the speaker's
        segments within the file (``file-speaker``), each when it has
        ``min_speaker_files`` segments; else the file's speech (``file``) when
        it has ``min_segments``; else ``fallback``, the file's own group from
        :meth:`keys_for`.
        """
        if self.stats is None:
            self.stats = self._running.stats()
        segs = o.record.segments  # type: ignore[union-attr]
        n = len(segs)
        speakers = self.speakers_of(o) or [""] * n
        keys: list[str | None] = [fallback[0]] * n
        how = [fallback[1]] * n
        if self.mode == "none":
            return SegmentAdaptation(speakers, [None] * n, [""] * n, None)
        local: dict[str, np.ndarray] = {}  # the file's own groups: rows of its pieces
        own = self.min_segments
        voiced = segs.voiced
        names = np.asarray(speakers, dtype=object)
        if own is not None and voiced.sum() >= own:
            local["file"] = voiced
        for name in dict.fromkeys(speakers):
            if not name:
                continue
            mine = names == name
            key = self._speaker_key(label.corpus, name)
            if self._usable(key):
                rule = "speaker"
            elif self.mode == "speaker" and (voiced & mine).sum() >= self.min_files:
                key, rule = f"file-speaker:{name}", "file-speaker"
                local[key] = voiced & mine
            else:
                continue
            for k in np.flatnonzero(mine):
                keys[k], how[k] = key, rule
        if "file" in local:
            for k in range(n):
                if how[k] not in ("speaker", "file-speaker"):
                    keys[k], how[k] = "file", "file"
        stats = self._with_local(segs.vectors, local, keys)
        return SegmentAdaptation(speakers, keys, how, stats)

    def _with_local(self, X: np.ndarray, local: dict[str, np.ndarray], keys: Sequence[str | None]) -> GroupStats:
        """The job's statistics of the groups ``keys`` name, and the file's own groups measured on ``X``."""
        job = self.stats or GroupStats({}, {}, {})
        used = {k for k in keys if k is not None and k in job.mean}
        mean = {k: job.mean[k] for k in used}
        std = {k: job.std[k] for k in used}
        count = {k: job.count[k] for k in used}
        for key, rows in local.items():
            block = X[rows].astype(np.float64)
            sd = block.std(axis=0)
            mean[key], std[key], count[key] = block.mean(axis=0), np.where(sd > 1e-12, sd, 1.0), len(block)
        return GroupStats(mean, std, count)
