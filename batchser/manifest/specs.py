"""The manifest's parts: typed, strict records for inputs, labels, audio, engine, model, segments and output.

Each field says what it means and what it defaults to; an unknown key or a value out of range fails with the
field named (:class:`ManifestError`). :mod:`batchser.manifest.core` puts them together.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batchser.recipe import SHIPPED, Calibration, Classifier, Normalize
from batchser.storage.urls import is_url, url_problem

# A manifest is a few hundred bytes; anything larger is a mistake or an attack.
MAX_MANIFEST_BYTES = 1 << 20

_TURN_PREFIXES = ("rttm:", "textgrid:", "eaf:")  # the formats batchser.speakers reads
RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


class ManifestError(ValueError):
    """A manifest that cannot be run. ``str(err)`` names each field and the fix."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid manifest {source}:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSpec(_Strict):
    """Where a corpus keeps its labels: a pattern over file paths, or a CSV/TSV table.

    ``pattern`` is searched (``re.search``) in each file's path relative to
    the input, ``/``-separated, so it can read folder names as well as file
    names; its named groups ``emotion`` and ``speaker`` (at least one of the
    two) give the labels: a pattern with only ``speaker`` names the speakers
    of an unlabelled archive. ``table`` names a CSV or TSV file with one row
    per file (a table without emotions, ``path,speaker``, names speakers only).
    ``map`` renames the corpus's emotion names to the job's (``a: angry``);
    names it does not list are kept as they are, and files whose emotion is
    not in ``emotions`` are not trained on.
    """

    pattern: str | None = None
    table: str | None = None
    path_column: str = "path"
    emotion_column: str = "label"
    speaker_column: str | None = None
    map: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_source(self) -> LabelSpec:
        if (self.pattern is None) == (self.table is None):
            raise ValueError(
                "give exactly one of pattern (a regular expression over file paths) or table (a CSV/TSV file)"
            )
        if self.pattern is not None:
            try:
                rx = re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
            if "emotion" not in rx.groupindex and "speaker" not in rx.groupindex:
                raise ValueError(
                    f"pattern {self.pattern!r} needs a named group (?P<emotion>...) or (?P<speaker>...), or both"
                )
            unknown = sorted(set(rx.groupindex) - {"emotion", "speaker"})
            if unknown:
                raise ValueError(f"pattern groups {unknown} mean nothing here; use emotion and speaker")
        return self


def corpus_name(path: str) -> str:
    """The default corpus name of an input: its last path component without glob or extension."""
    parts = [p for p in re.split(r"[\\/]", path) if p and not any(c in p for c in "*?[") and p not in (".", "..")]
    stem = parts[-1] if parts else "input"
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)] or "input"
    return stem.split(".")[0] or stem


class InputSpec(_Strict):
    """One input: a directory (searched recursively), a file, or a glob pattern."""

    path: str
    labels: str | LabelSpec = Field(
        default="none",
        description="none | ravdess | csv:<file with path,label columns> | {pattern: ..., map: ...} | {table: ...}",
    )
    # Who speaks, for model.normalize: speaker. "labels": the label source's
    # (RAVDESS actor, a CSV's speaker column, a pattern's speaker group); "folder": the file's folder.
    speaker: Literal["labels", "folder"] = "labels"
    # Which corpus (recording conditions, language) the files come from: reports
    # carry it and leave-one-corpus-out evaluation holds each one out in turn.
    # Default: the input path's last component.
    corpus: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")] | None = None
    # Who speaks when in each recording: speaker turns from RTTM (pyannote, whisperX, NeMo), Praat
    # TextGrid or ELAN files: a file or a folder of them, optionally prefixed with the format
    # (rttm:turns/). A recording is matched by its path below the input, or its name, without extension.
    speakers: str | None = None
    # Whether speaker ids can be trusted to normalise by (false for a corpus
    # where each speaker shows one emotion: their statistics would hold it).
    speaker_normalization: bool = True
    # Where the files come from and under which terms (goes into the model card).
    licence: str | None = None
    # Archive members larger than this get an error row instead of being read
    # (a zip bomb, or hours of audio better kept as a plain file). Members over
    # 64 MiB are decoded from a temporary file, so memory does not grow with it.
    max_member_mb: float = Field(default=1024, gt=0, le=1 << 20)
    # Archive members over 16 MiB read more than this many times larger than
    # they are packed get an error row: audio never compresses so far, so such
    # a member is mostly silence (a zip bomb would cost minutes of decoding).
    max_member_ratio: float = Field(default=100.0, ge=1)

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: str) -> str:
        if is_url(v) and (problem := url_problem(v)):
            raise ValueError(problem)
        return v

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, v: str | LabelSpec) -> str | LabelSpec:
        table = v.table if isinstance(v, LabelSpec) else (v[4:] if v.startswith("csv:") else None)
        if table and is_url(table) and (problem := url_problem(table)):
            raise ValueError(problem)
        if isinstance(v, LabelSpec):
            return v
        if v in ("none", "ravdess") or (v.startswith("csv:") and len(v) > 4):
            return v
        raise ValueError(
            f"{v!r} is not a label source; use none, ravdess, csv:<path to a CSV with path,label columns>, "
            "or a mapping with pattern or table"
        )

    @field_validator("speakers")
    @classmethod
    def _check_speakers(cls, v: str | None) -> str | None:
        path = v.split(":", 1)[1] if v is not None and v.lower().startswith(_TURN_PREFIXES) else v
        if path is not None and not path.strip():
            raise ValueError(
                "speakers names a file or folder of speaker turns: rttm:<path>, textgrid:<path>, eaf:<path> or <path>"
            )
        return v

    @property
    def corpus_name(self) -> str:
        return self.corpus or corpus_name(self.path)

    @property
    def has_labels(self) -> bool:
        return self.labels != "none"

    @property
    def label_file(self) -> str | None:
        """The label table this input reads, as written in the manifest."""
        if isinstance(self.labels, LabelSpec):
            return self.labels.table
        return self.labels[4:] if self.labels.startswith("csv:") else None


