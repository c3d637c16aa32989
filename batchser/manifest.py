"""Job manifests: YAML, safe-loaded, validated into typed records before any work.

Every relative path in a manifest resolves against the manifest's ``root``,
which itself is relative to the folder holding the manifest file (default
``.``, that folder). The example jobs in ``jobs/`` set ``root: ..`` so that
their paths read from the project root, whatever the current directory is.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from batchser.features import FEATURE_DIMS, OPENSMILE_GROUPS, opensmile_version
from batchser.locations import default_cache_dir, default_model_path
from batchser.recipe import SHIPPED, Calibration, Classifier, Normalize
from batchser.storage.urls import is_url, shown_url, url_problem

__all__ = ["Manifest", "ManifestError", "load_manifest", "parse_manifest"]

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


class Manifest(_Strict):
    """A validated job. Paths are kept as written; use :meth:`resolve` for absolute ones."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    root: str = "."
    inputs: Annotated[list[InputSpec], Field(min_length=1)]
    # Both default to the model's own when a job labels with a trained model.
    emotions: Annotated[list[str], Field(min_length=2)]
    # Train jobs: the shipped model's groups (batchser.recipe); the librosa tutorial recipe's are [mfcc, chroma, mel].
    features: Annotated[list[str], Field(min_length=1)] = list(SHIPPED.features)
    # chroma's tuning in fractions of a bin: null estimates it per file (librosa, as the
    # tutorial does); a number (0.0: A440) pins it, which makes the librosa tutorial recipe's features 20 % faster.
    chroma_tuning: Annotated[float, Field(ge=-0.5, lt=0.5)] | None = None
    audio: AudioSpec = AudioSpec()
    # The feature cache; null: the per-user cache that `batchser annotate` and the
    # Python interface use too, so no file is analysed twice for the same features.
    cache: str | None = None
    engine: EngineSpec = EngineSpec()
    # Left out: label with the shipped model (every ModelSpec default).
    model: ModelSpec = ModelSpec()
    output: OutputSpec = OutputSpec()
    # null: every file is analysed whole, however long.
    segments: SegmentsSpec | None = SegmentsSpec()
    # Folder that `capture` records into; every run labels what is in it.
    # None: data/queue/<name>.
    queue: str | None = None
    # Fraction of files that may fail before the job exits 1 (after writing its
    # reports); None never fails on per-file errors.
    fail_threshold: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    # A run that finds no audio is an error (and leaves earlier reports alone);
    # true writes empty reports instead, for inputs that are empty on purpose.
    allow_empty: bool = False
    # A folder under an input that cannot be listed (permissions, a path over
    # the OS limit, an I/O error) gets an error row and makes the job exit 1
    # after writing its reports; true accepts such folders (the row stays).
    allow_unlistable: bool = False
    # Set by load_manifest: the folder the manifest file is in, and the file.
    base_dir: SkipJsonSchema[Annotated[Path, Field(exclude=True)]] = Path()
    manifest_file: SkipJsonSchema[Annotated[Path | None, Field(exclude=True)]] = None

    @field_validator("emotions")
    @classmethod
    def _check_emotions(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate emotions in {v}")
        if "uncertain" in v:
            raise ValueError("'uncertain' is reserved for files under model.min_confidence; rename that emotion")
        for e in v:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", e):
                raise ValueError(f"emotion {e!r} must be lower-case letters, digits or _ (it becomes a column p_{e})")
        return v

    @field_validator("features")
    @classmethod
    def _check_features(cls, v: list[str]) -> list[str]:
        for f in v:
            if f not in FEATURE_DIMS:
                hint = difflib.get_close_matches(f, FEATURE_DIMS, n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ValueError(f"unknown feature {f!r}{extra} Choose from {', '.join(FEATURE_DIMS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate features in {v}")
        return v

    @model_validator(mode="after")
    def _check_consistency(self) -> Manifest:
        if any(i.labels == "ravdess" for i in self.inputs):
            unknown = [e for e in self.emotions if e not in RAVDESS_EMOTIONS]
            if unknown:
                raise ValueError(
                    f"emotions {unknown} do not exist in RAVDESS labels; choose from {', '.join(RAVDESS_EMOTIONS)}"
                )
        if self.model.train and self.model.path is None:
            raise ValueError("model.train is true but model.path is missing; name the .skops file to write")
        if self.model.train and not any(i.has_labels for i in self.inputs):
            raise ValueError(
                "model.train is true but no input has labels; set labels: ravdess or csv:<file> on an input"
            )
        smile = [f for f in self.features if f in OPENSMILE_GROUPS]
        if smile and not opensmile_version():
            raise ValueError(
                f"features {smile} need the opensmile package; install it with pip install 'batchser[opensmile]'"
            )
        if self.chroma_tuning is not None and "chroma" not in self.features:
            raise ValueError("chroma_tuning is set but features has no chroma; remove chroma_tuning or add chroma")
        local = {"cache": self.cache, "output.dir": self.output.dir, "queue": self.queue,
                 "model.path": self.model.path, "model.reviewed": self.model.reviewed}  # fmt: skip
        for key, value in local.items():
            if value is not None and is_url(value):
                raise ValueError(
                    f"{key}: {shown_url(value)} is in object storage; inputs (and label tables) can be, but what a "
                    "job writes and its model are kept on this machine's disks: give a local path"
                )
        if self.engine.backend == "dask" and not self.engine.scheduler:
            raise ValueError("engine.backend dask needs engine.scheduler: local or tcp://host:port")
        if self.model.train and self.model.reviewed:
            raise ValueError(
                "model.reviewed is for labelling jobs (it refits a trained model on a person's answers); "
                "remove it, or set model.train: false and point model.path at the model to refit"
            )
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: str | Path | None = None) -> Manifest:
        """A manifest from a mapping (what the YAML would hold), validated as a file's is.

        Parameters
        ----------
        data : dict
        base_dir : path or None
            Where ``root`` is relative to; default the current folder.

        Raises
        ------
        ManifestError
        """
        return _validate(data, base_dir=Path(base_dir or Path.cwd()).resolve(), source="<dict>", manifest_file=None)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Manifest:
        """The manifest file at ``path`` (see :func:`load_manifest`)."""
        return load_manifest(path)

    # -- paths ---------------------------------------------------------------
    @property
    def root_dir(self) -> Path:
        return (self.base_dir / self.root).resolve()

    def resolve(self, path: str | Path) -> Path:
        """Absolute path for a manifest path (relative ones are taken from ``root``), links resolved.

        One rule for every path, relative or absolute, so that a folder reached
        through a symbolic link is the same folder wherever it is named.
        """
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.root_dir / p).resolve()

    def locate(self, path: str | Path) -> Path | str:
        """Where a manifest path points: a URL as written (object storage), else :meth:`resolve`."""
        return str(path) if is_url(path) else self.resolve(path)

    @property
    def cache_dir(self) -> Path:
        return default_cache_dir() if self.cache is None else self.resolve(self.cache)

    @property
    def output_dir(self) -> Path:
        if self.output.dir is not None:
            return self.resolve(self.output.dir)
        stem = self.manifest_file.stem if self.manifest_file is not None else self.name
        return self.resolve(f"result/reports/{stem}")

    def fingerprint(self) -> str:
        """What the reports are about: the set of inputs, resolved.

        A rerun with another model, labels or settings relabels the same files
        and replaces its own reports; reports of another fingerprint in
        ``output.dir`` (another set of inputs) are refused unless overwriting
        is asked for.
        """
        import hashlib

        what = "\n".join(sorted(shown_url(p) if is_url(p := str(self.locate(i.path))) else p for i in self.inputs))
        return hashlib.sha256(what.encode()).hexdigest()[:16]

    @property
    def model_path(self) -> Path:
        if self.model.path is None:
            return default_model_path()
        return self.resolve(self.model.path)

    @property
    def queue_dir(self) -> Path:
        return self.resolve(self.queue if self.queue is not None else f"data/queue/{self.name}")


