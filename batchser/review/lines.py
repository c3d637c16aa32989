"""The lines of an answers CSV read one at a time: a damaged line loses only itself, never the rest of the file."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator

__all__ = ["ENCODING_FIX", "complete_lines", "rows"]


ENCODING_FIX = "save it again as UTF-8 (Excel: 'CSV UTF-8'; LibreOffice: character set 'Unicode (UTF-8)')"


def _line(raw: bytes, n: int) -> tuple[list[str] | None, str]:
    """One line of an answers file as CSV cells, or None and why it cannot be read.

    A damaged line (an unbalanced quote, a stray NUL, bytes that are not UTF-8,
    a cell past the csv module's 128 KB) is that line alone, never the rest of the
    file; :func:`rows` joins the lines of a quoted cell that holds a line break.
    """
    if b"\x00" in raw:
        return None, "holds NUL bytes: not CSV text"
    try:
        text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        return None, f"is not UTF-8 text (byte 0x{byte:02X}: saved as Latin-1 or Windows-1252?); {ENCODING_FIX}"
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        return None, f"is not one CSV row ({exc}: an unbalanced quote?)"
    if len(rows) > 1:
        return None, "is not one CSV row (a line break outside quotes)"
    return (rows[0] if rows else []), ""


_OPEN = "unexpected end of data"  # the csv module's words for text that ends inside a quoted cell
_JOIN = 32  # lines one quoted cell may span (a file name or note with line breaks)


def rows(
    lines: list[bytes], first: int, is_answer: Callable[[list[str]], bool] = lambda cells: False
) -> Iterator[tuple[int, list[str] | None, str]]:
    """(line number, cells or None, why) for each row of ``lines``, the first numbered ``first``.

    A line that is not one CSV row is joined with the lines after it only when
    together they make exactly one row (a quoted cell holding a line break, as a
    spreadsheet or batchser writes one) and no line inside is an answer by
    itself (``is_answer``: two stray quotes lines apart would swallow the
    answers between them); otherwise that line alone is bad.
    """
    i = 0
    while i < len(lines):
        n = first + i
        cells, why = _line(lines[i], n)
        used = 1
        if cells is None and _OPEN in why:  # still inside quotes at the line's end: the next lines may close them
            for k in range(2, min(_JOIN, len(lines) - i) + 1):
                inner, _ = _line(lines[i + k - 2], n) if k > 2 else (None, "")
                if inner is not None and is_answer(inner):
                    break  # an answer of its own inside: this line's quote is stray, not a cell with line breaks
                joined, j_why = _line(b"\n".join(lines[i : i + k]), n)
                if joined is not None:
                    cells, why, used = joined, "", k
                    break
                if _OPEN not in j_why:  # an error before the end stays in every longer join: stop here
                    break
        yield n, cells, why
        i += used


def complete_lines(fh: io.BufferedReader, start: int, end: int) -> Iterator[bytes]:
    """The lines of bytes ``start``..``end`` (``end`` just after a newline), one at a time."""
    fh.seek(start)
    left = end - start
    while left > 0:
        raw = fh.readline(left)
        if not raw:
            return
        left -= len(raw)
        yield raw.rstrip(b"\r\n")