class AudioSpec(_Strict):
    sample_rate: Annotated[int, Field(ge=4000, le=192000)] = SHIPPED.sample_rate


class EngineSpec(_Strict):
    backend: Literal["loky", "threading", "sequential", "dask"] = "loky"
    n_jobs: int = -1
    # Files per joblib task; None picks a size that keeps every worker busy
    # while amortising per-task overhead.
    batch_size: Annotated[int, Field(ge=1)] | None = None
    # Dask only: "local" starts a LocalCluster, otherwise tcp://host:port.
    scheduler: str | None = None
    # Dask only: how long to wait for a remote scheduler before the job fails (a cluster still starting wants more).
    connect_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0

    @field_validator("n_jobs")
    @classmethod
    def _check_n_jobs(cls, v: int) -> int:
        if v == 0:
            raise ValueError("n_jobs=0 runs nothing; use -1 for all cores, or a positive count")
        cores = os.cpu_count() or 1
        if not -cores <= v <= 4 * cores:
            raise ValueError(
                f"n_jobs={v} is outside [-{cores}, {4 * cores}] for this machine's {cores} cores; use -1 for all"
            )
        return v


class MLPSpec(_Strict):
    """MLPClassifier parameters; the defaults are the librosa tutorial recipe's (checked here as scikit-learn would)."""

    alpha: Annotated[float, Field(ge=0)] = 0.01
    batch_size: Annotated[int, Field(ge=1)] = 256
    epsilon: Annotated[float, Field(gt=0)] = 1e-8
    hidden_layer_sizes: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1)] = (300,)
    learning_rate: Literal["constant", "invscaling", "adaptive"] = "adaptive"
    max_iter: Annotated[int, Field(ge=1)] = 500


