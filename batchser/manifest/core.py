"""The manifest as a whole: a job's parts, cross-checked, and the paths it resolves against its root."""

from __future__ import annotations

import difflib
import re
import stat
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from batchser.features import FEATURE_DIMS, OPENSMILE_GROUPS, opensmile_version
from batchser.locations import default_cache_dir, default_model_path
from batchser.manifest.specs import (
    MAX_MANIFEST_BYTES,
    RAVDESS_EMOTIONS,
    AudioSpec,
    EngineSpec,
    InputSpec,
    ManifestError,
    ModelSpec,
    OutputSpec,
    SegmentsSpec,
)
from batchser.recipe import SHIPPED
from batchser.storage.urls import is_url, shown_url

__all__ = ["Manifest", "load_manifest", "parse_manifest", "validate"]


class Manifest(BaseModel):
    """A validated job. Paths are kept as written; use :meth:`resolve` for absolute ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
        return validate(data, base_dir=Path(base_dir or Path.cwd()).resolve(), source="<dict>", manifest_file=None)

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


# -- validation: a document to a Manifest, every problem named by field and fix --------------


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


_INTERNAL = ("base_dir", "manifest_file")  # set by the loader, never by the YAML


def validate(data: Any, *, base_dir: Path, source: str, manifest_file: Path | None) -> Manifest:
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


# -- loading: safe YAML ----------------------------------------------------------------------


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
    return validate(data, base_dir=base_dir, source=source, manifest_file=manifest_file)


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
