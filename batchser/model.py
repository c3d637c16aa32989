"""Train, evaluate, save and load the emotion classifier.

The model is a scikit-learn Pipeline (StandardScaler → MLPClassifier with the
seed recipe's parameters). Files are written with skops, never pickle, beside
batchser's metadata and prediction arrays inside the same file (one unit,
replaced by one rename); loading verifies the recorded hashes and accepts only
an explicit list of types.

scikit-learn and skops are imported inside the functions that use them: the
two cost about 3 s to import, more than a warm job's whole work, and a job
that only labels never needs them (see :class:`NumpyNetwork`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import platform
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

from batchser.atomic import atomic_path, atomic_write_text
from batchser.speakers import SpeakerNorm

__all__ = [
    "ModelError",
    "ModelMeta",
    "NumpyNetwork",
    "TrainedModel",
    "build_pipeline",
    "calibration_table",
    "evaluate",
    "fit",
    "fit_model",
    "load_model",
    "read_meta",
    "save_model",
    "write_model_card",
]

log = logging.getLogger(__name__)

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


class ModelError(RuntimeError):
    """A model that cannot be used for this job; the message says why and what to do."""


@dataclass(frozen=True)
class ModelMeta:
    """What a model file records about itself (stored inside it)."""

    classes: list[str]
    feature_spec: dict[str, Any]
    training_fingerprint: str
    n_train: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    sha256: str = ""  # of the .skops bytes: integrity (skops bytes differ on every save)
    weights_sha256: str = ""  # of the fitted numbers: identity, equal for retrains on the same data, versions and CPU
    arrays_sha256: str = ""  # of the .npz NumpyNetwork arrays jobs predict from ("" for older models)

    @property
    def feature_fingerprint(self) -> str:
        return str(self.feature_spec["fingerprint"])


def _hidden(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0, out=x)
    if name == "tanh":
        return np.tanh(x, out=x)
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-x))
    return x  # identity


@dataclass(frozen=True)
class NumpyNetwork:
    """A fitted pipeline's numbers, predicting as scikit-learn does with numpy alone.

    Labelling needs only a forward pass: standardise, the MLP's layers, softmax,
    and for a calibrated model one isotonic or sigmoid map per class, then
    renormalisation. Importing scikit-learn and skops to do that costs about
    3 s, longer than a warm job's whole work, so :func:`save_model` also writes
    these arrays (inside the model file, with their hash) and jobs predict
    from them. ``tests/test_model.py`` checks equality with ``predict_proba``.

    ``arrays`` holds ``mean``, ``scale``, ``coef_<i>``, ``intercept_<i>``, and
    for calibration ``cal_x_<k>``/``cal_y_<k>`` (isotonic thresholds) or
    ``cal_ab`` (sigmoid a, b per class).
    """

    classes_: np.ndarray
    arrays: dict[str, np.ndarray]
    activation: str
    calibration: str  # none | isotonic | sigmoid

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        a = self.arrays
        h = (np.asarray(X, dtype=np.float64) - a["mean"]) / a["scale"]
        n_layers = sum(1 for k in a if k.startswith("coef_"))
        for i in range(n_layers):
            h = h @ a[f"coef_{i}"] + a[f"intercept_{i}"]
            if i < n_layers - 1:
                h = _hidden(self.activation, h)
        n_classes = len(self.classes_)
        if h.shape[1] == 1:  # binary: logistic output for the second class
            p1 = 1.0 / (1.0 + np.exp(-h[:, 0]))
            proba = np.stack([1.0 - p1, p1], axis=1)
        else:
            h = np.exp(h - h.max(axis=1, keepdims=True))
            proba = h / h.sum(axis=1, keepdims=True)
        if self.calibration == "none":
            return proba
        # sklearn.calibration._CalibratedClassifier.predict_proba, one-vs-rest.
        out = np.zeros_like(proba)
        for k in range(1 if n_classes == 2 else n_classes):
            col = k + 1 if n_classes == 2 else k
            f = proba[:, col]
            if self.calibration == "isotonic":
                xs, ys = a[f"cal_x_{k}"], a[f"cal_y_{k}"]
                out[:, col] = np.interp(np.clip(f, xs[0], xs[-1]), xs, ys)
            else:
                ca, cb = a["cal_ab"][k]
                out[:, col] = 1.0 / (1.0 + np.exp(ca * f + cb))
        if n_classes == 2:
            out[:, 0] = 1.0 - out[:, 1]
        else:
            total = out.sum(axis=1, keepdims=True)
            out = np.divide(out, total, out=np.full_like(out, 1.0 / n_classes), where=total != 0)
        out[(out > 1.0) & (out <= 1.0 + 1e-5)] = 1.0
        return out


def network_arrays(estimator: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and settings of a fitted pipeline (optionally calibrated) for :class:`NumpyNetwork`."""
    from sklearn.calibration import CalibratedClassifierCV

    calibration, calibrators = "none", []
    pipe = estimator
    if isinstance(estimator, CalibratedClassifierCV):
        if len(estimator.calibrated_classifiers_) != 1:
            raise ModelError("only calibration with ensemble=False can be exported to arrays")
        cc = estimator.calibrated_classifiers_[0]
        pipe, calibrators, calibration = cc.estimator, cc.calibrators, cc.method
    scaler, mlp = pipe.named_steps["scale"], pipe.named_steps["mlp"]
    arrays = {"mean": scaler.mean_, "scale": scaler.scale_}
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        arrays[f"coef_{i}"], arrays[f"intercept_{i}"] = w, b
    if calibration == "isotonic":
        for k, cal in enumerate(calibrators):
            arrays[f"cal_x_{k}"], arrays[f"cal_y_{k}"] = cal.X_thresholds_, cal.y_thresholds_
    elif calibration == "sigmoid":
        arrays["cal_ab"] = np.array([[cal.a_, cal.b_] for cal in calibrators], dtype=np.float64)
    arrays["classes"] = np.asarray(estimator.classes_).astype(str)
    return arrays, {"activation": mlp.activation, "calibration": calibration}


