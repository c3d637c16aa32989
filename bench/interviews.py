"""Long recordings standardised over themselves: synthetic interviews from the shared corpora, labelled by the job.

    python bench/interviews.py                          # five corpora, shipped and leave-one-corpus-out models
    python bench/interviews.py --corpora emovo --models loco --quiet
    python bench/interviews.py --sweep                  # segment UAR against interview length, for min_file_segments
    python bench/interviews.py --pauses 0.05,0.3        # quick turn-taking: segments cross turn changes

Each interview is two or more speakers of one corpus taking turns (1 to 4 clips a turn),
every clip of theirs in one of the four emotions once, joined by pauses (--pauses, default
0.5-3 s) of room noise (-50 dBFS), with 25 s of synthesised chords, 10 s of noise and 20 s
of digital silence between turns; a corpus gives its speakers to interviews of at least 40
clips, none shared. The truth (each clip's span, emotion and speaker) is written beside it,
and an RTTM file with one turn per clip, as a diarizer would give it.

The same job (batchser.job.run_job, the shipped recipe's adaptation) then labels, per corpus:

  today                 the interviews, one input each, as before file standardisation (min_file_segments: null)
  file-standardised     the interviews: each standardised over its own speech (the default)
  speaker turns         the interviews with the RTTM (inputs[].speakers): each speaker over their own segments
  diarizer names        the same turns named SPEAKER_00, SPEAKER_01 (each speaker within the file)
  clips, per input      the same clips as files, a folder per interview (one input each)
  clips, per speaker    the same, a folder per speaker (inputs[].speaker: folder)

Segment UAR: each labelled speech segment is scored against the clip it overlaps most (a
segment overlapping none, in music or noise, is counted apart). Two models: the shipped one
(trained on all six corpora, the interviews' corpus included: optimistic) and one trained by
the shipped recipe without the interviews' corpus (leave one corpus out: a train job like
jobs/train-pooled.yaml without that input; its features come from result/cache). Audio and
models are written under --work (default result/bench-interviews, ignored by git).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import yaml
from _common import CORPORA, EMOTIONS, MODEL, ROOT, have, progress_log

from batchser.discover import discover
from batchser.inputs import input_paths
from batchser.job import run_job
from batchser.manifest import parse_manifest
from batchser.model.evaluate import _scores

SR = 16000
POOLED = ROOT / "jobs" / "train-pooled.yaml"
DEFAULT_CORPORA = ("emovo", "savee", "nemo", "ravdess", "ased")  # urdu: each speaker shows one emotion
MIN_CLIPS = 40  # an interview holds speakers until it has this many clips
CONFIGS = ("today", "file-standardised", "speaker turns", "diarizer names", "clips, per input", "clips, per speaker")
CLASSES = sorted(EMOTIONS)


@dataclass(frozen=True)
class Clip:
    path: Path
    emotion: str
    speaker: str


def corpus_clips(corpus: str) -> list[Clip]:
    """The corpus's clips of the four emotions, labelled by the pooled train job's own label sources."""
    job = yaml.safe_load(POOLED.read_text())
    job["inputs"] = [i for i in job["inputs"] if i.get("corpus") == corpus]
    m = parse_manifest(yaml.safe_dump(job), base_dir=POOLED.parent, source=str(POOLED))
    paths, fns = input_paths(m)
    out = []
    for f in discover(paths[:1]):
        lab = fns[0](f.path)
        if lab.emotion in EMOTIONS and lab.speaker:
            out.append(Clip(f.path, lab.emotion, lab.speaker.replace("/", "_")))
    return out


def _noise(seconds: float, db: float, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(int(seconds * SR))
    pink = np.convolve(white, np.ones(8) / 8, mode="same")  # a duller hiss, like a room
    return (pink / np.sqrt(np.mean(pink**2)) * 10 ** (db / 20)).astype(np.float32)


def _chords(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Synthesised music: a triad every 1.25 s, each note with three harmonics and a decay, at about -20 dBFS."""
    out = np.zeros(int(seconds * SR), dtype=np.float64)
    beat = int(1.25 * SR)
    t = np.arange(beat) / SR
    for at in range(0, len(out), beat):
        root = 220 * 2 ** (rng.integers(0, 12) / 12)
        chord = sum(
            np.sin(2 * np.pi * root * r * h * t) / h for r in (1, 2 ** (4 / 12), 2 ** (7 / 12)) for h in (1, 2, 3)
        )
        piece = (chord * np.exp(-2.5 * t))[: len(out) - at]
        out[at : at + len(piece)] += piece
    return (out / np.abs(out).max() * 0.3).astype(np.float32)


