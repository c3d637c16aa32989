"""Model files: skops with batchser's metadata and arrays inside, hash-checked, trusted types only."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

from batchser.atomic import atomic_path
from batchser.model.base import Dimension, ModelError, ModelMeta, TrainedModel
from batchser.model.circumplex import DIMENSIONS
from batchser.model.learn import TrainingSet
from batchser.model.network import NumpyNetwork, layers, network_arrays

__all__ = [
    "MAX_MODEL_BYTES",
    "TRUSTED_TYPES",
    "load_model",
    "read_meta",
    "read_training",
    "save_model",
    "weights_digest",
]

# The largest model file read: the shipped one is about 0.3 MB, and one carrying
# its training features for a refit some MB; a bound stops a wrong path (a
# device, a huge file) from filling memory.
MAX_MODEL_BYTES = 256 << 20

# Types a model file may hold beyond those skops trusts by default (plain
# sklearn estimators, numpy arrays). Anything else is refused, so a model
# file from a stranger cannot run code on load.
TRUSTED_TYPES = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
)


def _pipeline_arrays(pipeline: Pipeline) -> list[np.ndarray]:
    scaler = pipeline.named_steps["scale"]
    coefs, intercepts, _ = layers(pipeline)
    return [scaler.mean_, scaler.scale_, *coefs, *intercepts]


def _network_numbers(net: NumpyNetwork) -> list[np.ndarray]:
    """A NumpyNetwork's arrays in the order :func:`weights_digest` hashes the fitted objects'."""
    a = net.arrays
    n = sum(1 for k in a if k.startswith("coef_"))
    out = [a["mean"], a["scale"], *(a[f"coef_{i}"] for i in range(n)), *(a[f"intercept_{i}"] for i in range(n))]
    if net.calibration == "isotonic":
        k = sum(1 for key in a if key.startswith("cal_x_"))
        for i in range(k):
            out += [a[f"cal_x_{i}"], a[f"cal_y_{i}"]]
    elif net.calibration == "sigmoid":
        out += list(a["cal_ab"])
    elif net.calibration == "temperature":
        out.append(a["cal_beta"])
    return out


def loaded_digest(pipeline: Any, speaker_pipeline: Any | None = None, dimensions: tuple[Dimension, ...] = ()) -> str:
    """:func:`weights_digest` of what a model predicts with, NumpyNetworks included.

    With ``dimensions``, their networks and temperatures are hashed in too; a
    model without them keeps the four-class networks' digest, as before they existed.
    """
    content = pipeline if speaker_pipeline is None else {"global": pipeline, "speaker": speaker_pipeline}
    return _with_dimensions(_digest(content), dimensions)


def _with_dimensions(digest: str, dimensions: tuple[Dimension, ...]) -> str:
    if not dimensions:
        return digest
    h = hashlib.sha256(digest.encode())
    for dim in sorted(dimensions, key=lambda d: d.name):
        h.update(f"{dim.name}:{_digest(dim.plain)}:{_digest(dim.norm) if dim.norm is not None else ''}".encode())
        h.update("".join(f"{mode}={beta!r};" for mode, beta in sorted(dim.temperature.items())).encode())
    return h.hexdigest()


def _digest(model: Any) -> str:
    if isinstance(model, dict):
        return hashlib.sha256("".join(_digest(model[k]) for k in sorted(model)).encode()).hexdigest()
    if not isinstance(model, NumpyNetwork):
        return weights_digest(model)
    h = hashlib.sha256()
    for arr in _network_numbers(model):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    h.update("\x00".join(map(str, model.classes_)).encode())
    return h.hexdigest()


def weights_digest(model: Any) -> str:
    """SHA-256 of a fitted model's numbers and classes, independent of file format.

    Covers the plain pipeline, a ``CalibratedClassifierCV`` of pipelines
    (each inner pipeline and its per-class calibrators), and the
    ``{"global": …, "speaker": …}`` pair of a speaker-normalised model.
    """
    from sklearn.calibration import CalibratedClassifierCV

    if isinstance(model, dict):
        return hashlib.sha256("".join(weights_digest(model[k]) for k in sorted(model)).encode()).hexdigest()
    h = hashlib.sha256()
    arrays: list[np.ndarray] = []
    if isinstance(model, CalibratedClassifierCV):
        for cc in model.calibrated_classifiers_:
            arrays += _pipeline_arrays(cc.estimator)
            for cal in cc.calibrators:
                if hasattr(cal, "X_thresholds_"):  # isotonic
                    arrays += [cal.X_thresholds_, cal.y_thresholds_]
                elif hasattr(cal, "beta_"):  # temperature
                    arrays.append(np.array([cal.beta_]))
                else:  # sigmoid
                    arrays.append(np.array([cal.a_, cal.b_]))
    else:
        arrays = _pipeline_arrays(model)
    for arr in arrays:
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    h.update("\x00".join(map(str, model.classes_)).encode())
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _arrays_file(path: Path) -> Path:
    return path.with_name(path.name + ".npz")


# Entries batchser adds to the skops zip: the model file is one unit, replaced
# by one rename, so a save that is killed leaves the old model or the new one,
# never a new network beside old metadata. skops ignores entries it did not write.
_META_ENTRY = "batchser/meta.json"
_ARRAYS_ENTRY = "batchser/arrays.npz"
_TRAINING_ENTRY = "batchser/training.npz"


# Array roles: "global" and "speaker" (the four-class pair), "<dim>" and "<dim>_norm" (a dimension's
# pair), and "temperature" (entries "temperature__<dim>__<mode>": a dimension's factor per rule).
_TEMPERATURE = "temperature"


def _arrays_blob(estimators: dict[str, Any], dimensions: tuple[Dimension, ...] = ()) -> bytes:
    estimators = dict(estimators)
    for dim in dimensions:
        estimators[dim.name] = dim.plain
        if dim.norm is not None:
            estimators[f"{dim.name}_norm"] = dim.norm
    flat: dict[str, np.ndarray] = {}
    for role, est in estimators.items():
        arrays, settings = network_arrays(est)
        flat |= {f"{role}__{k}": v for k, v in arrays.items()}
        flat |= {f"{role}__{k}": np.array(v) for k, v in settings.items()}
    for dim in dimensions:
        flat |= {f"{_TEMPERATURE}__{dim.name}__{mode}": np.array(beta) for mode, beta in dim.temperature.items()}
    buf = io.BytesIO()
    np.savez(buf, **flat)
    return buf.getvalue()


def _networks_from(blob: bytes) -> tuple[dict[str, NumpyNetwork], tuple[Dimension, ...]]:
    """The four-class networks by role ("global", "speaker") and the dimensions, from the arrays entry."""
    # allow_pickle=False: numbers and strings only, nothing that runs on load.
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        flat = {k: npz[k] for k in npz.files}
    nets: dict[str, NumpyNetwork] = {}
    temperature: dict[str, dict[str, float]] = {}
    for role in sorted({k.split("__", 1)[0] for k in flat}):
        part = {k.split("__", 1)[1]: v for k, v in flat.items() if k.startswith(f"{role}__")}
        if role == _TEMPERATURE:
            for key, beta in part.items():
                dim, _, mode = key.partition("__")
                temperature.setdefault(dim, {})[mode] = float(beta)
            continue
        nets[role] = NumpyNetwork(
            classes_=part.pop("classes"),
            activation=str(part.pop("activation")),
            calibration=str(part.pop("calibration")),
            calibrate_on=str(part.pop("calibrate_on", "proba")),
            arrays=part,
        )
    dims = tuple(Dimension(d, nets[d], nets.get(f"{d}_norm"), temperature.get(d, {})) for d in DIMENSIONS if d in nets)
    return {k: v for k, v in nets.items() if k in ("global", "speaker")}, dims


def _training_blob(training: TrainingSet) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        X=np.asarray(training.X, dtype=np.float32),
        y=np.asarray(training.y).astype(str),
        keys=np.asarray(training.keys).astype(str),
    )
    return buf.getvalue()


def read_training(path: Path) -> TrainingSet:
    """The training rows a model file carries for a refit on a person's answers, hash-checked.

    Raises
    ------
    ModelError
        When the file carries none (models saved before they did: retrain it) or they changed.
    """
    meta = read_meta(path)
    if not meta.training_sha256:
        raise ModelError(
            f"model {path} carries no training data to learn from answers with (it was saved by an older "
            "batchser); retrain it with this version (batchser run on its train manifest)"
        )
    with zipfile.ZipFile(io.BytesIO(_read_bounded(path, "model file"))) as zf:
        blob = zf.read(_TRAINING_ENTRY)
    _check_sha256(blob, meta.training_sha256, f"training rows in {path}", plural=True)
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:  # numbers and strings only
        return TrainingSet(X=npz["X"], y=npz["y"], keys=npz["keys"])


def save_model(
    pipeline: Any,
    meta: ModelMeta,
    path: Path,
    *,
    speaker_pipeline: Any | None = None,
    training: TrainingSet | None = None,
    dimensions: tuple[Dimension, ...] = (),
) -> TrainedModel:
    """Write the model to ``path`` as one file: skops, with batchser's metadata and arrays inside.

    The file is written whole beside ``path`` and renamed over it, so a save
    that is killed leaves the previous model as it was. Files of the older
    three-file layout (``.json``, ``.npz`` beside it) are removed after the
    switch, since they describe the model it replaced.

    With ``speaker_pipeline`` the skops part holds ``{"global": pipeline, "speaker": speaker_pipeline}``.
    With ``training`` the file also carries the training rows (float32
    features, labels, normalisation groups), which a review refits on.
    With ``dimensions`` it carries their networks and temperatures (arrays only:
    the skops part stays the four-class model's), and the weights' digest covers them.
    """
    import skops.io as sio

    content = pipeline if speaker_pipeline is None else {"global": pipeline, "speaker": speaker_pipeline}
    blob = sio.dumps(content)
    arrays_blob = _arrays_blob(
        {"global": pipeline} | ({"speaker": speaker_pipeline} if speaker_pipeline else {}), dimensions
    )
    training_blob = _training_blob(training) if training is not None else b""
    meta = ModelMeta(
        **{
            **asdict(meta),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "arrays_sha256": hashlib.sha256(arrays_blob).hexdigest(),
            "training_sha256": hashlib.sha256(training_blob).hexdigest() if training_blob else "",
            "weights_sha256": _with_dimensions(weights_digest(content), dimensions),
            "created": meta.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    buf = io.BytesIO(blob)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_META_ENTRY, json.dumps(asdict(meta), indent=2) + "\n")
        zf.writestr(_ARRAYS_ENTRY, arrays_blob)
        if training_blob:
            zf.writestr(_TRAINING_ENTRY, training_blob, compress_type=zipfile.ZIP_STORED)  # compressed already
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    for old in (_sidecar(path), _arrays_file(path)):
        old.unlink(missing_ok=True)
    return TrainedModel(pipeline, meta, path, speaker_pipeline, dimensions=tuple(dimensions))


def _check_sha256(blob: bytes, expected: str, what: str, *, plural: bool = False) -> None:
    """Refuse ``blob`` unless its SHA-256 is the one recorded at save time."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected:
        they, them = ("they were", "them") if plural else ("it was", "it")
        raise ModelError(
            f"{what} changed since {they} saved (sha256 {digest[:12]}…, expected {expected[:12]}…); "
            f"refusing to load {them}. Retrain, or restore the original file"
        )


@dataclass(frozen=True)
class _ModelFile:
    """A model file's parts as read from disk, checked against their recorded hashes."""

    meta: ModelMeta
    skops: bytes  # the whole file: skops reads its own entries and ignores batchser's
    arrays: bytes | None  # NumpyNetwork arrays; None for models saved before them


def _read_meta(side: Path) -> ModelMeta:
    try:
        return ModelMeta(**json.loads(_read_bounded(side, "model metadata").decode("utf-8")))
    except FileNotFoundError:
        raise ModelError(
            f"model file {side.with_suffix('')} is damaged or not a batchser model: no metadata inside it, and "
            f"the metadata of the older layout ({side.name}) is missing; batchser only loads models it saved"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ModelError(f"model metadata {side} is unreadable: {exc}") from None


def _read_bounded(path: Path, what: str) -> bytes:
    """A regular file's bytes, at most :data:`MAX_MODEL_BYTES`: never a FIFO (which would block
    forever), a device such as ``/dev/zero`` (which never ends) or a folder.

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    ModelError
        When it is no regular file, is too large, or cannot be read.
    """
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ModelError(f"{what} {path} is a folder; point it at the .skops file inside it") from None
    except OSError as exc:
        raise ModelError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ModelError(f"{what} {path} is a folder; point it at the .skops file inside it")
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"{what} {path} is not a regular file (a pipe or a device); point it at a .skops file")
        if st.st_size > MAX_MODEL_BYTES:
            raise ModelError(
                f"{what} {path} is {st.st_size / 2**20:.0f} MiB, over the {MAX_MODEL_BYTES >> 20} MiB a batchser "
                "model can be; it is not one"
            )
        try:
            blob = fh.read(MAX_MODEL_BYTES + 1)  # bounded even if the file grows while read
        except OSError as exc:
            raise ModelError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(blob) > MAX_MODEL_BYTES:
        raise ModelError(f"{what} {path} grew past {MAX_MODEL_BYTES >> 20} MiB while read; it is not a batchser model")
    return blob


def _read_file(path: Path) -> _ModelFile:
    """Read a model in either layout: one file (metadata inside), or the older three files."""
    try:
        blob = _read_bounded(path, "model file")
    except FileNotFoundError:
        raise ModelError(
            f"model file {path} does not exist; train one with `batchser run` on a manifest that sets "
            "model.train: true (README, *Train your own model*), or leave the model out to use the shipped one"
        ) from None
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            names = set(zf.namelist())
            if _META_ENTRY in names:
                meta = ModelMeta(**json.loads(zf.read(_META_ENTRY).decode("utf-8")))
                arrays = zf.read(_ARRAYS_ENTRY) if _ARRAYS_ENTRY in names else None
                if arrays is not None:
                    _check_sha256(arrays, meta.arrays_sha256, f"model arrays in {path}", plural=True)
                return _ModelFile(meta, blob, arrays)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, EOFError) as exc:
        raise ModelError(f"model file {path} is damaged or not a batchser model: {exc}") from None
    # The older layout: metadata and arrays beside the skops file, hashes in the metadata.
    meta = _read_meta(_sidecar(path))
    _check_sha256(blob, meta.sha256, f"model file {path}")
    arrays = None
    if meta.arrays_sha256:
        arrays_path = _arrays_file(path)
        try:
            arrays = _read_bounded(arrays_path, "model arrays")
        except FileNotFoundError:
            raise ModelError(f"model arrays {arrays_path} are missing; restore them or retrain") from None
        _check_sha256(arrays, meta.arrays_sha256, f"model arrays {arrays_path}", plural=True)
    return _ModelFile(meta, blob, arrays)


