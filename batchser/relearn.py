"""A labelling job that learns from a person's answers (``--reviewed FILE``).

The answers are read and checked before any work (:func:`load_answers`: an
unknown label stops the job, exit 2). Between measuring its normalisation
groups and labelling, the job passes once more over its files and finds the
answered ones (:class:`ReviewedFiles`): by content hash first (the answers
file has it), else by path as written relative to the answers file's folder,
the job's root or the reviewed job's root; an answer found by path for other
bytes than the file holds now is stale and never applied. Answers that match
no file at all stop the job (exit 2) before any report is replaced.

The model is then refitted on its own training rows plus one row per
answered content (copies of the same bytes are one unit: one fold, one
weight; :func:`batchser.model.learn.learn`), and every file is labelled by
the refitted model from the cache, nothing decoded again; a file a person
answered keeps the person's answer.

What the answers say of the labels before and after learning is estimated
by :func:`batchser.review.estimate` from the review's random sample
(``review/sample.csv`` beside the answers, or a filled-in ``--list``), each
label weighted by its share of the archive, "none of these" counted as a
wrong label; answers that are no random sample give plain rates over the
answered files, without an interval.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchser.hashing import display_path
from batchser.labels import Label
from batchser.model import TrainedModel, read_training
from batchser.model.base import ModelError
from batchser.model.learn import AFTER_WIDEN, REVIEW_WEIGHT, Rows, learn
from batchser.model.store import loaded_digest
from batchser.predict import FileOutcome, JobAdaptation
from batchser.review import (
    DIMENSION_ANSWERS,
    NONE,
    SKIP,
    Answer,
    Answers,
    AnswersError,
    estimate,
    plain_rates,
    read_answers,
    read_sample,
)
from batchser.review.sample import SAMPLE_COLUMNS, SampleError

__all__ = ["ReviewedFiles", "load_answers", "relearn"]

log = logging.getLogger(__name__)

_KEPT = "Nothing was labelled and the reports are left as they were"
_NEARBY = 2000  # report paths kept to suggest the closest one to an answer that matches none


def load_answers(path: Path, classes: Sequence[str], *, ignore_unknown: bool = False) -> Answers:
    """The answers of ``path``, checked before any work.

    Raises
    ------
    AnswersError
        Not readable as answers (encoding, NUL bytes, columns), or labels that
        are none of ``classes``, none or skip (unless ``ignore_unknown``).
    """
    try:
        answers = read_answers(path, classes)
    except FileNotFoundError:
        raise AnswersError(f"{path} does not exist (batchser review writes review/answers.csv)") from None
    except IsADirectoryError:
        raise AnswersError(f"{path} is a folder; name the answers file in it (review/answers.csv)") from None
    answers.check(classes, ignore_unknown=ignore_unknown)
    for line, why in answers.bad:  # a file in another encoding, or binary: say so, rather than learn from part of it
        if "UTF-8" in why or "NUL" in why:
            raise AnswersError(f"{path} line {line} {why}; nothing was run")
    if not answers.latest:
        raise AnswersError(f"{path} holds no answers (every label cell is empty); fill in the label column first")
    return answers


def _reviewed_root(answers_file: Path) -> Path | None:
    """The root the reviewed job's report paths are relative to, when ``answers_file`` is a review's own."""
    if answers_file.parent.name != "review":
        return None
    try:
        root = json.loads((answers_file.parent.parent / "summary.json").read_text(encoding="utf-8"))
        return Path(str(root["paths_relative_to"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


_Key = tuple[str, float | None, float | None]  # an answer's file and stretch (Answer.key)


def _places(path: str, bases: Sequence[Path]) -> list[str]:
    """Where an answer's ``path`` may name a file: the first base it exists under, so one answer is one file.

    When it exists under none (object storage, or files since moved), every base
    is kept and a content hash, where the answer has one, still decides.
    """
    if "://" in path:
        return [path]
    if os.path.isabs(path):
        return [os.path.normpath(path)]
    found = _under(path, bases)
    if "\\" in path and not (len(found) == 1 and _is_file(found[0])):  # a list filled in on Windows: clips\a.wav
        return _under(path.replace("\\", "/"), bases)
    return found


def _under(path: str, bases: Sequence[Path]) -> list[str]:
    places = [os.path.normpath(os.path.join(base, path)) for base in bases]
    for where in places:
        if _is_file(where):  # a folder of that name is no answer's file: the next base may hold it
            return [where]
    return list(dict.fromkeys(places))


def _is_file(where: str) -> bool:
    return os.path.lexists(where) and not os.path.isdir(where)


@dataclasses.dataclass
class _Unit:
    """One answered content: its answer, its vector raw and as the job standardised it, and where it was found."""

    answer: Answer
    path: str  # the first file found with this content, as the reports name it
    x: np.ndarray
    xn: np.ndarray
    covered: bool  # standardised (by the job's groups, or a long file's own)
    rule: str = ""  # by which rule (speaker, corpus, file…): arousal's and valence's temperatures depend on it


class ReviewedFiles:
    """The answered files of a job, found chunk by chunk (by content hash, else by path)."""

    def __init__(
        self,
        answers: Answers,
        *,
        answers_file: Path,
        root: Path,
        groups: JobAdaptation,
        classes: Sequence[str],
        inputs: Sequence[Path] = (),
    ) -> None:
        self.answers_file = answers_file
        self.root = root
        self.prefix = os.path.join(root, "")
        self.groups = groups
        self.classes = list(classes)
        self.given = list(answers.latest.values())
        self.set_aside = {k: len(v) for k, v in answers.unknown.items()}
        self.bad_rows = answers.bad
        # Answers about a whole file, and about stretches of a long one (speech segments), by content and path.
        self.by_hash: dict[str, Answer] = {}
        self.by_path: dict[str, Answer] = {}
        self.seg_by_hash: dict[str, list[Answer]] = {}
        self.seg_by_path: dict[str, list[Answer]] = {}
        # A review's own answers name paths relative to the reviewed job's root; a filled-in list, to its folder,
        # the job's root or one of its input folders (a name as it appears under the folder labelled).
        folders = [p if p.is_dir() else p.parent for p in inputs]
        bases = [b for b in (_reviewed_root(answers_file), answers_file.parent, root, *folders) if b is not None]
        # The latest wins: the file's order is the order answers were given (a row typed in by hand has no time).
        self.replaced: dict[_Key, list[_Key]] = {}  # an answer -> the earlier ones for its file, spelt otherwise
        for a in sorted(self.given, key=lambda a: a.line):
            whole = a.start_s is None
            if a.content_hash:
                if whole:
                    self._replace(self.by_hash.get(a.content_hash), a)
                    self.by_hash[a.content_hash] = a
                else:
                    self.seg_by_hash.setdefault(a.content_hash, []).append(a)
            for where in _places(a.path, bases):
                if whole:
                    self._replace(self.by_path.get(where), a)
                    self.by_path[where] = a
                else:
                    self.seg_by_path.setdefault(where, []).append(a)
        self.units: dict[str, _Unit] = {}  # content hash (and stretch, for a segment) -> the answered unit
        self.wins: dict[str, str] = {}  # report path -> the answer it shows
        self.segment_wins: dict[str, list[tuple[float, float, str]]] = {}  # report path -> answered stretches
        self.found: set[tuple[str, float | None, float | None]] = set()  # answers that name a file of the job
        self.applied: set[tuple[str, float | None, float | None]] = set()  # and are not stale
        self.stale: list[str] = []
        self.no_stretch: dict[tuple[str, float | None, float | None], str] = {}  # answer -> its file, stretch unknown
        self._names = {os.path.basename(a.path): a for a in self.given}
        self._near: dict[str, str] = {}  # an answer's file name -> a report path with that name
        self._some: list[str] = []

    def _replace(self, earlier: Answer | None, a: Answer) -> None:
        if earlier is not None and earlier.key != a.key:
            self.replaced.setdefault(a.key, []).append(earlier.key)

    def _found_with_replaced(self, key: _Key) -> None:
        """``key`` found, and the earlier answers it replaced (answered again later: replaced, not unmatched)."""
        todo = [key]
        while todo:
            for earlier in self.replaced.get(todo.pop(), ()):
                if earlier not in self.found:
                    self.found.add(earlier)
                    todo.append(earlier)

    def observe(self, start: int, outcomes: Sequence[FileOutcome], labels: Sequence[Label]) -> None:
        found: dict[int, Answer] = {}
        segs_found: dict[int, list[tuple[int, Answer]]] = {}
        for j, o in enumerate(outcomes):
            if not o.ok:
                continue
            shown = display_path(o.source, self.prefix)
            if o.record is not None and o.record.segments is not None and (self.seg_by_hash or self.seg_by_path):
                segs_found[j] = self._segments(o, shown)
            a = self.by_hash.get(o.content_hash)
            named = self.by_path.get(display_path(o.source, "")) if self.by_path else None
            if (
                named is not None
                and a is not None
                and named.line > a.line
                and named.content_hash in ("", a.content_hash)
            ):
                a = named  # a later row naming the file (typed in by hand, without its hash) wins
            if a is None:
                a = named
                if a is not None and a.content_hash and a.content_hash != o.content_hash:
                    self.stale.append(shown)  # answered for other bytes: the file changed since
                    self.found.add(a.key)
                    continue
            if a is None:
                if len(self._some) < _NEARBY:
                    self._some.append(shown)
                name = os.path.basename(shown)
                if name in self._names:
                    self._near.setdefault(name, shown)
                continue
            self.found.add(a.key)
            self._found_with_replaced(a.key)
            self.applied.add(a.key)
            if a.label != SKIP:
                if a.label not in DIMENSION_ANSWERS:  # a side of arousal or valence is no label
                    self.wins[shown] = a.label
                if o.content_hash not in self.units:
                    found[j] = a
        segs_found = {j: got for j, got in segs_found.items() if got}
        if not found and not segs_found:
            return
        adapted = self.groups.keys_for(start, outcomes, labels)
        for j, a in found.items():
            o = outcomes[j]
            x = np.asarray(o.record.vector, dtype=np.float64)[None, :]  # type: ignore[union-attr]
            xn, covered = _standardised(x, [adapted.keys[j]], adapted.stats)
            self.units[o.content_hash] = _Unit(
                a, display_path(o.source, self.prefix), x[0], xn[0], bool(covered[0]), adapted.how[j]
            )
        for j, got in segs_found.items():
            o = outcomes[j]
            segs = o.record.segments  # type: ignore[union-attr]
            # Each segment as labelling standardises it: its speaker's group, the recording's own speech, or the file's.
            pieces = self.groups.segment_keys(o, labels[j], (adapted.keys[j], adapted.how[j]))
            X = np.asarray(segs.vectors, dtype=np.float64)  # type: ignore[union-attr]
            Xn, covered = _standardised(X, pieces.keys, pieces.stats)
            for k, a in got:
                unit = _unit(o.content_hash, a.start_s, a.end_s)
                if a.label != SKIP and unit not in self.units:
                    self.units[unit] = _Unit(
                        a, display_path(o.source, self.prefix), X[k], Xn[k], bool(covered[k]), pieces.how[k]
                    )

    def _segments(self, o: FileOutcome, shown: str) -> list[tuple[int, Answer]]:
        """The speech segments of a long file that answers are about: (segment index, answer)."""
        by_hash = self.seg_by_hash.get(o.content_hash, [])
        by_path = [a for a in self.seg_by_path.get(display_path(o.source, ""), []) if a not in by_hash]
        segs = o.record.segments  # type: ignore[union-attr]
        out = []
        taken: set[int] = set()
        # The latest row first: a stretch answered again in a row that spells its file otherwise takes that answer.
        for a in sorted([*by_hash, *by_path], key=lambda a: -a.line):
            # Times as the reports and the answers file write them: to the millisecond.
            k = np.flatnonzero((np.abs(segs.start_s - a.start_s) < 2e-3) & (np.abs(segs.end_s - a.end_s) < 2e-3))  # type: ignore[union-attr, operator]
            if not len(k):  # a stretch this file's segments do not have (segmented otherwise): left unmatched
                self.no_stretch.setdefault(a.key, shown)
                continue
            self.found.add(a.key)
            if a in by_path and a.content_hash and a.content_hash != o.content_hash:
                self.stale.append(f"{shown} {a.start_s:.3f}-{a.end_s:.3f} s")
                continue
            if int(k[0]) in taken:
                continue
            taken.add(int(k[0]))
            self.applied.add(a.key)
            out.append((int(k[0]), a))
            if a.label != SKIP and a.label not in DIMENSION_ANSWERS:
                self.segment_wins.setdefault(shown, []).append((float(a.start_s), float(a.end_s), a.label))  # type: ignore[arg-type]
        return out

    def check(self) -> None:
        """Stop the job when its answers match none of its files (before any report is replaced).

        Raises
        ------
        AnswersError
            Naming one unmatched answer and the report path closest to it.
        """
        stretches = [a for a in self.unmatched if a.key in self.no_stretch]
        if stretches:
            a = stretches[0]
            words = (
                f"{len(stretches)} answers name a stretch that their recording's speech segments do not have (e.g. "
                f"{a.start_s:.3f}-{a.end_s:.3f} s of {self.no_stretch[a.key]!r}): the recording was cut into segments "
                "otherwise than when it was reviewed (other speech or speaker-turn settings)"
            )
            if not self.applied and len(stretches) == len(self.unmatched):
                raise AnswersError(f"{self.answers_file}: {words}; run with the reviewed job's settings. {_KEPT}")
            log.warning("%s: %s; those answers were not used", self.answers_file, words)
        if self.found and not self.applied and self.stale:
            raise AnswersError(
                f"every answer in {self.answers_file} that names a file of this job was given for other bytes: "
                f"{len(self.stale)} files changed since they were answered (e.g. {self.stale[0]!r}), so none can be "
                f"learned from. Review the changed files again. {_KEPT}"
            )
        others = [a for a in self.unmatched if a.key not in self.no_stretch]
        if self.found or not self.given:
            if others:
                a = others[0]
                log.warning(
                    "%s: %d answers match no file of this job (e.g. %r%s)",
                    self.answers_file,
                    len(others),
                    a.path,
                    self._closest(a),
                )
            return
        a = self.given[0]
        raise AnswersError(
            f"none of the {len(self.given)} answers in {self.answers_file} matches a file of this job: {a.path!r} is "
            f"not one of its files{self._closest(a)}. Answers match a file by content hash (the content_hash column "
            f"of batchser review's files), else by path relative to {self.answers_file.parent}, to the job's root "
            f"{self.root} or to one of its input folders. Run the job on the recordings that were reviewed (from the "
            f"folder the review's job ran in, for paths without hashes). {_KEPT}"
        )

    def _closest(self, a: Answer) -> str:
        near = self._near.get(os.path.basename(a.path))
        if near is None:
            got = difflib.get_close_matches(a.path, self._some, n=1, cutoff=0.5)
            near = got[0] if got else None
        return f" (the closest report path: {near!r})" if near else ""

    @property
    def unmatched(self) -> list[Answer]:
        return [a for a in self.given if a.key not in self.found]

    def rows(self, hashes: Sequence[str]) -> Rows:
        """The units' rows as both networks see them: raw, and standardised as this job standardises them."""
        if not hashes:
            return Rows(np.empty((0, 0)), np.empty((0, 0)), np.zeros(0, dtype=bool))
        units = [self.units[h] for h in hashes]
        return Rows(
            np.stack([u.x for u in units]), np.stack([u.xn for u in units]), np.array([u.covered for u in units])
        )


