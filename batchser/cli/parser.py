"""The command line's parser: every command, option and help text (``batchser --help``)."""

from __future__ import annotations

import argparse

from batchser import __version__
from batchser.cli.commands import (
    _cmd_annotate,
    _cmd_cache,
    _cmd_capture,
    _cmd_init,
    _cmd_report,
    _cmd_review,
    _cmd_run,
    _cmd_schema,
    _cmd_validate,
)

__all__ = ["build_parser"]


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
        help="files whose top probability is below this are labelled 'uncertain' (e.g. 0.6; docs/accuracy.md: "
        "what it buys)",
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
        help="check shorter files for speech too: one without any gets status 'no speech', not an emotion "
        "(the first run with it reads every file again: the check is kept in the cache beside the features)",
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
