"""Object-storage addresses: which strings are URLs, how they are shown, and how they are taken apart.

Pure string work (no storage library is imported here), so discovery, labels
and reports can ask about a URL without paying for s3fs or aiohttp.

A URL is shown (in reports, summaries, logs and the page) without what could
be a credential: the query of an ``http(s)`` address (a presigned URL's
signature or token) is dropped, and a ``user:password@`` part is refused
before any work (:func:`url_problem`). Object keys of ``s3``/``gs``/``az`` have
no query: a ``?`` there is part of the key.
"""

from __future__ import annotations

import os
import posixpath
import re

__all__ = [
    "EXTRAS",
    "SCHEMES",
    "is_url",
    "redact",
    "scheme_of",
    "shown_url",
    "url_join",
    "url_name",
    "url_parent",
    "url_problem",
]

# scheme -> the extra that installs its fsspec backend.
EXTRAS = {
    "s3": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "http": "cloud",  # aiohttp comes with every cloud extra
    "https": "cloud",
}
SCHEMES = tuple(EXTRAS)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Any URL inside free text (an error message): scheme, then everything up to a space or a quote.
_IN_TEXT = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://([^\s'\"<>]*)")
# Environment variables whose values are secrets in some backend's standard chain.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)


def scheme_of(text: str | os.PathLike[str]) -> str:
    """The scheme of a URL, lower-case (``s3``), or "" for a local path."""
    m = _URL.match(str(text))
    return m.group(1).lower() if m else ""


def is_url(text: object) -> bool:
    """Whether ``text`` is an address with a scheme (``s3://…``), not a local path."""
    return isinstance(text, str) and bool(_URL.match(text))


def _split(url: str) -> tuple[str, str, str]:
    """(scheme, authority, rest) of a URL; rest starts with "/" or is empty."""
    scheme = scheme_of(url)
    body = url.split("://", 1)[1]
    authority, slash, rest = body.partition("/")
    return scheme, authority, slash + rest


def url_problem(url: str) -> str:
    """Why ``url`` cannot be read ("" when it can): an unknown scheme, or a password in it."""
    scheme = scheme_of(url)
    if scheme not in EXTRAS:
        return (
            f"{scheme}:// is not a storage batchser reads; use s3://bucket/prefix/, gs://bucket/prefix/, "
            "az://container/prefix/ or an https:// address of one file"
        )
    _, authority, _ = _split(url)
    userinfo = authority.rpartition("@")[0] if "@" in authority else ""
    if userinfo and (":" in userinfo or scheme in ("http", "https")):
        return (
            "credentials inside the address are not accepted (they would be written into reports and logs); "
            "leave them to the storage's standard chain: AWS_* variables or ~/.aws for s3://, "
            "GOOGLE_APPLICATION_CREDENTIALS for gs://, AZURE_STORAGE_* for az://, ~/.netrc for https://"
        )
    return ""


def shown_url(url: str) -> str:
    """``url`` as reports name it: an ``http(s)`` address without its query or fragment (a signature, a token),
    any address without a ``user:password@``; a local path as it is."""
    if not is_url(url):
        return url
    scheme, authority, rest = _split(url)
    web = scheme in ("http", "https")
    if web:
        rest = rest.split("#", 1)[0].split("?", 1)[0]
        authority = authority.split("?", 1)[0].split("#", 1)[0]
    if "@" in authority and (web or ":" in authority.rpartition("@")[0]):  # az://container@account is no secret
        authority = "…@" + authority.rpartition("@")[2]
    return f"{url.split('://', 1)[0]}://{authority}{rest}"


def url_parent(url: str) -> str:
    """The "folder" of an object: its URL up to the last ``/`` of the key (without the slash)."""
    _, authority, rest = _split(shown_url(url))
    return f"{url.split('://', 1)[0]}://{authority}{posixpath.dirname(rest.rstrip('/')) if rest else ''}".rstrip("/")


def url_name(url: str) -> str:
    """The last component of an object's key (``a.wav`` of ``s3://b/x/a.wav``)."""
    _, authority, rest = _split(shown_url(url))
    return posixpath.basename(rest.rstrip("/")) or authority


def url_join(base: str, relative: str) -> str:
    """``relative`` (a key path, or a URL of its own) taken from the folder URL ``base``."""
    if is_url(relative):
        return relative
    _, authority, rest = _split(base)
    joined = posixpath.normpath(posixpath.join(rest or "/", relative))
    return f"{base.split('://', 1)[0]}://{authority}{joined}"


def redact(text: str) -> str:
    """``text`` with every URL shown as :func:`shown_url` shows it and secret-holding variables' values masked.

    For error messages of storage libraries, which may quote the address
    they were asked for.
    """

    def one(m: re.Match[str]) -> str:
        scheme, body = m.group(1), m.group(2)
        authority, slash, rest = body.partition("/")
        web = scheme.lower() in ("http", "https")
        if "@" in authority and (web or ":" in authority.rpartition("@")[0]):  # az://container@account is no secret
            authority = "…@" + authority.rpartition("@")[2]
        if web:
            rest = rest.split("#", 1)[0].split("?", 1)[0]
            authority = authority.split("?", 1)[0]
        return f"{scheme}://{authority}{slash}{rest}"

    out = _IN_TEXT.sub(one, text)
    for name in SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 8 and value in out:
            out = out.replace(value, "***")
    return out
