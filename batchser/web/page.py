"""``report.html``: the one page a person opens first, written with every job's reports.

A job feeds :class:`PageStats` its report rows a chunk at a time (memory holds
counts, a histogram and a few bounded lists, never a row per file), and
:func:`render` draws the page: what ran, the label mix, confidence, scores
when true labels are known, timelines of long recordings and the files the
model was least sure of. Charts are matplotlib SVG inlined in the page and
the page is a Jinja2 template with autoescaping (a file name holding HTML
shows as text), so it is one self-contained file that opens offline, with no
script at all.
"""

from __future__ import annotations

import heapq
import io
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from batchser.cache import NO_SPEECH
from batchser.report import ReportRow, SegmentRow
from batchser.review import describe_expected, describe_review

__all__ = ["PageStats", "render", "rerender", "write_page"]

MAX_GROUPS = 2000  # distinct inputs, speakers or folders counted; the rest as "other"
SHOWN_GROUPS = 30  # rows per breakdown table
LEAST_SURE = 50
TIMELINES = 6  # long recordings drawn; the rest listed
LISTED_LONG = 200
BINS = 20
_COLORS = ["#d1495b", "#2f6fb3", "#8d99ae", "#edae49", "#66a182", "#9b5de5", "#00798c", "#f15bb5"]


@dataclass
class PageStats:
    """What the page shows, gathered chunk by chunk of report rows (bounded memory)."""

    classes: list[str]
    min_confidence: float | None = None
    n_files: int = 0
    n_ok: int = 0
    n_reviewed: int = 0
    below_cutoff: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    normalized_by: Counter[str] = field(default_factory=Counter)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    groups: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    _least: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    _long: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    listed_long: list[dict[str, Any]] = field(default_factory=list)
    n_long: int = 0
    n_no_speech: int = 0  # files in which no speech was heard: not failures
    audio_s: float = 0.0  # seconds of audio labelled
    # The speech segments of long recordings: a job of one or two long files is told by them, not by its files.
    seg_labels: Counter[str] = field(default_factory=Counter)
    seg_hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    has_true_labels: bool = False
    # Per dimension (arousal, valence): files (or, in a job told by its segments, speech segments) on each side.
    dims: dict[str, list[int]] = field(default_factory=dict)
    seg_dims: dict[str, list[int]] = field(default_factory=dict)
    _seen: int = 0

    def add(self, rows: Sequence[ReportRow], seg_rows: Sequence[SegmentRow] = ()) -> None:
        segs: dict[str, list[SegmentRow]] = {}
        for s in seg_rows:
            segs.setdefault(s.path, []).append(s)
            if s.label and s.voiced:
                self.seg_labels[s.label] += 1
                _count_sides(self.seg_dims, s.dimensions)
                if not math.isnan(s.confidence):
                    self.seg_hist[min(BINS - 1, int(s.confidence * BINS))] += 1
        for r in rows:
            self._seen += 1
            self.n_files += 1
            if r.status == NO_SPEECH:
                self.n_no_speech += 1
                continue
            if r.status != "ok":
                self.reasons[(r.error or r.status).split(":", 1)[0][:80]] += 1
                continue
            self.n_ok += 1
            self.labels[r.label] += 1
            _count_sides(self.dims, r.dimensions)
            if not math.isnan(r.duration_s):
                self.audio_s += r.duration_s
            self.has_true_labels |= bool(r.true_label)
            self.n_reviewed += r.reviewed
            self.normalized_by[r.normalized_by or "none"] += 1
            if not math.isnan(r.confidence):
                self.hist[min(BINS - 1, int(r.confidence * BINS))] += 1
                if self.min_confidence is not None and r.confidence < self.min_confidence:
                    self.below_cutoff += 1
            folder = os.path.dirname(r.path.split("::", 1)[0]) or "."
            for kind, key in (("input", r.corpus), ("speaker", r.speaker), ("folder", folder)):
                if key:
                    by = self.groups.setdefault(kind, {})
                    if key not in by and len(by) >= MAX_GROUPS:
                        key = "(other)"
                    by.setdefault(key, Counter())[r.label] += 1
            item = {"path": r.path, "label": r.label, "confidence": r.confidence, "probabilities": r.probabilities,
                    "true_label": r.true_label}  # fmt: skip
            entry = (-r.confidence, self._seen, item)  # a max-heap of the least confident
            if r.reviewed or math.isnan(r.confidence):
                pass  # a person's answer is no model's doubt
            elif len(self._least) < LEAST_SURE:
                heapq.heappush(self._least, entry)
            elif entry > self._least[0]:
                heapq.heapreplace(self._least, entry)
            if r.segments:
                self._add_long(r, segs.get(r.path, []))

    def _add_long(self, r: ReportRow, segs: list[SegmentRow]) -> None:
        self.n_long += 1
        info = {"path": r.path, "duration_s": r.duration_s, "label": r.label, "dominant": r.dominant_label,
                "segments": r.segments, "speech_share": r.speech_share, "normalized_by": r.normalized_by,
                "speakers": sorted({s.speaker for s in segs if s.speaker})}  # fmt: skip
        varied = len({s.label for s in segs if s.voiced})
        rank = (varied, r.duration_s if not math.isnan(r.duration_s) else 0.0)
        timeline = {**info, "windows": [(s.start_s, s.end_s, s.label, s.confidence, s.voiced) for s in segs],
                    "dims": {d: [(s.start_s, s.end_s, s.dimensions[d]) for s in segs if d in s.dimensions]
                             for d in DIMENSION_LINES}}  # fmt: skip
        entry = (rank, self._seen, timeline)
        if len(self._long) < TIMELINES:
            heapq.heappush(self._long, entry)
        else:
            _, _, dropped = heapq.heappushpop(self._long, entry)
            if len(self.listed_long) < LISTED_LONG:
                self.listed_long.append({k: v for k, v in dropped.items() if k != "windows"})

    @property
    def least_sure(self) -> list[dict[str, Any]]:
        return [item for _, _, item in sorted(self._least, key=lambda e: (-e[0], e[1]))]

    @property
    def timelines(self) -> list[dict[str, Any]]:
        return [t for _, _, t in sorted(self._long, key=lambda e: e[0], reverse=True)]


