"""batchser: batch speech-emotion annotation jobs (librosa features, scikit-learn MLP)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batchser")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