@dataclass(frozen=True)
class TrainedModel:
    """A loaded model: the network for any file, and optionally one for speaker-normalised files.

    ``speaker_pipeline`` (``model.normalize: speaker``) was trained on features
    standardised per speaker (:class:`batchser.speakers.SpeakerNorm`); files
    whose speaker has too few recordings for such statistics go to ``pipeline``,
    trained on the same data without that step.
    """

    pipeline: Any
    meta: ModelMeta
    path: Path
    speaker_pipeline: Any | None = None

    @property
    def id(self) -> str:
        """Short id for reports: model file name and the start of its weights' hash."""
        return f"{self.path.stem}@{self.meta.weights_sha256[:12]}"

    @property
    def min_speaker_files(self) -> int:
        return int(self.meta.params.get("min_speaker_files", 0))

    def _proba(self, estimator: Any, X: np.ndarray) -> np.ndarray:
        proba = estimator.predict_proba(X)
        order = [list(estimator.classes_).index(c) for c in self.meta.classes]
        return proba[:, order]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities without speaker normalisation, columns in ``meta.classes`` order."""
        return self._proba(self.pipeline, X)

    def predict_proba_by_speaker(
        self, X: np.ndarray, speakers: Sequence[str | None], norm: SpeakerNorm | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities, speaker-normalised wherever ``norm`` covers the row's speaker.

        Returns
        -------
        proba : np.ndarray, shape (n, n_classes)
        normalised : np.ndarray, shape (n,), bool
            Rows that went through the speaker-normalised network.
        """
        if self.speaker_pipeline is None or norm is None:
            return self.predict_proba(X), np.zeros(len(X), dtype=bool)
        Xn, covered = norm.transform(X, speakers)
        proba = np.empty((len(X), len(self.meta.classes)))
        if (~covered).any():
            proba[~covered] = self._proba(self.pipeline, X[~covered])
        if covered.any():
            proba[covered] = self._proba(self.speaker_pipeline, Xn[covered])
        return proba, covered


