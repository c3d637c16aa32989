"""A job's inputs and their labels: the label source of each input, and the check that they label files.

:func:`input_paths` is where a job's inputs are found (the manifest's, resolved
when it was loaded, and the capture queue); :func:`check_labels` is what
``validate`` runs before any work: every labelled input labels files, and
its labels are the job's emotions.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from batchser.discover import SourceFile, iter_files
from batchser.labels import Label, label_coverage, label_source
from batchser.manifest import Manifest, ManifestError
from batchser.speakers import job_turns
from batchser.training import near_misses

__all__ = ["LabelCoverage", "check_labels", "input_paths", "label_path"]

log = logging.getLogger(__name__)


def input_paths(manifest: Manifest) -> tuple[list[Path | str], list[Callable[[Path | str], Label]]]:
    paths = [manifest.locate(i.path) for i in manifest.inputs]
    fns = [
        label_source(
            i.labels,
            resolve=manifest.locate,
            speaker=i.speaker,
            root=manifest.root_dir,
            input_root=p,
            corpus=i.corpus_name,
        )
        for i, p in zip(manifest.inputs, paths, strict=True)
    ]
    if manifest.queue_dir.is_dir():  # captured clips: no labels
        paths.append(manifest.queue_dir)
        fns.append(label_source("none", resolve=manifest.resolve, corpus="queue"))
    return paths, fns


def label_path(f: SourceFile) -> Path | str:
    """What a label source is asked about: the file's path (an archive member's name; an object's URL)."""
    if f.remote:
        return f.name
    return Path(f.name) if f.member else f.path


class LabelCoverage:
    """How many of each labelled input's files got an emotion, counted as files are listed."""

    def __init__(self, manifest: Manifest, fns: Sequence[Callable[[Path], Label]]) -> None:
        self.manifest = manifest
        self.tables = [getattr(fn, "table", None) for fn in fns]
        # A source naming speakers alone (path,speaker; a pattern with only a speaker group): count those.
        self.speakers_only = [bool(getattr(fn, "speakers_only", False)) for fn in fns]
        self.files: Counter[int] = Counter()
        self.labelled: Counter[int] = Counter()
        # Table rows that name a listed file: the rest are reported (only the
        # table's own paths are kept, not the archive's).
        self.matched: dict[int, set[str]] = {}

    def add(self, f: SourceFile, label: Label) -> None:
        i = f.input_index
        self.files[i] += 1
        only = i < len(self.speakers_only) and self.speakers_only[i]
        self.labelled[i] += bool(label.speaker if only else label.emotion)
        table = self.tables[i] if i < len(self.tables) else None
        if table is not None:
            key = f.name if f.remote else os.path.realpath(f.path) if not f.member else os.path.normpath(f.name)
            if key in table.table:
                self.matched.setdefault(i, set()).add(key)

    def check(self, *, quiet: bool) -> None:
        """Say how many files each labelled input labels; refuse an input whose labels match no file.

        Raises
        ------
        ManifestError
            A label source that gives no discovered file an emotion (a table naming other
            paths, a pattern that never matches): the job would train or score on nothing.
        """
        problems = []
        for i, inp in enumerate(self.manifest.inputs):
            if not inp.has_labels:
                continue
            only = self.speakers_only[i]
            line, none = label_coverage(
                f"inputs[{i}] ({inp.corpus_name})",
                self.files[i],
                self.labelled[i],
                self.tables[i],
                self.matched.get(i, set()),
                what="a speaker" if only else "an emotion",
            )
            if none:
                fix = (
                    "check the pattern's speaker group or the table's paths"
                    if only
                    else ("check the pattern or the table's paths")
                )
                problems.append(f"inputs[{i}].labels: {line}; {fix}")
            elif "match no file" in line or self.labelled[i] < self.files[i]:
                log.warning(line)  # partly labelled, or rows that name no file: worth a look
            elif not quiet:
                log.info(line)
        if problems:
            raise ManifestError(str(self.manifest.manifest_file or self.manifest.name), problems)


def check_labels(manifest: Manifest, classes: Sequence[str]) -> None:
    """What ``validate`` checks of the labels before any work: every labelled input's labels match
    files, and the label names are the job's emotions (``classes``), with a ``map:`` suggested.

    Lists the inputs and applies their label sources (no file is read or hashed).

    Raises
    ------
    ManifestError
        Naming the input, the labels that are none of the emotions and the map to add, or
        the label source that matches no file.
    """
    import difflib

    paths, fns = input_paths(manifest)
    n = len(manifest.inputs)
    coverage = LabelCoverage(manifest, fns)
    turns = job_turns(manifest)
    names: dict[int, Counter[str]] = {}
    for f in iter_files(paths[:n], max_member_bytes=[round(i.max_member_mb * 2**20) for i in manifest.inputs]):
        label = fns[f.input_index](label_path(f))
        coverage.add(f, label)
        turns.match(f)
        if label.emotion:
            names.setdefault(f.input_index, Counter())[label.emotion] += 1

    def suggest(i: int, other: list[str]) -> str:
        """A map: that renames ``other`` to the emotions, written where this input's labels can take it."""
        close = {o: difflib.get_close_matches(o.lower(), list(classes), n=1, cutoff=0.4) for o in other}
        pick = f"<one of {', '.join(classes)}>"
        mapping = "{" + ", ".join(f"{o}: {c[0] if c else pick}" for o, c in close.items()) + "}"
        labels = manifest.inputs[i].labels
        if isinstance(labels, str) and labels.startswith("csv:"):  # csv:<file> takes no map; the table form does
            how = f"write inputs[{i}].labels as {{table: {labels.removeprefix('csv:')}, map: {mapping}}}"
        elif isinstance(labels, str):  # ravdess: its own names, no map
            how = f"label inputs[{i}] with a pattern and map: {mapping} (docs/manifest.md, *Corpora and labels*)"
        else:
            how = f"add map: {mapping} to inputs[{i}].labels"
        if not all(close.values()):
            how += f", each {pick} replaced by the emotion that label stands for"
        return how

    problems = []
    if manifest.model.train:  # files of other emotions are left out on purpose; an emotion with none fails
        have = set().union(*names.values()) if names else set()
        missing = [c for c in classes if c not in have]
        for i, counts in sorted(names.items()):
            other = sorted(set(counts) - set(classes))
            if missing and other:
                problems.append(
                    f"inputs[{i}].labels: no file is labelled {', '.join(missing)}, and the labels "
                    f"{', '.join(other)} are none of the emotions; {suggest(i, other)}"
                )
            elif misses := near_misses(other, classes):  # validate says what run will warn of
                log.warning(
                    "inputs[%d].labels: %d files labelled %s are left out of training (none of the emotions as "
                    "written); %s",
                    i,
                    sum(counts[k] for k in misses),
                    ", ".join(misses),
                    suggest(i, list(misses)),
                )
    else:  # a labelling job scores the files whose labels are the model's and counts the rest
        for i, counts in sorted(names.items()):
            if not set(counts) & set(classes):
                other = sorted(counts)
                problems.append(
                    f"inputs[{i}].labels: the labels {', '.join(other)} are none of the model's emotions "
                    f"({', '.join(classes)}); {suggest(i, other)}"
                )
    where = str(manifest.manifest_file or manifest.name)
    for check in (lambda: coverage.check(quiet=True), lambda: turns.refuse_unmatched(where)):
        try:
            check()
        except ManifestError as exc:
            problems += exc.problems
    if problems:
        raise ManifestError(str(manifest.manifest_file or manifest.name), problems)