def _count_sides(into: dict[str, list[int]], dims: dict[str, float]) -> None:
    for d, v in dims.items():
        if not math.isnan(v):
            into.setdefault(d, [0, 0])[int(v >= 0.5)] += 1


# -- charts ----------------------------------------------------------------------------------

DIMENSION_LINES = {"arousal": "-", "valence": ":"}  # drawn over a long recording's timeline
_SIDE_NAMES = {"arousal": ("low", "high"), "valence": ("negative", "positive")}


def _dimension_chart(counts: dict[str, list[int]], unit: str) -> str:
    """Each dimension's two sides as one bar of shares: how many files (or segments) on each."""
    plt = _pyplot()
    names = [d for d in _SIDE_NAMES if d in counts]
    fig, ax = plt.subplots(figsize=(5.2, 0.55 * len(names) + 0.7))
    for i, d in enumerate(names):
        low, high = counts[d]
        total = max(1, low + high)
        lo_name, hi_name = _SIDE_NAMES[d]
        ax.barh(i, high / total, color="#d1495b" if d == "arousal" else "#66a182")
        ax.barh(i, low / total, left=high / total, color="#8d99ae")
        ax.text(0.01, i, f"{hi_name} {high / total:.0%}", va="center", fontsize=9, color="white")
        ax.text(0.99, i, f"{lo_name} {low / total:.0%}", va="center", ha="right", fontsize=9, color="white")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of {unit} (probability of the first side at least 0.5)")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text as text: smaller, and searchable
    plt.rcParams["text.parse_math"] = False  # labels and names are shown as written, never as mathtext
    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})  # the same page for the same job
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # inline: without the XML prolog and doctype


def _color(label: str, classes: list[str]) -> str:
    return _COLORS[classes.index(label) % len(_COLORS)] if label in classes else "#bbbbbb"


