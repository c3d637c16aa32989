"""Documents that point where they say: every cross-reference followed, every command line parsed.

What is checked, in README.md, docs/*.md, jobs/*.yaml, batchser/models/*.md, the page
templates and batchser's own source (docstrings, comments, messages):

- a file named by its path (``docs/accuracy.md``, ``jobs/train-pooled.yaml``,
  ``bench/review.py`` …) or by a Markdown link exists;
- an anchor (``docs/x.md#anchor``, ``[…](#anchor)``) is a heading's anchor in that file;
- a section named with its document (``README, Accuracy``, ``the README's *X*``,
  ``README ("X")``, ``docs/reports.md, Long recordings``) is a heading there (a ``#``
  heading or a bold run-in one, ``**Paths.**``); one named alone (``see *X*``,
  ``(see X)``) is a heading of the same document;
- every ``batchser …`` / ``python -m batchser …`` line of the docs' code blocks parses with
  the command's own parser (an unknown option or a missing argument fails), and every
  option an inline ``batchser …`` mentions is one of its command's; every option has help text.

Nothing is run: the commands go through :func:`batchser.cli.build_parser` only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from batchser.cli import build_parser
from tests.conftest import PROJECT

MARKDOWN = [
    PROJECT / "README.md",
    *sorted((PROJECT / "docs").glob("*.md")),
    *sorted(PROJECT.glob("batchser/models/*.md")),
]
SOURCES = [
    *MARKDOWN,
    *sorted((PROJECT / "jobs").glob("*.yaml")),
    *sorted((PROJECT / "batchser" / "web" / "templates").glob("*.html")),
    *sorted((PROJECT / "batchser").rglob("*.py")),
]
DOC_NAMES = {"README": PROJECT / "README.md"}  # and docs/x.md by its path


def _rel(path: Path) -> str:
    return path.relative_to(PROJECT).as_posix()


def _flat(path: Path) -> str:
    """The file's sentences, each on one line: wrapped lines, comment markers and implicit string joins gone.

    A YAML line ends its sentence unless a comment line continues it; Markdown and
    Python text (docstrings, comments, messages) wrap anywhere.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        text = re.sub(r"([\"'])\s*\n\s*[rbfu]*\1", "", text)  # "…(README, " "Accuracy)…" is one string
    elif path.suffix == ".md":
        text = re.sub(r"\n\s*\n", "\0", text)  # paragraphs end sentences
    if path.suffix == ".yaml":
        text = re.sub(r"\n\s*#\s?", " ", text)
        return re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n\s*#\s?", " ", text)
    return re.sub(r"\s+", " ", text).replace("\0", "\n")


def _norm(title: str) -> str:
    return re.sub(r"\s+", " ", title.replace("`", "").replace("*", "")).strip(" .:;,").lower()


def _slug(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower()).replace(" ", "-")


@dataclass(frozen=True)
class Headings:
    titles: frozenset[str]  # normalised: every heading and bold run-in heading
    anchors: frozenset[str]


def headings(path: Path) -> Headings:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # a "# comment" in a code block is no heading
    hashed = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M)
    run_in = re.findall(r"^\*\*(.+?)\*\*", text, flags=re.M)
    return Headings(frozenset(_norm(t) for t in hashed + run_in), frozenset(_slug(t) for t in hashed))


def _doc(name: str) -> Path:
    return DOC_NAMES.get(name) or PROJECT / name


# A file named by its path from the project root.
FILE = re.compile(r"(?<![\w/.-])((?:docs|jobs|bench|tests|batchser|data)/[\w./-]*\w\.(?:md|yaml|py|png|skops|html))")
ANCHORED = re.compile(r"(?<![\w/.-])((?:docs/[\w-]+\.md|README\.md)|)#([a-z0-9][\w-]*)\)")
LINK = re.compile(r"\]\(([^)\s#]+\.md)(?:#([\w-]+))?\)")
DOC = r"(?P<doc>README|docs/[\w-]+\.md)"
# A section named with its document: quoted or in italics, or plain words after a comma.
QUALIFIED = [
    re.compile(DOC + r"(?:'s|\]\([^)]*\))?,? \(?(?:\"(?P<s>[^\"]+)\"|\*(?P<t>[^*]+)\*)"),
    re.compile(DOC + r"(?:\]\([^)]*\))?, (?P<s>[A-Za-z][\w' -]*?)(?=[).;:,\n]| \(|$)"),
]
# A section named alone: a heading of the same document.
ALONE = re.compile(r"\bsee (?:\*(?P<t>[^*]+)\*|(?P<s>[A-Z][\w' -]*?)(?=[).;,\n]|$))")


