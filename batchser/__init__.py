"""batchser: batch speech-emotion annotation jobs (librosa features, scikit-learn MLP)."""

from importlib.metadata import PackageNotFoundError, version

from batchser.api import (
    AnnotationResult,
    annotate,
    default_cache_dir,
    default_model_path,
    load_model,
    process_files,
    train,
)
from batchser.job import JobSummary, NoInputError, run_job, watch_job
from batchser.manifest import Manifest, ManifestError, load_manifest
from batchser.model import ModelError

__all__ = [
    "AnnotationResult",
    "EmotionClassifier",
    "JobSummary",
    "Manifest",
    "ManifestError",
    "ModelError",
    "NoInputError",
    "__version__",
    "annotate",
    "default_cache_dir",
    "default_model_path",
    "load_manifest",
    "load_model",
    "process_files",
    "run_job",
    "train",
    "watch_job",
]

try:
    __version__ = version("batchser")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> object:
    # The scikit-learn estimator imports scikit-learn, which labelling jobs never need.
    if name == "EmotionClassifier":
        from batchser.estimator import EmotionClassifier

        return EmotionClassifier
    raise AttributeError(f"module 'batchser' has no attribute {name!r}")
