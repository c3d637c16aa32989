"""Train, evaluate, save and load the emotion classifier.

The model is a scikit-learn Pipeline (StandardScaler → MLPClassifier with the
librosa tutorial recipe's parameters), written with skops, never pickle, with batchser's
metadata and prediction arrays inside the same file (one unit, replaced by one
rename); loading verifies the recorded hashes and accepts only an explicit
list of types.

One module per responsibility: ``base`` (metadata, the loaded model),
``network`` (the numpy forward pass jobs label with), ``train`` (the recipe),
``evaluate`` (scores on held-out speakers and corpora), ``store`` (files),
``card`` (the Markdown card). scikit-learn and skops are imported inside the
functions that use them: the two cost about 3 s to import, more than a warm
job's whole work, and a job that only labels never needs them.
"""

from batchser.model.base import ModelError, ModelMeta, TrainedModel
from batchser.model.card import write_model_card
from batchser.model.evaluate import calibration_table, evaluate
from batchser.model.network import NumpyNetwork, network_arrays
from batchser.model.store import TRUSTED_TYPES, load_model, read_meta, read_training, save_model, weights_digest
from batchser.model.train import build_pipeline, fit, fit_model, training_fingerprint, versions

__all__ = [
    "TRUSTED_TYPES",
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
    "network_arrays",
    "read_meta",
    "read_training",
    "save_model",
    "training_fingerprint",
    "versions",
    "weights_digest",
    "write_model_card",
]
