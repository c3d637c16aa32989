"""What a finished job says on the console: counts, failures, scores, warnings, the review's estimates."""

from __future__ import annotations

from batchser.discover import skipped_lines
from batchser.exports import EXPORTS_DIR
from batchser.hashing import shown_text
from batchser.job import JobSummary
from batchser.review import describe_expected, describe_review

__all__ = ["print_summary"]


def _say(text: str) -> None:
    """One line to the console, a name's bidirectional controls shown as escapes (they would reorder it)."""
    print(shown_text(text))


def print_summary(s: JobSummary) -> None:
    rate = s.n_files / max(s.seconds, 1e-9)
    _say(
        f"job {s.name}: {s.n_files} file{'' if s.n_files == 1 else 's'} seen, {s.n_extracted} newly extracted, "
        f"{s.n_cached} from cache, {s.n_failed} failed"
        + (f", {s.n_no_speech} without speech" if s.n_no_speech else "")
        + f"  ({s.seconds:.1f} s, {rate:,.0f} files/s)"
    )
    if s.per_worker:
        _say("extracted on: " + ", ".join(f"{w} {n:g} files" for w, n in sorted(s.per_worker.items())))
    if s.skipped:
        _say("skipped (no report rows): " + "; ".join(skipped_lines(s.skipped)))
    for path, reason in s.failures[:5]:
        _say(f"  failed: {path}: {reason}")
    if s.n_failed > 5:
        _say(f"  … and {s.n_failed - 5} more (see the report's error column)")
    trained = bool(s.metrics and "random_split" in s.metrics)  # a train job: its metrics are the new model's
    if trained:
        support = (s.metrics or {}).get("actor_wise", {}).get("per_class") or (s.metrics or {}).get(
            "random_split", {}
        ).get("per_class", {})
        if support:
            _say("trained on: " + ", ".join(f"{k} {v['support']}" for k, v in support.items()))
        outside = ((s.metrics or {}).get("labels_outside_the_model") or {}).get("counts") or {}
        if outside:
            _say(
                "not among its emotions (left out of the emotion network and its scores): "
                + ", ".join(f"{k} {v}" for k, v in outside.items())
            )
    if s.label_counts:
        what = f"labels the new model gives all {s.n_files - s.n_failed} files" if trained else "labels"
        _say(f"{what}: " + ", ".join(f"{k} {v}" for k, v in s.label_counts.items()))
    if s.metrics:
        for name, ev in s.metrics.items():
            if "accuracy" in ev:
                what = name.replace("_", " ")
                _say(
                    f"{what}: accuracy {ev['accuracy']:.1%}, UAR {ev['uar']:.1%}, macro-F1 {ev['macro_f1']:.1%} "
                    f"(n={ev['n']})"
                )
        for dim, ev in (s.metrics.get("dimensions_of_labelled_files") or {}).items():
            if isinstance(ev, dict):
                _say(f"{dim} of labelled files: balanced accuracy {ev['balanced_accuracy']:.1%} (n={ev['n']})")
        loco = s.metrics.get("leave_one_corpus_out")
        if loco:
            _say("leave one corpus out, UAR on each held-out corpus by adaptation (what to expect on new data):")
            for mode, m in loco["modes"].items():
                cells = "  ".join(f"{c} {m['per_corpus'][c]['uar']:.1%}" for c in loco["corpora"])
                _say(
                    f"  {mode:8s} {cells}  mean {m['mean']['uar']:.1%}, worst {m['mean']['worst_uar']:.1%}, "
                    f"ECE {m['mean']['ece']:.3f}"
                )
    d = None if trained else s.domain  # a model's own training files: how far they are from themselves says nothing
    if d and d["out_of_domain"]:
        _say(
            f"warning: these recordings are far from the model's training data (median distance "
            f"{d['median_distance']:.2f}, beyond {d['held_out_limit']:.2f}, the furthest held-out corpus it was "
            "scored on): its published accuracy does not describe them; check a sample by ear"
        )
    elif d and d["out_of_domain"] is None:
        _say(
            f"note: whether these recordings are like the model's training data is unknown (median distance "
            f"{d['median_distance']:.2f}, {d['training_median']:.2f} for its training files): "
            f"{d['out_of_domain_why']}; check a sample by ear"
        )
    for g in s.emotion_groups:
        names = ", ".join(g["groups"][:6]) + (" …" if len(g["groups"]) > 6 else "")
        _say(
            f"warning: the speaker groups of {g['corpus']} ({names}) look like emotion groups ({g['why']}); "
            "their files were standardised over the whole input instead (normalized_by: corpus). If each folder "
            "holds one speaker's recordings of every emotion, name the speakers in a label table instead"
        )
    for f in s.speaker_folders:
        _say(f"warning: speaker folders: {f['why']}; {f['what_to_do']}")
    for h in s.hints:
        _say(f"hint: {h['why']}; {h['what_to_do']}")
    if s.review:
        for line in describe_review(s.review):
            _say(f"review: {line}")
    elif s.expected:
        _say(f"what to expect: {describe_expected(s.expected)}")
    _say(f"model: {s.model_id}")
    for p in s.reports:
        _say(f"report: {p}")
    if s.exports and s.reports:
        made = ", ".join(f"{n} {fmt}" for fmt, n in s.exports.items())
        if any(s.exports.values()):
            _say(f"exports: {made} in {s.reports[0].parent / EXPORTS_DIR}")
        else:  # exports are per long recording
            _say("exports: none (no recording was long enough to be labelled segment by segment)")