def _standardised(X: np.ndarray, keys: Sequence[str | None], stats: Any) -> tuple[np.ndarray, np.ndarray]:
    """``X`` standardised within the groups ``keys`` name (where ``stats`` covers them), and which rows were."""
    if stats is None:
        return X.copy(), np.zeros(len(X), dtype=bool)
    return stats.transform(X, keys)


def relearn(model: TrainedModel, reviewed: ReviewedFiles) -> tuple[TrainedModel, dict[str, Any], dict[str, str]]:
    """The refitted model, what the answers say (for ``summary.json``), and report path -> the answer shown
    (the answers about speech segments: ``reviewed.segment_wins``).

    Raises
    ------
    ModelError
        A model that cannot be refitted (an MLP, or one that carries no training rows).
    """
    classes = list(model.meta.classes)
    if model.meta.params.get("classifier", "mlp") != "logistic":
        raise ModelError(
            f"model {model.path} is an MLP; learning from answers refits a logistic model (the shipped recipe, "
            "and the default of a train manifest)"
        )
    hashes = list(reviewed.units)
    labels = np.array([reviewed.units[h].answer.label for h in hashes], dtype=object)
    learned_idx = np.array([i for i, lab in enumerate(labels) if lab in classes], dtype=np.intp)
    named = np.array([lab not in DIMENSION_ANSWERS for lab in labels], dtype=bool)  # an emotion, or none of them
    info: dict[str, Any] = {
        "answers_file": str(reviewed.answers_file),
        "classes": classes,
        "answers": len(reviewed.given),
        "matched": len(reviewed.applied),
        "matched_files": len(reviewed.wins),
        "units": len(hashes),
        "segment_units": sum("@" in h for h in hashes),  # speech segments of long recordings, answered one by one
        "learned_from": len(learned_idx),
        "none_of_these": int(np.sum(labels == NONE)),
        "dimension_answers": int(np.sum(~named)),  # a side of arousal or valence, where no emotion was named
        "skipped": sum(a.label == SKIP for a in reviewed.given),
        "stale": reviewed.stale[:100],
        "n_stale": len(reviewed.stale),
        "unmatched": len(reviewed.unmatched),
        "unmatched_first": [a.path for a in reviewed.unmatched[:5]],
        "set_aside": reviewed.set_aside,  # labels none of the model's (--ignore-unknown-answers), rows each
        "bad_rows": [{"line": n, "why": why} for n, why in reviewed.bad_rows[:20]],
        "weight": REVIEW_WEIGHT,
    }
    rows = reviewed.rows(hashes)
    before = np.empty(0, dtype=object)
    proba_before = np.empty((0, len(classes)))
    if hashes:
        proba_before = model.predict_proba_standardised(rows.X, rows.Xn, rows.covered)
        before = np.asarray(classes, dtype=object)[proba_before.argmax(axis=1)]
    after = np.full(len(hashes), "", dtype=object)  # "none" answers: no prediction is right
    proba_after: np.ndarray | None = None
    new = model
    if len(learned_idx) >= 2:
        train = read_training(model.path)
        learned = learn(
            train.rows(),
            train.y,
            rows.take(learned_idx),
            labels[learned_idx].astype(str),
            classes=classes,
            norm=model.speaker_pipeline is not None,
            C=float(model.meta.params.get("C", 0.01)),
            random_state=int(model.meta.params.get("random_state", 0)),
        )
        after[learned_idx] = np.asarray(classes, dtype=object)[learned.oof_proba.argmax(axis=1)]
        # For arousal and valence after learning: learned units' out-of-fold probabilities, the refit's for the rest.
        proba_after = _refit_proba(learned, rows)
        proba_after[learned_idx] = learned.oof_proba
        info["temperature"] = learned.temperature
        new = dataclasses.replace(
            model,
            pipeline=learned.plain,
            speaker_pipeline=learned.norm,
            loaded_sha256=loaded_digest(learned.plain, learned.norm, model.dimensions),
        )
        log.info("learned from %d answers: %s -> %s", len(learned_idx), model.id, new.id)
    else:
        log.warning(
            "%s: %d answers name one of the model's emotions (%s); at least 2 are needed to learn from",
            reviewed.answers_file,
            len(learned_idx),
            ", ".join(classes),
        )
    sample = _sample_of(reviewed.answers_file)
    info |= _estimates(sample, hashes, labels, before, after, classes, named=named, learned=new is not model)
    if model.dimensions and hashes:
        dims_before = model.predict_dimensions_standardised(
            rows.X, rows.Xn, rows.covered, [reviewed.units[h].rule for h in hashes], proba_before
        )
        dims_after = (
            model.predict_dimensions_standardised(
                rows.X, rows.Xn, rows.covered, [reviewed.units[h].rule for h in hashes], proba_after
            )
            if proba_after is not None
            else None
        )
        info["dimensions"] = _dimension_estimates(sample, hashes, labels, dims_before, dims_after)
    return new, info, reviewed.wins