def _mono(path: Path) -> np.ndarray:
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR, (path, sr)
    return y.mean(axis=1)


def build_interviews(
    clips: list[Clip],
    corpus: str,
    folder: Path,
    rng: np.random.Generator,
    *,
    pauses: tuple[float, float],
    max_clips: int | None = None,
    tag: str = "",
) -> pd.DataFrame:
    """Interviews of ``corpus`` under ``folder`` (audio, RTTM, clip links); returns the truth, a row per clip."""
    by_speaker: dict[str, list[Clip]] = {}
    for c in clips:
        by_speaker.setdefault(c.speaker, []).append(c)
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    groups, current = [], []
    for s in speakers:
        current.append(s)
        if len(current) >= 2 and sum(len(by_speaker[x]) for x in current) >= MIN_CLIPS:
            groups.append(current)
            current = []
    if current and groups:
        groups[-1] += current
    truth = []
    for k, who in enumerate(groups):
        name = f"{corpus}{tag}-{k:02d}"
        queues = {s: [by_speaker[s][i] for i in rng.permutation(len(by_speaker[s]))] for s in who}
        if max_clips is not None:  # shorter interviews, the speakers' shares kept
            total = sum(len(q) for q in queues.values())
            queues = {s: q[: max(1, round(max_clips * len(q) / total))] for s, q in queues.items()}
        parts, at, last, used = [], 0.0, None, 0
        total = sum(len(q) for q in queues.values())
        extras = ["chords", "noise", "silence"]  # after the turns that pass a quarter, a half, three quarters
        while any(queues.values()):
            left = [x for x in who if queues[x]]
            s = rng.choice([x for x in left if x != last] or left)
            for _ in range(int(rng.integers(1, 5))):
                if not queues[s]:
                    break
                clip = queues[s].pop()
                gap = _noise(float(rng.uniform(*pauses)), -50, rng)
                y = _mono(clip.path)
                parts += [gap, y]
                at += len(gap) / SR
                truth.append((name, at, at + len(y) / SR, clip.emotion, clip.speaker, str(clip.path)))
                at += len(y) / SR
                used += 1
            last = s
            if extras and used >= (4 - len(extras)) * total / 4:
                kind = extras.pop(0)
                seconds = {"chords": 25.0, "noise": 10.0, "silence": 20.0}[kind]
                if kind == "chords":
                    piece = _chords(seconds, rng)
                elif kind == "noise":
                    piece = _noise(seconds, -35, rng)
                else:
                    piece = np.zeros(int(seconds * SR), dtype=np.float32)
                parts += [_noise(1.0, -50, rng), piece]
                at += 1.0 + len(piece) / SR
        parts.append(_noise(1.0, -50, rng))
        (folder / "interviews" / name).mkdir(parents=True, exist_ok=True)
        sf.write(folder / "interviews" / name / f"{name}.flac", np.concatenate(parts), SR, subtype="PCM_16")
    df = pd.DataFrame(truth, columns=["interview", "start_s", "end_s", "emotion", "speaker", "source"])
    for name, rows in df.groupby("interview"):
        anon = {x: f"SPEAKER_{k:02d}" for k, x in enumerate(dict.fromkeys(rows["speaker"]))}
        for kind, names in (("named", {x: x for x in anon}), ("anonymous", anon)):
            lines = [
                f"SPEAKER {name} 1 {r.start_s:.3f} {r.end_s - r.start_s:.3f} <NA> <NA> {names[r.speaker]} <NA> <NA>"
                for r in rows.itertuples()
            ]
            (folder / "turns" / kind).mkdir(parents=True, exist_ok=True)
            (folder / "turns" / kind / f"{name}.rttm").write_text("\n".join(lines) + "\n")
        for j, r in enumerate(rows.itertuples()):
            link = folder / "clips" / name / r.speaker / f"{j:03d}-{Path(r.source).name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(r.source)
    return df


