"""Reports read back by ``batchser report`` and ``batchser review``: checked against their schema first.

``summary.json`` and ``metrics.json`` may have been edited, damaged or
replaced since a job wrote them; each is read on its own (bounded in size),
checked by a pydantic schema of the keys the pages use, and any problem is
named by file and key with the fix, never a bare ``KeyError`` or
``TypeError`` from deep in a template. A confusion matrix holds the model's
emotions and at most one "other" row and column.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

__all__ = ["MAX_COUNT", "MAX_JSON_BYTES", "ReadBackError", "read_metrics", "read_summary"]

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 << 20  # a million-file job's summary is a few KB: more is not a job's
# No job counts past this (a quadrillion files, seconds, rows): a bigger number is an edit, and one
# past 2**63 would overflow every integer column it is written to.
MAX_COUNT = 10**15
Share = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class ReadBackError(ValueError):
    """A report file that is not as a job wrote it: ``str()`` names the file, the key and the fix."""


class _Open(BaseModel):
    # Python's json reads NaN and Infinity, which no job writes: refused, as are other non-finite floats.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _Domain(_Open):
    median_distance: float
    training_median: float
    held_out_limit: float | None = None
    out_of_domain: bool | None = None


class _EmotionGroups(_Open):
    corpus: str
    groups: list[str]
    why: str


class _Unlisted(_Open):
    count: Count = 0
    first: list[str] = []


class _Partial(_Open):
    strata: list[str]
    accuracy: Share
    accuracy_ci: Annotated[list[Share], Field(min_length=2, max_length=2)]


class _Estimate(_Open):
    n: Count = 0
    accuracy: Share | None = None
    accuracy_ci: Annotated[list[Share], Field(min_length=2, max_length=2)] | None = None
    none_share: Share | None = None
    none_share_ci: Annotated[list[Share], Field(min_length=2, max_length=2)] | None = None
    uar: Share | None = None
    uar_ci: Annotated[list[Share], Field(min_length=2, max_length=2)] | None = None
    missing_strata: list[str] = []
    covers: Share | None = None
    partial: _Partial | None = None


class _Review(_Open):
    answers: Count
    learned_from: Count
    random_sample: bool = False
    none_of_these: Count = 0
    before: _Estimate | None = None
    after: _Estimate | None = None
    stale: list[str] = []


class _Expected(_Open):
    uar_mean: Share
    uar_worst: Share | None = None
    uar_best: Share | None = None
    words: str
    standardised: str
    held_out: bool


class _Summary(_Open):
    job: str
    files: Count
    from_cache: Count = 0
    extracted: Count = 0
    failed: Count = 0
    no_speech: Count = 0
    inputs: list[str] = []
    paths_relative_to: str = "/"
    model: str = ""
    model_corpora: list[str] = []
    model_min_confidence: Annotated[float, Field(gt=0, le=1)] | None = None
    seconds: Annotated[float, Field(ge=0, le=MAX_COUNT)] = 0.0
    domain: _Domain | None = None
    speaker_groups_that_are_emotions: list[_EmotionGroups] = []
    unlisted_folders: _Unlisted | None = None
    review: _Review | None = None
    expected_accuracy: _Expected | None = None
    normalized_by: dict[str, Count] = {}
    exports: dict[str, Count] = {}


class _Bin(_Open):
    lo: Share
    hi: Share
    accuracy: Share
    confidence: Share = 0.0


class _Calibration(_Open):
    ece: Annotated[float, Field(ge=0, le=1)]
    n_bins: Annotated[int, Field(ge=1, le=100)]
    bins: Annotated[list[_Bin], Field(max_length=100)]


class _PerClass(_Open):
    precision: Share = 0.0
    recall: Share = 0.0
    support: Count = 0


class _Evaluation(_Open):
    n: Count
    accuracy: Share
    uar: Share
    macro_f1: Share
    labels: list[str] | None = None
    confusion_matrix: list[list[Count]] | None = None
    calibration: _Calibration | None = None
    per_class: dict[str, _PerClass] = {}

    @model_validator(mode="after")
    def _square(self) -> _Evaluation:
        if self.confusion_matrix is not None:
            k = len(self.labels or [])
            if len(self.confusion_matrix) != k or any(len(r) != k for r in self.confusion_matrix):
                raise ValueError(f"confusion_matrix must be {k} x {k}, one row and column per label")
        return self


class _LocoRow(_Open):
    uar: Share
    calibration: _Calibration | None = None


class _LocoMode(_Open):
    per_corpus: dict[str, _LocoRow]
    mean: dict[str, float]

    @field_validator("mean")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        if "uar" not in v or "worst_uar" not in v or not all(math.isfinite(x) for x in v.values()):
            raise ValueError("needs finite uar and worst_uar")
        return v


class _Loco(_Open):
    corpora: Annotated[list[str], Field(max_length=100)]
    modes: dict[str, _LocoMode]

    @model_validator(mode="after")
    def _every_corpus(self) -> _Loco:
        for mode, m in self.modes.items():
            missing = [c for c in self.corpora if c not in m.per_corpus]
            if missing:
                raise ValueError(f"modes.{mode}.per_corpus lacks {', '.join(missing)}")
        return self


class _Outside(_Open):
    counts: dict[str, Count]


class _Side(_Open):
    n: Count
    balanced_accuracy: Share
    ece: Annotated[float, Field(ge=0, le=1)]


_SIDES = TypeAdapter(dict[str, _Side])


# metrics.json's entries the pages read, each an object: one of another type is left out, with a warning.
_OBJECTS = ("labelled_files", "actor_wise", "random_split", "speaker_wise", "labels_outside_the_model",
            "dimensions_of_labelled_files", "leave_one_corpus_out")  # fmt: skip


def _read_json(path: Path, what: str) -> Any:
    fix = f"the file was edited or damaged: run the job again to rewrite {what}"
    size = path.stat().st_size  # FileNotFoundError: the caller says what to run first
    if not path.is_file():
        raise ReadBackError(f"{path} is not a regular file; {fix}")
    if size > MAX_JSON_BYTES:
        raise ReadBackError(f"{path} is {size >> 20} MB, far more than a job writes; {fix}")
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ReadBackError(f"{path} is not UTF-8 text (byte {exc.start}); {fix}") from None
    except ValueError as exc:
        raise ReadBackError(f"{path} is not valid JSON ({exc}); {fix}") from None
    except RecursionError:  # [[[[…]]]] thousands deep: no job nests more than a few levels
        raise ReadBackError(f"{path} nests its values thousands of levels deep; {fix}") from None


MAX_DEPTH = 32  # a job's JSON nests 6 levels at most; deeper would exhaust the stack of what reads it next


def _shallow(data: Any, path: Path, what: str) -> Any:
    """``data``, refused when it nests deeper than :data:`MAX_DEPTH` (walked without recursion)."""
    todo = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ReadBackError(
                f"{path} nests its values over {MAX_DEPTH} levels deep, far more than a job writes; the file was "
                f"edited or damaged: run the job again to rewrite {what}"
            )
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        todo.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))
    return data


def _problem(path: Path, exc: ValidationError, what: str, within: str = "") -> ReadBackError:
    e = exc.errors()[0]
    key = ".".join(str(p) for p in ([within] if within else []) + list(e["loc"])) or "(the whole file)"
    found = repr(e.get("input"))
    found = found if len(found) <= 60 else found[:57] + "..."
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return ReadBackError(
        f"{path}: key {key}: {e['msg']} (found {found}){more}; the file was edited or damaged: run the job again to "
        f"rewrite {what}"
    )


def read_summary(out_dir: Path) -> dict[str, Any]:
    """``summary.json`` of a job's output folder, checked.

    Raises
    ------
    FileNotFoundError
        No summary.json there.
    ReadBackError
        Not JSON, or a key the pages use missing or of the wrong kind (named).
    """
    path = out_dir / "summary.json"
    data = _shallow(_read_json(path, "its reports"), path, "its reports")
    if not isinstance(data, dict):
        raise ReadBackError(f"{path} holds no JSON object; run the job again to rewrite its reports")
    try:
        return _Summary.model_validate(data).model_dump()
    except ValidationError as exc:
        raise _problem(path, exc, "its reports") from None


def read_metrics(out_dir: Path, classes: list[str]) -> dict[str, Any]:
    """``metrics.json`` of a job's output folder (empty when there is none), checked.

    A confusion matrix may hold ``classes`` and one "other" row and column, no more.

    Raises
    ------
    ReadBackError
        Not JSON, or an evaluation that is not as a job writes it (named).
    """
    path = out_dir / "metrics.json"
    if not path.exists():
        return {}
    data = _shallow(_read_json(path, "its metrics"), path, "its metrics")
    if not isinstance(data, dict):
        raise ReadBackError(f"{path} holds no JSON object; run the job again to rewrite its metrics")
    out: dict[str, Any] = dict(data)
    allowed = {*classes, "other"}
    for key, value in data.items():
        if not isinstance(value, dict):
            if key in _OBJECTS:  # the page would index into it: left out, the rest of the page shown
                log.warning(
                    "%s: key %s is %s, not an object as a job writes it: left out of the page (run the job again "
                    "to rewrite its metrics)", path, key, type(value).__name__,
                )  # fmt: skip
                del out[key]
            continue
        try:
            if key == "leave_one_corpus_out":
                out[key] = _Loco.model_validate(value).model_dump()
            elif key == "labels_outside_the_model":
                out[key] = _Outside.model_validate(value).model_dump()
            elif key == "dimensions_of_labelled_files":
                # Each dimension's scores, beside the words of its "method"
                sides = {k: v for k, v in value.items() if isinstance(v, dict)}
                out[key] = value | _SIDES.dump_python(_SIDES.validate_python(sides))
            elif "accuracy" in value or "confusion_matrix" in value:
                ev = _Evaluation.model_validate(value)
                extra = [lab for lab in ev.labels or [] if lab not in allowed]
                if extra or len(set(ev.labels or [])) != len(ev.labels or []):
                    raise ReadBackError(
                        f"{path}: key {key}.labels: {', '.join(map(repr, extra[:5])) or 'repeated labels'} "
                        f"(a confusion matrix holds the model's emotions, {', '.join(classes)}, and 'other'); "
                        "the file was edited or damaged: run the job again to rewrite its metrics"
                    )
                lacking = [k for k in ("labels", "confusion_matrix", "calibration") if getattr(ev, k) is None]
                if key == "labelled_files" and lacking:  # the page draws its matrix and reliability diagram
                    raise ReadBackError(
                        f"{path}: key {key}.{lacking[0]}: missing, which a job writes; the file was edited or "
                        "damaged: run the job again to rewrite its metrics"
                    )
                out[key] = ev.model_dump()
        except ValidationError as exc:
            raise _problem(path, exc, "its metrics", key) from None
    return out
