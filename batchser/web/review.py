"""``batchser review``: a local page where a person checks a sample of a job's labels by ear.

Flask (a small, well-kept WSGI framework) serves one page rendered from a
Jinja2 template shared with the report page; every request must carry the
random token of the page's address, the server listens on 127.0.0.1 only,
never writes the token to its request log, and audio is served by the
sample's row number, never by a path from the request. Answers go to the
job's ``review/answers.csv`` the moment they are given
(:class:`batchser.review.AnswersFile`): "Saved" is said only once the answer
is on disk, and every failure says why. The server reads only what was
appended to the answers file since its last look (:class:`batchser.review.AnswerLog`).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from batchser.review import (
    ANSWERS,
    DIMENSION_ANSWERS,
    NONE,
    PER_LABEL,
    SKIP,
    UNDO,
    AnswerLog,
    AnswerNotSavedError,
    AnswersError,
    AnswersFile,
    canonical_label,
    describe_expected,
    describe_review,
    estimate,
    extend_sample,
    read_answers,
    review_folder,
    share_in_words,
)
from batchser.web.clips import MAX_CLIP_S, ClipError, clip_wav, locate
from batchser.web.readback import read_summary
from batchser.web.tables import read_report

__all__ = ["ReviewError", "ReviewSession", "create_app", "serve"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096  # an answer is a row number and a label: nothing bigger is read
CONTEXT_S = 1.0  # played around a speech segment, quieter, so a person hears where it sits
_TOKEN = re.compile(r"token=[^&\s]*")
RESTARTED = (
    "This review page's address is no longer valid: batchser review was restarted, and each start makes a new "
    "address. Open the address it printed last; every answer given so far is saved."
)


class ReviewError(RuntimeError):
    """The output folder holds nothing to review; the message says what to run first."""


Key = tuple[str, float | None, float | None]


def _key(r: dict[str, Any]) -> Key:
    start, end = r.get("start_s"), r.get("end_s")
    real = isinstance(start, float) and not math.isnan(start)
    return (str(r["path"]), float(start) if real else None, float(end) if real else None)  # type: ignore[arg-type]


def answer_words(answer: str) -> str:
    """An answer as the page says it: ``arousal:low`` is "low arousal"."""
    dim, _, side = answer.partition(":")
    return f"{side} {dim}" if side else answer


class SavedButUnreadableError(RuntimeError):
    """The answer is on disk, but the answers could not be read back to show what comes next."""


@dataclass
class ReviewSession:
    """A job's reports, its review sample and the answers given so far."""

    out_dir: Path
    classes: list[str]
    sample: pd.DataFrame
    root: str
    inputs: list[str]
    segments: dict[str, tuple[float, float]] = field(default_factory=dict)  # path -> the stretch to play
    answers: AnswersFile | None = None
    expected: dict[str, Any] | None = None
    dimensions: list[str] = field(default_factory=list)  # arousal, valence: the model's, answerable by side
    # What the reports show of each unit now (label, confidence): after a review, the relearned model's.
    shown: dict[Key, tuple[str, float]] = field(default_factory=dict)
    # Answers given before this page, in the file a --reviewed run learned from (a filled-in --list, say).
    earlier: dict[Key, Any] = field(default_factory=dict)
    measured: list[str] = field(default_factory=list)  # what a review of these reports said, in sentences
    blind: bool = False  # hide the model's label and confidence while answering (no anchoring)
    _log: AnswerLog | None = field(default=None, init=False, repr=False)
    # An undo checks what stands, then appends: no answer from another tab may land in between.
    _turn: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def open(cls, out_dir: Path, *, per_label: int = PER_LABEL, blind: bool = False) -> ReviewSession:
        """The session of ``out_dir`` (a ``run`` or ``annotate`` output folder), its sample drawn or extended.

        Raises
        ------
        ReviewError
            No reports there, or reports with no labelled file.
        ReadBackError
            A summary.json that is not as a job wrote it (named).
        AnswersError
            The review folder or its files are links, FIFOs or damaged (named, nothing written).
        """
        try:
            summary = read_summary(out_dir)
        except (FileNotFoundError, NotADirectoryError):
            audio = out_dir.is_dir() and any(
                p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg", ".m4a") for p in _first_files(out_dir)
            )
            raise ReviewError(
                f"{out_dir} holds no job's reports (no summary.json): "
                + (
                    "it looks like a folder of recordings. Label it first, then review the reports: "
                    f"batchser annotate {out_dir} --out REPORTS, then batchser review REPORTS"
                    if audio
                    else "point batchser review at the folder a job wrote its reports to (annotate's --out, or a "
                    f"manifest's output.dir), or label a folder first: batchser annotate FOLDER --out {out_dir}"
                )
            ) from None
        try:
            report = read_report(out_dir, "annotations")
        except FileNotFoundError:
            raise ReviewError(f"{out_dir} holds summary.json but no annotations report; run the job again") from None
        classes = [c.removeprefix("p_") for c in report.columns if c.startswith("p_")]
        if not (report["status"] == "ok").any():
            raise ReviewError(f"the reports in {out_dir} hold no labelled file to review")
        try:
            seg_table = read_report(out_dir, "segments")
        except FileNotFoundError:
            seg_table = None
        sample = extend_sample(out_dir, report, per_label=per_label, segments=seg_table)
        segments = _segments(report, seg_table, set(sample.loc[sample["start_s"].isna(), "path"]))
        session = cls(
            out_dir=out_dir,
            classes=classes,
            sample=sample.reset_index(drop=True),
            root=str(summary.get("paths_relative_to") or "/"),
            inputs=list(summary.get("inputs", [])),
            segments=segments,
            answers=AnswersFile(out_dir),
            expected=summary.get("expected_accuracy"),
            dimensions=[d for d in ("arousal", "valence") if d in report.columns],
            blind=blind,
            shown=_shown(report, seg_table, sample),
            earlier=_earlier(out_dir, summary, classes),
            measured=describe_review(summary["review"]) if summary.get("review") else [],
        )
        session.refresh()  # a damaged or hostile answers file is named now, before the address is printed
        return session

    def refresh(self) -> tuple[dict[Key, Any], list[tuple[int, str]], Any]:
        """The answers standing now (only what was appended since the last look is read)."""
        if self._log is None:
            self._log = AnswerLog(self.out_dir / ANSWERS, self.classes)
        review_folder(self.out_dir)
        try:
            answers = self._log.refresh()
        except FileNotFoundError:
            return dict(self.earlier), [], None
        return self.earlier | answers.latest, answers.bad, answers.last_given()

    def state(self, *, blind: bool | None = None) -> dict[str, Any]:
        """Progress, agreement, the estimate so far and the next unit to answer, for the page.

        ``blind`` (default: the session's): leave out the model's label and confidence.
        """
        blind = self.blind if blind is None else blind
        latest, bad, last = self.refresh()
        given = {k: a.label for k, a in latest.items()}
        rows = self.sample.to_dict("records")
        keys = [_key(r) for r in rows]
        answered = [(r, k) for r, k in zip(rows, keys, strict=True) if given.get(k, SKIP) != SKIP]
        named = [(r, k) for r, k in answered if given[k] not in DIMENSION_ANSWERS]  # an emotion, or none of them
        agree = [given[k] == r["model_label"] for r, k in named]
        per_label = Counter(given[k] for _, k in answered)
        todo = [r for r, k in zip(rows, keys, strict=True) if k not in given]
        todo += [r for r, k in zip(rows, keys, strict=True) if given.get(k) == SKIP]
        by_stratum = Counter(str(r["model_label"]) for r, _ in answered if r.get("part") == "random")
        strata = {str(s): int(n) for s, n in self.sample.groupby("model_label")["stratum_size"].first().items()}
        in_sample = {k for k in keys}
        return {
            "total": len(rows),
            "answered": len(answered),
            "per_answer": {c: per_label.get(c, 0) for c in [*self.classes, NONE]}
            | {a: per_label[a] for a in DIMENSION_ANSWERS if per_label.get(a)},
            "per_stratum": {s: by_stratum.get(s, 0) for s in sorted(strata)},
            "agreement": None if blind else ((sum(agree) / len(agree)) if agree else None),
            "agreement_n": len(agree),  # answers naming an emotion or none of them: skips and sides left out
            "estimate": self._estimate(answered, given, strata),
            "next": self._item(todo[0], given, blind) if todo else None,
            "recent": [self._item(r, given, blind) for r, _ in answered[-5:]][::-1],
            "can_undo": last is not None and last.key in in_sample,
            "unreadable_rows": [{"line": n, "why": why} for n, why in bad[:5]],
            "n_unreadable": len(bad),
            "blind": blind,
        }

    def _estimate(self, answered: list[tuple[dict[str, Any], Key]], given: dict[Key, str], strata: dict) -> Any:
        # Emotion answers ("none of these" included): a side of arousal or valence says nothing of the label.
        rand = [(r, k) for r, k in answered if r.get("part") == "random" and given[k] not in DIMENSION_ANSWERS]
        if not rand:
            return None
        model = [str(r["model_label"]) for r, _ in rand]
        got = estimate(model, [given[k] for _, k in rand], model, strata, classes=self.classes, n_boot=0)
        text = ""
        if got["accuracy"] is not None:
            lo, hi = got["accuracy_ci"]
            text = (
                f"So far the model's labels are right for {got['accuracy']:.0%} of these recordings "
                f"({lo:.0%}\u2013{hi:.0%}); {share_in_words(got['none_share'])} holds none of its emotions."
            )
        else:
            text = (
                "No estimate for the whole archive yet: no answer so far for the recordings labelled "
                f"{', '.join(got['missing_strata'])}."
            )
        return {"text": text, **{k: got[k] for k in ("accuracy", "accuracy_ci", "none_share", "missing_strata")}}

    def _item(self, r: dict[str, Any], given: dict[Key, str], blind: bool) -> dict[str, Any]:
        shown = self.shown
        _, start, end = _key(r)
        item = {"order": int(r["order"]), "path": str(r["path"]), "answer": given.get(_key(r))}
        item["stretch"] = (
            f"{start:.1f}\u2013{end:.1f} s of the recording (1 s of quieter context around it)"
            if start is not None and end is not None
            else ""
        )
        if not blind:
            label, conf = shown.get(_key(r), (str(r["model_label"]), float(r["confidence"])))
            item |= {"model_label": label, "confidence": conf}
        return item

    def answer(self, order: int, label: str, *, blind: bool | None = None) -> dict[str, Any]:
        """Record ``label`` for the sample's unit ``order``; returns the new state once it is on disk.

        Raises
        ------
        KeyError
            No such unit in the sample.
        ValueError
            A label that is none of the model's emotions, ``none`` or ``skip``.
        AnswerNotSavedError, AnswersError
            The answer did not reach the disk (the reason says why).
        """
        canonical = canonical_label(label, self.classes)
        if canonical is None or canonical == UNDO:
            raise ValueError(f"answer must be one of {', '.join([*self.classes, NONE, SKIP, *DIMENSION_ANSWERS])}")
        if canonical in DIMENSION_ANSWERS and DIMENSION_ANSWERS[canonical][0] not in self.dimensions:
            raise ValueError(f"this model reports no {DIMENSION_ANSWERS[canonical][0]}")
        r = self._row(order)
        assert self.answers is not None
        start, end = _key(r)[1:]
        with self._turn:
            self.answers.add(
                str(r["path"]),
                str(r["content_hash"]),
                canonical,
                model_label=str(r["model_label"]),
                confidence=float(r["confidence"]),
                start_s=start,
                end_s=end,
            )
        return self._state_after(f"Saved: {canonical}", blind)

    def _state_after(self, done: str, blind: bool | None) -> dict[str, Any]:
        try:
            return self.state(blind=blind)
        except AnswersError as exc:  # on disk already: never told "Not saved"
            raise SavedButUnreadableError(f"{done}. The page cannot read the answers back to go on: {exc}") from None

    def undo(self, order: int | None = None, *, blind: bool | None = None, label: str | None = None) -> dict[str, Any]:
        """Take back the answer standing for the sample's unit ``order`` (default: the latest answer given,
        by whoever gave it); an ``undo`` row is appended, nothing is rewritten.

        A page passes the unit it answered last, so two open tabs each undo their own answers, and the
        ``label`` it gave: when another tab has answered that unit since, nothing is taken back.

        Raises
        ------
        KeyError
            No answer to take back.
        """
        with self._turn:
            latest, _, last = self.refresh()
            if order is not None:
                last = latest.get(_key(self._row(order)))
                if last is None or (self.earlier.get(last.key) is last):
                    raise KeyError("no answer to undo for that recording")
                if label is not None and canonical_label(label, self.classes) != last.label:
                    raise KeyError(
                        f"that recording was answered again since (now: {answer_words(last.label)}), in another tab or "
                        "window: nothing was undone"
                    )
            if last is None:
                raise KeyError("no answer to undo")
            assert self.answers is not None
            self.answers.add(last.path, last.content_hash, UNDO, start_s=last.start_s, end_s=last.end_s)
        return self._state_after("Undone", blind)

    def listing(self) -> pd.DataFrame:
        """The sample as a table to fill in, each unit with the answer standing for it (segments included).

        The filled table is itself an answers file (``--reviewed``), matched to the
        recordings by content hash wherever it is run from; every stratum's size is
        on each row, so the estimate stays whole when rows are deleted or reordered.
        """
        latest, _, _ = self.refresh()
        columns = ["order", "path", "content_hash", "start_s", "end_s", "model_label", "confidence", "part"]
        table = self.sample[[*columns, "stratum_size"]].copy()
        sizes = self.sample.groupby("model_label")["stratum_size"].first()
        table["strata"] = ";".join(f"{k}={int(v)}" for k, v in sizes.items())
        given = [latest.get(_key(r)) for r in self.sample.to_dict("records")]
        table["label"] = [a.label if a is not None else "" for a in given]
        return table

    def _row(self, order: int) -> dict[str, Any]:
        row = self.sample.loc[self.sample["order"] == order]
        if row.empty:
            raise KeyError(order)
        return row.iloc[0].to_dict()

    def clip(self, order: int) -> bytes:
        """The unit's audio as a WAV: a short recording, or a speech segment with :data:`CONTEXT_S` of quieter
        context on each side."""
        r = self._row(order)
        path = str(r["path"])
        real, member = locate(path, root=self.root, inputs=self.inputs)
        _, start, end = _key(r)
        if start is not None and end is not None:
            before = min(CONTEXT_S, start)
            return clip_wav(
                real, member, start_s=start - before, seconds=end - start + before + CONTEXT_S,
                context=(before, CONTEXT_S),
            )  # fmt: skip
        start, seconds = self.segments.get(path, (0.0, MAX_CLIP_S))
        return clip_wav(real, member, start_s=start, seconds=seconds)