def _unit(content_hash: str, start: float | None, end: float | None) -> str:
    """A unit's key: its content, and for a speech segment its stretch as the sample and answers write it."""
    return content_hash if start is None or end is None or np.isnan(start) else f"{content_hash}@{start:.3f}-{end:.3f}"


def _refit_proba(learned: Any, rows: Rows) -> np.ndarray:
    """The refitted networks' probabilities of ``rows`` (standardised already), in the model's class order."""
    norm = rows.covered if learned.norm is not None else np.zeros(len(rows), dtype=bool)
    out = np.zeros((len(rows), len(learned.classes)))
    for net, mask, data in ((learned.plain, ~norm, rows.X), (learned.norm, norm, rows.Xn)):
        if mask.any():
            order = [list(net.classes_).index(c) for c in learned.classes]
            out[mask] = net.predict_proba(data[mask])[:, order]
    return out


def _sides(labels: np.ndarray, dim: str) -> np.ndarray:
    """Each answer's side on ``dim``: from a side answered, else from the emotion named; -1 for none."""
    from batchser.model.circumplex import sides

    out = sides(dim, [lab if lab not in DIMENSION_ANSWERS else "" for lab in labels]).astype(np.int64)
    for i, lab in enumerate(labels):
        if lab in DIMENSION_ANSWERS:
            d, side = DIMENSION_ANSWERS[lab]
            out[i] = side if d == dim else -1
    return out


