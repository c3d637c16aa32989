"""Command line: ``python -m batchser run MANIFEST [--quiet] [--watch]`` and ``capture``.

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
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from batchser import __version__
from batchser.cache import CacheError
from batchser.capture import CaptureError, CaptureSetupError
from batchser.discover import skipped_lines
from batchser.engine import EngineError
from batchser.exports import EXPORTS_DIR
from batchser.job import JobSummary, NoInputError, run_job, watch_job
from batchser.manifest import Manifest, ManifestError, load_manifest
from batchser.model import ModelError
from batchser.report import ReportError
from batchser.review import AnswersError, describe_expected, describe_review
from batchser.spool import SpoolError
from batchser.terms import ANNOTATE_OPTIONS, OptionError, in_option_terms

__all__ = ["main"]

EXIT_OK, EXIT_FATAL, EXIT_MANIFEST, EXIT_SETUP = 0, 1, 2, 3  # 3: no PyAudio or no input device
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended

log = logging.getLogger("batchser")


def _print_summary(s: JobSummary) -> None:
    rate = s.n_files / max(s.seconds, 1e-9)
    print(
        f"job {s.name}: {s.n_files} file{'' if s.n_files == 1 else 's'} seen, {s.n_extracted} newly extracted, "
        f"{s.n_cached} from cache, {s.n_failed} failed"
        + (f", {s.n_no_speech} without speech" if s.n_no_speech else "")
        + f"  ({s.seconds:.1f} s, {rate:,.0f} files/s)"
    )
    if s.per_worker:
        print("extracted on: " + ", ".join(f"{w} {n:g} files" for w, n in sorted(s.per_worker.items())))
    if s.skipped:
        print("skipped (no report rows): " + "; ".join(skipped_lines(s.skipped)))
    for path, reason in s.failures[:5]:
        print(f"  failed: {path}: {reason}")
    if s.n_failed > 5:
        print(f"  … and {s.n_failed - 5} more (see the report's error column)")
    if s.label_counts:
        print("labels: " + ", ".join(f"{k} {v}" for k, v in s.label_counts.items()))
    if s.metrics:
        for name, ev in s.metrics.items():
            if "accuracy" in ev:
                what = name.replace("_", " ")
                print(
                    f"{what}: accuracy {ev['accuracy']:.1%}, UAR {ev['uar']:.1%}, macro-F1 {ev['macro_f1']:.1%} "
                    f"(n={ev['n']})"
                )
        for dim, ev in (s.metrics.get("dimensions_of_labelled_files") or {}).items():
            if isinstance(ev, dict):
                print(f"{dim} of labelled files: balanced accuracy {ev['balanced_accuracy']:.1%} (n={ev['n']})")
        loco = s.metrics.get("leave_one_corpus_out")
        if loco:
            print("leave one corpus out, UAR on each held-out corpus by adaptation (what to expect on new data):")
            for mode, m in loco["modes"].items():
                cells = "  ".join(f"{c} {m['per_corpus'][c]['uar']:.1%}" for c in loco["corpora"])
                print(
                    f"  {mode:8s} {cells}  mean {m['mean']['uar']:.1%}, worst {m['mean']['worst_uar']:.1%}, "
                    f"ECE {m['mean']['ece']:.3f}"
                )
    d = s.domain
    if d and d["out_of_domain"]:
        print(
            f"warning: these recordings are far from the model's training data (median distance "
            f"{d['median_distance']:.2f}, beyond {d['held_out_limit']:.2f}, the furthest held-out corpus it was "
            "scored on): its published accuracy does not describe them; check a sample by ear"
        )
    elif d and d["out_of_domain"] is None:
        print(
            f"note: whether these recordings are like the model's training data is unknown (median distance "
            f"{d['median_distance']:.2f}, {d['training_median']:.2f} for its training files): "
            f"{d['out_of_domain_why']}; check a sample by ear"
        )
    for g in s.emotion_groups:
        names = ", ".join(g["groups"][:6]) + (" …" if len(g["groups"]) > 6 else "")
        print(
            f"warning: the speaker groups of {g['corpus']} ({names}) look like emotion groups ({g['why']}); "
            "their files were standardised over the whole input instead (normalized_by: corpus). If each folder "
            "holds one speaker's recordings of every emotion, name the speakers in a label table instead"
        )
    for f in s.speaker_folders:
        print(f"warning: speaker folders: {f['why']}; {f['what_to_do']}")
    if s.review:
        for line in describe_review(s.review):
            print(f"review: {line}")
    elif s.expected:
        print(f"what to expect: {describe_expected(s.expected)}")
    print(f"model: {s.model_id}")
    for p in s.reports:
        print(f"report: {p}")
    if s.exports and s.reports:
        made = ", ".join(f"{n} {fmt}" for fmt, n in s.exports.items())
        if any(s.exports.values()):
            print(f"exports: {made} in {s.reports[0].parent / EXPORTS_DIR}")
        else:  # exports are per long recording
            print("exports: none (no recording was long enough to be labelled segment by segment)")


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
        _print_summary(summary)
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
            _print_summary(summary)
            print(f"watching {manifest.queue_dir} for new clips; Ctrl-C stops", flush=True)

    n = 0
    try:
        for row in watch_job(manifest, progress=not args.quiet, poll_s=args.poll, on_start=started):
            n += 1
            if args.quiet:
                continue
            if row.status == "ok":
                print(f"{row.path}: {row.label} ({row.confidence:.0%}, {row.duration_s:.1f} s)", flush=True)
            else:
                print(f"{row.path}: error: {row.error}", flush=True)
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
        from batchser.job import check_labels
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
        _print_summary(summary)
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
    import pandas as pd
    import pyarrow as pa

    from batchser.report import csv_text
    from batchser.web.readback import ReadBackError
    from batchser.web.review import ReviewError, ReviewSession, serve

    out = Path(args.out_dir)
    try:
        session = ReviewSession.open(out, per_label=args.n, blind=args.blind)
    except (ReviewError, ReadBackError, AnswersError) as exc:
        print(f"batchser: {exc}", file=sys.stderr)
        return EXIT_FATAL
    if args.list:
        latest, _, _ = session.refresh()
        columns = ["order", "path", "content_hash", "start_s", "end_s", "model_label", "confidence", "part"]
        table = session.sample[[*columns, "stratum_size"]].copy()
        # A "label" column to fill in: the filled file is itself an answers file (--reviewed), matched to
        # the recordings by content hash wherever it is run from.
        # Every stratum's size on each row: the estimate stays whole when rows are deleted or reordered.
        sizes = session.sample.groupby("model_label")["stratum_size"].first()
        table["strata"] = ";".join(f"{k}={int(v)}" for k, v in sizes.items())
        table["label"] = [
            latest[(p, None, None)].label if (p, None, None) in latest and pd.isna(start) else ""
            for p, start in zip(table["path"], table["start_s"], strict=True)
        ]
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
        print(f"batchser: {exc}", file=sys.stderr)
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
    print(f"wrote {path}; edit inputs[0].path, then: batchser run {path}")
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Manifest.model_json_schema(), indent=2))
    return EXIT_OK


def _probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; write e.g. 0.6") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return v


def _days(text: str) -> float:
    """``90d``, ``12w``, ``36h`` or a plain number of days."""
    units = {"d": 1.0, "w": 7.0, "h": 1 / 24}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "d")
    try:
        v = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 90d, 12w or 36h") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return v


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


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchser", description="Batch speech-emotion annotation.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"batchser {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job manifest")
    run.add_argument("manifest", help="YAML job manifest, e.g. jobs/annotate.yaml")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no summary")
    run.add_argument(
        "--watch", action="store_true", help="after the run, label clips arriving in the queue; Ctrl-C stops"
    )
    run.add_argument("--poll", type=_positive, default=0.5, help="seconds between looks at the queue (default 0.5)")
    run.add_argument(
        "--reviewed",
        metavar="ANSWERS",
        help="learn from a person's answers first (review/answers.csv, or a CSV with path and label columns)",
    )
    run.add_argument(
        "--ignore-unknown-answers",
        action="store_true",
        help="set aside answers whose label is none of the model's emotions, none or skip (else they stop the job)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace reports in output.dir that another set of inputs wrote"
    )
    run.set_defaults(func=_cmd_run)
    cap = sub.add_parser("capture", help="record one utterance into a job's queue (needs batchser[mic])")
    cap.add_argument("manifest", nargs="?", help="job manifest whose queue folder receives the clip")
    cap.add_argument("--list-devices", action="store_true", help="list input devices (* marks the default) and exit")
    cap.add_argument("--device", help="input device index or (part of its) name; default: the default input")
    cap.add_argument("--seconds", type=_positive, help="record this long instead of stopping at silence")
    cap.add_argument("--threshold-db", type=float, default=-40.0, help="frame level counting as sound (dBFS, -40)")
    cap.add_argument("--silence", type=_positive, default=1.0, help="quiet seconds that end the utterance (1.0)")
    cap.add_argument("--wait", type=_positive, default=10.0, help="give up after this long without sound (10)")
    cap.add_argument("--max-seconds", type=_positive, default=30.0, help="longest utterance (30)")
    cap.add_argument("-q", "--quiet", action="store_true", help="print only the queued file's path")
    cap.set_defaults(func=_cmd_capture)
    ann = sub.add_parser("annotate", help="label folders or files with the shipped model, no manifest needed")
    ann.add_argument(
        "inputs",
        nargs="+",
        help="folders (searched recursively), files, globs or zip/tar archives; or s3://, gs://, az:// prefixes "
        "and https:// files",
    )
    ann.add_argument("--out", help="report folder (default batchser-reports/<first input's name>)")
    ann.add_argument("--model", help="a .skops model (default: the shipped one)")
    ann.add_argument(
        "--format",
        default="csv,parquet",
        help="report formats, comma-separated: csv, parquet, and per long recording textgrid (Praat), eaf (ELAN), "
        "audacity (a label track), written under OUT/exports/",
    )
    ann.add_argument(
        "--speaker-folders", action="store_true", help="one folder per speaker: standardise each speaker's files"
    )
    ann.add_argument(
        "--adapt",
        default="speaker",
        choices=["speaker", "corpus", "cluster", "none"],
        help="how files are standardised among themselves before labelling: speaker (by speaker when one has "
        "10+ files, else by input; the default), corpus (by input), cluster (by pseudo-speaker) or none",
    )
    ann.add_argument(
        "--min-confidence",
        type=_probability,
        help="label files whose top probability is lower 'uncertain' (e.g. 0.6; docs/accuracy.md: what it buys)",
    )
    ann.add_argument(
        "--segments",
        default="speech",
        choices=["speech", "windows", "none"],
        help="files over 10 s: label each speech segment (default), fixed 4 s windows, or the file whole",
    )
    ann.add_argument(
        "--check-speech",
        action="store_true",
        help="check shorter files for speech too: one without any gets status 'no speech', not an emotion",
    )
    ann.add_argument(
        "--speakers",
        metavar="FILE_OR_DIR",
        help="who speaks: speaker turns (RTTM, Praat TextGrid or ELAN; a file or a folder, matched to recordings "
        "by name) or a CSV with path,speaker columns; long recordings are then standardised per speaker",
    )
    ann.add_argument("--cache", help="feature cache folder (default: a per-user cache)")
    ann.add_argument("-j", "--jobs", type=int, default=-1, help="worker processes (-1: all cores)")
    ann.add_argument("--overwrite", action="store_true", help="replace reports that other inputs wrote in --out")
    ann.add_argument(
        "--reviewed",
        metavar="ANSWERS",
        help="learn from a person's answers first (review/answers.csv, or a CSV with path and label columns)",
    )
    ann.add_argument(
        "--ignore-unknown-answers",
        action="store_true",
        help="set aside answers whose label is none of the model's emotions, none or skip (else they stop the job)",
    )
    ann.add_argument(
        "--allow-unlistable",
        action="store_true",
        help="exit 0 even when a folder could not be listed (its row in the report still says so)",
    )
    ann.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no summary")
    ann.set_defaults(func=_cmd_annotate)
    rev = sub.add_parser(
        "review", help="check a sample of a job's labels by ear in a local page; the job then learns from them"
    )
    rev.add_argument("out_dir", help="a run or annotate output folder (its annotations and summary.json)")
    rev.add_argument(
        "--n",
        type=int,
        default=20,
        help="files per model label in the sample (default 20); a larger number adds files to an earlier sample",
    )
    rev.add_argument("--list", action="store_true", help="print the sample as CSV (with answers so far) and exit")
    rev.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    rev.add_argument("--open", action="store_true", help="open the page in the default browser")
    rev.add_argument(
        "--blind", action="store_true", help="hide the model's label and confidence while answering (no anchoring)"
    )
    rev.set_defaults(func=_cmd_review)
    rep = sub.add_parser("report", help="draw a job's report.html again from its reports (after a review, say)")
    rep.add_argument("out_dir", help="a run or annotate output folder")
    rep.add_argument("--open", action="store_true", help="open the page in the default browser")
    rep.set_defaults(func=_cmd_report)
    ini = sub.add_parser("init", help="write a commented job manifest to start from")
    ini.add_argument("manifest", nargs="?", default="job.yaml", help="the file to write (default job.yaml)")
    ini.add_argument("--inputs", default="audio", help="the folder to label (default audio)")
    ini.set_defaults(func=_cmd_init)
    sch = sub.add_parser("schema", help="print the manifest's JSON schema")
    sch.set_defaults(func=_cmd_schema)
    cac = sub.add_parser("cache", help="inspect and maintain a feature cache (safe while jobs run)")
    cac.add_argument(
        "action",
        choices=["stats", "compact", "gc"],
        help="stats: size and use per folder; compact: merge small parts; gc: drop rows unused for --unused-for",
    )
    cac.add_argument("cache", nargs="?", help="the cache folder (default: the per-user cache)")
    cac.add_argument("--json", action="store_true", help="stats as JSON")
    cac.add_argument("--all", action="store_true", help="compact: rewrite every part, not only small ones")
    cac.add_argument(
        "--unused-for", type=_days, default=90.0, help="gc: drop rows no job on this host used for this long (90d)"
    )
    cac.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    cac.set_defaults(func=_cmd_cache)
    val = sub.add_parser("validate", help="check a manifest without running it")
    val.add_argument("manifest", help="YAML job manifest, e.g. jobs/annotate.yaml")
    val.add_argument("-q", "--quiet", action="store_true", help="print nothing when the manifest is valid")
    val.set_defaults(func=_cmd_validate)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: workers stopped, claims released, finished features kept."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    level = logging.WARNING - 10 * args.verbose if not getattr(args, "quiet", False) else logging.ERROR
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    try:
        with _codecs_muted(not getattr(args, "verbose", 0)):  # decoders' own notes only with -v
            return int(args.func(args))
    except (ManifestError, AnswersError) as exc:
        print(f"batchser: {exc}", file=sys.stderr)
        return EXIT_MANIFEST
    except OptionError as exc:
        print(exc, file=sys.stderr)
        return EXIT_MANIFEST
    except CaptureSetupError as exc:
        print(f"batchser: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except (ModelError, ReportError, CacheError, CaptureError, EngineError, NoInputError, SpoolError) as exc:
        print(f"batchser: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except BrokenPipeError:  # the reader went away (`batchser review --list | head`): nothing left to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
        return EXIT_OK
    except KeyboardInterrupt as exc:
        code, how = (EXIT_TERMINATED, "terminated (SIGTERM)") if isinstance(exc, Terminated) else (130, "interrupted")
        if args.func is _cmd_capture:
            print(f"batchser: capture {how}; nothing was queued", file=sys.stderr)
            return code
        print(f"batchser: {how}; finished features are cached, rerun to resume", file=sys.stderr)
        return code
    except Exception as exc:
        log.debug("fatal error", exc_info=True)
        print(f"batchser: error: {type(exc).__name__}: {exc} (run with -vv for a traceback)", file=sys.stderr)
        return EXIT_FATAL
