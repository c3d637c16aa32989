"""batchser: batch speech-emotion annotation jobs (librosa features, scikit-learn MLP)."""

__version__ = "0.1.0"
