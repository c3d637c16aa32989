"""Command line: ``python -m batchser run MANIFEST [--quiet]``.

Exit codes: 0 job completed (per-file failures are report rows), 2 invalid
manifest (nothing was done), 1 any other fatal error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from batchser.cache import CacheError
from batchser.job import JobSummary, run_job
from batchser.manifest import ManifestError, load_manifest
from batchser.model import ModelError
from batchser.report import ReportError

__all__ = ["main"]

EXIT_OK, EXIT_FATAL, EXIT_MANIFEST = 0, 1, 2

log = logging.getLogger("batchser")


def _print_summary(s: JobSummary) -> None:
    print(
        f"job {s.name}: {s.n_files} files seen, {s.n_extracted} newly extracted, "
        f"{s.n_cached} from cache, {s.n_failed} failed  ({s.seconds:.1f} s)"
    )
    for path, reason in s.failures[:5]:
        print(f"  failed: {path}: {reason}")
    if len(s.failures) > 5:
        print(f"  … and {len(s.failures) - 5} more (see the report's error column)")
    if s.label_counts:
        print("labels: " + ", ".join(f"{k} {v}" for k, v in s.label_counts.items()))
    if s.metrics:
        for name, ev in s.metrics.items():
            if "accuracy" in ev:
                what = name.replace("_", " ")
                print(f"{what}: accuracy {ev['accuracy']:.1%}, macro-F1 {ev['macro_f1']:.1%} (n={ev['n']})")
    print(f"model: {s.model_id}")
    for p in s.reports:
        print(f"report: {p}")


def _cmd_run(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    summary = run_job(manifest, progress=not args.quiet)
    if not args.quiet:
        _print_summary(summary)
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


def _cmd_validate(args: argparse.Namespace) -> int:
    from batchser.job import check_manifest_paths

    m = load_manifest(args.manifest)
    check_manifest_paths(m)
    if not args.quiet:
        print(f"{args.manifest}: valid (root {m.root_dir})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchser", description="Batch speech-emotion annotation.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job manifest")
    run.add_argument("manifest", help="YAML job manifest, e.g. jobs/annotate.yaml")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no summary")
    run.set_defaults(func=_cmd_run)
    val = sub.add_parser("validate", help="check a manifest without running it")
    val.add_argument("manifest")
    val.add_argument("-q", "--quiet", action="store_true")
    val.set_defaults(func=_cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose if not getattr(args, "quiet", False) else logging.ERROR
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ManifestError as exc:
        print(f"batchser: {exc}", file=sys.stderr)
        return EXIT_MANIFEST
    except (ModelError, ReportError, CacheError) as exc:
        print(f"batchser: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("batchser: interrupted; finished features are cached, rerun to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        log.debug("fatal error", exc_info=True)
        print(f"batchser: error: {type(exc).__name__}: {exc} (run with -vv for a traceback)", file=sys.stderr)
        return EXIT_FATAL
