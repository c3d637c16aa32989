"""How often the labels are right on this archive: estimates from a person's answers, and what to expect before any.

:func:`estimate` reads a random sample stratified by the model's label. Its
accuracy counts every answer: "none of these" is a wrong label (the file
holds none of the model's emotions), and the share of such files is
estimated on its own (``none_share``). UAR is over the model's emotions.
Each figure is for the files nobody answered (the answered ones carry the
person's label), each stratum weighted by its share of them; intervals are
95 %. When a stratum has no answer yet there is no archive-wide figure: the
estimate says which strata it lacks and gives one over the strata it has.

:func:`expected_accuracy` is what a job can say before any review: the
model card's leave-one-corpus-out range for the way the job standardised
its files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "describe_expected",
    "describe_review",
    "estimate",
    "expected_accuracy",
    "in_words",
    "plain_rates",
    "share_in_words",
]

Z95 = 1.959964


def _proportion(hit: np.ndarray, groups: dict[str, np.ndarray], rest: dict[str, int]) -> tuple[float, list[float]]:
    """Stratified share of ``hit`` among the units not answered, with its 95 % interval.

    A stratum's share is shrunk towards 1/2 by one hit and one miss for its
    spread only (so a stratum answered all right still has one); the variance
    is the one of the mean of the ``rest`` units no one answered.
    """
    total = sum(rest[s] for s in groups)
    p, var = 0.0, 0.0
    for s, rows in groups.items():
        w = rest[s] / total
        n, x = len(rows), float(hit[rows].sum())
        shrunk = (x + 1) / (n + 2)
        p += w * x / n
        var += w**2 * shrunk * (1 - shrunk) * (1 / n + 1 / rest[s])
    half = Z95 * float(np.sqrt(var))
    return float(p), [max(0.0, p - half), min(1.0, p + half)]


def estimate(
    predicted: Sequence[str],
    answers: Sequence[str],
    strata: Sequence[str],
    stratum_sizes: Mapping[str, int],
    *,
    classes: Sequence[str],
    widen: float = 1.0,
    n_boot: int = 2000,
    random_state: int = 0,
) -> dict[str, Any]:
    """Accuracy, the share of none of the model's emotions, and UAR on the files no one answered.

    Parameters
    ----------
    predicted, answers, strata : sequences of str
        Per answered unit of the random sample: the label to score (the model's,
        or an out-of-fold prediction after learning), the person's answer (an
        emotion of ``classes``, or "none"; skips are left out by the caller) and
        the stratum it was drawn from (the model's label when drawn).
    stratum_sizes : mapping
        Units in each stratum of the archive (every stratum, answered or not).
    classes : sequence of str
        The model's emotions.
    widen : float
        Scales the intervals about the estimate (out-of-fold predictions vary
        with their folds, which sampling alone leaves out).

    Returns
    -------
    dict
        ``n``, ``n_none``, ``accuracy``, ``accuracy_ci``, ``none_share``,
        ``none_share_ci``, ``uar``, ``uar_ci``, ``strata`` (size and answers of
        each), ``missing_strata`` and ``covers`` (the share of the archive's
        units in strata with answers). With a stratum missing the archive-wide
        figures are None and ``partial`` holds them over the strata answered.
    """
    pred, ans, strata_arr = np.asarray(predicted, dtype=object), np.asarray(answers, dtype=object), np.asarray(strata)
    sizes = {str(s): int(n) for s, n in stratum_sizes.items() if int(n) > 0}
    groups = {s: np.flatnonzero(strata_arr == s) for s in sorted(set(strata_arr.tolist()))}
    groups = {s: r for s, r in groups.items() if len(r)}
    for s in groups:
        sizes.setdefault(s, len(groups[s]))
    rest = {s: max(0, sizes[s] - len(groups.get(s, ()))) for s in sizes}
    missing = sorted(s for s in sizes if s not in groups and rest[s] > 0)
    covered = {s: r for s, r in groups.items() if rest[s] > 0}
    out: dict[str, Any] = {
        "n": len(ans),
        "n_none": int(sum(a not in classes for a in ans.tolist())),
        "accuracy": None,
        "accuracy_ci": None,
        "none_share": None,
        "none_share_ci": None,
        "uar": None,
        "uar_ci": None,
        "strata": {s: {"size": sizes[s], "answered": len(groups.get(s, ()))} for s in sorted(sizes)},
        "missing_strata": missing,
        "covers": (sum(sizes[s] for s in groups) / sum(sizes.values())) if sizes else 0.0,
    }
    if not covered:
        out["all_answered"] = bool(sizes) and not missing  # nothing left to estimate: every unit has an answer
        return out
    correct = (pred == ans).astype(float)
    none = np.array([a not in classes for a in ans.tolist()], dtype=float)
    acc, acc_ci = _proportion(correct, covered, rest)
    share, share_ci = _proportion(none, covered, rest)
    figures = {
        "accuracy": acc,
        "accuracy_ci": _widened(acc, acc_ci, widen),
        "none_share": share,
        "none_share_ci": share_ci,  # answers, not predictions: nothing to widen
    }
    if missing:
        out["partial"] = {"strata": sorted(covered), **figures}
        return out
    out |= figures
    total = sum(rest[s] for s in covered)
    weights = {s: rest[s] / total for s in covered}

    def uar(sel: dict[str, np.ndarray]) -> float:
        recalls = []
        for c in classes:
            have = sum(weights[s] * np.mean(ans[r] == c) for s, r in sel.items())
            if have > 0:
                hit = sum(weights[s] * np.mean((ans[r] == c) & (pred[r] == c)) for s, r in sel.items())
                recalls.append(hit / have)
        return float(np.mean(recalls)) if recalls else float("nan")

    point = uar(covered)
    if np.isfinite(point):
        rng = np.random.default_rng(random_state)
        boots = np.array([uar({s: rng.choice(r, size=len(r)) for s, r in covered.items()}) for _ in range(n_boot)])
        boots = boots[np.isfinite(boots)]
        out["uar"] = point
        if len(boots):
            lo, hi = np.percentile(boots, [2.5, 97.5])
            out["uar_ci"] = _widened(point, [float(lo), float(hi)], widen)
    return out


def _widened(p: float, ci: list[float], widen: float) -> list[float]:
    return [float(max(0.0, p - (p - ci[0]) * widen)), float(min(1.0, p + (ci[1] - p) * widen))]


def plain_rates(predicted: Sequence[str], answers: Sequence[str], *, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, none share and UAR over the answered files themselves: answers that are no random sample
    of the archive describe only those files, so no interval is given."""
    pred, ans = np.asarray(predicted, dtype=object), np.asarray(answers, dtype=object)
    if not len(ans):
        return {"n": 0, "accuracy": None, "none_share": None, "uar": None}
    known = [c for c in classes if (ans == c).any()]
    return {
        "n": len(ans),
        "n_none": int(sum(a not in classes for a in ans.tolist())),
        "accuracy": float(np.mean(pred == ans)),
        "accuracy_ci": None,
        "none_share": float(np.mean([a not in classes for a in ans.tolist()])),
        "none_share_ci": None,
        "uar": float(np.mean([np.mean(pred[ans == c] == c) for c in known])) if known else None,
        "uar_ci": None,
    }


_WORDS = [
    (0.2, "about one in five"),
    (0.25, "about a quarter"),
    (1 / 3, "about a third"),
    (0.4, "about two in five"),
    (0.45, "a little under half"),
    (0.5, "about half"),
    (0.55, "a little over half"),
    (0.6, "about three in five"),
    (2 / 3, "about two thirds"),
    (0.7, "about seven in ten"),
    (0.75, "about three quarters"),
    (0.8, "about four in five"),
    (0.9, "about nine in ten"),
]


def in_words(share: float) -> str:
    """A share as people say it, to the nearest twentieth or so: 0.52 is "about half", 0.56 "a little over half"."""
    return min(_WORDS, key=lambda w: abs(w[0] - share))[1]


def share_in_words(share: float) -> str:
    """A small share as "1 in N" (0.34 is "about 1 in 3"), a larger one in words."""
    if share <= 0:
        return "none"
    if share <= 0.5:
        return f"about 1 in {max(2, round(1 / share))}"
    return in_words(share)


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _range(lo: float, hi: float) -> str:
    return f"{100 * lo:.0f}\u2013{100 * hi:.0f} %"


def _ci(ci: Sequence[float] | None) -> str:
    return f" (95 % interval {_range(ci[0], ci[1])})" if ci else ""


def describe_review(review: Mapping[str, Any]) -> list[str]:
    """What a review's answers say, in sentences a person reads correctly (console and page)."""
    n_classes = len(review.get("classes", ())) or "four"
    out = []
    head = f"{review['answers']} answers"
    if review.get("segment_units"):
        head += f" ({review['segment_units']} about speech segments of long recordings, each a unit of its own)"
    if review.get("none_of_these"):
        head += f" ({review['none_of_these']} \u201cnone of these\u201d)"
    if review.get("dimension_answers"):
        head += f" ({review['dimension_answers']} a side of arousal or valence only)"
    head += f"; learned from {review['learned_from']}"
    if review.get("matched_files", 0) > review.get("units", 0):
        head += f" ({review['matched_files']} files: copies of the same recording count once)"
    out.append(head + ".")
    before, after = review.get("before") or {}, review.get("after") or {}
    if not review.get("random_sample"):
        if before.get("accuracy") is not None:
            text = (
                f"On the {before['n']} answered recordings (not the review's random sample, so they describe only "
                f"themselves: no interval), the model's labels were right for {_pct(before['accuracy'])}"
            )
            if after and after.get("accuracy") is not None:
                text += f", {_pct(after['accuracy'])} after learning (out of fold)"
            out.append(text + ".")
    elif before.get("missing_strata"):
        missing = ", ".join(before["missing_strata"])
        text = f"No figure for the whole archive yet: no answers for the recordings labelled {missing}."
        part = before.get("partial")
        if part:
            text += (
                f" Over the recordings labelled {', '.join(part['strata'])} ({_pct(before['covers'])} of the "
                f"archive), the labels were right for {_pct(part['accuracy'])}{_ci(part['accuracy_ci'])}"
            )
            if after and after.get("partial"):
                text += f"; {_pct(after['partial']['accuracy'])}{_ci(after['partial']['accuracy_ci'])} after learning"
            text += "."
        out.append(text + " Answer more of the sample (batchser review) for the whole archive.")
    elif before.get("all_answered"):
        out.append("Every recording of the sample's strata was answered: their labels are the person's, nothing is "
                   "left to estimate.")  # fmt: skip
    elif before.get("accuracy") is not None:
        text = f"The labels are right for {_pct(before['accuracy'])}{_ci(before['accuracy_ci'])} of these recordings"
        if after and after.get("accuracy") is not None:
            text += f" before learning, {_pct(after['accuracy'])}{_ci(after['accuracy_ci'])} after"
        text += " (\u201cnone of these\u201d counts as wrong)."
        out.append(text)
        share = before.get("none_share")
        if share is not None:
            lo, hi = before["none_share_ci"]
            out.append(
                f"{share_in_words(share).capitalize()} of them holds none of the model's {n_classes} emotions "
                f"({_pct(share)}, 95 % interval {_range(lo, hi)}): no label of this model can be right for those."
                if share > 0
                else f"No answer said \u201cnone of these\u201d (the share of recordings holding none of the model's "
                f"{n_classes} emotions: 95 % interval {_range(lo, hi)})."
            )
        if before.get("uar") is not None:
            text = f"Over the model's emotions alone, UAR {_pct(before['uar'])}"
            if after and after.get("uar") is not None:
                text += f" before, {_pct(after['uar'])} after learning"
            out.append(text + ".")
    for dim, entry in (review.get("dimensions") or {}).items():
        b, a = entry.get("before") or {}, entry.get("after") or {}
        fig, fig_after = (b, a) if b.get("accuracy") is not None else (b.get("partial") or {}, a.get("partial") or {})
        if fig.get("accuracy") is None:
            continue
        text = (
            f"{dim.capitalize()}: its side is right for {_pct(fig['accuracy'])}{_ci(fig.get('accuracy_ci'))} of the "
            f"recordings whose answer gives one ({entry['answers']} answers: an emotion with a side, or the side "
            "itself)"
        )
        if fig_after.get("accuracy") is not None:
            text += f", {_pct(fig_after['accuracy'])} after learning"
        out.append(text + ("" if b.get("accuracy") is not None else ", over the labels answered so far") + ".")
    notes = []
    if review.get("n_stale"):
        notes.append(f"{review['n_stale']} set aside: the file changed since it was answered (not applied)")
    if review.get("unmatched"):
        notes.append(f"{review['unmatched']} match no file of this job (e.g. {review['unmatched_first'][0]!r})")
    if review.get("set_aside"):
        names = ", ".join(f"{k!r} ({v})" for k, v in review["set_aside"].items())
        notes.append(f"set aside, their labels unknown: {names}")
    if review.get("bad_rows"):
        notes.append(f"{len(review['bad_rows'])} rows could not be read (line {review['bad_rows'][0]['line']}: "
                     f"{review['bad_rows'][0]['why']})")  # fmt: skip
    if review.get("skipped"):
        notes.append(f"{review['skipped']} skipped")
    if notes:
        out.append("Answers not used: " + "; ".join(notes) + ".")
    return out


def _dimension_words(expected: Mapping[str, Any]) -> str:
    dims = {k: v for k, v in (expected.get("dimensions") or {}).items() if k in _SIDES}
    if not dims:
        return ""
    parts = []
    for n, (dim, d) in enumerate(dims.items()):
        spread = _range(d["worst"], d["best"]) + (" across corpora, balanced accuracy" if n == 0 else "")
        what = f"{_pct(d['mean'])} of recordings" if n == 0 else _pct(d["mean"])
        parts.append(
            f"its {dim} ({' or '.join(reversed(_SIDES[dim]))}) {'is right ' if n == 0 else ''}for {what} ({spread})"
        )
    weak = [dim for dim, d in dims.items() if d["mean"] < 0.65]
    tail = f": {' and '.join(weak)} little better than a coin on some corpora" if weak else ""
    return " " + " and ".join(parts)[0].upper() + " and ".join(parts)[1:] + tail + "."


_SIDES = {"arousal": ("low", "high"), "valence": ("negative", "positive")}


def describe_expected(expected: Mapping[str, Any], *, in_review: bool = False) -> str:
    """What to expect before any review, in a sentence (``in_review``: said on the review page itself)."""
    check = (
        " Your answers on this page tell how often it is right on this archive."
        if in_review
        else " Check 20 recordings per label by ear (batchser review) to know for this archive."
    )
    mean = expected["uar_mean"]
    if expected.get("held_out"):
        spread = (
            f"UAR {_range(expected['uar_worst'], expected['uar_best'])} on corpora held out from its "
            f"training, mean {_pct(mean)}"
            if expected.get("uar_worst") is not None
            else f"mean UAR {_pct(mean)} on corpora held out from its training"
        )
        return (
            f"On recordings unlike its training data this model is {expected['words']} right ({spread}, files "
            f"standardised {expected['standardised']} as in this job).{_dimension_words(expected)}{check}"
        )
    return (
        f"This model was scored only on speakers of its own training data (UAR {_pct(mean)}); on recordings unlike "
        f"them it may be far less often right.{check}"
    )


_MODE_OF = {"speaker": "speaker", "file-speaker": "speaker", "corpus": "corpus", "file": "corpus",
            "cluster": "cluster", "": "none", "none": "none"}  # fmt: skip
_HOW = {"speaker": "by speaker", "corpus": "over each input", "cluster": "by voice cluster", "none": "not at all"}


def _expected_dimensions(metrics: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """Arousal's and valence's leave-one-corpus-out balanced accuracy for ``mode``, when the card has them."""
    out = {}
    for dim, entry in (metrics.get("dimensions") or {}).items():
        if not isinstance(entry, Mapping) or mode not in entry.get("modes", {}):
            continue
        row = entry["modes"][mode]
        per = [float(v["balanced_accuracy"]) for v in row.get("per_corpus", {}).values()]
        if per:
            out[dim] = {"mean": float(np.mean(per)), "worst": min(per), "best": max(per)}
    return {"dimensions": out} if out else {}


def expected_accuracy(metrics: Mapping[str, Any], normalized_by: Mapping[str, int]) -> dict[str, Any] | None:
    """What to expect of the labels before any review: the model card's leave-one-corpus-out range for the
    way most of this job's files were standardised (``normalized_by``: files per rule).

    Returns None for a model with no such figures; a model scored only on its
    own corpus says so (its figure describes recordings like its training data).
    """
    counts: dict[str, int] = {}
    for how, n in normalized_by.items():
        mode = _MODE_OF.get(how, "corpus")
        counts[mode] = counts.get(mode, 0) + int(n)
    mode = max(counts, key=lambda m: counts[m]) if counts else "corpus"
    loco = metrics.get("leave_one_corpus_out")
    dims = _expected_dimensions(metrics, mode)
    if isinstance(loco, Mapping) and mode in loco.get("modes", {}):
        row = loco["modes"][mode]
        per = {c: float(v["uar"]) for c, v in row.get("per_corpus", {}).items()}
        mean = float(row["mean"]["uar"])
        return dims | {
            "source": f"leave one corpus out over {len(per)} corpora (the model card)",
            "adaptation": mode,
            "standardised": _HOW[mode],
            "uar_mean": mean,
            "uar_worst": min(per.values()) if per else None,
            "uar_best": max(per.values()) if per else None,
            "accuracy_mean": float(row["mean"].get("accuracy", mean)),
            "words": in_words(mean),
            "held_out": True,
        }
    wise = metrics.get("actor_wise")
    if isinstance(wise, Mapping) and "uar" in wise:
        return dims | {
            "source": "speaker-wise within its own training data (the model card); never scored on another corpus",
            "adaptation": mode,
            "standardised": _HOW[mode],
            "uar_mean": float(wise["uar"]),
            "uar_worst": None,
            "uar_best": None,
            "accuracy_mean": float(wise.get("accuracy", wise["uar"])),
            "words": in_words(float(wise["uar"])),
            "held_out": False,
        }
    return None