def _dimension_estimates(
    sample: pd.DataFrame | None,
    hashes: list[str],
    labels: np.ndarray,
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray] | None,
) -> dict[str, Any]:
    """Per dimension, how often its side is right before and after learning, on the answers that give a side
    (an emotion with a side, or a side answered outright): the review's stratified estimate, else plain rates."""
    out: dict[str, Any] = {}
    for dim, p in before.items():
        truth = _sides(labels, dim)
        has = truth >= 0
        if not has.any():
            continue
        name = np.array(["low", "high"] if dim == "arousal" else ["negative", "positive"], dtype=object)
        answers = np.where(has, name[np.clip(truth, 0, 1)], "")
        before_side = name[(p >= 0.5).astype(int)]
        after_side = name[(after[dim] >= 0.5).astype(int)] if after else answers
        entry = _estimates(
            sample, hashes, answers, before_side, after_side, list(name), named=has, learned=after is not None,
            shown=False,
        )  # fmt: skip
        out[dim] = {"answers": int(has.sum()), **entry}
    return out


def _sample_of(answers_file: Path) -> pd.DataFrame | None:
    """The review sample the answers belong to: ``review/sample.csv`` beside a review's answers, or the
    answers file itself when it is a filled-in ``batchser review --list`` (it has the sample's columns)."""
    try:
        own = pd.read_csv(answers_file, nrows=0).columns
    except (OSError, ValueError):
        return None
    if {"model_label", "part", "stratum_size"} <= set(own):
        from batchser.report import read_csv_report

        df = read_csv_report(answers_file)
        for col in SAMPLE_COLUMNS:
            if col not in df.columns:
                df[col] = np.nan
        df["content_hash"] = df["content_hash"].fillna("").astype(str)
        return df
    if answers_file.parent.name != "review":
        return None
    try:
        return read_sample(answers_file.parent.parent)
    except SampleError as exc:
        log.warning("%s; the estimates treat the answers as no random sample", exc)
        return None