def _label_chart(labels: Counter[str], classes: list[str], unit: str = "files") -> str:
    plt = _pyplot()
    names = [c for c in classes if labels.get(c)] + sorted(set(labels) - set(classes))
    fig, ax = plt.subplots(figsize=(5.2, 0.45 * max(2, len(names)) + 0.6))
    counts = [labels[n] for n in names]
    ax.barh(names, counts, color=[_color(n, classes) for n in names])
    total = max(1, sum(counts))
    for i, c in enumerate(counts):
        ax.text(c, i, f" {c:,} ({c / total:.0%})", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(counts) * 1.35 if counts else 1)
    ax.set_xlabel(unit)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _confidence_chart(hist: np.ndarray, cutoff: float | None, by_segment: bool = False) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 2.6))
    edges = np.linspace(0, 1, BINS + 1)
    ax.bar(edges[:-1], hist, width=1 / BINS, align="edge", color="#2f6fb3", edgecolor="white")
    if cutoff is not None:
        ax.axvline(cutoff, color="#c0392b", linestyle="--", linewidth=1.2, label=f"cut-off {cutoff:g}")
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("speech segments" if by_segment else "files")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _confusion_chart(ev: dict[str, Any]) -> str:
    plt = _pyplot()
    cm = np.asarray(ev["confusion_matrix"], dtype=float)
    labels = ev["labels"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("model's label")
    ax.set_ylabel("true label")
    return _svg(fig)


def _reliability_chart(cal: dict[str, Any]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.0, 3.8))
    bins = cal["bins"]
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=0.9 / cal["n_bins"],
           color="#2f6fb3", label="accuracy")  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {cal['ece']:.3f}", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return _svg(fig)


def _timeline_chart(t: dict[str, Any], classes: list[str]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 1.5))
    # Windows overlap (a hop is half a window): each is drawn over its first hop, so the bars tile the time.
    # Speech segments tile it already; a stretch without speech has no label and stays blank.
    windows = t["windows"]
    speech = any(not label for _, _, label, _, _ in windows) or all(voiced for *_, voiced in windows)
    for k, (start, end, label, conf, voiced) in enumerate(windows):
        if not label:
            continue
        step = min(windows[k + 1][0], end) - start if k + 1 < len(windows) else end - start
        ax.bar(start, conf, width=max(step, 1e-3), align="edge", alpha=0.9 if voiced else 0.3,
               color=_color(label, classes), linewidth=0)  # fmt: skip
    lines = []
    for d, style in DIMENSION_LINES.items():
        points = t.get("dims", {}).get(d) or []
        if points:
            x = [(a + b) / 2 for a, b, _ in points]
            (line,) = ax.plot(x, [v for _, _, v in points], style, color="#1d2430", linewidth=1.2)
            lines.append((line, f"{d} ({_SIDE_NAMES[d][1]})"))
    ax.set_xlim(0, t["duration_s"] if not math.isnan(t["duration_s"]) else None)
    ax.set_ylim(0, 1)
    ax.set_ylabel("confidence" + (" / P" if lines else ""))
    ax.set_xlabel("seconds (blank: no speech)" if speech else "seconds (faded: a window judged silent)")
    ax.spines[["top", "right"]].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_color(c, classes)) for c in classes] + [h for h, _ in lines]
    names = [*classes, *(n for _, n in lines)]
    ax.legend(handles, names, fontsize=7, ncol=len(names), frameon=False, loc="upper right",
              bbox_to_anchor=(1, 1.35))  # fmt: skip
    return _svg(fig)


# -- the page --------------------------------------------------------------------------------


# What a long recording's normalized_by says, in words (its segments' rules are in segments.csv).
RULE_WORDS = {
    "speaker": "each speaker standardised over their own speech in the job",
    "file-speaker": "each speaker standardised over their own speech in this recording",
    "file": "standardised over its own speech",
    "cluster": "standardised over its voice cluster",
    "corpus": "standardised over its input's files",
    "": "not standardised (no group large enough, or adapt: none)",
}


def _breakdowns(stats: PageStats) -> list[dict[str, Any]]:
    out = []
    for kind in ("input", "speaker", "folder"):
        by = stats.groups.get(kind, {})
        if len(by) < 2 and kind != "input":
            continue
        if kind == "folder" and sorted(by.values(), key=str) == sorted(
            stats.groups.get("speaker", {}).values(), key=str
        ):
            continue  # speakers named by their folders: the same table twice
        rows = sorted(by.items(), key=lambda kv: -sum(kv[1].values()))
        columns = _shown_labels(stats)
        shown = [{"name": k, "n": sum(c.values()), "share": {x: c[x] / max(1, sum(c.values())) for x in columns}}
                 for k, c in rows[:SHOWN_GROUPS]]  # fmt: skip
        out.append({"kind": kind, "rows": shown, "more": max(0, len(rows) - SHOWN_GROUPS)})
    return out


