"""A job's problems in the terms of the command that started it.

``batchser annotate DIR --out OUT`` runs a manifest it builds itself, so what goes
wrong is found, and said, in manifest fields (``output.dir: … holds the reports of
other inputs``). Someone who typed options never saw those fields: this module
says the same problems in the options they typed (``--out: …``), the inputs by the
paths they gave.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["ANNOTATE_OPTIONS", "OptionError", "in_option_terms"]

# Manifest field -> the `batchser annotate` option that sets it.
ANNOTATE_OPTIONS: Mapping[str, str] = {
    "output.dir": "--out",
    "output.formats": "--format",
    "model.path": "--model",
    "model.reviewed": "--reviewed",
    "model.min_confidence": "--min-confidence",
    "model.adapt": "--adapt",
    "engine.n_jobs": "--jobs",
    "n_jobs": "--jobs",
    "cache": "--cache",
    "allow_unlistable": "--allow-unlistable",
}


class OptionError(ValueError):
    """Options that cannot run, with the command's name; ``str(err)`` names each option and the fix."""

    def __init__(self, command: str, problems: Sequence[str]) -> None:
        self.command = command
        self.problems = list(problems)
        super().__init__("\n".join(f"batchser {command}: {p}" for p in self.problems))


def in_option_terms(problems: Sequence[str], options: Mapping[str, str], inputs: Sequence[str]) -> list[str]:
    """``problems`` (manifest fields) said in ``options`` and the ``inputs`` as given.

    Parameters
    ----------
    problems : sequence of str
        A :class:`~batchser.manifest.ManifestError`'s problems.
    options : mapping
        Manifest field -> the option that sets it (:data:`ANNOTATE_OPTIONS`).
    inputs : sequence of str
        The inputs as typed, in order: ``inputs[i]`` becomes the i-th.

    Returns
    -------
    list of str
    """
    fields = sorted(options, key=len, reverse=True)  # output.formats before a field it contains
    rx = re.compile(r"(?<![\w.\[-])(" + "|".join(map(re.escape, fields)) + r")(?![\w])(\[\d+\])?")
    out = []
    for p in problems:
        p = re.sub(
            r"(?<![\w.])inputs\[(\d+)\](?:\.path)?(?![.\w])",
            lambda m: f"the input {inputs[int(m[1])]}" if int(m[1]) < len(inputs) else "an input",
            p,
        )
        p = rx.sub(lambda m: options[m[1]], p)
        p = p.replace("relative paths are taken from root", "relative paths are taken from the current folder,")
        out.append(p)
    return out
