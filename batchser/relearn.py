"""A labelling job that learns from a person's answers (``--reviewed FILE``).

Between measuring its normalisation groups and labelling, the job passes once
more over its files, picks out those a person answered (by report path; an
answer given for other bytes than the file holds now is set aside as stale),
and refits the model on its own training rows plus those files
(:func:`batchser.model.learn.learn`), standardised as this job standardises
them. Every file is then labelled by the refitted model from the cache,
nothing decoded again; a file a person answered keeps the person's answer.

What the answers say of the labels before and after learning is estimated
from them (:func:`batchser.model.learn.estimate`): from the review sample
(``review/sample.csv`` beside the answers), drawn at random within each of the
model's labels, each label weighted by its share of the archive; from any other
CSV, as a plain proportion, marked as not a random sample.
"""

from __future__ import annotations

import dataclasses
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
from batchser.model.learn import AFTER_WIDEN, REVIEW_WEIGHT, Rows, estimate, learn
from batchser.model.store import loaded_digest
from batchser.predict import FileOutcome, JobAdaptation
from batchser.report import read_csv_report
from batchser.review import NONE, SKIP, Answer, read_sample

__all__ = ["ReviewedFiles", "relearn"]

log = logging.getLogger(__name__)


class ReviewedFiles:
    """The answered files of a job, gathered chunk by chunk: their vectors, groups and answers."""

    def __init__(self, answers: dict[str, Answer], *, root: Path, groups: JobAdaptation) -> None:
        self.answers = answers
        self.prefix = os.path.join(root, "")
        self.groups = groups
        self.paths: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.keys: list[str | None] = []
        self.stale: list[str] = []

    def observe(self, start: int, outcomes: Sequence[FileOutcome], labels: Sequence[Label]) -> None:
        wanted = {}
        for j, o in enumerate(outcomes):
            if o.ok and (path := display_path(o.source, self.prefix)) in self.answers:
                wanted[j] = path
        if not wanted:
            return
        keys = self.groups.keys_for(start, outcomes, labels).keys
        for j, path in wanted.items():
            given = self.answers[path].content_hash
            if given and given != outcomes[j].content_hash:
                self.stale.append(path)  # answered for other bytes: the file changed since
                continue
            self.paths.append(path)
            self.vectors.append(np.asarray(outcomes[j].record.vector, dtype=np.float64))  # type: ignore[union-attr]
            self.keys.append(keys[j])

    def rows(self) -> Rows:
        X = np.stack(self.vectors) if self.vectors else np.empty((0, 0))
        stats = self.groups.stats
        if stats is None or not len(X):
            return Rows(X, X.copy(), np.zeros(len(X), dtype=bool))
        Xn, covered = stats.transform(X, self.keys)
        return Rows(X, Xn, covered)


def relearn(
    model: TrainedModel, answers_file: Path, reviewed: ReviewedFiles
) -> tuple[TrainedModel, dict[str, Any], dict[str, str]]:
    """The refitted model, what the answers say (for ``summary.json``), and path -> the answer that wins.

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
    wins = {p: a.label for p, a in reviewed.answers.items() if a.label != SKIP}
    used = [i for i, p in enumerate(reviewed.paths) if reviewed.answers[p].label in classes]
    info: dict[str, Any] = {
        "answers_file": str(answers_file),
        "answers": len(reviewed.answers),
        "matched": len(reviewed.paths),
        "learned_from": len(used),
        "none_of_these": sum(reviewed.answers[p].label == NONE for p in reviewed.paths),
        "skipped": sum(a.label == SKIP for a in reviewed.answers.values()),
        "stale": reviewed.stale[:100],
        "unmatched": len(reviewed.answers) - len(reviewed.paths) - len(reviewed.stale),
        "weight": REVIEW_WEIGHT,
    }
    unknown = sorted({a.label for a in reviewed.answers.values()} - {*classes, NONE, SKIP})
    if unknown:
        info["unknown_labels"] = unknown  # counted, named, never learned from
    if len(used) < 2:
        log.warning("%s: %d answers among the model's emotions; nothing to learn from", answers_file, len(used))
        return model, info, wins
    rows = reviewed.rows()
    train = read_training(model.path)
    base = train.rows()
    idx = np.array(used, dtype=np.intp)
    y_rev = np.array([reviewed.answers[reviewed.paths[i]].label for i in used])
    learned = learn(
        base,
        train.y,
        rows.take(idx),
        y_rev,
        classes=classes,
        norm=model.speaker_pipeline is not None,
        C=float(model.meta.params.get("C", 0.01)),
        random_state=int(model.meta.params.get("random_state", 0)),
    )
    before_proba, _ = model.predict_proba_by_speaker(rows.X, reviewed.keys, reviewed.groups.stats)
    info["temperature"] = learned.temperature
    info |= _estimates(
        answers_file,
        [reviewed.paths[i] for i in used],
        y_rev,
        np.asarray(classes)[before_proba[idx].argmax(axis=1)],
        np.asarray(classes)[learned.oof_proba.argmax(axis=1)],
        classes,
    )
    new = dataclasses.replace(
        model,
        pipeline=learned.plain,
        speaker_pipeline=learned.norm,
        loaded_sha256=loaded_digest(learned.plain, learned.norm),
    )
    log.info("learned from %d answers: %s -> %s", len(used), model.id, new.id)
    return new, info, wins


def _sample_of(answers_file: Path) -> pd.DataFrame | None:
    """The review sample the answers belong to: ``review/sample.csv`` beside a review's answers, or the
    answers file itself when it is a filled-in ``batchser review --list`` (it has the sample's columns)."""
    try:
        own = pd.read_csv(answers_file, nrows=0).columns
    except (OSError, ValueError):
        return None
    if {"model_label", "part", "stratum_size"} <= set(own):
        return read_csv_report(answers_file)
    return read_sample(answers_file.parent.parent) if answers_file.parent.name == "review" else None


def _estimates(
    answers_file: Path,
    paths: list[str],
    answers: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    classes: list[str],
) -> dict[str, Any]:
    """Accuracy and UAR before and after learning, from the random sample when there is one."""
    sample = _sample_of(answers_file)
    if sample is not None and len(sample):
        drawn = sample.set_index("path")
        rand = [i for i, p in enumerate(paths) if p in drawn.index and drawn.at[p, "part"] == "random"]
        if rand:
            # The labels the reports showed when the sample was drawn: the strata, and what "before" scores.
            strata = np.array([str(drawn.at[paths[i], "model_label"]) for i in rand])
            sizes = {str(k): int(v) for k, v in drawn.groupby("model_label")["stratum_size"].first().items()}
            sel = np.array(rand, dtype=np.intp)
            return {
                "random_sample": True,
                "before": estimate(strata, answers[sel], strata, sizes, classes=classes),
                "after": estimate(after[sel], answers[sel], strata, sizes, classes=classes, widen=AFTER_WIDEN),
            }
    one = ["all"] * len(paths)
    return {
        "random_sample": False,  # answers from elsewhere: not known to be a random sample of the archive
        "before": estimate(before, answers, one, {"all": len(paths)}, classes=classes),
        "after": estimate(after, answers, one, {"all": len(paths)}, classes=classes, widen=AFTER_WIDEN),
    }