def _shown_labels(stats: PageStats) -> list[str]:
    """The label columns of the breakdowns: the model's emotions, then "none" and "uncertain" where files have them,
    so that each row's shares add up to 100 %."""
    return [*stats.classes, *(x for x in ("none", "uncertain") if stats.labels.get(x))]


def _same_rows(a: dict[str, Counter[str]], b: dict[str, Counter[str]]) -> bool:
    return len(a) == len(b) and sorted(map(str, a.values())) == sorted(map(str, b.values()))


def shown_env(env: Any) -> Any:
    """``env`` (a Jinja2 environment) with every value a page shows passed through
    :func:`~batchser.hashing.shown_text`: a name or label read from disk cannot reorder the page's text with
    bidirectional controls. ``verbatim`` keeps a value as it is (a form's value, sent back as given)."""
    from markupsafe import Markup, escape

    from batchser.hashing import shown_text

    class Verbatim(Markup):
        __slots__ = ()

    def finalize(value: Any) -> Any:
        if isinstance(value, Verbatim) or not isinstance(value, str):
            return value
        return Markup(shown_text(str(value))) if isinstance(value, Markup) else shown_text(value)

    env.finalize = finalize
    env.filters["verbatim"] = lambda value: Verbatim(escape(value))
    return env


def render(stats: PageStats, summary: dict[str, Any], *, metrics: dict[str, Any] | None = None) -> str:
    """The page's HTML from the aggregated rows, ``summary.json``'s content and the job's metrics."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = shown_env(
        Environment(loader=PackageLoader("batchser.web", "templates"), autoescape=select_autoescape(["html"]))
    )
    env.filters["pct"] = lambda x: "\u2013" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"
    metrics = metrics or {}
    labelled = metrics.get("labelled_files")
    train = {k: v for k, v in metrics.items() if k in ("actor_wise", "random_split") and "accuracy" in v}
    seconds = summary.get("seconds") or 0.0
    # A job of one or two long recordings is told by its speech segments: a chart of two files says nothing.
    by_segment = stats.n_ok <= 2 and sum(stats.seg_labels.values()) > stats.n_ok
    labels, hist = (stats.seg_labels, stats.seg_hist) if by_segment else (stats.labels, stats.hist)
    dims = stats.seg_dims if by_segment else stats.dims
    charts = {
        "labels": _label_chart(labels, stats.classes, "speech segments" if by_segment else "files") if labels else "",
        "confidence": _confidence_chart(hist, stats.min_confidence, by_segment) if stats.n_ok else "",
        "dimensions": _dimension_chart(dims, "speech segments" if by_segment else "files") if dims else "",
        "confusion": _confusion_chart(labelled) if labelled else "",
        "reliability": _reliability_chart(labelled["calibration"]) if labelled else "",
    }
    timelines = [{**t, "svg": _timeline_chart(t, stats.classes)} for t in stats.timelines]
    review = summary.get("review")
    expected = summary.get("expected_accuracy")
    return env.get_template("report.html").render(
        s=summary,
        review_text=describe_review(review) if review else [],
        expected_text=describe_expected(expected) if expected and not review else "",
        stats=stats,
        charts=charts,
        groups=_breakdowns(stats),
        group_labels=_shown_labels(stats),
        labelled=labelled,
        outside=metrics.get("labels_outside_the_model"),
        dims_scored=metrics.get("dimensions_of_labelled_files"),
        train=train,
        loco=metrics.get("leave_one_corpus_out"),
        review=summary.get("review"),
        timelines=timelines,
        rules=RULE_WORDS,
        rate=(summary.get("files", 0) / seconds) if seconds else None,
        realtime=(stats.audio_s / seconds) if seconds else None,
        by_segment=by_segment,
        expected_none=_none_mode(summary),
        generated=time.strftime("%Y-%m-%d %H:%M", time.localtime()),
    )


def _none_mode(summary: dict[str, Any]) -> str:
    """What standardising nothing costs, from the model card's figures when the summary carries them."""
    exp = summary.get("expected_accuracy") or {}
    return (
        f" On corpora the model never heard, files standardised with others were right for about "
        f"{100 * exp['uar_mean']:.0f} % (UAR); files standardised with nothing score lower (the model card's "
        "'none' row)."
        if exp.get("uar_mean") is not None and exp.get("adaptation") != "none"
        else ""
    )


