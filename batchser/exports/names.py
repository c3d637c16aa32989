"""Where a recording's exports go: one file per report path, always inside its format's folder.

An export mirrors its recording's report path (``interviews/a.wav`` →
``exports/textgrid/interviews/a.wav.TextGrid``), so what a person finds in the
folder is what the reports name. The map is one-to-one and never leaves the
folder, whatever the name:

- the path is cut at ``/`` only; each piece is kept but for ``%`` and the
  characters Windows refuses in names (``< > : " | ? * \\``), written ``%XX``,
  so an archive member ``calls.zip::2024/a.wav`` becomes
  ``calls.zip%3A%3A2024/a.wav.TextGrid`` and the folders copy to any disk;
- a piece that is ``.`` or ``..`` (an archive member's ``../../x.wav``) is
  ``%2E`` or ``%2E%2E``, and an empty one (the start of an absolute path, a
  member's ``a//b``) is ``%2F``: no piece climbs out or restarts at ``/``;
- a folder piece ending in the export's suffix gets its last dot written
  ``%2E``, so ``x.wav.TextGrid/`` (a folder) never meets ``x.wav``'s export;
- a piece longer than a file name may be (255 bytes, suffix included) keeps
  its first bytes and ends with ``%~`` and 16 hex digits of its SHA-256.

Every ``%`` the escaping writes is followed by two hex digits, so ``%2F`` (a
``/`` cannot be in a piece) and ``%~`` name nothing else: two report paths
never share an export.
"""

from __future__ import annotations

import hashlib

__all__ = ["EXPORTS_DIR", "NAME_MAX", "export_name"]

EXPORTS_DIR = "exports"  # under output.dir: exports/<format>/<report path><suffix>
NAME_MAX = 255  # bytes in one file name (Linux, macOS, NTFS in UTF-16 units)
_ESCAPED = frozenset('%<>:"|?*\\')
_HASHED = 2 + 16  # "%~" and the digest


def _escape(piece: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in piece)


def _piece(piece: str, suffix: str, *, last: bool) -> str:
    if piece == "":
        text = "%2F"
    elif piece in (".", ".."):
        text = "%2E" * len(piece)
    else:
        text = _escape(piece)
        if not last and suffix and text.lower().endswith(suffix.lower()):
            text = text[: -len(suffix)] + "%2E" + text[-len(suffix) + 1 :]
    end = suffix if last else ""
    if len((text + end).encode("utf-8", "surrogatepass")) > NAME_MAX:
        digest = hashlib.sha256(piece.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        room = NAME_MAX - len(end.encode()) - _HASHED
        text = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore") + "%~" + digest
    return text + end


def export_name(report_path: str, suffix: str) -> str:
    """The export of ``report_path`` relative to its format's folder, ``/``-separated.

    Parameters
    ----------
    report_path : str
        A report's ``path`` (relative to the job's root, absolute, or ``archive::member``).
    suffix : str
        The format's file suffix (``.TextGrid``), added to the last piece.

    Returns
    -------
    str
        Relative, without ``.`` or ``..`` pieces, each piece at most :data:`NAME_MAX` bytes.
    """
    pieces = report_path.split("/")
    return "/".join(_piece(p, suffix, last=i == len(pieces) - 1) for i, p in enumerate(pieces))