class ModelSpec(_Strict):
    # None: the shipped model (package data) to label with; a train job must name its file.
    path: str | None = None
    train: bool = False
    random_state: int = SHIPPED.random_state
    mlp: MLPSpec = MLPSpec()
    # Actor-wise evaluation: number of folds of GroupKFold over speakers.
    cv_folds: Annotated[int, Field(ge=2, le=24)] = 4
    # The defaults of the training settings are the shipped model's recipe
    # (batchser.recipe), which scored best leave-one-corpus-out (docs/accuracy.md).
    # mlp: the librosa tutorial recipe's MLPClassifier (model.mlp); logistic:
    # LogisticRegression(C), which transfers better to corpora it never heard.
    classifier: Classifier = SHIPPED.classifier
    C: Annotated[float, Field(gt=0)] = SHIPPED.C
    # Probability calibration fitted on held-out speakers (held-out corpora when
    # there are 3+); "temperature" keeps every label and only rescales confidence.
    calibration: Calibration = SHIPPED.calibration
    # Files whose top probability is below this are labelled "uncertain".
    min_confidence: Annotated[float, Field(gt=0, le=1)] | None = None
    # "speaker": standardise features over each speaker's own recordings
    # (batchser.model.adapt), else over each corpus; files of speakers with fewer
    # than min_speaker_files recordings in the job use a second network trained
    # without it. Left at its default, a job with fewer than two such groups
    # trains the plain network alone (and says so); asked for, it is an error.
    normalize: Normalize = SHIPPED.normalize
    min_speaker_files: Annotated[int, Field(ge=2)] = SHIPPED.min_speaker_files
    # A long recording with at least this many speech segments is standardised over its own speech
    # before any group of files; null: never (it then joins its input's groups as a short file does).
    # (Each speaker of its turns with min_speaker_files segments is standardised over their own first.)
    min_file_segments: Annotated[int, Field(ge=2)] | None = 20
    # When labelling with a normalising model, whose statistics each file is
    # standardised by (batchser.model.adapt): speaker (falls back to corpus),
    # corpus (the input's files in the job), cluster (pseudo-speakers), none.
    adapt: Literal["speaker", "corpus", "cluster", "none"] = "speaker"
    # A person's answers to learn from before labelling (`batchser review`'s
    # review/answers.csv, or any CSV with path and label columns; paths as the
    # reports write them): the model is refitted on its training rows plus
    # the answered files, and an answered file keeps the person's answer.
    reviewed: str | None = None
    # Answers whose label is none of the model's emotions, none or skip stop the job (exit 2) unless
    # set aside with this (counted and named in summary.json, never a label).
    ignore_unknown_answers: bool = False
    # Arousal and valence (batchser.model.dimensions): a train job also fits their networks on every
    # file whose emotion the circumplex table places, and with 2+ corpora scores them leave one corpus
    # out (nested, for their temperatures: the larger part of a pooled train job's fits). false: none.
    dimensions: bool = True
    # Adaptation modes scored leave-one-corpus-out in a train job with 2+ corpora.
    evaluate_modes: Annotated[list[Literal["none", "corpus", "cluster", "speaker"]], Field(min_length=1)] = [
        "none",
        "corpus",
        "cluster",
        "speaker",
    ]


class SegmentsSpec(_Strict):
    """Long recordings: files over ``over_s`` are labelled speech segment by speech segment (or window by window)."""

    over_s: Annotated[float, Field(gt=0)] = 10.0
    method: Literal["speech", "windows"] = "speech"
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    min_speech_s: Annotated[float, Field(ge=0.1)] = 0.25
    min_silence_s: Annotated[float, Field(ge=0.05)] = 0.3
    max_segment_s: Annotated[float, Field(ge=1)] = 8.0
    pad_s: Annotated[float, Field(ge=0)] = 0.1
    gate_db: Annotated[float, Field(le=0)] = -55.0
    short_files: bool = False
    window_s: Annotated[float, Field(ge=0.25)] = 4.0
    # At least one 10 ms analysis hop: a smaller one rounds to 0 samples and never advances.
    hop_s: Annotated[float, Field(ge=0.01)] = 2.0
    voiced_db: Annotated[float, Field(le=0)] = -45.0
    voiced_fraction: Annotated[float, Field(ge=0, le=1)] = 0.2

    @model_validator(mode="after")
    def _order(self) -> SegmentsSpec:
        if 2 * self.pad_s > self.min_silence_s:
            raise ValueError(
                f"need 2 * pad_s <= min_silence_s (padding must not join two segments), got pad_s {self.pad_s} "
                f"and min_silence_s {self.min_silence_s}; for example pad_s: 0.1, min_silence_s: 0.3"
            )
        if not self.hop_s <= self.window_s <= self.over_s:
            raise ValueError(
                f"need hop_s <= window_s <= over_s, got {self.hop_s}, {self.window_s}, {self.over_s}; "
                "for example over_s: 10, window_s: 4, hop_s: 2"
            )
        return self


class OutputSpec(_Strict):
    # None: result/reports/<the manifest file's name without .yaml> (or <name>), so a copied
    # manifest never writes over the reports of the one it was copied from.
    dir: str | None = None
    # Tables (csv, parquet) and, per long recording, exports to open in Praat, ELAN and Audacity
    # (textgrid, eaf, audacity: batchser.exports, written under output.dir/exports/<format>/).
    formats: list[Literal["csv", "parquet", "textgrid", "eaf", "audacity"]] = ["csv", "parquet"]
    # report.html: a page of charts and tables a person opens first (batchser report re-renders it).
    page: bool = True

    @field_validator("formats")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not {"csv", "parquet"} & set(v):
            raise ValueError(
                "at least one table format is needed, csv or parquet (the exports textgrid, eaf and audacity "
                "hold only long recordings' segments); for example csv, parquet, textgrid"
            )
        return list(dict.fromkeys(v))

    @property
    def tables(self) -> list[str]:
        """The table formats among :attr:`formats` (annotations.*, segments.*)."""
        return [f for f in self.formats if f in ("csv", "parquet")]