def train_without(corpus: str, work: Path, log: Any) -> Path:
    """The shipped recipe fitted on the pooled job's corpora but ``corpus`` (a train job; kept under ``work``)."""
    model = work / "models" / f"without-{corpus}.skops"
    if model.is_file():
        return model
    log(f"  training the shipped recipe without {corpus} (features from result/cache)")
    job = yaml.safe_load(POOLED.read_text())
    job["inputs"] = [i for i in job["inputs"] if i.get("corpus") != corpus]
    job["model"] |= {"path": str(model), "evaluate_modes": ["corpus"]}
    job["output"] = {"dir": str(work / "models" / f"without-{corpus}-reports")}
    job["engine"] = {"backend": "loky", "n_jobs": 2}
    m = parse_manifest(yaml.safe_dump(job), base_dir=POOLED.parent, source=f"without-{corpus}")
    run_job(m, progress=False)
    return model


def label(
    folder: Path, names: list[str], config: str, model: Path, cache: Path, out: Path, *, min_segments: int | None
) -> Path:
    """One job over the interviews (or their clips) in ``config``; returns its report folder."""
    inputs: list[dict[str, Any]] = []
    for name in names:
        if config.startswith("clips"):
            inp: dict[str, Any] = {"path": str(folder / "clips" / name), "corpus": name}
            if config == "clips, per speaker":
                inp["speaker"] = "folder"
        else:
            inp = {"path": str(folder / "interviews" / name), "corpus": name}
            if config in ("speaker turns", "diarizer names"):
                kind = "named" if config == "speaker turns" else "anonymous"
                inp["speakers"] = f"rttm:{folder / 'turns' / kind / f'{name}.rttm'}"
        inputs.append(inp)
    job = {
        "name": "interviews",
        "inputs": inputs,
        "cache": str(cache),
        "engine": {"backend": "loky", "n_jobs": 2},
        "model": {"path": str(model), "min_file_segments": None if config == "today" else min_segments},
        "output": {"dir": str(out), "formats": ["parquet"], "page": False},
    }
    run_job(parse_manifest(yaml.safe_dump(job), base_dir=folder, source=config), progress=False, overwrite=True)
    return out


