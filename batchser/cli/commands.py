"""The commands of ``batchser``: each takes the parsed arguments and returns an exit code.

Exit codes: 0 job completed (per-file failures are report rows), 2 invalid
manifest (nothing was done), 3 capture set-up missing (no PyAudio, no input device),
1 any other fatal error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from batchser.capture import CaptureSetupError
from batchser.cli.console import print_summary
from batchser.hashing import shown_text
from batchser.job import JobSummary, run_job, watch_job
from batchser.manifest import Manifest, ManifestError, load_manifest
from batchser.review import AnswersError
from batchser.terms import ANNOTATE_OPTIONS, OptionError, in_option_terms

log = logging.getLogger("batchser")


EXIT_OK, EXIT_FATAL, EXIT_MANIFEST, EXIT_SETUP = 0, 1, 2, 3  # 3: no PyAudio or no input device


EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


@contextlib.contextmanager
def _codecs_muted(quiet: bool) -> Iterator[None]:
    """With ``--quiet``, the decoders' own stderr notes too, here and in every worker (for this command only)."""
    from batchser.audio import QUIET_ENV

    before = os.environ.get(QUIET_ENV)
    if quiet:
        os.environ[QUIET_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(QUIET_ENV, None)
        else:
            os.environ[QUIET_ENV] = before


def _with_reviewed(manifest: Manifest, answers: str | None, ignore_unknown: bool = False) -> Manifest:
    """``manifest`` learning from ``answers`` (``--reviewed``), which wins over ``model.reviewed``."""
    if ignore_unknown:
        manifest = manifest.model_copy(
            update={"model": manifest.model.model_copy(update={"ignore_unknown_answers": True})}
        )
    if not answers:
        return manifest
    if manifest.model.train:
        raise ManifestError(
            str(manifest.manifest_file or manifest.name),
            ["--reviewed refits a trained model on a person's answers; run it on a labelling job, not a train job"],
        )
    model = manifest.model.model_copy(update={"reviewed": str(Path(answers).resolve())})
    return manifest.model_copy(update={"model": model})


def _cmd_run(args: argparse.Namespace) -> int:
    if Path(args.manifest).is_dir():
        print(
            f"batchser: {args.manifest} is a folder; `run` takes a job manifest (a .yaml file). "
            f"To label the folder's audio: batchser annotate {args.manifest}",
            file=sys.stderr,
        )
        return EXIT_MANIFEST
    manifest = _with_reviewed(load_manifest(args.manifest), args.reviewed, args.ignore_unknown_answers)
    if args.watch:
        return _watch(manifest, args)
    summary = run_job(manifest, progress=not args.quiet, overwrite=args.overwrite)
    if not args.quiet:
        print_summary(summary)
    return _exit_code(manifest, summary, allow_hint="allow_unlistable: true in the manifest")


def _exit_code(manifest: Manifest, summary: JobSummary, *, allow_hint: str) -> int:
    """1 when files were left out or failed beyond the job's limit (the reports are written either way)."""
    if summary.n_unlisted and not manifest.allow_unlistable:
        shown = ", ".join(summary.unlisted[:5]) + (" …" if summary.n_unlisted > 5 else "")
        print(
            f"batchser: {summary.n_unlisted} folder{'s' if summary.n_unlisted > 1 else ''} could not be listed, "
            f"so the files in them are not in the reports: {shown} (see their rows' error column). "
            f"Fix their permissions or paths and run again, or accept it with {allow_hint}; the reports are written",
            file=sys.stderr,
        )
        return EXIT_FATAL
    limit = manifest.fail_threshold
    if limit is not None and summary.n_files and summary.n_failed / summary.n_files > limit:
        print(
            f"batchser: {summary.n_failed} of {summary.n_files} files failed "
            f"({summary.n_failed / summary.n_files:.1%}), more than fail_threshold {limit:.1%}; "
            "the reports are written",
            file=sys.stderr,
        )
        return EXIT_FATAL
    return EXIT_OK


def _watch(manifest: Manifest, args: argparse.Namespace) -> int:
    watching = False

    def started(summary: JobSummary) -> None:
        nonlocal watching
        watching = True
        if not args.quiet:
            print_summary(summary)
            print(f"watching {manifest.queue_dir} for new clips; Ctrl-C stops", flush=True)

    n = 0
    try:
        for row in watch_job(manifest, progress=not args.quiet, poll_s=args.poll, on_start=started):
            n += 1
            if args.quiet:
                continue
            if row.status == "ok":
                print(shown_text(f"{row.path}: {row.label} ({row.confidence:.0%}, {row.duration_s:.1f} s)"), flush=True)
            else:
                print(shown_text(f"{row.path}: error: {row.error}"), flush=True)
    except KeyboardInterrupt:
        if not watching:
            raise  # the first run was cut short: say so, exit 130
        if not args.quiet:
            print(f"stopped watching after {n} new clips; reports in {manifest.output_dir}", flush=True)
    return EXIT_OK


def _cmd_capture(args: argparse.Namespace) -> int:
    from batchser.capture import check_input, list_input_devices, record_utterance
    from batchser.queue import enqueue

    if args.list_devices:
        devices = list_input_devices()
        if not devices:
            print("no audio input devices found", file=sys.stderr)
            return EXIT_SETUP
        for d in devices:
            mark = "*" if d.is_default else " "
            print(f"{mark} {d.index:3d}  {d.name}  ({d.channels} ch, {d.default_sample_rate:g} Hz)")
        return EXIT_OK
    if args.manifest is None:
        raise CaptureSetupError("capture needs a job manifest (its queue folder receives the clip), or --list-devices")
    manifest = load_manifest(args.manifest)
    check_input(args.device)  # PyAudio and the device first: never "speak now" into nothing
    if not args.quiet:
        what = f"{args.seconds:g} s" if args.seconds else f"until {args.silence:g} s of silence"
        print(f"recording ({what}); speak now", file=sys.stderr, flush=True)
    clip = record_utterance(
        sample_rate=manifest.audio.sample_rate,
        device=args.device,
        seconds=args.seconds,
        threshold_db=args.threshold_db,
        silence_s=args.silence,
        wait_s=args.wait,
        max_seconds=args.max_seconds,
    )
    path = enqueue(clip.samples, sample_rate=clip.sample_rate, queue_dir=manifest.queue_dir)
    if not args.quiet:
        print(f"queued {path} ({clip.duration_s:.2f} s from {clip.device}, stopped by {clip.stopped_by})")
        print(f"label it with: python -m batchser run {args.manifest}")
    else:
        print(path)
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from batchser.paths import check_manifest_paths

    m = load_manifest(args.manifest)
    check_manifest_paths(m)
    if any(i.has_labels or i.speakers for i in m.inputs):  # labels and turns, read as the job will (nothing decoded)
        from batchser.inputs import check_labels
        from batchser.model import read_meta

        classes = list(m.emotions) if m.model.train else list(read_meta(m.model_path).classes)
        check_labels(m, classes)
    if m.model.reviewed and not m.model.train:  # the answers' labels, checked as run checks them
        from batchser.model import read_meta
        from batchser.relearn import load_answers

        load_answers(
            m.resolve(m.model.reviewed),
            read_meta(m.model_path).classes,
            ignore_unknown=m.model.ignore_unknown_answers,
        )
    if not args.quiet:
        print(f"{args.manifest}: valid (root {m.root_dir})")
    return EXIT_OK


def _cmd_annotate(args: argparse.Namespace) -> int:
    from batchser.api import annotation_manifest
    from batchser.discover import is_pattern, pattern_matches
    from batchser.storage import is_url, shown_url, url_name

    for given in args.inputs:
        if is_url(given):  # object storage: asked when the job's paths are checked
            continue
        if is_pattern(given) and not pattern_matches(Path(given).resolve()):
            print(f"batchser: the pattern {given} matches nothing; check it for typos", file=sys.stderr)
            return EXIT_MANIFEST
        if not is_pattern(given) and not os.path.lexists(given):
            print(f"batchser: {given} does not exist (looked for it in {Path.cwd()})", file=sys.stderr)
            return EXIT_MANIFEST

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    first = args.inputs[0]
    out = args.out or f"batchser-reports/{(url_name(first) if is_url(first) else Path(first).resolve().name) or 'root'}"
    try:  # the manifest is this command's own: its problems are said in the options typed
        manifest = annotation_manifest(
            args.inputs,
            out_dir=out,
            formats=formats,
            model=args.model,
            adapt=args.adapt,
            speaker="folder" if args.speaker_folders else "labels",
            cache=args.cache,
            n_jobs=args.jobs,
            min_confidence=args.min_confidence,
            allow_unlistable=args.allow_unlistable,
            reviewed=args.reviewed,
            ignore_unknown_answers=args.ignore_unknown_answers,
            segments=args.segments,
            check_speech=args.check_speech,
            speakers=args.speakers,
        )
        summary = run_job(manifest, progress=not args.quiet, overwrite=args.overwrite)
    except ManifestError as exc:
        typed = [shown_url(i) if is_url(i) else i for i in args.inputs]  # an address's query may be a signature
        raise OptionError("annotate", in_option_terms(exc.problems, ANNOTATE_OPTIONS, typed)) from None
    if not args.quiet:
        print_summary(summary)
    return _exit_code(manifest, summary, allow_hint="--allow-unlistable")


INIT_TEMPLATE = """\
# A batchser job: label every audio file under inputs[].path with the shipped model.
# Run it with: batchser run {name}      Check it with: batchser validate {name}
# Every key is explained in docs/manifest.md; `batchser schema` prints them all.
name: {stem}
inputs:
  - path: {inputs}                # a folder (searched recursively), a file, a glob, or a zip/tar archive
    labels: none                  # or {{pattern: '...(?P<emotion>...)...', map: {{...}}}} / {{table: labels.csv}}
    # speaker: folder             # one folder per speaker, 10+ files each: labels standardised per speaker
    # speakers: rttm:turns/       # who speaks when in long recordings (RTTM, TextGrid or ELAN), matched by name
# emotions, features: the model's own unless listed (the shipped model: angry, sad, neutral, happy)
engine: {{backend: loky, n_jobs: -1}}     # all cores
model:
  adapt: speaker                  # standardise by speaker (10+ files) or else by input (10+ files)
  # path: my-model.skops          # default: the shipped model (trained on six corpora; non-commercial use)
  # min_confidence: 0.6           # files the model is less sure of are labelled "uncertain" (docs/accuracy.md)
  # train: true                   # train instead (needs labels); the recipe defaults to the shipped model's
output:
  formats: [csv, parquet]         # reports go to result/reports/{stem}/ beside this file
  # formats: [csv, parquet, textgrid, eaf, audacity]   # and each long recording for Praat, ELAN, Audacity
"""


def _cmd_review(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from batchser.report import csv_text
    from batchser.web.readback import ReadBackError
    from batchser.web.review import ReviewError, ReviewSession, serve

    out = Path(args.out_dir)
    try:
        session = ReviewSession.open(out, per_label=args.n, blind=args.blind)
    except (ReviewError, ReadBackError, AnswersError) as exc:
        print(f"batchser: {shown_text(str(exc))}", file=sys.stderr)
        return EXIT_FATAL
    if args.list:
        table = session.listing()
        sys.stdout.write(csv_text(pa.Table.from_pandas(table, preserve_index=False)))
        return EXIT_OK
    serve(session, port=args.port, open_browser=args.open)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from batchser.web.page import rerender
    from batchser.web.readback import ReadBackError

    try:
        page = rerender(Path(args.out_dir))
    except ReadBackError as exc:
        print(f"batchser: {shown_text(str(exc))}", file=sys.stderr)
        return EXIT_FATAL
    except FileNotFoundError as exc:
        print(
            f"batchser: {exc}; point it at a run or annotate output folder (it holds summary.json)",
            file=sys.stderr,
        )
        return EXIT_FATAL
    print(f"report: {page}")
    if args.open:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return EXIT_OK


def _cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.manifest)
    if path.exists():
        print(f"batchser: {path} exists; choose another name (nothing was written)", file=sys.stderr)
        return EXIT_MANIFEST
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem).strip("-._") or "job"
    path.write_text(INIT_TEMPLATE.format(name=path.name, stem=stem, inputs=args.inputs), encoding="utf-8")
    if (path.parent / args.inputs).exists():
        print(f"wrote {path} (it labels {args.inputs}); check it: batchser validate {path}; run: batchser run {path}")
    else:  # the folder is named beside the manifest: say where recordings are expected
        print(
            f"wrote {path}; {path.parent / args.inputs} does not exist yet: put the recordings there or edit "
            f"inputs[0].path, then: batchser run {path}"
        )
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Manifest.model_json_schema(), indent=2))
    return EXIT_OK


