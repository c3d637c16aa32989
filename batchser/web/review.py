"""``batchser review``: a local page where a person checks a sample of a job's labels by ear.

Flask (a small, well-kept WSGI framework) serves one page rendered from a
Jinja2 template shared with the report page; every request must carry the
random token of the page's address, the server listens on 127.0.0.1 only,
and audio is served by the sample's row number, never by a path from the
request. Answers go to the job's ``review/answers.csv`` the moment they are
given (:class:`batchser.review.AnswersFile`).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from batchser.review import ANSWERS, NONE, PER_LABEL, SKIP, AnswersFile, extend_sample, read_answers
from batchser.web.clips import ClipError, clip_wav, locate
from batchser.web.tables import read_report

__all__ = ["ReviewError", "ReviewSession", "create_app"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096  # an answer is a row number and a label: nothing bigger is read


class ReviewError(RuntimeError):
    """The output folder holds nothing to review; the message says what to run first."""


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

    @classmethod
    def open(cls, out_dir: Path, *, per_label: int = PER_LABEL) -> ReviewSession:
        """The session of ``out_dir`` (a ``run`` or ``annotate`` output folder), its sample drawn or extended.

        Raises
        ------
        ReviewError
            No reports there, or reports with no labelled file.
        """
        try:
            summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ReviewError(
                f"{out_dir} holds no job's reports (no readable summary.json); label a folder first: "
                f"batchser annotate FOLDER --out {out_dir}"
            ) from None
        report = read_report(out_dir, "annotations")
        classes = [c.removeprefix("p_") for c in report.columns if c.startswith("p_")]
        if not (report["status"] == "ok").any():
            raise ReviewError(f"the reports in {out_dir} hold no labelled file to review")
        sample = extend_sample(out_dir, report, per_label=per_label)
        segments = _segments(out_dir, report, set(sample["path"]))
        return cls(
            out_dir=out_dir,
            classes=classes,
            sample=sample.reset_index(drop=True),
            root=str(summary.get("paths_relative_to") or "/"),
            inputs=list(summary.get("inputs", [])),
            segments=segments,
            answers=AnswersFile(out_dir / ANSWERS),
        )

    def given(self) -> dict[str, str]:
        path = self.out_dir / ANSWERS
        return {p: a.label for p, a in read_answers(path).items()} if path.is_file() else {}

    def state(self) -> dict[str, Any]:
        """Progress, agreement and the next file to answer, for the page."""
        given = self.given()
        rows = self.sample.to_dict("records")
        answered = [r for r in rows if given.get(r["path"], SKIP) != SKIP]
        agree = [given[r["path"]] == r["model_label"] for r in answered]
        per_label = Counter(given[r["path"]] for r in answered)
        todo = [r for r in rows if r["path"] not in given] + [r for r in rows if given.get(r["path"]) == SKIP]
        return {
            "total": len(rows),
            "answered": len(answered),
            "per_answer": {c: per_label.get(c, 0) for c in [*self.classes, NONE]},
            "agreement": (sum(agree) / len(agree)) if agree else None,
            "next": _item(todo[0], given) if todo else None,
            "recent": [_item(r, given) for r in answered[-5:]][::-1],
        }

    def answer(self, order: int, label: str) -> dict[str, Any]:
        """Record ``label`` for the sample's file ``order``; returns the new state.

        Raises
        ------
        KeyError
            No such file in the sample.
        ValueError
            A label that is none of the model's emotions, ``none`` or ``skip``.
        """
        if label not in {*self.classes, NONE, SKIP}:
            raise ValueError(f"answer must be one of {', '.join([*self.classes, NONE, SKIP])}")
        row = self.sample.loc[self.sample["order"] == order]
        if row.empty:
            raise KeyError(order)
        r = row.iloc[0]
        assert self.answers is not None
        self.answers.add(
            str(r["path"]),
            str(r["content_hash"]),
            label,
            model_label=str(r["model_label"]),
            confidence=float(r["confidence"]),
        )
        return self.state()

    def clip(self, order: int) -> bytes:
        row = self.sample.loc[self.sample["order"] == order]
        if row.empty:
            raise KeyError(order)
        path = str(row.iloc[0]["path"])
        real, member = locate(path, root=self.root, inputs=self.inputs)
        start, seconds = self.segments.get(path, (0.0, 20.0))
        return clip_wav(real, member, start_s=start, seconds=seconds)


def _item(r: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    return {
        "order": int(r["order"]),
        "path": str(r["path"]),
        "model_label": str(r["model_label"]),
        "confidence": float(r["confidence"]),
        "answer": given.get(str(r["path"])),
    }


def _segments(out_dir: Path, report: pd.DataFrame, paths: set[str]) -> dict[str, tuple[float, float]]:
    """For long recordings in the sample: the segment of the file's own label the model was surest of."""
    long = report[(report["path"].isin(paths)) & (report["segments"].fillna(0) > 0)]
    if long.empty:
        return {}
    try:
        segs = read_report(out_dir, "segments")
    except FileNotFoundError:
        return {}
    out = {}
    for path, label in zip(long["path"], long["label"], strict=True):
        mine = segs[(segs["path"] == path) & (segs["label"] == label)]
        if mine.empty:
            mine = segs[(segs["path"] == path) & segs["label"].notna()]  # not a stretch without speech
        if not mine.empty:
            best = mine.loc[mine["confidence"].idxmax()]
            out[path] = (float(best["start_s"]), float(best["end_s"] - best["start_s"]))
    return out


def create_app(session: ReviewSession, *, token: str) -> Any:
    """The review page's Flask app; every request must carry ``token`` (query, form field or header)."""
    from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.jinja_env.filters["pct"] = _fraction

    @app.before_request
    def _check_token() -> None:
        sent = request.args.get("token") or request.headers.get("X-Batchser-Token") or ""
        if not sent and request.method == "POST" and (request.content_length or 0) <= MAX_REQUEST_BYTES:
            sent = request.form.get("token", "")
        if not hmac.compare_digest(sent.encode(), token.encode()):
            abort(403)

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"  # the token is in the address
        return resp

    @app.get("/")
    def page() -> str:
        state = session.state()
        return render_template(
            "review.html",
            state=state,
            classes=session.classes,
            token=token,
            out_dir=str(session.out_dir),
            state_json=json.dumps(state),
        )

    @app.get("/state")
    def state() -> Response:
        return jsonify(session.state())

    @app.post("/answer")
    def answer() -> Any:
        data = request.get_json(silent=True) if request.is_json else request.form
        if not isinstance(data, dict) and not hasattr(data, "get"):
            abort(400)
        try:
            order = int(str(data.get("order", "")))
            label = str(data.get("label", ""))
            got = session.answer(order, label)
        except (KeyError, ValueError) as exc:
            return jsonify({"error": str(exc) or "no such file in the sample"}), 400
        if request.is_json:
            return jsonify(got)
        return redirect(url_for("page", token=token))

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


def serve(session: ReviewSession, *, port: int = 0, open_browser: bool = False) -> None:
    """Serve the review page on 127.0.0.1 until Ctrl-C; prints its address (with the token)."""
    from werkzeug.serving import make_server

    token = new_token()
    server = make_server("127.0.0.1", port, create_app(session, token=token), threaded=True)
    url = f"http://127.0.0.1:{server.server_port}/?token={token}"
    state = session.state()
    print(
        f"review of {session.out_dir}: {state['answered']} of {state['total']} files answered; open {url}\n"
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