def _strata(sample: pd.DataFrame) -> dict[str, int]:
    """Every stratum's size as a ``--list`` CSV writes it on each row (``angry=93;sad=89``), when it does."""
    if "strata" not in sample.columns or not len(sample):
        return {}
    out: dict[str, int] = {}
    for part in str(sample["strata"].iloc[0]).split(";"):
        name, _, n = part.rpartition("=")
        if name and n.isdigit():
            out[name] = int(n)
    return out


def _estimates(
    sample: pd.DataFrame | None,
    hashes: list[str],
    answers: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    classes: list[str],
    *,
    named: np.ndarray,
    learned: bool,
    shown: bool = True,
) -> dict[str, Any]:
    """Accuracy, none share and UAR before and after learning, over the units ``named`` marks (their answer says
    what the estimate is about): from the random sample when there is one. ``shown``: the labels before
    learning are the ones the sample was drawn by (its strata), not ``before``."""
    at = {h: i for i, h in enumerate(hashes) if named[i]}
    if sample is not None and len(sample):
        units = [
            _unit(str(h), float(a), float(b))
            for h, a, b in zip(sample["content_hash"], sample["start_s"], sample["end_s"], strict=True)
        ]
        drawn = sample.assign(unit=units)
        drawn = drawn[(drawn["part"] == "random") & drawn["unit"].isin(at)].drop_duplicates("unit")
        if len(drawn):
            idx = np.array([at[u] for u in drawn["unit"]], dtype=np.intp)
            strata = drawn["model_label"].astype(str).to_numpy()  # the labels shown when the sample was drawn
            sizes = {str(k): int(v) for k, v in sample.groupby("model_label")["stratum_size"].first().items()}
            sizes |= _strata(sample)
            return {
                "random_sample": True,
                "outside_sample": int(named.sum()) - len(idx),
                "before": estimate(strata if shown else before[idx], answers[idx], strata, sizes, classes=classes),
                "after": estimate(after[idx], answers[idx], strata, sizes, classes=classes, widen=AFTER_WIDEN)
                if learned
                else None,
            }
    mine = np.flatnonzero(named)
    return {
        "random_sample": False,  # answers from elsewhere: not known to be a random sample of the archive
        "outside_sample": len(mine),
        "before": plain_rates(before[mine], answers[mine], classes=classes),
        "after": plain_rates(after[mine], answers[mine], classes=classes) if learned else None,
    }
