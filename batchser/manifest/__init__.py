"""Job manifests: YAML, safe-loaded, validated into typed records before any work.

Every relative path in a manifest resolves against the manifest's ``root``,
which itself is relative to the folder holding the manifest file (default
``.``, that folder). The example jobs in ``jobs/`` set ``root: ..`` so that
their paths read from the project root, whatever the current directory is.

``specs`` holds the parts (inputs, model, segments…), ``core`` the
:class:`Manifest` that joins them, its validation and the safe YAML loader.
"""

from batchser.manifest.core import Manifest, load_manifest, parse_manifest
from batchser.manifest.specs import (
    MAX_MANIFEST_BYTES,
    RAVDESS_EMOTIONS,
    AudioSpec,
    EngineSpec,
    InputSpec,
    LabelSpec,
    ManifestError,
    MLPSpec,
    ModelSpec,
    OutputSpec,
    SegmentsSpec,
    corpus_name,
)

__all__ = [
    "MAX_MANIFEST_BYTES",
    "RAVDESS_EMOTIONS",
    "AudioSpec",
    "EngineSpec",
    "InputSpec",
    "LabelSpec",
    "MLPSpec",
    "Manifest",
    "ManifestError",
    "ModelSpec",
    "OutputSpec",
    "SegmentsSpec",
    "corpus_name",
    "load_manifest",
    "parse_manifest",
]