def build_pipeline(params: dict[str, Any], *, random_state: int) -> Pipeline:
    """StandardScaler → MLPClassifier(**params, random_state=random_state)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPClassifier(
        **{**params, "hidden_layer_sizes": tuple(params["hidden_layer_sizes"])}, random_state=random_state
    )
    return Pipeline([("scale", StandardScaler()), ("mlp", mlp)])


@contextlib.contextmanager
def _expected_fit_warnings() -> Iterator[None]:
    # max_iter is the recipe's budget, so non-convergence is not news; and a
    # batch_size above a small training set's size is clipped to it, as meant.
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Got `batch_size` less than 1 or larger than sample size")
        yield


def fit(pipe: Pipeline, X: np.ndarray, y: np.ndarray) -> Pipeline:
    """Fit ``pipe``, without the warnings the recipe expects (see :func:`_expected_fit_warnings`)."""
    with _expected_fit_warnings():
        return pipe.fit(X, y)


def fit_model(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    *,
    params: dict[str, Any],
    random_state: int,
    calibration: str = "none",
) -> Any:
    """The recipe's pipeline, fitted, optionally wrapped in probability calibration.

    Parameters
    ----------
    X, y : arrays
    groups : array or None
        Speakers. Calibration is fitted on predictions for speakers each inner
        model did not train on (3-fold GroupKFold), as the model will meet
        new speakers; without groups, stratified 3-fold.
    params : dict
        MLPClassifier parameters.
    random_state : int
    calibration : {"none", "sigmoid", "isotonic"}
        ``CalibratedClassifierCV`` method; "none" is the plain seed recipe.
        The network is fitted once on all rows; the calibrator on its inner
        cross-validated predictions.

    Returns
    -------
    estimator
        With ``predict_proba`` and ``classes_``.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    pipe = build_pipeline(params, random_state=random_state)
    if calibration == "none":
        return fit(pipe, X, y)
    n_classes = len(set(y.tolist()))
    cv: Any = StratifiedKFold(n_splits=3, shuffle=True, random_state=random_state)
    if groups is not None and len(set(groups.tolist())) >= 3:
        splits = list(GroupKFold(n_splits=3).split(X, y, groups))
        # Speakers who each voice only some emotions can leave a class out of an
        # inner training split, which calibration cannot handle; then stratify.
        if all(len(set(y[tr].tolist())) == n_classes for tr, _ in splits):
            cv = splits
    with _expected_fit_warnings():
        # ensemble=False: one network fitted on all the data, calibrated on the
        # inner folds' held-out predictions. An ensemble of the fold networks
        # calibrates slightly better (ECE 0.034 vs 0.050 actor-wise on RAVDESS)
        # but each member sees a third less data: 70 % vs 76 % on the random split.
        return CalibratedClassifierCV(pipe, method=calibration, cv=cv, ensemble=False).fit(X, y)


def calibration_table(proba: np.ndarray, y_true: np.ndarray, classes: list[str], *, n_bins: int = 15) -> dict[str, Any]:
    """Expected calibration error of the top label, and the reliability diagram's bins.

    ECE = sum over equal-width confidence bins of (share of predictions in the
    bin) x |accuracy in the bin - mean confidence in the bin|.
    """
    conf = proba.max(axis=1)
    correct = np.asarray(classes)[proba.argmax(axis=1)] == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        if not m.any():
            continue
        acc, mean_conf = float(correct[m].mean()), float(conf[m].mean())
        ece += m.mean() * abs(acc - mean_conf)
        bins.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(m.sum()),
                "confidence": mean_conf,
                "accuracy": acc,
            }
        )
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def _scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "labels": classes,
    }


