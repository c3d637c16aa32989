"""Checks on the paths a manifest names, made before a job does any work.

Two promises live here: every path the job reads exists (or the manifest is
refused, naming the field), and nothing the job writes (reports, a trained
model, cache parts, captured clips) can replace a file it reads (an input, a
label file, the model it labels with, the manifest itself).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

from batchser.discover import AUDIO_EXTENSIONS, is_pattern, pattern_matches
from batchser.exports.names import EXPORTS_DIR
from batchser.labels import label_source
from batchser.manifest import Manifest, ManifestError
from batchser.speakers import TurnsSource
from batchser.storage import AccessDeniedError, ObjectNotFoundError, StorageError, is_url, shown_url, storage_for

__all__ = ["check_manifest_paths", "model_files", "report_files"]

# Every file name a job may write into output.dir (summary.json last).
_REPORT_STEMS = ("annotations", "segments")
_REPORT_EXTRAS = ("metrics.json", "confusion_matrix.png", "reliability.png", "report.html", "summary.json")


def model_files(path: Path) -> list[Path]:
    """The model file and what is kept beside it: metadata, arrays (older models) and the card."""
    return [
        path,
        path.with_name(path.name + ".json"),
        path.with_name(path.name + ".npz"),
        path.with_suffix(".md"),
        path.with_suffix(".reliability.png"),
    ]


def report_files(manifest: Manifest) -> list[Path]:
    """Every report file the job may write (whether or not this run writes it)."""
    out = manifest.output_dir
    return [out / f"{stem}.{fmt}" for stem in _REPORT_STEMS for fmt in ("csv", "parquet")] + [
        out / name for name in _REPORT_EXTRAS
    ]


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(os.path.join(folder, ""))


def _read_files(manifest: Manifest) -> Iterator[tuple[str, Path]]:
    """(what, path) of every file the job reads and must never replace."""
    if manifest.manifest_file is not None:
        yield "the manifest", manifest.manifest_file
    for i, inp in enumerate(manifest.inputs):
        if not is_url(inp.path):
            p = manifest.resolve(inp.path)
            if not is_pattern(p) and not p.is_dir():
                yield f"inputs[{i}].path", p
        if inp.label_file is not None and not is_url(inp.label_file):
            yield f"inputs[{i}].labels", manifest.resolve(inp.label_file)
        if inp.speakers is not None:
            turns = TurnsSource.parse(inp.speakers, manifest.resolve).path
            if not turns.is_dir():
                yield f"inputs[{i}].speakers", turns
    if not manifest.model.train:
        for p in model_files(manifest.model_path):
            yield "the model (model.path)", p


def _write_conflicts(manifest: Manifest) -> list[str]:
    reads = [(what, p, _real(p)) for what, p in _read_files(manifest)]
    writes = [("output.dir", p) for p in report_files(manifest)]
    if manifest.model.train:
        writes += [("model.path", p) for p in model_files(manifest.model_path)]
    in_dirs = [(i, _real(manifest.resolve(inp.path))) for i, inp in enumerate(manifest.inputs) if not is_url(inp.path)]
    in_dirs = [(i, d) for i, d in in_dirs if os.path.isdir(d)]
    problems = [
        f"output.dir: {manifest.output_dir} is the folder inputs[{i}].path reads; "
        "give the reports a folder of their own (for example a 'reports' folder beside it)"
        for i, d in in_dirs
        if _real(manifest.output_dir) == d
    ]
    for field, w in writes:
        rw = _real(w)
        if os.path.splitext(rw)[1].lower() in AUDIO_EXTENSIONS and os.path.exists(rw):
            for i, d in in_dirs:
                if _inside(rw, d):
                    reads.append((f"audio in inputs[{i}].path", w, rw))
        for what, p, rp in reads:
            if rw == rp:
                problems.append(
                    f"{field}: the job would write {w}, which is {what} ({p}); "
                    "choose another output folder or model path so the job never replaces what it reads"
                )
    # exports/ is replaced whole by each run (or removed): nothing the job reads may lie in it.
    exports = _real(manifest.output_dir / EXPORTS_DIR)
    read_roots = [*_read_files(manifest)]
    for i, inp in enumerate(manifest.inputs):  # folders too
        if not is_url(inp.path):
            read_roots.append((f"inputs[{i}].path", manifest.resolve(inp.path)))
        if inp.speakers is not None:
            read_roots.append((f"inputs[{i}].speakers", TurnsSource.parse(inp.speakers, manifest.resolve).path))
    problems += [
        f"{what}: {p} lies in {manifest.output_dir / EXPORTS_DIR}, which every run replaces whole (or removes); "
        "copy what you want to keep out of it first"
        for what, p in dict.fromkeys(read_roots)
        if _inside(_real(p), exports)
    ]
    folders = [("cache", manifest.cache_dir), ("queue", manifest.queue_dir)]
    for field, folder in folders:
        rf = _real(folder)
        for what, p, rp in reads:
            if _inside(rp, rf) and not (field == "queue" and what.startswith("inputs[")):
                problems.append(
                    f"{field}: {folder} holds {what} ({p}); give the {field} a folder of its own "
                    f"(for example {manifest.root_dir / ('result/cache' if field == 'cache' else 'data/queue')})"
                )
        for w_field, w in writes:
            if _inside(_real(w), rf):
                problems.append(f"{field}: {folder} holds {w} ({w_field}); give the {field} a folder of its own")
    return problems


def check_manifest_paths(manifest: Manifest) -> None:
    """Fail before any work when a path the manifest names is missing or would be overwritten.

    Raises
    ------
    ManifestError
        Naming the field, the path it resolved to, and the fix.
    """
    problems = []
    for i, inp in enumerate(manifest.inputs):
        if is_url(inp.path):
            problems += _object_input(i, inp.path)
        else:
            problems += _local_input(manifest, i)
        if inp.label_file is not None and is_url(inp.label_file):
            try:
                label_source(inp.labels, resolve=manifest.locate)
            except (ValueError, OSError) as exc:
                problems.append(f"inputs[{i}].labels: {exc}")
        elif inp.label_file is not None:
            csv_path = manifest.resolve(inp.label_file)
            if not csv_path.is_file():
                problems.append(f"inputs[{i}].labels: label file {csv_path} does not exist")
            else:  # read it now: a table run would refuse must not pass validate
                try:
                    label_source(inp.labels, resolve=manifest.resolve)
                except ValueError as exc:
                    problems.append(f"inputs[{i}].labels: {exc}")
        if inp.speakers is not None:
            turns = TurnsSource.parse(inp.speakers, manifest.resolve).path
            if not (turns.is_file() or turns.is_dir()):
                problems.append(
                    f"inputs[{i}].speakers: {turns} does not exist (a speaker-turns file or folder: RTTM, TextGrid "
                    f"or ELAN; relative paths are taken from root {manifest.root_dir})"
                )
    problems += _other_paths(manifest)
    if problems:
        raise ManifestError(str(manifest.manifest_file or manifest.name), problems)


def _object_input(i: int, url: str) -> list[str]:
    """What is wrong with an input in object storage, asked of the storage itself (a stat and a first page)."""
    shown = shown_url(url)
    try:
        storage_for(url)
        if is_pattern(url):
            return [] if pattern_matches(url) else [f"inputs[{i}].path: the pattern {shown} matches nothing"]
        if not _object_or_prefix(url):
            return [f"inputs[{i}].path: nothing at {shown} (no object, and none under it); check the bucket and prefix"]
    except AccessDeniedError as exc:
        return [
            f"inputs[{i}].path: {shown} cannot be listed or read with the credentials in use ({exc}); grant them "
            "the right to list the bucket (s3:ListBucket, storage.objects.list, Storage Blob Data Reader) and to "
            "read its objects, or name the objects themselves as inputs"
        ]
    except StorageError as exc:
        return [f"inputs[{i}].path: {exc}"]
    return []


def _object_or_prefix(url: str) -> bool:
    """Whether ``url`` names an object, or a prefix with objects under it: a stat, else one key listed."""
    store = storage_for(url)
    if not url.endswith("/"):
        try:
            store.stat(url)
            return True
        except ObjectNotFoundError:
            pass
    return next(iter(store.walk(url.rstrip("/") + "/", page=1)), None) is not None


def _local_input(manifest: Manifest, i: int) -> list[str]:
    p = manifest.resolve(manifest.inputs[i].path)
    problems = []
    if is_pattern(p):
        if not pattern_matches(p):
            problems.append(f"inputs[{i}].path: the pattern {p} matches nothing; check it for typos")
    elif not (p.exists() or p.is_symlink()):
        problems.append(
            f"inputs[{i}].path: {p} does not exist (relative paths are taken from root {manifest.root_dir})"
        )
    return problems


def _other_paths(manifest: Manifest) -> list[str]:
    problems = []
    if manifest.model.reviewed:
        answers = manifest.resolve(manifest.model.reviewed)
        if not answers.is_file():  # what it holds is checked with the model's emotions (relearn.load_answers)
            what = "is a folder" if answers.is_dir() else "does not exist"
            problems.append(
                f"model.reviewed: {answers} {what}; name an answers file (batchser review writes review/answers.csv)"
            )
    if manifest.engine.backend == "dask" and importlib.util.find_spec("distributed") is None:
        problems.append("engine.backend: dask needs dask.distributed; install it with pip install 'batchser[dask]'")
    if not manifest.model.train and not manifest.model_path.is_file():
        mp = manifest.model_path
        what = (
            "is a folder, not a model file"
            if mp.is_dir()
            else "is not a regular file (a pipe or a device)"
            if mp.exists()
            else "does not exist"
        )
        problems.append(
            f"model.path: {manifest.model_path} {what}; point it at a trained model or set model.train: true"
        )
    return problems + _write_conflicts(manifest)