def test_a_reference_check_finds_what_is_missing(tmp_path: Path) -> None:
    """The checks below catch each kind of dangling reference (run on a document made to hold some)."""
    doc = tmp_path / "x.md"
    doc.write_text(
        "# Title\n\n**Paths.** text\n\nSee README, Accuracy; the README's *Label a folder*; see *Paths*; "
        "docs/nothing.md; docs/manifest.md#no-such-anchor); see Nowhere.\n"
    )
    found = sorted(problems_in(doc))
    assert found == [
        "README, 'Accuracy': no such heading",
        "docs/manifest.md#no-such-anchor: no such heading",
        "docs/nothing.md: no such file",
        "see 'Nowhere': no such heading in this document",
    ], found


def problems_in(path: Path) -> list[str]:
    text = _flat(path)
    out = []
    for name in FILE.findall(text):
        if not (PROJECT / name).exists():
            out.append(f"{name}: no such file")
    for m in LINK.finditer(text):
        target = (path.parent / m[1]).resolve()
        if not target.is_file():
            out.append(f"[…]({m[1]}): no such file")
        elif m[2] and m[2] not in headings(target).anchors:
            out.append(f"{m[1]}#{m[2]}: no such heading")
    for m in ANCHORED.finditer(text):
        target = _doc(m[1]) if m[1] else path
        if target.is_file() and target.suffix == ".md" and m[2] not in headings(target).anchors:
            out.append(f"{m[1]}#{m[2]}: no such heading")
    for rx in QUALIFIED:
        for m in rx.finditer(text):
            section = m["s"] or m["t"]
            target = _doc(m["doc"])
            if not target.is_file():
                out.append(f"{m['doc']}: no such file")
            elif _norm(section) not in headings(target).titles:
                out.append(f"{m['doc']}, {section!r}: no such heading")
    for m in ALONE.finditer(text):
        section = m["s"] or m["t"]
        if section.startswith(("README", "docs/")) or section in ("A", "The"):
            continue  # qualified, above
        if path.suffix != ".md" or _norm(section) not in headings(path).titles:
            out.append(f"see {section!r}: no such heading in this document")
    return out


def test_every_reference_points_somewhere() -> None:
    assert len(SOURCES) > 60  # the docs, the jobs, the model card, the templates and every module
    problems = [f"{_rel(path)}: {p}" for path in SOURCES for p in problems_in(path)]
    assert not problems, "references that point nowhere:\n" + "\n".join(problems)


# -- command lines --------------------------------------------------------------------------


def _commands(text: str) -> list[str]:
    """Every ``batchser …`` command of the code blocks in ``text``, one per string, as written."""
    out = []
    for block in re.findall(r"```[\w-]*\n(.*?)```", text, flags=re.S):
        # A usage line continued on the next (indented "[--option …]") is one command.
        block = re.sub(r"(?m)^((?:python -m )?batchser [^#\n]*?)\s*\n\s+(?=\[)", r"\1 ", block.replace("\\\n", " "))
        for line in block.splitlines():
            for piece in re.split(r"&&|;| \| ", line):
                piece = piece.strip().removeprefix("$ ")
                if piece.startswith(("batchser ", "python -m batchser ")):
                    out.append(piece)
    return out


