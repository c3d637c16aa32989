"""The train stage of a job: labelled feature vectors → evaluations → a saved model and its card.

Runs after the features stage, on the files whose label is one of the job's
emotions. Evaluations come first (each fits its own networks on its own
training rows): the librosa tutorial recipe's random split, speaker-wise folds, and with two or
more corpora leave-one-corpus-out under each adaptation mode. Then the
networks that are saved are fitted on everything. Arousal and valence
(``model.dimensions``) learn from every file whose emotion the circumplex
table places (:mod:`batchser.model.circumplex`), fear, calm and the rest too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from batchser.features import FeatureSpec
from batchser.labels import Label
from batchser.manifest import Manifest
from batchser.model import (
    ModelError,
    ModelMeta,
    TrainedModel,
    evaluate,
    fit_model,
    save_model,
    training_fingerprint,
    versions,
    write_model_card,
)
from batchser.model.adapt import Grouping, group_rows
from batchser.model.base import Dimension
from batchser.model.circumplex import DIMENSIONS, canonical
from batchser.model.dimensions import DIMENSION_C, evaluate_dimensions, fit_dimension_pair, fittable
from batchser.model.domain import distances, domain_reference, scaler_of
from batchser.model.evaluate import calibration_groups, evaluate_corpora, fit_normalized
from batchser.model.learn import TrainingSet

__all__ = ["TrainingData", "TrainingError", "train"]

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The labelled files cannot train the model the manifest asks for; the message says what to change."""


@dataclass(frozen=True)
class TrainingData:
    """The labelled rows a model is trained on, with who speaks and which corpus each comes from."""

    X: np.ndarray  # (n, d) float64
    y: np.ndarray  # (n,) emotion names
    corpora: np.ndarray  # (n,) corpus names
    speakers: np.ndarray  # (n,) corpus-qualified speaker ids, "" where unknown
    speaker_ok: np.ndarray  # (n,) bool: the row's input allows speaker normalisation
    content_hashes: list[str]

    @property
    def has_all_speakers(self) -> bool:
        return bool(len(self.speakers)) and all(self.speakers)


def _rows(
    manifest: Manifest,
    vectors: Sequence[np.ndarray | None],
    labels: Sequence[Label],
    hashes: Sequence[str],
    use: list[int],
) -> TrainingData:
    allowed = {i.corpus_name: i.speaker_normalization for i in manifest.inputs}
    return TrainingData(
        X=np.stack([vectors[i] for i in use]).astype(np.float64),  # type: ignore[misc]
        y=np.array([labels[i].emotion for i in use]),
        corpora=np.array([labels[i].corpus or "" for i in use]),
        speakers=np.array([labels[i].group or "" for i in use], dtype=object),
        speaker_ok=np.array([allowed.get(labels[i].corpus or "", True) for i in use], dtype=bool),
        content_hashes=[hashes[i] for i in use],
    )


def _data(
    manifest: Manifest, vectors: Sequence[np.ndarray | None], labels: Sequence[Label], hashes: Sequence[str]
) -> tuple[TrainingData, list[int]]:
    classes = list(manifest.emotions)
    use = [
        i for i, (v, lab) in enumerate(zip(vectors, labels, strict=True)) if v is not None and lab.emotion in classes
    ]
    if len(use) < 2 * len(classes):
        raise TrainingError(
            f"only {len(use)} usable labelled files for {len(classes)} emotions; need at least "
            f"{2 * len(classes)}. Check inputs[].labels and emotions"
        )
    _warn_near_misses(labels, classes)
    data = _rows(manifest, vectors, labels, hashes, use)
    missing = sorted(set(classes) - set(data.y.tolist()))
    if missing:
        raise TrainingError(f"no training files labelled {missing}; remove them from emotions or add such files")
    return data, use


