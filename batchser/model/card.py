"""The model card: a Markdown page beside the model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchser.atomic import atomic_write_text
from batchser.model.base import TrainedModel
from batchser.model.circumplex import circumplex_table_md

__all__ = ["calibration_table_md", "dimension_table", "loco_table", "reliability_png_path", "write_model_card"]

_VARIANTS = {
    "reported": "reported (own and read-off, tempered)",
    "own": "own network alone",
    "read_off": "read off the four classes (baseline)",
}


def _pct(ev: dict[str, Any], key: str = "accuracy") -> str:
    return f"{ev[key]:.1%}" if key in ev else "n/a"


def _ece(ev: dict[str, Any]) -> str:
    cal = ev.get("calibration")
    return f"{cal['ece']:.3f}" if cal else "n/a"


def loco_table(loco: dict[str, Any]) -> str:
    """Markdown table of a leave-one-corpus-out evaluation: UAR (ECE) per held-out corpus and mode."""
    corpora = loco["corpora"]
    head = "| adaptation | " + " | ".join(corpora) + " | mean UAR | worst | mean accuracy | mean ECE |"
    lines = [head, "|" + "---|" * (len(corpora) + 5)]
    for mode, m in loco["modes"].items():
        per = m["per_corpus"]
        cells = [f"{per[c]['uar']:.1%} ({per[c]['calibration']['ece']:.2f})" for c in corpora]
        mean = m["mean"]
        lines.append(
            f"| {mode} | " + " | ".join(cells) + f" | **{mean['uar']:.1%}** | {mean['worst_uar']:.1%} | "
            f"{mean['accuracy']:.1%} | {mean['ece']:.3f} |"
        )
    return "\n".join(lines)


def calibration_table_md(loco: dict[str, Any], modes: tuple[str, ...] = ("corpus", "speaker")) -> str:
    """Markdown table: per held-out corpus and mode, accuracy beside mean confidence and the ECE."""
    corpora = loco["corpora"]
    modes = tuple(m for m in modes if m in loco["modes"])
    head = "| held out | " + " | ".join(f"{m}: accuracy / mean confidence / ECE" for m in modes) + " |"
    lines = [head, "|---|" + "---|" * len(modes)]
    for c in corpora:
        cells = []
        for mode in modes:
            ev = loco["modes"][mode]["per_corpus"][c]
            conf = ev.get("mean_confidence")
            conf_text = f"{conf:.1%}" if conf is not None else "n/a"
            cells.append(f"{ev['accuracy']:.1%} / {conf_text} / {ev['calibration']['ece']:.3f}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dimension_table(dims: dict[str, Any], dim: str, mode: str) -> str:
    """Markdown table of one dimension leave one corpus out under ``mode``: balanced accuracy (ECE) per corpus."""
    m = dims[dim]["modes"][mode]
    corpora = [c for c in dims["corpora"] if c in m["per_corpus"]]
    head = "| variant | " + " | ".join(corpora) + " | mean | worst | mean ECE | worst ECE |"
    lines = [head, "|" + "---|" * (len(corpora) + 5)]
    for variant, name in _VARIANTS.items():
        if variant not in m["mean"]:
            continue
        per = {c: m["per_corpus"][c] if variant == "reported" else m["per_corpus"][c][variant] for c in corpora}
        cells = [f"{per[c]['balanced_accuracy']:.1%} ({per[c]['ece']:.2f})" for c in corpora]
        mean = m["mean"][variant]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | **{mean['balanced_accuracy']:.1%}** | {mean['worst']:.1%} | "
            f"{mean['ece']:.3f} | {mean['worst_ece']:.3f} |"
        )
    return "\n".join(lines)


def _dimensions_section(model: TrainedModel) -> str:
    if not model.dimensions:
        return ""
    info = model.meta.metrics.get("dimensions", {})
    names = ", ".join(d.name for d in model.dimensions)
    # Said as it was done: which other emotions trained the networks, and whether a temperature could be fitted.
    others = [e for e in info.get("emotions", {}) if e not in model.meta.classes]
    extra = f", {', '.join(others)} included" if others else ""
    scaled = (
        "its logit scaled by a temperature fitted on corpora the networks never heard"
        if len(info.get("corpora", ())) >= 3
        else "unscaled (a temperature is fitted on corpora held out from the networks' training, inside the "
        "training corpora: that needs three or more)"
    )
    out = (
        "\n## Arousal and valence\n\n"
        f"Besides the emotions, the model gives {names}: the probability that a file's arousal is high and "
        "that its valence is positive. Each is the mean of a network of its own (a logistic regression on "
        "the circumplex placement of every training file's emotion: "
        f"{info.get('n_train', 'n/a')} files{extra}) and the share of the "
        f"{len(model.meta.classes)}-class probabilities on that side, {scaled}.\n"
    )
    if "corpora" in info:
        out += (
            "\nLeave one corpus out: balanced accuracy (the mean of the two sides' recalls) on each held-out "
            "corpus's files whose emotion has a side, expected calibration error in brackets. Without speaker "
            "ids each held-out corpus is standardised over its own files ('corpus'); with them, over each "
            "speaker's ('speaker').\n"
        )
        for d in model.dimensions:
            for mode in ("corpus", "speaker", "none"):
                if mode in info.get(d.name, {}).get("modes", {}):
                    out += f"\n**{d.name}, adaptation '{mode}'**\n\n" + dimension_table(info, d.name, mode) + "\n"
    else:
        out += "\nNot evaluated leave one corpus out: the model was trained on one corpus.\n"
    return (
        out + "\nWhere each emotion goes (the side a file is scored against; the placement, in [0, 1], its own "
        "network's training target; batchser/model/circumplex.py says why):\n\n" + circumplex_table_md() + "\n"
    )


def reliability_png_path(model_path: Path) -> Path:
    """Where a model's per-corpus reliability diagrams are drawn: ``<model>.reliability.png``."""
    return model_path.with_suffix(".reliability.png")