def _argv(command: str) -> list[list[str]]:
    """The argument lists a written command stands for: usage brackets dropped, each ``a|b`` alternative once."""
    words = shlex.split(command, comments=True)
    words = words[3:] if words[0] == "python" else words[1:]
    for cut in (">", ">>", "<", "2>", "|"):
        if cut in words:
            words = words[: words.index(cut)]
    words = [w.strip("[]") for w in words if w.strip("[]")]
    lists = []
    alternatives = [(i, w.split("|")) for i, w in enumerate(words) if "|" in w]
    for i, options in alternatives or [(0, [None])]:
        for option in options:
            lists.append([option if (j == i and option is not None) else w.split("|")[0] for j, w in enumerate(words)])
    return lists


def _parse(argv: list[str]) -> str:
    """'' when ``argv`` parses; else argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        return err.getvalue().strip().splitlines()[-1] if exc.code else ""
    return ""


COMMANDS = [(_rel(doc), c) for doc in MARKDOWN for c in _commands(doc.read_text(encoding="utf-8"))]


def test_the_docs_have_command_lines_to_check() -> None:
    assert len(COMMANDS) >= 20 and any("annotate" in c for _, c in COMMANDS)
    assert _parse(["annotate", "x", "--no-such-option"]), "an unknown option must fail"
    assert _parse(["run"]), "a missing argument must fail"


def test_every_command_line_in_the_docs_parses() -> None:
    problems = [
        f"{doc}: `{command}` as {argv}: {_parse(argv) or 'its --help fails'}"
        for doc, command in COMMANDS
        for argv in _argv(command)
        if _parse(argv) or _parse([argv[0], "--help"])
    ]
    assert not problems, "command lines that do not parse:\n" + "\n".join(problems)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


INLINE = re.compile(r"`(?:python -m )?batchser (\w+)((?: [^`]*)?)`")


def test_every_option_an_inline_command_names_is_its_commands() -> None:
    parsers = _subcommands()
    assert sum(len(INLINE.findall(_flat(path))) for path in MARKDOWN) >= 20
    problems = []
    for path in MARKDOWN:
        for m in INLINE.finditer(_flat(path)):
            if m[1] not in parsers:
                problems.append(f"{_rel(path)}: `batchser {m[1]}` is no command (there are {sorted(parsers)})")
                continue
            known = {s for a in parsers[m[1]]._actions for s in a.option_strings}
            for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", m[2]):
                if option not in known:
                    problems.append(f"{_rel(path)}: `batchser {m[1]}{m[2]}`: {option} is not an option of {m[1]}")
    assert not problems, "\n".join(problems)


def test_every_option_has_help_text() -> None:
    missing = [
        f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
        for name, parser in _subcommands().items()
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert not missing, f"options without help text: {', '.join(missing)}"


# -- the suite's size as the README states it ---------------------------------------------------


def test_the_readme_states_the_suites_size_as_a_range_that_holds() -> None:
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"([\d,]+)\s+to\s+([\d,]+)\s+tests", readme)
    assert m, "the README states the suite's size as 'N to M tests'"
    low, high = (int(g.replace(",", "")) for g in m.groups())
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(PROJECT / "tests")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    collected = re.search(r"(\d+) tests? collected", res.stdout)
    assert collected, res.stdout[-2000:] + res.stderr[-2000:]
    n = int(collected[1])
    assert low <= n <= high, f"the suite has {n} tests; the README says {low} to {high}: update the range"


def test_the_extras_the_docs_install_exist() -> None:
    """``pip install -e '.[test]'`` and the like: each extra named is one pyproject.toml defines."""
    import tomllib

    extras = set(tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {
        e.strip()
        for doc in MARKDOWN
        for group in re.findall(r"pip install [^\n]*?['\"]?\.\[([\w,-]+)\]", doc.read_text(encoding="utf-8"))
        for e in group.split(",")
    }
    assert "test" in named and named <= extras, f"extras the docs install but pyproject.toml lacks: {named - extras}"


def test_the_reports_page_says_which_stretches_segments_csv_leaves_out() -> None:
    """A gap shorter than the predict stage's minimum between speech segments gets no row: the docs say so."""
    from batchser.predict import MIN_GAP_S

    text = _flat(PROJECT / "docs" / "reports.md")
    assert f"of {MIN_GAP_S * 1000:.0f} ms or more" in text and f"shorter than {MIN_GAP_S * 1000:.0f} ms" in text