def near_misses(names: Collection[str], classes: Sequence[str]) -> dict[str, str]:
    """Label names that are one of ``classes`` written another way (``Angry``, `` sad``, ``anger``): name -> class.

    Files of other emotions are left out of training on purpose; these are left out too, silently but for this.
    """
    from batchser.model.circumplex import canonical

    folded = {" ".join(c.split()).casefold(): c for c in classes}
    out = {}
    for name in names:
        if name in classes:
            continue
        hit = folded.get(" ".join(name.split()).casefold()) or folded.get(canonical(name) or "")
        if hit:
            out[name] = hit
    return out


def _warn_near_misses(labels: Sequence[Label], classes: Sequence[str]) -> None:
    counts = Counter(lab.emotion for lab in labels if lab.emotion)
    misses = near_misses(counts, classes)
    if misses:
        named = ", ".join(f"{k} ({counts[k]})" for k in misses)
        mapping = ", ".join(f"{k}: {v}" for k, v in misses.items())
        log.warning(
            "%d files are labelled %s, which are none of the emotions as written and are left out of training; "
            "if they are those emotions, add map: {%s} to the input's labels",
            sum(counts[k] for k in misses),
            named,
            mapping,
        )


def _licences(manifest: Manifest, data: TrainingData) -> str:
    counts = {c: int((data.corpora == c).sum()) for c in sorted(set(data.corpora.tolist()))}
    lines = ["| corpus | training files | source and licence |", "|---|---|---|"]
    by_name = {i.corpus_name: i for i in manifest.inputs}
    for c, n in counts.items():
        inp = by_name.get(c)
        licence = (inp.licence if inp is not None else None) or "not stated in the job: check before any use"
        lines.append(f"| {c} | {n} | {licence} |")
    note = "\n".join(lines)
    if any(i.licence and "NC" in i.licence for i in manifest.inputs):
        note += (
            "\n\nThis model is derived from corpora licensed for non-commercial or research use only: "
            "it may not be used commercially; share alike and attribute the corpora's authors."
        )
    return note