def evaluate(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    *,
    params: dict[str, Any],
    random_state: int,
    cv_folds: int = 4,
    calibration: str = "none",
) -> dict[str, Any]:
    """Both evaluations of the recipe on labelled features.

    Parameters
    ----------
    X, y : arrays
        Features and labels.
    groups : array or None
        Speaker of each row; None skips the speaker-wise evaluation.
    params : dict
        MLPClassifier parameters.
    random_state : int
        Seed of the MLP.
    cv_folds : int
        GroupKFold folds over speakers.
    calibration : str
        See :func:`fit_model`; fitted inside each training fold only.

    Returns
    -------
    dict
        ``random_split``: the seed's 75/25 split (random_state 7), no grouping.
        ``actor_wise``: GroupKFold, every speaker tested once in a fold that did
        not train on it; per-fold scores and scores of the pooled predictions.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GroupKFold, train_test_split

    classes = sorted(set(y.tolist()))
    out: dict[str, Any] = {}
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=7)
    g_tr = groups[idx_tr] if groups is not None else None
    model = fit_model(X[idx_tr], y[idx_tr], g_tr, params=params, random_state=random_state, calibration=calibration)
    proba = model.predict_proba(X[idx_te])
    out["random_split"] = {
        "method": "train_test_split(test_size=0.25, random_state=7)",
        **_scores(y[idx_te], np.asarray(model.classes_)[proba.argmax(axis=1)], classes),
        "calibration": calibration_table(proba, y[idx_te], list(model.classes_)),
    }
    n_groups = len(set(groups.tolist())) if groups is not None else 0
    if n_groups < 2:
        out["actor_wise"] = {"skipped": "needs speaker groups (RAVDESS names or a speaker column) with 2+ speakers"}
        return out
    folds = min(cv_folds, n_groups)
    pred = np.empty_like(y)
    proba = np.zeros((len(y), len(classes)))
    per_fold = []
    for k, (tr, te) in enumerate(GroupKFold(n_splits=folds).split(X, y, groups)):
        model = fit_model(X[tr], y[tr], groups[tr], params=params, random_state=random_state, calibration=calibration)
        p = model.predict_proba(X[te])
        proba[np.ix_(te, [classes.index(c) for c in model.classes_])] = p
        pred[te] = np.asarray(model.classes_)[p.argmax(axis=1)]
        per_fold.append(
            {
                "fold": k,
                "test_speakers": sorted(set(groups[te].tolist())),
                "accuracy": float(accuracy_score(y[te], pred[te])),
                "macro_f1": float(f1_score(y[te], pred[te], average="macro", zero_division=0)),
            }
        )
    accs = [f["accuracy"] for f in per_fold]
    out["actor_wise"] = {
        "method": f"GroupKFold(n_splits={folds}) over speakers",
        **_scores(y, pred, classes),
        "fold_accuracy_mean": float(np.mean(accs)),
        "fold_accuracy_std": float(np.std(accs)),
        "folds": per_fold,
        "calibration": calibration_table(proba, y, classes),
    }
    return out


def training_fingerprint(content_hashes: list[str], labels: list[str]) -> str:
    """Hash of the (content, label) pairs a model was trained on, order-free."""
    h = hashlib.sha256()
    for ch, lab in sorted(zip(content_hashes, labels, strict=True)):
        h.update(f"{ch}\t{lab}\n".encode())
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    import librosa
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "skops": skops.__version__,
    }


def _pipeline_arrays(pipeline: Pipeline) -> list[np.ndarray]:
    scaler, mlp = pipeline.named_steps["scale"], pipeline.named_steps["mlp"]
    return [scaler.mean_, scaler.scale_, *mlp.coefs_, *mlp.intercepts_]


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


def _arrays_blob(estimators: dict[str, Any]) -> bytes:
    flat: dict[str, np.ndarray] = {}
    for role, est in estimators.items():
        arrays, settings = network_arrays(est)
        flat |= {f"{role}__{k}": v for k, v in arrays.items()}
        flat |= {f"{role}__{k}": np.array(v) for k, v in settings.items()}
    buf = io.BytesIO()
    np.savez(buf, **flat)
    return buf.getvalue()


def _networks_from(blob: bytes) -> dict[str, NumpyNetwork]:
    # allow_pickle=False: numbers and strings only, nothing that runs on load.
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        flat = {k: npz[k] for k in npz.files}
    out = {}
    for role in sorted({k.split("__", 1)[0] for k in flat}):
        part = {k.split("__", 1)[1]: v for k, v in flat.items() if k.startswith(f"{role}__")}
        out[role] = NumpyNetwork(
            classes_=part.pop("classes"),
            activation=str(part.pop("activation")),
            calibration=str(part.pop("calibration")),
            arrays=part,
        )
    return out


def save_model(pipeline: Any, meta: ModelMeta, path: Path, *, speaker_pipeline: Any | None = None) -> TrainedModel:
    """Write the model to ``path`` as one file: skops, with batchser's metadata and arrays inside.

    The file is written whole beside ``path`` and renamed over it, so a save
    that is killed leaves the previous model as it was. Files of the older
    three-file layout (``.json``, ``.npz`` beside it) are removed after the
    switch, since they describe the model it replaced.

    With ``speaker_pipeline`` the skops part holds ``{"global": pipeline, "speaker": speaker_pipeline}``.
    """
    import skops.io as sio

    content = pipeline if speaker_pipeline is None else {"global": pipeline, "speaker": speaker_pipeline}
    blob = sio.dumps(content)
    arrays_blob = _arrays_blob({"global": pipeline} | ({"speaker": speaker_pipeline} if speaker_pipeline else {}))
    meta = ModelMeta(
        **{
            **asdict(meta),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "arrays_sha256": hashlib.sha256(arrays_blob).hexdigest(),
            "weights_sha256": weights_digest(content),
            "created": meta.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    buf = io.BytesIO(blob)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_META_ENTRY, json.dumps(asdict(meta), indent=2) + "\n")
        zf.writestr(_ARRAYS_ENTRY, arrays_blob)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    for old in (_sidecar(path), _arrays_file(path)):
        old.unlink(missing_ok=True)
    return TrainedModel(pipeline, meta, path, speaker_pipeline)


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
        return ModelMeta(**json.loads(side.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelError(
            f"model file {side.with_suffix('')} is damaged or not a batchser model: no metadata inside it, and "
            f"the metadata of the older layout ({side.name}) is missing; batchser only loads models it saved"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ModelError(f"model metadata {side} is unreadable: {exc}") from None


def _read_file(path: Path) -> _ModelFile:
    """Read a model in either layout: one file (metadata inside), or the older three files."""
    if path.is_dir():
        raise ModelError(f"model path {path} is a folder; point model.path at the .skops file inside it")
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"model file {path} does not exist; train one with model.train: true (see jobs/train-ravdess.yaml)"
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
            arrays = arrays_path.read_bytes()
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
        nets = _networks_from(mf.arrays)
        return TrainedModel(nets["global"], job_meta, path, nets.get("speaker"))

    import skops.io as sio

    untrusted = set(sio.get_untrusted_types(data=mf.skops))
    if not untrusted <= TRUSTED_TYPES:
        raise ModelError(
            f"model file {path} contains types batchser does not trust: {sorted(untrusted - TRUSTED_TYPES)}"
        )
    content = sio.loads(mf.skops, trusted=sorted(untrusted))
    if isinstance(content, dict):
        return TrainedModel(content["global"], job_meta, path, content["speaker"])
    return TrainedModel(content, job_meta, path)


def _pct(ev: dict[str, Any], key: str = "accuracy") -> str:
    return f"{ev[key]:.1%}" if key in ev else "n/a"


def _ece(ev: dict[str, Any]) -> str:
    cal = ev.get("calibration")
    return f"{cal['ece']:.3f}" if cal else "n/a"


def write_model_card(model: TrainedModel, *, data_note: str) -> Path:
    """Markdown card beside the model: data, license, both evaluations, how to reproduce."""
    m = model.meta
    rs, aw = m.metrics.get("random_split", {}), m.metrics.get("actor_wise", {})
    fs = m.feature_spec
    features = (
        f"{', '.join(fs['names'])} ({fs['dim']} dims, per-file statistics) at {fs['sample_rate']} Hz, "
        f"fingerprint `{m.feature_fingerprint}`"
    )
    hidden = tuple(m.params.get("hidden_layer_sizes", ()))
    estimator = (
        f"StandardScaler → MLPClassifier(hidden_layer_sizes={hidden}), random_state {m.params.get('random_state')}"
    )
    if m.params.get("calibration", "none") != "none":
        estimator = f"CalibratedClassifierCV({estimator}, method={m.params['calibration']}, 3-fold by speaker)"
    fallback = m.metrics.get("without_speaker_normalization")
    if fallback is not None:
        fb = fallback.get("actor_wise", {})
        normalization = (
            f"per speaker (speakers with {m.params.get('min_speaker_files')}+ recordings in a job); "
            f"other files use a second network trained without it: actor-wise accuracy {_pct(fb)}, "
            f"macro-F1 {_pct(fb, 'macro_f1')}, ECE {_ece(fb)}"
        )
    else:
        normalization = "none (StandardScaler over all training files)"
    expect = (
        "The actor-wise figure is the one to expect on speakers the model has never heard;\n"
        "the random split shares speakers between training and test and flatters the model."
    )
    if fallback is not None:
        expect += (
            "\nThe actor-wise figure holds for speakers with enough recordings in the job, from several\n"
            "emotions; files of other speakers get the second network's answers (see the README, Accuracy)."
        )
    card = f"""# {model.path.name}

Speech-emotion classifier made by batchser (`{m.params.get("job", "")}` job), id `{model.id}`.

| | |
|---|---|
| classes | {", ".join(m.classes)} |
| features | {features} |
| model | {estimator} |
| speaker normalisation | {normalization} |
| training files | {m.n_train} (training fingerprint `{m.training_fingerprint}`) |
| random 75/25 split (seed recipe, random_state 7) | accuracy {_pct(rs)}, macro-F1 {_pct(rs, "macro_f1")} |
| actor-wise ({aw.get("method", "skipped")}) | accuracy {_pct(aw)}, macro-F1 {_pct(aw, "macro_f1")} |
| probability calibration | {m.params.get("calibration", "none")}; ECE on held-out actors {_ece(aw)} |
| versions | {", ".join(f"{k} {v}" for k, v in m.versions.items())} |
| sha256 of the file | `{m.sha256}` |
| sha256 of the weights | `{m.weights_sha256}` (the id; equal for retrains on the same data, versions and CPU) |

{data_note}

{expect}
"""
    path = model.path.with_suffix(".md")
    atomic_write_text(path, card)
    return path