def _write_reliability(model: TrainedModel, loco: dict[str, Any], mode: str) -> Path | None:
    from batchser.report import write_reliability_png

    if mode not in loco["modes"]:
        return None
    panels = {c: ev for c, ev in loco["modes"][mode]["per_corpus"].items() if "calibration" in ev}
    path = reliability_png_path(model.path)
    write_reliability_png(path, panels, title=f"{model.path.name}: held out, adaptation '{mode}'")
    return path


def write_model_card(model: TrainedModel, *, data_note: str) -> Path:
    """Markdown card beside the model: data, license, both evaluations, how to reproduce."""
    m = model.meta
    rs, aw = m.metrics.get("random_split", {}), m.metrics.get("actor_wise", {})
    fs = m.feature_spec
    features = (
        f"{', '.join(fs['names'])} ({fs['dim']} dims, per-file statistics) at {fs['sample_rate']} Hz, "
        f"fingerprint `{m.feature_fingerprint}`"
    )
    hidden = tuple(m.params.get("hidden_layer_sizes", ()))
    if m.params.get("classifier", "mlp") == "logistic":
        estimator = (
            f"StandardScaler → LogisticRegression(C={m.params.get('C')}), random_state {m.params.get('random_state')}"
        )
    else:
        estimator = (
            f"StandardScaler → MLPClassifier(hidden_layer_sizes={hidden}), random_state {m.params.get('random_state')}"
        )
    if m.params.get("calibration", "none") != "none":
        estimator = f"CalibratedClassifierCV({estimator}, method={m.params['calibration']}, 3-fold by speaker)"
    fallback = m.metrics.get("without_speaker_normalization")
    if fallback is not None:
        fb = fallback.get("actor_wise", {})
        normalization = (
            f"per speaker (speakers with {m.params.get('min_speaker_files')}+ recordings in a job); "
            f"other files use a second network trained without it: actor-wise accuracy {_pct(fb)}, "
            f"macro-F1 {_pct(fb, 'macro_f1')}, ECE {_ece(fb)}"
        )
    else:
        normalization = "none (StandardScaler over all training files)"
    expect = (
        "The actor-wise figure is the one to expect on speakers the model has never heard;\n"
        "the random split shares speakers between training and test and flatters the model."
    )
    if fallback is not None:
        expect += (
            "\nThe actor-wise figure holds for speakers with enough recordings in the job, from several\n"
            "emotions; files of other speakers get the second network's answers (docs/accuracy.md)."
        )
    loco = ""
    if "leave_one_corpus_out" in m.metrics:
        loco = (
            "\n## Leave one corpus out\n\nTrained on the other corpora, tested on each one in turn; unweighted "
            "average recall (UAR) with the expected calibration error in brackets. Adaptation says whose "
            "statistics standardise a file: none, its corpus (all its files in the job), pseudo-speaker "
            "clusters, or its speaker (falling back to the corpus). This is what to expect on a new archive.\n\n"
            + loco_table(m.metrics["leave_one_corpus_out"])
            + "\n"
        )
        lo = m.metrics["leave_one_corpus_out"]
        mode = "speaker" if "speaker" in lo["modes"] else next(iter(lo["modes"]))
        png = _write_reliability(model, lo, mode)
        loco += (
            "\n### Confidence on each held-out corpus\n\nA confidence means what it says when it matches "
            "the accuracy of the files given it (ECE: the gap, weighted over 15 bins).\n\n"
            + calibration_table_md(lo)
            + "\n"
            + (f"\nReliability diagrams (adaptation '{mode}'): ![reliability]({png.name})\n" if png else "")
        )
    card = f"""# {model.path.name}

Speech-emotion classifier made by batchser (`{m.params.get("job", "")}` job), id `{model.id}`.

| | |
|---|---|
| classes | {", ".join(m.classes)} |
| features | {features} |
| model | {estimator} |
| speaker normalisation | {normalization} |
| training files | {m.n_train} (training fingerprint `{m.training_fingerprint}`) |
| random 75/25 split (librosa tutorial recipe, random_state 7) | accuracy {_pct(rs)}, macro-F1 {_pct(rs, "macro_f1")} |
| actor-wise ({aw.get("method", "skipped")}) | accuracy {_pct(aw)}, macro-F1 {_pct(aw, "macro_f1")} |
| probability calibration | {m.params.get("calibration", "none")}; ECE on held-out actors {_ece(aw)} |
| versions | {", ".join(f"{k} {v}" for k, v in m.versions.items())} |
| sha256 of the file | `{m.sha256}` |
| sha256 of the weights | `{m.weights_sha256}` (the id; equal for retrains on the same data, versions and CPU) |

## Data

{data_note}
{loco}{_dimensions_section(model)}
{expect}
"""
    path = model.path.with_suffix(".md")
    atomic_write_text(path, card)
    return path