def train(
    manifest: Manifest,
    vectors: Sequence[np.ndarray | None],
    labels: Sequence[Label],
    hashes: Sequence[str],
    spec: FeatureSpec,
    *,
    progress: bool = True,
) -> tuple[TrainedModel, dict[str, Any], set[int]]:
    """Evaluate, fit and save the model a train job asks for.

    Parameters
    ----------
    manifest : Manifest
    vectors : sequence of array or None
        Each file's feature vector (None when it failed).
    labels : sequence of Label
    hashes : sequence of str
        Each file's content hash (for the training fingerprint).
    spec : FeatureSpec
    progress : bool
        A progress bar over the networks being fitted.

    Returns
    -------
    model, metrics, used
        The saved model, its evaluations, and the indices of the files it was trained on.

    Raises
    ------
    TrainingError
        Too few labelled files, an emotion without files, or no groups to normalise within.
    """
    ms = manifest.model
    data, use = _data(manifest, vectors, labels, hashes)
    fit_kw: dict[str, Any] = {
        "params": ms.mlp.model_dump(),
        "random_state": ms.random_state,
        "calibration": ms.calibration,
        "classifier": ms.classifier,
        "C": ms.C,
    }
    groups = np.asarray(data.speakers) if data.has_all_speakers else None
    n_corpora = len(set(data.corpora.tolist()))
    normalize, g = ms.normalize, None
    if normalize == "speaker":
        g = _speaker_groups(data, ms.min_speaker_files)
        n_groups = len(set(k for k in g.keys if k))
        if n_groups < 2 and "normalize" in ms.model_fields_set:
            raise ModelError(
                "model.normalize: speaker needs 2+ groups to standardise within: speakers with "
                f"{ms.min_speaker_files}+ training files (labels with a speaker: a pattern's speaker group, "
                "a table's speaker column, or inputs[].speaker: folder) or several corpora; found "
                f"{n_groups}. Lower model.min_speaker_files, name the speakers, or set normalize: none"
            )
        if n_groups < 2:  # the default asked for it: train the plain network alone, and say so
            log.warning(
                "training without speaker normalisation: it needs 2+ groups of %d+ files (speakers or corpora) "
                "and found %d; name the speakers (a label table's speaker column, or inputs[].speaker: folder) "
                "to train the normalising network too",
                ms.min_speaker_files,
                n_groups,
            )
            normalize, g = "none", None
    ddata = _dimension_data(manifest, vectors, labels, hashes) if ms.dimensions else None
    steps = (3 if normalize == "speaker" else 2) + (n_corpora if n_corpora >= 2 else 0)
    if ddata is not None:
        steps += 1 + _dimension_folds(ddata)
    log.info("training on %d files from %d corpora, %d features, classes %s", len(use), n_corpora, data.X.shape[1], ms)
    with tqdm(total=steps, desc="training", unit="step", disable=not progress, dynamic_ncols=True) as bar:

        def step(what: str) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update(1)

        metrics = evaluate(data.X, data.y, groups, cv_folds=ms.cv_folds, **fit_kw)
        step("evaluated without normalisation")
        norm_net = None
        if g is None:
            plain = fit_model(data.X, data.y, calibration_groups(data.corpora, data.speakers), **fit_kw)
            step("fitted the network")
        else:
            Xn, covered = g.stats(data.X).transform(data.X, g.keys)
            # Speaker-wise scores of the normalised network: each speaker's statistics come from their own files.
            gn = groups[covered] if groups is not None else None
            normalized_metrics = evaluate(Xn[covered], data.y[covered], gn, cv_folds=ms.cv_folds, **fit_kw)
            step("evaluated with normalisation")
            plain, norm_net = fit_normalized(
                data.X,
                data.y,
                corpora=data.corpora,
                speakers=data.speakers,
                speaker_ok=data.speaker_ok,
                min_files=ms.min_speaker_files,
                fit_kw=fit_kw,
                grouping=g,
            )
            step("fitted the plain and the normalised network")
            # The headline figures are the normalised ones; the fallback's stay beside them.
            metrics = {
                **normalized_metrics,
                "speaker_normalization": {
                    "min_speaker_files": ms.min_speaker_files,
                    "speakers": len({k for k, h in zip(g.keys, g.how, strict=True) if h == "speaker"}),
                    "corpora_normalised_whole": len({k for k, h in zip(g.keys, g.how, strict=True) if h == "corpus"}),
                },
                "without_speaker_normalization": metrics,
            }
        if n_corpora >= 2:
            metrics["leave_one_corpus_out"] = evaluate_corpora(
                data.X,
                data.y,
                data.corpora,
                data.speakers,
                data.speaker_ok,
                modes=tuple(ms.evaluate_modes) if normalize == "speaker" else ("none",),
                min_files=ms.min_speaker_files,
                fit_kw=fit_kw,
                n_jobs=_workers(manifest),
                on_fold=lambda c: step(f"held out {c}"),
            )
        dims: tuple[Dimension, ...] = ()
        if ddata is not None:
            dims, metrics["dimensions"] = _train_dimensions(
                manifest, ddata, fit_kw, normalize=normalize, n_jobs=_workers(manifest), step=step
            )
    own = float(np.median(distances(data.X, *scaler_of(plain))))
    held = {c: f["median_distance"] for c, f in metrics.get("leave_one_corpus_out", {}).get("folds", {}).items()}
    metrics["domain"] = domain_reference(own, held)
    meta = ModelMeta(
        classes=list(manifest.emotions),
        feature_spec=spec.to_dict(),
        training_fingerprint=training_fingerprint(data.content_hashes, data.y.tolist()),
        n_train=len(use),
        params={
            **fit_kw["params"],
            "classifier": ms.classifier,
            "C": ms.C,
            "random_state": ms.random_state,
            "calibration": ms.calibration,
            "normalize": normalize,
            "min_speaker_files": ms.min_speaker_files,
            "job": manifest.name,
            "corpora": sorted(set(data.corpora.tolist())),
            "dimensions": ({"C": DIMENSION_C, "temperature": {d.name: d.temperature for d in dims}} if dims else None),
        },
        metrics=metrics,
        versions=versions(),
    )
    keys = np.array([k or "" for k in g.keys] if g is not None else [""] * len(data.y), dtype=str)
    training = TrainingSet(X=data.X.astype(np.float32), y=np.asarray(data.y).astype(str), keys=keys)
    model = save_model(plain, meta, manifest.model_path, speaker_pipeline=norm_net, training=training, dimensions=dims)
    write_model_card(model, data_note=_licences(manifest, data))
    return model, metrics, set(use)