def _shown(report: pd.DataFrame, segs: pd.DataFrame | None, sample: pd.DataFrame) -> dict[Key, tuple[str, float]]:
    """Each sampled unit's label and confidence as the reports show them now."""
    out: dict[Key, tuple[str, float]] = {}
    wanted = set(sample["path"])
    rows = report[report["path"].isin(wanted) & (report["status"] == "ok")]
    for path, label, conf in zip(rows["path"], rows["label"], rows["confidence"], strict=True):
        out[(str(path), None, None)] = (str(label), float(conf))
    if segs is not None and "speech_prob" in segs.columns:
        seg = segs[segs["path"].isin(wanted) & segs["label"].notna()]
        for path, a, b, label, conf in zip(seg["path"], seg["start_s"], seg["end_s"], seg["label"], seg["confidence"],
                                           strict=True):  # fmt: skip
            out[(str(path), round(float(a), 3), round(float(b), 3))] = (str(label), float(conf))
    return out


def _earlier(out_dir: Path, summary: dict[str, Any], classes: list[str]) -> dict[Key, Any]:
    """The answers a --reviewed run of these reports learned from, when they are not this review's own file
    (a filled-in ``--list``): shown as given, never written again."""
    named = (summary.get("review") or {}).get("answers_file")
    if not named:
        return {}
    path = Path(str(named))
    try:
        if path.resolve() == (out_dir / ANSWERS).resolve() or not path.is_file():
            return {}
        return dict(read_answers(path, classes).latest)
    except (OSError, AnswersError):
        return {}


