"""The Python interface: label files from a notebook or another program, no YAML needed.

    >>> import batchser
    >>> table = batchser.annotate("recordings/")            # doctest: +SKIP
    >>> table[["label", "confidence"]].head()                # doctest: +SKIP

:func:`annotate` runs the same job as ``batchser run`` (discovery, the shared
feature cache, parallel extraction, the model, adaptation) and returns its
report as a DataFrame indexed by path; nothing is written but the cache.
:func:`process_files` returns the whole result (:class:`AnnotationResult`):
that table, the long recordings' segments indexed by (file, start, end) as
audinterface indexes them, and the job's summary; with ``out_dir`` it keeps
the reports and exports there.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from batchser.exports import exporters
from batchser.features import FeatureSpec
from batchser.locations import default_cache_dir, default_model_path
from batchser.manifest import Manifest, ManifestError
from batchser.model import TrainedModel, read_meta
from batchser.model import load_model as _load_model
from batchser.recipe import SHIPPED
from batchser.result import AnnotationResult, read_result

__all__ = [
    "AnnotationResult",
    "annotate",
    "annotation_manifest",
    "default_cache_dir",
    "default_model_path",
    "load_model",
    "process_files",
    "shipped_features",
    "train",
    "train_manifest",
]

SPEAKER_TABLES = (".csv", ".tsv", ".tab")  # a ``speakers`` file with these suffixes is a path,speaker table


def shipped_features() -> list[str]:
    """The feature groups of the shipped model, in order (:data:`batchser.recipe.SHIPPED`)."""
    return list(SHIPPED.features)


def load_model(path: str | Path) -> TrainedModel:
    """Load a model saved by batchser, checked as a job would check it (types, hashes).

    Parameters
    ----------
    path : str or Path
        A ``.skops`` model file.

    Returns
    -------
    TrainedModel
        With ``meta`` (classes, features, metrics) and ``predict_proba`` on feature vectors.
    """
    meta = read_meta(Path(path))
    return _load_model(Path(path), feature_fingerprint=meta.feature_fingerprint, classes=list(meta.classes))


def annotation_manifest(
    inputs: Sequence[str | Path],
    *,
    out_dir: str | Path,
    formats: Sequence[str] = ("csv", "parquet"),
    model: str | Path | None = None,
    adapt: str = "speaker",
    speaker: str = "labels",
    labels: str | dict[str, Any] = "none",
    min_confidence: float | None = None,
    cache: str | Path | None = None,
    n_jobs: int = -1,
    backend: str = "loky",
    allow_empty: bool = False,
    allow_unlistable: bool = False,
    reviewed: str | Path | None = None,
    ignore_unknown_answers: bool = False,
    page: bool = True,
    segments: str = "speech",
    check_speech: bool = False,
    speakers: str | Path | None = None,
) -> Manifest:
    """The manifest of a labelling job over ``inputs`` with a model's own features and classes.

    What :func:`annotate` and ``batchser annotate`` run; see :func:`annotate` for the parameters.

    Raises
    ------
    ManifestError
        A value out of range, or a speakers table given beside other labels.
    """
    model_path = Path(model) if model is not None else default_model_path()
    meta = read_meta(model_path)
    spec = FeatureSpec.from_dict(meta.feature_spec)
    turns = None
    if speakers is not None:
        if Path(speakers).suffix.lower() in SPEAKER_TABLES:  # path,speaker: who speaks in each file
            if labels != "none":
                why = f"speakers: {speakers} is a table of speakers; put its column in the labels table instead"
                raise ManifestError("annotate", [why])
            labels = f"csv:{Path(speakers).resolve()}"
        else:  # speaker turns: who speaks when
            turns = str(speakers)
    return Manifest.from_dict(
        {
            "name": "annotate",
            "root": str(Path.cwd()),
            "inputs": [
                {"path": str(p), "labels": labels, "speaker": speaker} | ({"speakers": turns} if turns else {})
                for p in inputs
            ],
            "emotions": list(meta.classes),
            "features": list(spec.names),
            "chroma_tuning": spec.chroma_tuning,
            "audio": {"sample_rate": spec.sample_rate},
            "cache": str(cache or default_cache_dir()),
            "engine": {"backend": backend, "n_jobs": n_jobs},
            "model": {
                "path": str(model_path),
                "adapt": adapt,
                "min_confidence": min_confidence,
                "reviewed": str(Path(reviewed).resolve()) if reviewed else None,
                "ignore_unknown_answers": ignore_unknown_answers,
            },
            "output": {"dir": str(out_dir), "formats": list(formats), "page": page},
            "queue": str(Path(out_dir) / ".queue"),  # no capture queue: nothing of the user's is read
            "allow_empty": allow_empty,
            "allow_unlistable": allow_unlistable,
            "segments": None if segments == "none" else {"method": segments, "short_files": check_speech},
        }
    )


def annotate(
    inputs: str | Path | Sequence[str | Path],
    *,
    model: str | Path | None = None,
    adapt: str = "speaker",
    speaker: str = "labels",
    labels: str | dict[str, Any] = "none",
    min_confidence: float | None = None,
    cache: str | Path | None = None,
    n_jobs: int = -1,
    backend: str = "loky",
    progress: bool = False,
    reviewed: str | Path | None = None,
    ignore_unknown_answers: bool = False,
    segments: str = "speech",
    check_speech: bool = False,
    speakers: str | Path | None = None,
) -> pd.DataFrame:
    """Label audio files with an emotion and every class's probability.

    Parameters
    ----------
    inputs : path, or sequence of paths
        Folders (searched recursively), files, globs, or zip/tar archives; or
        addresses in object storage (``s3://bucket/prefix/``, ``gs://…``,
        ``az://…``, an ``https://`` file), read with the storage's own
        credentials (its standard chain) and reported by their URLs.
    model : path or None
        A ``.skops`` model; None uses the shipped one (:func:`default_model_path`).
    adapt : {"speaker", "corpus", "cluster", "none"}
        How files are standardised among themselves before labelling (README,
        *What to expect*): by speaker when known, else over each input's files.
    speaker : {"labels", "folder"}
        Where the speaker comes from; "folder": one folder per speaker.
    labels : str or dict
        A label source (as ``inputs[].labels`` in a manifest) to fill ``true_label``.
    min_confidence : float or None
        Files whose top probability is lower are labelled "uncertain".
    cache : path or None
        The feature cache; None uses a per-user folder (:func:`default_cache_dir`).
    n_jobs, backend
        Workers and joblib backend, as ``engine`` in a manifest.
    progress : bool
        Progress bars on stderr.
    reviewed : path or None
        A person's answers to learn from first (``batchser review``'s
        ``review/answers.csv``, or any CSV with ``path`` and ``label``
        columns): the model is refitted on its training rows plus those
        files; an answered file keeps the answer. Answers find their files by
        content hash, else by path relative to the answers file's folder or
        the current folder.
    ignore_unknown_answers : bool
        Set aside answers whose label is none of the model's emotions, none or
        skip (counted in the summary) instead of raising.
    segments : {"speech", "windows", "none"}
        How files longer than 10 s are labelled: by the speech segments a
        voice-activity model finds (``segments.parquet`` of a job), by fixed
        4 s windows, or whole.
    check_speech : bool
        Check shorter files for speech too: one without any gets status
        ``"no speech"`` instead of an emotion.
    speakers : path or None
        Who speaks: speaker turns (an RTTM, Praat TextGrid or ELAN file, or a
        folder of them, matched to recordings by name; ``rttm:DIR`` names the
        format), or a CSV/TSV table with ``path`` and ``speaker`` columns. A
        long recording's speech segments are then cut where the speaker
        changes and standardised per speaker.

    Returns
    -------
    pandas.DataFrame
        The annotations report (``label``, ``confidence``, ``p_<emotion>``,
        ``status``, ``error``, ``normalized_by``, ``domain_distance`` …),
        indexed by ``path`` as given (absolute for inputs outside the
        current folder). :func:`process_files` returns it with the long
        recordings' segments and the summary.

    Raises
    ------
    batchser.manifest.ManifestError
        An input that does not exist, or a value out of range.
    batchser.review.AnswersError
        ``reviewed`` answers with unknown labels, or that match no file.
    """
    return process_files(
        inputs,
        model=model,
        adapt=adapt,
        speaker=speaker,
        labels=labels,
        min_confidence=min_confidence,
        cache=cache,
        n_jobs=n_jobs,
        backend=backend,
        progress=progress,
        reviewed=reviewed,
        ignore_unknown_answers=ignore_unknown_answers,
        segments=segments,
        check_speech=check_speech,
        speakers=speakers,
    ).files


def process_files(
    inputs: str | Path | Sequence[str | Path],
    *,
    model: str | Path | None = None,
    adapt: str = "speaker",
    speaker: str = "labels",
    labels: str | dict[str, Any] = "none",
    min_confidence: float | None = None,
    cache: str | Path | None = None,
    n_jobs: int = -1,
    backend: str = "loky",
    progress: bool = False,
    reviewed: str | Path | None = None,
    ignore_unknown_answers: bool = False,
    segments: str = "speech",
    check_speech: bool = False,
    speakers: str | Path | None = None,
    out_dir: str | Path | None = None,
    formats: Sequence[str] | None = None,
    overwrite: bool = False,
) -> AnnotationResult:
    """Label audio files and return every result: files, long recordings' segments, the summary.

    The job :func:`annotate` runs (and ``batchser annotate``), returned whole:
    the per-file table, the segments indexed by (file, start, end) as
    audinterface's ``process_files`` indexes them, and ``summary.json``'s
    warnings and estimates.

        >>> result = batchser.process_files("interviews/")          # doctest: +SKIP
        >>> result.segments.loc["interviews/a.wav", "label"]         # doctest: +SKIP

    Parameters
    ----------
    inputs, model, adapt, speaker, labels, min_confidence, cache, n_jobs, backend, progress, reviewed,
    ignore_unknown_answers, segments, check_speech, speakers
        As for :func:`annotate`.
    out_dir : path or None
        Write the job's reports there too, as ``batchser annotate --out``
        does (with ``report.html``; files another job wrote there are
        refused unless ``overwrite``), and refuse inputs that hold no audio
        rather than replace reports with empty ones. None: a temporary
        folder, removed before returning.
    formats : sequence of str or None
        Report formats, as ``output.formats``: ``csv``, ``parquet``, and the
        exports ``textgrid``, ``eaf``, ``audacity`` (which need ``out_dir``).
        None: csv and parquet in ``out_dir``; parquet alone in a temporary
        folder. The tables are read back from the Parquet files when there
        are any, else from the CSV files (numbers to 6 significant digits).
    overwrite : bool
        Replace reports in ``out_dir`` that another set of inputs wrote.

    Returns
    -------
    AnnotationResult
        ``files`` (what :func:`annotate` returns), ``segments``, ``summary``,
        and ``exports``: the paths of the files written under
        ``out_dir/exports``.

    Raises
    ------
    batchser.manifest.ManifestError
        An input that does not exist, a value out of range, exports asked
        for without ``out_dir``, or an ``out_dir`` holding files this job did not write.
    batchser.job.NoInputError
        With ``out_dir``: the inputs hold no audio (the reports there are left as they were).
    batchser.review.AnswersError
        ``reviewed`` answers with unknown labels, or that match no file.
    """
    from batchser.job import run_job

    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    asked = list(formats) if formats is not None else (["csv", "parquet"] if out_dir is not None else ["parquet"])
    wanted = [e.name for e in exporters(asked)]
    if out_dir is None and wanted:
        raise ManifestError(
            "process_files",
            [
                f"formats: {', '.join(wanted)} are files to open in other programs; "
                "give out_dir, a folder to keep them in"
            ],
        )
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchser-")))
        else:
            folder = Path(out_dir)
        manifest = annotation_manifest(
            paths,
            out_dir=folder,
            formats=asked,
            model=model,
            adapt=adapt,
            speaker=speaker,
            labels=labels,
            min_confidence=min_confidence,
            cache=cache,
            n_jobs=n_jobs,
            backend=backend,
            allow_empty=out_dir is None,  # a real folder keeps its reports when the inputs hold nothing
            reviewed=reviewed,
            ignore_unknown_answers=ignore_unknown_answers,
            page=out_dir is not None,  # nobody opens a temporary folder's page
            segments=segments,
            check_speech=check_speech,
            speakers=speakers,
        )
        summary = run_job(manifest, progress=progress, overwrite=overwrite)
        return read_result(summary, manifest.output_dir, keep_exports=out_dir is not None)


def train_manifest(
    inputs: Sequence[str | Path],
    *,
    labels: str | dict[str, Any],
    emotions: Sequence[str],
    model_path: str | Path,
    out_dir: str | Path,
    speaker: str = "labels",
    classifier: str = SHIPPED.classifier,
    features: Sequence[str] | None = None,
    cache: str | Path | None = None,
    n_jobs: int = -1,
) -> Manifest:
    """The manifest of a train job over ``inputs``: what :func:`train` runs (see it for the parameters).

    Everything it does not set is the recipe's (:data:`batchser.recipe.SHIPPED`), as in a
    train manifest that does not say.
    """
    model = {"path": str(model_path), "train": True, "classifier": classifier}
    job: dict[str, Any] = {
        "name": "train",
        "root": str(Path.cwd()),
        "inputs": [{"path": str(p), "labels": labels, "speaker": speaker} for p in inputs],
        "emotions": list(emotions),
        "cache": str(cache or default_cache_dir()),
        "engine": {"n_jobs": n_jobs},
        "model": model,
        "output": {"dir": str(out_dir)},
        "queue": str(Path(out_dir) / ".queue"),  # no capture queue: nothing of the user's is read
    }
    if features is not None:
        job["features"] = list(features)
    return Manifest.from_dict(job)


def train(
    inputs: str | Path | Sequence[str | Path],
    *,
    labels: str | dict[str, Any],
    emotions: Sequence[str],
    model_path: str | Path,
    speaker: str = "labels",
    classifier: str = SHIPPED.classifier,
    features: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    cache: str | Path | None = None,
    n_jobs: int = -1,
    progress: bool = False,
) -> TrainedModel:
    """Train, evaluate and save a model from labelled audio; what a train manifest does.

    Parameters
    ----------
    inputs : path, or sequence of paths
        Folders, files, globs or archives holding the labelled audio.
    labels : str or dict
        Their label source, as ``inputs[].labels`` in a manifest: ``"csv:labels.csv"``
        (columns path, label and optionally speaker), ``{"pattern": ..., "map": ...}``
        or ``{"table": ...}``.
    emotions : sequence of str
        The classes to learn; files labelled otherwise are left out.
    model_path : path
        Where the ``.skops`` model is written (its card beside it, ``.md``).
    speaker : {"labels", "folder"}
        Where the speaker comes from, for the speaker-wise evaluation and normalisation.
    classifier : {"logistic", "mlp"}
        The shipped model's is logistic regression, which transfers better to new
        recordings (docs/accuracy.md). The rest of the recipe (C, calibration, speaker
        normalisation) is always the shipped model's (:data:`batchser.recipe.SHIPPED`).
    features : sequence of str or None
        Feature groups; None: the shipped model's, so features an earlier
        :func:`annotate` of the same files cached are used again.
    out_dir : path or None
        Where the reports, ``metrics.json`` and plots go; None: a temporary folder.
    cache, n_jobs, progress
        As for :func:`annotate`.

    Returns
    -------
    TrainedModel
        The saved model; ``model.meta.metrics`` holds the evaluations.

    Raises
    ------
    batchser.manifest.ManifestError
        Missing inputs or label files, unknown emotions or features.
    """
    from batchser.job import run_job

    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    with tempfile.TemporaryDirectory(prefix="batchser-train-") as tmp:
        manifest = train_manifest(
            paths,
            labels=labels,
            emotions=emotions,
            model_path=model_path,
            out_dir=out_dir or tmp,
            speaker=speaker,
            classifier=classifier,
            features=features,
            cache=cache,
            n_jobs=n_jobs,
        )
        run_job(manifest, progress=progress)
    return load_model(manifest.model_path)