def _cmd_cache(args: argparse.Namespace) -> int:
    from batchser.api import default_cache_dir
    from batchser.cache.index import DAY_S, CacheIndex
    from batchser.cache.maintain import cache_folders, compact, gc, stats

    root = Path(args.cache) if args.cache else default_cache_dir()
    if not root.is_dir():
        print(f"batchser: no feature cache at {root}", file=sys.stderr)
        return EXIT_FATAL
    index = CacheIndex(root)
    try:
        if args.action == "stats":
            rows = stats(index, root)
            if args.json:
                print(json.dumps([vars(r) for r in rows], indent=2))
                return EXIT_OK
            print(f"cache {root} (index {index.path.name}, {index.path.stat().st_size / 2**20:.1f} MiB)")
            print(f"{'folder':<44} {'parts':>5} {'rows':>10} {'live':>10} {'MiB':>8}  last used")
            for r in rows:
                used = "-"
                if r.oldest_use is not None and r.newest_use is not None:
                    lo, hi = (time.strftime("%Y-%m-%d", time.gmtime(d * DAY_S)) for d in (r.oldest_use, r.newest_use))
                    used = f"{lo} .. {hi}"
                print(f"{r.folder:<44} {r.parts:>5} {r.rows:>10,} {r.live:>10,} {r.bytes / 2**20:>8.1f}  {used}")
            return EXIT_OK
        if args.action == "compact":
            removed = dropped = 0
            for parts, folder in cache_folders(root):
                r, d = compact(index, parts, folder, everything=args.all)
                removed, dropped = removed + r, dropped + d
            if not args.quiet:
                print(f"compacted {root}: {removed} parts rewritten, {dropped} duplicate or forgotten rows dropped")
            return EXIT_OK
        dropped = gc(index, root, unused_days=args.unused_for)
        if not args.quiet:
            print(f"gc {root}: {dropped} feature rows unused for {args.unused_for:g} days dropped")
        return EXIT_OK
    finally:
        index.close()