def segment_scores(seg: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """UAR of the labelled segments against the clip each overlaps most; and how they were standardised."""
    seg = seg[seg["label"].notna()]
    true, pred, outside, cut = [], [], 0, 0
    for name, rows in seg.groupby("path"):
        clips = truth[truth["interview"] == Path(name).stem]
        a0, a1 = clips["start_s"].to_numpy(), clips["end_s"].to_numpy()
        for r in rows.itertuples():
            ov = np.clip(np.minimum(a1, r.end_s) - np.maximum(a0, r.start_s), 0, None)
            if ov.max() <= 0:
                outside += 1
                continue
            true.append(clips["emotion"].iloc[int(np.argmax(ov))])
            pred.append(r.label)
            cut += int(np.sum(ov > 0) > 1)  # a segment over two clips
    s = _scores(np.asarray(true), np.asarray(pred), CLASSES)
    by = seg["normalized_by"].fillna("").replace("", "none").value_counts().to_dict()
    return {
        "uar": s["uar"],
        "n": len(true),
        "files": seg["path"].nunique(),
        "outside": outside,
        "two_clips": cut,
        "by": by,
    }


def clip_scores(out: Path, truth: pd.DataFrame) -> dict[str, Any]:
    ann = pd.read_parquet(out / "annotations.parquet")
    ok = ann[ann["status"] == "ok"]
    by = ok["normalized_by"].fillna("").replace("", "none").value_counts().to_dict()
    emotion = {Path(p).name: e for p, e in zip(truth["source"], truth["emotion"], strict=True)}
    true = [emotion[Path(p).name.split("-", 1)[1]] for p in ok["path"]]
    s = _scores(np.asarray(true), ok["label"].to_numpy(), CLASSES)
    return {"uar": s["uar"], "n": len(ok), "by": by}


def _table(title: str, results: dict[str, dict[str, dict[str, Any]]], corpora: list[str], configs: list[str]) -> None:
    print(f"\n{title}\n")
    print("| labelled | " + " | ".join(corpora) + " | mean |")
    print("|---|" + "---|" * (len(corpora) + 1))
    for config in configs:
        cells = [results[c][config]["uar"] for c in corpora]
        print(f"| {config} | " + " | ".join(f"{u:.1%}" for u in cells) + f" | **{np.mean(cells):.1%}** |")


def _gaps(results: dict[str, dict[str, dict[str, Any]]], corpora: list[str]) -> None:
    def mean(config: str) -> float:
        return float(np.mean([results[c][config]["uar"] for c in corpora]))

    f, t = mean("file-standardised") - mean("clips, per input"), mean("speaker turns") - mean("clips, per speaker")
    print(
        f"\nfile-standardised - clips per input: {100 * f:+.1f} points (goal: within 3); "
        f"speaker turns - clips per speaker: {100 * t:+.1f} points (goal: within 2); "
        f"today - clips per input: {100 * (mean('today') - mean('clips, per input')):+.1f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default=",".join(DEFAULT_CORPORA))
    ap.add_argument("--models", default="shipped,loco", help="shipped, loco (leave one corpus out) or both")
    ap.add_argument("--pauses", default="0.5,3", help="seconds of room noise between clips, min,max (0.5,3)")
    ap.add_argument("--max-clips", type=int, help="clips per interview at most (a quick run)")
    ap.add_argument("--sweep", action="store_true", help="segment UAR against interview length instead")
    ap.add_argument("--work", default=str(ROOT / "result" / "bench-interviews"), help="audio, caches and models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-segments", type=int, default=20, help="model.min_file_segments of the jobs (20)")
    ap.add_argument("--keep", action="store_true", help="keep the audio and reports under --work/kept")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    log = progress_log(args.quiet)
    logging.getLogger("batchser").setLevel(logging.ERROR)
    corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    if not all(have(CORPORA / c, c) for c in corpora):
        return 2
    pauses = tuple(float(x) for x in args.pauses.split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = [m.strip() for m in args.models.split(",")]
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = work / "kept"
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchser-interviews-", dir=work)))
        cache = work / "cache"
        results: dict[str, dict[str, dict[str, dict[str, Any]]]] = {m: {} for m in models}
        sweep: dict[str, dict[str, dict[int, dict[str, Any]]]] = {m: {} for m in models}
        for corpus in corpora:
            rng = np.random.default_rng(args.seed)
            clips = corpus_clips(corpus)
            folder = tmp / corpus
            lengths = (5, 10, 15, 20, 30, 40, 60) if args.sweep else (args.max_clips,)
            truth = pd.concat(
                [
                    build_interviews(
                        clips, corpus, folder, rng, pauses=pauses, max_clips=k, tag=f"-k{k}" if args.sweep else ""
                    )
                    for k in lengths
                ]
            )
            names = sorted(set(truth["interview"]))
            seconds = sum(sf.info(folder / "interviews" / n / f"{n}.flac").duration for n in names)
            log(f"{corpus}: {len(names)} interviews, {len(truth)} clips, {seconds / 60:.0f} min")
            for which in models:
                model = MODEL if which == "shipped" else train_without(corpus, work, log)
                if args.sweep:
                    by_k: dict[int, dict[str, Any]] = {}
                    for config, min_seg in (("today", None), ("input", None), ("file", 2)):
                        out = tmp / "reports" / f"{corpus}-{which}-{config}"
                        job_model = {"path": str(model), "min_file_segments": min_seg}
                        _label_sweep(folder, names, job_model, cache, out, together=config == "input")
                        seg = pd.read_parquet(out / "segments.parquet")
                        for k in lengths:
                            mine = seg[seg["path"].str.contains(f"-k{k}-", regex=False)]
                            by_k.setdefault(k, {})[config] = segment_scores(mine, truth)
                    sweep[which][corpus] = by_k
                    continue
                results[which][corpus] = {}
                for config in CONFIGS:
                    log(f"  {which} model: {config}")
                    out = label(folder, names, config, model, cache, tmp / "reports" / f"{corpus}-{which}-{config}",
                                min_segments=args.min_segments)  # fmt: skip
                    if config.startswith("clips"):
                        results[which][corpus][config] = clip_scores(out, truth)
                    else:
                        results[which][corpus][config] = segment_scores(
                            pd.read_parquet(out / "segments.parquet"), truth
                        )
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        if args.sweep:
            _print_sweep(sweep, corpora, lengths)
            return 0
        for which in models:
            title = (
                "shipped model (trained on all six corpora, these included)"
                if which == "shipped"
                else "leave one corpus out (the shipped recipe trained without the interviews' corpus)"
            )
            _table(f"Segment UAR, {title}", results[which], corpora, list(CONFIGS))
            _gaps(results[which], corpora)
        which = models[-1]
        print("\nhow the segments were standardised (last model), and segmentation:")
        for corpus in corpora:
            r = results[which][corpus]
            by = "; ".join(f"{k}: {v['by']}" for k, v in r.items() if not k.startswith("clips"))
            f, t = r["file-standardised"], r["speaker turns"]
            print(f"  {corpus}: {by}")
            print(
                f"    segments {f['n']}, in no clip {f['outside']}, over two clips {f['two_clips']} "
                f"(with turns {t['two_clips']})"
            )
    return 0


def _label_sweep(
    folder: Path, names: list[str], model: dict[str, Any], cache: Path, out: Path, *, together: bool
) -> None:
    """The sweep's interviews, each its own input, or (``together``) all in one (standardised over them all)."""
    inputs = [{"path": str(folder / "interviews" / n), "corpus": n} for n in names]
    job = {
        "name": "interviews-sweep",
        "inputs": [{"path": str(folder / "interviews"), "corpus": "all"}] if together else inputs,
        "cache": str(cache),
        "engine": {"backend": "loky", "n_jobs": 2},
        "model": model,
        "output": {"dir": str(out), "formats": ["parquet"], "page": False},
    }
    run_job(parse_manifest(yaml.safe_dump(job), base_dir=folder, source="sweep"), progress=False, overwrite=True)


def _print_sweep(sweep: dict[str, dict[str, dict[int, dict[str, Any]]]], corpora: list[str], lengths: tuple) -> None:
    for which, per in sweep.items():
        print(
            f"\nSegment UAR by interview length, {which} model (mean over {', '.join(corpora)}): not standardised "
            "(one interview an input), over all the corpus's interviews (one input), over itself\n"
        )
        print("| clips per interview | segments per interview (median) | none | over the input | over itself |")
        print("|---|---|---|---|---|")
        for k in lengths:
            cells = [np.mean([per[c][k][x]["uar"] for c in corpora]) for x in ("today", "input", "file")]
            n = np.median([per[c][k]["file"]["n"] / per[c][k]["file"]["files"] for c in corpora])
            print(f"| {k} | {n:.0f} | " + " | ".join(f"{u:.1%}" for u in cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