def _first_files(folder: Path, n: int = 200) -> list[Path]:
    out: list[Path] = []
    for p in folder.rglob("*"):
        if len(out) >= n:
            break
        if p.is_file():
            out.append(p)
    return out


def _segments(report: pd.DataFrame, segs: pd.DataFrame | None, paths: set[str]) -> dict[str, tuple[float, float]]:
    """For long recordings reviewed whole (windows, not speech segments): the piece of the file's own label
    the model was surest of."""
    long = report[(report["path"].isin(paths)) & (report["segments"].fillna(0) > 0)]
    if long.empty or segs is None:
        return {}
    out = {}
    for path, label in zip(long["path"], long["label"], strict=True):
        mine = segs[(segs["path"] == path) & (segs["label"] == label)]
        if mine.empty:
            mine = segs[(segs["path"] == path) & segs["label"].notna()]  # not a stretch without speech
        if not mine.empty:
            best = mine.loc[mine["confidence"].fillna(-1.0).idxmax()]  # an edited report may leave it empty
            out[path] = (float(best["start_s"]), float(best["end_s"] - best["start_s"]))
    return out


def create_app(session: ReviewSession, *, token: str) -> Any:
    """The review page's Flask app; every request must carry ``token`` (query, form field or header)."""
    from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for
    from markupsafe import escape

    from batchser.hashing import shown_text
    from batchser.web.page import shown_env

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.jinja_env.filters["pct"] = _fraction
    app.jinja_env.filters["answer_words"] = answer_words
    shown_env(app.jinja_env)  # names and labels from disk shown with their bidirectional controls escaped

    def blind() -> bool:
        asked = request.args.get("blind")
        return session.blind if asked is None else asked == "1"

    def wants_json() -> bool:
        return request.is_json or request.path != "/"

    @app.before_request
    def _check_token() -> Any:
        sent = request.args.get("token") or request.headers.get("X-Batchser-Token") or ""
        if not sent and request.method == "POST" and (request.content_length or 0) <= MAX_REQUEST_BYTES:
            sent = request.form.get("token", "")
        if not hmac.compare_digest(sent.encode(), token.encode()):
            if wants_json():
                return jsonify({"error": RESTARTED}), 403
            return Response(f"<!doctype html><title>batchser review</title><p>{RESTARTED}</p>", 403)
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"  # the token is in the address
        return resp

    def failed(message: str, status: int, **extra: Any) -> Any:
        """A failure said to the person, in JSON for the page's script, else as a page of its own."""
        log.error("%s", message)
        if request.is_json:
            return jsonify({"error": message, **extra}), status
        return Response(f"<!doctype html><title>batchser review</title><p>{escape(shown_text(message))}</p>", status)

    def not_saved(exc: Exception) -> Any:
        return failed(f"Not saved: {exc}", 507)

    def saved_but(exc: Exception) -> Any:
        return failed(str(exc), 503, saved=True)

    def unreadable(exc: Exception) -> Any:
        return failed(f"The answers cannot be read: {exc}", 503)

    @app.get("/")
    def page() -> Any:
        try:
            state = session.state(blind=blind())
        except AnswersError as exc:
            return unreadable(exc)
        return render_template(
            "review.html",
            state=state,
            classes=session.classes,
            dimensions=session.dimensions,
            token=token,
            blind=blind(),
            expected=" ".join(session.measured)
            if session.measured
            else (describe_expected(session.expected, in_review=True) if session.expected else ""),
            out_dir=str(session.out_dir),
            state_json=json.dumps(state),
        )

    @app.get("/state")
    def state() -> Any:
        try:
            return jsonify(session.state(blind=blind()))
        except AnswersError as exc:
            return unreadable(exc)

    def form() -> Any:
        data = request.get_json(silent=True) if request.is_json else request.form
        if data is None or not hasattr(data, "get"):
            abort(400)
        return data

    def done(got: dict[str, Any]) -> Any:
        if request.is_json:
            return jsonify(got)
        return redirect(url_for("page", token=token, blind="1" if blind() else "0"))

    @app.post("/answer")
    def answer() -> Any:
        data = form()
        given = str(data.get("order", ""))
        if not given.isdecimal() or len(given) > 18:  # a row number of the sample, nothing else
            return jsonify({"error": f"order {given[:40]!r} is no recording's number in the sample"}), 400
        try:
            order = int(given)
            got = session.answer(order, str(data.get("label", "")), blind=blind())
        except SavedButUnreadableError as exc:
            return saved_but(exc)
        except (AnswerNotSavedError, AnswersError) as exc:
            return not_saved(exc)
        except KeyError:
            return jsonify({"error": f"order {given!r} is no recording's number in the sample"}), 400
        except ValueError as exc:
            return jsonify({"error": str(exc)[:300] or "no such recording in the sample"}), 400
        return done(got)

    @app.post("/undo")
    def undo() -> Any:
        data = form()
        given, label = data.get("order"), data.get("label")
        if given not in (None, "") and (not str(given).isdecimal() or len(str(given)) > 18):
            return jsonify({"error": f"order {str(given)[:40]!r} is no recording's number in the sample"}), 400
        try:
            order = None if given in (None, "") else int(str(given))
            if order is not None and not (session.sample["order"] == order).any():
                return jsonify({"error": f"order {order} is no recording's number in the sample"}), 400
            got = session.undo(order, blind=blind(), label=None if label in (None, "") else str(label)[:100])
        except SavedButUnreadableError as exc:
            return saved_but(exc)
        except (KeyError, ValueError) as exc:
            return jsonify({"error": str(exc).strip("'\"") or "no answer to undo"}), 400
        except (AnswerNotSavedError, AnswersError) as exc:
            return not_saved(exc)
        return done(got)

    @app.get("/clip/<int:order>")
    def clip(order: int) -> Response:
        try:
            return Response(session.clip(order), mimetype="audio/wav")
        except KeyError:
            abort(404)
        except ClipError as exc:
            return Response(f"cannot play this file: {exc}", status=410, mimetype="text/plain")

    return app


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _handler() -> Any:
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        """Werkzeug's request log with the token cut out of every address it writes."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            path = _TOKEN.sub("token=\u2026", getattr(self, "path", "") or "")
            self.log("info", '"%s %s" %s %s', getattr(self, "command", "-"), path, code, size)

        def log_error(self, format: str, *args: Any) -> None:
            self.log("error", _TOKEN.sub("token=\u2026", format % args).replace("%", "%%"))

    return Handler


def serve(session: ReviewSession, *, port: int = 0, open_browser: bool = False) -> None:
    """Serve the review page on 127.0.0.1 until Ctrl-C; prints its address (with the token) once."""
    from werkzeug.serving import make_server

    token = new_token()
    server = make_server("127.0.0.1", port, create_app(session, token=token), threaded=True, request_handler=_handler())
    url = f"http://127.0.0.1:{server.server_port}/?token={token}"
    state = session.state()
    print(
        f"review of {session.out_dir}: {state['answered']} of {state['total']} answered; open {url}\n"
        f"answers are saved to {session.out_dir / ANSWERS} as you give them; Ctrl-C stops",
        flush=True,
    )
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _fraction(x: float | None) -> str:
    return "\u2013" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"
