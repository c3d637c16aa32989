"""The training recipe: what a model is trained with when whoever asks for one says nothing more.

One definition, read by every door that trains: a train manifest's defaults
(:mod:`batchser.manifest`), :func:`batchser.train`, ``batchser init``'s template,
:class:`batchser.EmotionClassifier`. It is the shipped model's recipe
(``jobs/train-pooled.yaml`` states it in full, ``batchser/models/pooled-4emo.md`` shows
it, ``tests/test_recipe.py`` holds the three together), which scored best leave one
corpus out (docs/accuracy.md). Training with the shipped model's features also means a
model trained on an archive that was labelled first reuses the features the labelling
cached, instead of extracting another set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["SHIPPED", "Calibration", "Classifier", "Normalize", "Recipe"]

Classifier = Literal["mlp", "logistic"]
Calibration = Literal["none", "sigmoid", "isotonic", "temperature"]
Normalize = Literal["none", "speaker"]


@dataclass(frozen=True)
class Recipe:
    """Features and classifier settings of a training run.

    Attributes
    ----------
    features : tuple of str
        Feature groups, in order (:data:`batchser.features.FEATURE_DIMS`).
    sample_rate : int
        Audio is resampled to this rate before analysis.
    classifier : {"logistic", "mlp"}
        ``logistic``: LogisticRegression(C); ``mlp``: the librosa tutorial recipe's network.
    C : float
        The logistic regression's inverse regularisation.
    calibration : {"temperature", "sigmoid", "isotonic", "none"}
        Probability calibration, fitted on held-out speakers or corpora.
    normalize : {"speaker", "none"}
        ``speaker``: a second network on features standardised per speaker (else per corpus).
    min_speaker_files : int
        A speaker (or corpus) needs this many recordings in a job to be standardised.
    random_state : int
        The classifier's seed.
    """

    features: tuple[str, ...]
    sample_rate: int
    classifier: Classifier
    C: float
    calibration: Calibration
    normalize: Normalize
    min_speaker_files: int
    random_state: int


SHIPPED = Recipe(
    features=("mfcc_stats", "logmel_stats", "spectral_stats", "prosody", "voice_stats"),
    sample_rate=16000,
    classifier="logistic",
    C=0.01,
    calibration="temperature",
    normalize="speaker",
    min_speaker_files=10,
    random_state=0,
)