def write_page(path: Path, stats: PageStats, summary: dict[str, Any], *, metrics: dict[str, Any] | None = None) -> Path:
    """Render and write ``report.html`` (atomically; the caller stages it with the other reports)."""
    from batchser.atomic import atomic_write_text

    atomic_write_text(path, render(stats, summary, metrics=metrics))
    return path


def rerender(out_dir: Path) -> Path:
    """``report.html`` of an output folder drawn again from its reports (after a review, or an upgrade).

    ``summary.json`` is rewritten with the new page's hash, so the set stays one
    job's (and the next run still recognises the page as its own).

    Raises
    ------
    FileNotFoundError
        No ``summary.json`` or annotations report in ``out_dir``.
    batchser.web.readback.ReadBackError
        A ``summary.json``, ``metrics.json`` or report table that is not as a job wrote it (file and key or
        column named).
    """
    import pyarrow.parquet as pq

    from batchser.report import file_digests, write_json
    from batchser.web.readback import read_metrics, read_summary
    from batchser.web.tables import check_table, read_csv_table

    summary = read_summary(out_dir)
    parquet = out_dir / "annotations.parquet"
    if parquet.is_file():
        pf = pq.ParquetFile(parquet)
        starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
        chunks = (
            check_table(pf.read_row_group(i).to_pandas(), parquet, "annotations", offset=int(starts[i]))
            for i in range(pf.num_row_groups)
        )
    elif (out_dir / "annotations.csv").is_file():
        chunks = iter([read_csv_table(out_dir / "annotations.csv", "annotations")])
    else:
        raise FileNotFoundError(f"{out_dir} holds no annotations report to draw a page from")
    first = next(chunks)
    classes = [c.removeprefix("p_") for c in first.columns if c.startswith("p_")]
    metrics = read_metrics(out_dir, classes)
    stats = PageStats(classes, summary.get("model_min_confidence"))
    segs = _segment_rows(out_dir)
    for df in (first, *chunks):
        rows = [_row(r, classes) for r in df.to_dict("records")]
        stats.add(rows, [s for r in rows if r.segments for s in segs.get(r.path, [])])
    page = write_page(out_dir / "report.html", stats, summary, metrics=metrics)
    summary["reports"] = {**summary.get("reports", {}), **file_digests([page])}
    write_json(out_dir / "summary.json", summary)
    return page


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _row(r: dict[str, Any], classes: list[str]) -> ReportRow:
    text = {k: (_clean(r.get(k)) or "") for k in ("path", "status", "error", "label", "corpus", "speaker",
                                                   "normalized_by", "dominant_label", "true_label")}  # fmt: skip
    return ReportRow(
        **text,
        confidence=float(r.get("confidence") if r.get("confidence") is not None else math.nan),
        probabilities={c: float(r[f"p_{c}"]) for c in classes if _clean(r.get(f"p_{c}")) is not None},
        duration_s=float(r.get("duration_s") if r.get("duration_s") is not None else math.nan),
        segments=int(_clean(r.get("segments")) or 0),
        reviewed=bool(_clean(r.get("reviewed")) or False),
        speech_share=float(r["speech_share"]) if _clean(r.get("speech_share")) is not None else math.nan,
        dimensions={d: float(r[d]) for d in DIMENSION_LINES if _clean(r.get(d)) is not None},
    )


def _segment_rows(out_dir: Path) -> dict[str, list[SegmentRow]]:
    from batchser.web.tables import read_report

    try:
        df = read_report(out_dir, "segments")  # reports written before segments had speakers lack the column
    except FileNotFoundError:
        return {}
    dims = [d for d in DIMENSION_LINES if d in df.columns]
    out: dict[str, list[SegmentRow]] = {}
    for r in df.to_dict("records"):
        out.setdefault(r["path"], []).append(
            SegmentRow(
                r["path"],
                r["start_s"],
                r["end_s"],
                bool(r["voiced"]),
                r["label"] or "",
                r["confidence"],
                {},
                speaker=_clean(r.get("speaker")) or "",
                dimensions={d: float(r[d]) for d in dims if _clean(r[d]) is not None},
            )
        )
    return out