def read_meta(path: Path) -> ModelMeta:
    """The metadata of the model at ``path`` (classes, features, metrics), checked like :func:`load_model`.

    Raises
    ------
    ModelError
        Missing, damaged or changed files.
    """
    return _read_file(Path(path)).meta


def _check_fit(meta: ModelMeta, path: Path, *, feature_fingerprint: str, classes: list[str]) -> None:
    if meta.feature_fingerprint != feature_fingerprint:
        tuning = meta.feature_spec.get("chroma_tuning")
        pinned = "" if tuning is None else f", chroma_tuning {tuning}"
        raise ModelError(
            f"model {path.name} was trained on features {meta.feature_spec.get('names')} at "
            f"{meta.feature_spec.get('sample_rate')} Hz{pinned} (fingerprint {meta.feature_fingerprint}); this "
            f"job's features have fingerprint {feature_fingerprint}. Use the model's features, audio.sample_rate "
            "and chroma_tuning in the manifest, or retrain with model.train: true"
        )
    if set(meta.classes) != set(classes):
        raise ModelError(
            f"model {path.name} predicts {meta.classes} but the job lists emotions {classes}; "
            "make emotions match the model's classes"
        )


def load_model(path: Path, *, feature_fingerprint: str, classes: list[str]) -> TrainedModel:
    """Load a model written by :func:`save_model`, refusing anything unsafe or unfit.

    A model with its NumpyNetwork arrays loads in milliseconds, without
    importing scikit-learn or skops; an older one is deserialised from the
    skops part with an explicit list of trusted types. Each part is used only
    if its SHA-256 is the one recorded at save time.

    Parameters
    ----------
    path : Path
        The ``.skops`` file.
    feature_fingerprint : str
        The job's feature fingerprint; the model must have been trained on it.
    classes : list of str
        The job's emotions; must be the model's classes (any order).

    Raises
    ------
    ModelError
        Missing files, changed bytes, untrusted types, or a mismatch with the job.
    """
    mf = _read_file(path)
    _check_fit(mf.meta, path, feature_fingerprint=feature_fingerprint, classes=classes)
    job_meta = ModelMeta(**{**asdict(mf.meta), "classes": list(classes)})
    if mf.arrays is not None:
        nets, dims = _networks_from(mf.arrays)
        g, s = nets["global"], nets.get("speaker")
        return TrainedModel(g, job_meta, path, s, loaded_sha256=loaded_digest(g, s, dims), dimensions=dims)

    import skops.io as sio

    untrusted = set(sio.get_untrusted_types(data=mf.skops))
    if not untrusted <= TRUSTED_TYPES:
        raise ModelError(
            f"model file {path} contains types batchser does not trust: {sorted(untrusted - TRUSTED_TYPES)}"
        )
    content = sio.loads(mf.skops, trusted=sorted(untrusted))
    g, s = (content["global"], content["speaker"]) if isinstance(content, dict) else (content, None)
    return TrainedModel(g, job_meta, path, s, loaded_sha256=loaded_digest(g, s))