def _dimension_data(
    manifest: Manifest, vectors: Sequence[np.ndarray | None], labels: Sequence[Label], hashes: Sequence[str]
) -> TrainingData | None:
    """Every labelled file whose emotion the circumplex table places (None when there are none)."""
    use = [
        i
        for i, (v, lab) in enumerate(zip(vectors, labels, strict=True))
        if v is not None and lab.emotion and canonical(lab.emotion) is not None
    ]
    return _rows(manifest, vectors, labels, hashes, use) if use else None


def _dimension_folds(data: TrainingData) -> int:
    """How many fits of every network the dimensions' evaluation makes (progress)."""
    n = len(set(data.corpora.tolist()))
    return 0 if n < 2 else n if n < 3 else n * n


def _train_dimensions(
    manifest: Manifest,
    data: TrainingData,
    fit_kw: dict[str, Any],
    *,
    normalize: str,
    n_jobs: int,
    step: Any,
) -> tuple[tuple[Dimension, ...], dict[str, Any]]:
    """Arousal and valence: evaluated leave one corpus out (2+ corpora), then fitted on every placed file."""
    ms = manifest.model
    names = tuple(d for d in DIMENSIONS if fittable(d, data.y))
    info: dict[str, Any] = {
        "n_train": len(data.y),
        "emotions": {e: int((data.y == e).sum()) for e in sorted(set(data.y.tolist()))},
        "not_trained": {
            d: "the training files have emotions on one side of it only" for d in DIMENSIONS if d not in names
        },
    }
    for d, why in info["not_trained"].items():
        log.warning("no %s network: %s", d, why)
    temperature: dict[str, dict[str, float]] = {}
    if names and len(set(data.corpora.tolist())) >= 2:
        evaluation, temperature = evaluate_dimensions(
            data.X,
            data.y,
            data.corpora,
            data.speakers,
            data.speaker_ok,
            classes=list(manifest.emotions),
            dims=names,
            modes=tuple(ms.evaluate_modes) if normalize == "speaker" else ("none",),
            min_files=ms.min_speaker_files,
            fit_kw=fit_kw,
            n_jobs=n_jobs,
            on_fold=lambda c: step(f"arousal and valence, held out {c}"),
        )
        info |= evaluation
    g = _speaker_groups(data, ms.min_speaker_files) if normalize == "speaker" else None
    pairs = {d: fit_dimension_pair(data.X, data.y, d, grouping=g, random_state=ms.random_state) for d in names}
    dims = tuple(Dimension(d, plain, norm, temperature.get(d, {})) for d, (plain, norm) in pairs.items())
    step("fitted the arousal and valence networks")
    return dims, info


def _speaker_groups(data: TrainingData, min_files: int) -> Grouping:
    """The training rows' normalisation groups: each speaker's (where known and allowed), else the corpus's."""
    return group_rows(
        data.X,
        mode="speaker",
        corpora=data.corpora,
        speakers=data.speakers,
        speaker_ok=data.speaker_ok,
        min_files=min_files,
    )


def _workers(manifest: Manifest) -> int:
    import joblib

    n = manifest.engine.n_jobs
    return joblib.cpu_count() if n < 0 else max(1, n)