# -- loading ------------------------------------------------------------------


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model whose fields live at ``loc`` (for did-you-mean hints)."""
    model: Any = Manifest
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        candidates = [ann, *args, *(a for arg in args for a in getattr(arg, "__args__", ()) or ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    where = _loc(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = [k for k in (parent.model_fields if parent else {}) if k not in _INTERNAL]
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"allowed keys here: {', '.join(known)}"
        return f"{where}: unknown key; {fix}"
    if kind == "missing":
        if where == "emotions":  # only a train job lacks a model to take them from
            return "emotions: required to train (the emotions to learn); see jobs/train-ravdess.yaml"
        return f"{where}: required field is missing; add it (see jobs/annotate.yaml for an example)"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg} (got {err.get('input')!r})" if kind != "value_error" else f"{where}: {msg}"


MAX_DEPTH = 32  # a manifest nests four levels; deep nesting only costs (the composer recurses)


def _reject_aliases(text: str, source: str) -> None:
    # yaml.safe_load builds shared references for aliases, so a "billion laughs"
    # document loads small but explodes when walked. Manifests never need them.
    # Nor deep nesting: 100,000 levels cost minutes of CPU and end in RecursionError.
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ManifestError(source, ["YAML aliases (*name) are not allowed in manifests; write values out"])
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ManifestError(
                        source, [f"nested more than {MAX_DEPTH} levels deep; a manifest needs four or five"]
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise ManifestError(source, [f"not valid YAML: {exc}"]) from None


_INTERNAL = ("base_dir", "manifest_file")  # set by the loader, never by the YAML


def parse_manifest(
    text: str, *, base_dir: Path, source: str = "<string>", manifest_file: Path | None = None
) -> Manifest:
    """Validate manifest ``text``.

    Parameters
    ----------
    text : str
        YAML document.
    base_dir : Path
        Folder that ``root`` is relative to (the manifest file's folder).
    source : str
        Name used in error messages.
    manifest_file : Path or None
        The file ``text`` came from; a job refuses to write over it.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        Listing every problem with its field and a fix.
    """
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise ManifestError(source, [f"manifest is larger than {MAX_MANIFEST_BYTES} bytes"])
    _reject_aliases(text, source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # e.g. a !!python/... tag: safe_load refuses to build it
        raise ManifestError(source, [f"not valid YAML for a manifest: {exc}"]) from None
    return _validate(data, base_dir=base_dir, source=source, manifest_file=manifest_file)


def _validate(data: Any, *, base_dir: Path, source: str, manifest_file: Path | None) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError(
            source,
            ["a manifest is a YAML mapping with keys name and inputs (and model, output …; see jobs/annotate.yaml)"],
        )
    for key in _INTERNAL:
        if key in data:
            raise ManifestError(source, [f"{key}: unknown key; to move where relative paths start, set root"])
    defaults, problem, mismatches = _from_model(data, base_dir=base_dir)
    try:
        manifest = Manifest.model_validate({**data, **defaults, "base_dir": base_dir, "manifest_file": manifest_file})
    except ValidationError as exc:
        errors = [_describe(e) for e in exc.errors()]
        if problem:  # why the model could not fill them in, instead of "required"
            errors = [problem if e.startswith("emotions: required") else e for e in errors]
        raise ManifestError(source, errors + mismatches) from None
    if mismatches:
        raise ManifestError(source, mismatches)
    return manifest


def _from_model(data: dict[str, Any], *, base_dir: Path) -> tuple[dict[str, Any], str, list[str]]:
    """What a labelling job takes from its model, and what it lists that the model cannot label with.

    ``emotions`` and ``features`` (with the sample rate and chroma tuning
    they were computed with) that the job leaves out are the model's.

    A job that labels with a trained model can only use its classes and
    features; making the user copy them invited mismatches, and a mismatch
    fails here, before any work, as every other manifest error does. A train
    job must say which emotions to learn.

    Returns
    -------
    defaults, problem, mismatches
        The values to fill in; why they could not be (``""`` when they could);
        a problem per listed field that is not the model's.
    """
    model = data.get("model", {})
    if not isinstance(model, dict) or model.get("train"):
        return {}, "", []
    missing = [k for k in ("emotions", "features") if k not in data]
    from batchser.model import ModelError, read_meta  # here: the model package is heavy to import

    where = model.get("path")
    try:
        if where is None:
            path = default_model_path()
        else:
            root = data.get("root", ".")
            path = (base_dir / (root if isinstance(root, str) else ".") / Path(str(where)).expanduser()).resolve()
        meta = read_meta(path)
    except (ModelError, OSError) as exc:
        if not missing:  # a model that cannot be read is model.path's problem, said when paths are checked
            return {}, "", []
        return (
            {},
            f"{', '.join(missing)}: not given, and the model cannot be read to take them from ({exc}); "
            "list them, or fix model.path",
            [],
        )
    taken = {"emotions": list(meta.classes), "features": list(meta.feature_spec["names"])}
    name = "the shipped model" if where is None else f"model {path.name}"
    mismatches = []
    emotions = data.get("emotions")
    if isinstance(emotions, list) and sorted(map(str, emotions)) != sorted(taken["emotions"]):
        mismatches.append(
            f"emotions: {', '.join(map(str, emotions))} are not the emotions {name} labels "
            f"({', '.join(taken['emotions'])}); leave emotions out (a labelling job takes the model's), "
            "or train a model of these emotions (model.train: true)"
        )
    features = data.get("features")
    if isinstance(features, list) and list(map(str, features)) != taken["features"]:
        mismatches.append(
            f"features: {', '.join(map(str, features))} are not the features {name} was trained on "
            f"({', '.join(taken['features'])}); leave features out (a labelling job takes the model's)"
        )
    rate = (data.get("audio") or {}).get("sample_rate") if isinstance(data.get("audio"), dict) else None
    if rate is not None and rate != meta.feature_spec.get("sample_rate"):
        mismatches.append(
            f"audio.sample_rate: {rate} Hz is not the rate {name} was trained at "
            f"({meta.feature_spec.get('sample_rate')} Hz); leave audio out (a labelling job takes the model's)"
        )
    defaults: dict[str, Any] = {k: taken[k] for k in missing}
    if "features" in missing:  # the model's features as it computed them
        if "chroma_tuning" not in data:
            defaults["chroma_tuning"] = meta.feature_spec.get("chroma_tuning")
        if "audio" not in data:
            defaults["audio"] = {"sample_rate": meta.feature_spec.get("sample_rate", SHIPPED.sample_rate)}
    return defaults, "", mismatches


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate the manifest file at ``path`` (see :func:`parse_manifest`)."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError(str(p), ["not a regular file; give the path of a YAML manifest"])
        with open(p, "rb") as fh:  # never more than the limit: /dev/zero-like files cannot fill memory
            data = fh.read(MAX_MANIFEST_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(str(p), [f"cannot read the manifest: {exc}"]) from None
    return parse_manifest(text, base_dir=p.resolve().parent, source=str(p), manifest_file=p.resolve())
