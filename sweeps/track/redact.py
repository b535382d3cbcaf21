"""Passwords out of everything pricer records or prints: ``postgresql://user:secret@host/db``
becomes ``postgresql://user:***@host/db`` in MLflow params and tags, model cards, logged study
files and error lines. Storage and tracking URLs are the usual carriers; any text may hold one
(a driver's error message quotes the URL it failed on), so `redact` takes free text.

A password may hold any character but a raw ``@``: SQLAlchemy reads ``/``, ``:``, ``+`` and ``%``
in it as themselves, and ``openssl rand -base64`` passwords usually hold a ``/``. So a URL's
password is hidden by SQLAlchemy's own rendering (`hide_password`), not by guessing where it ends.
"""

from __future__ import annotations

import re

MASK = "***"
# a URL in free text runs to the next blank; the punctuation that quotes or ends it is not part of it
_URL = re.compile(r"\b[A-Za-z][\w+.-]*://\S+")
_TRAILING = "'\")]},;.>"
# ...?password=PASSWORD&... as psycopg and SQLAlchemy also accept
_QUERY = re.compile(r"([?&](?:password|passwd|pwd|token)=)[^&\s]*", re.IGNORECASE)


def hide_password(url: str) -> str:
    """`url` with its user-info password shown as ``***`` (scheme, user, host, path and query
    kept); a URL without one comes back unchanged.

    SQLAlchemy renders the URL with ``hide_password=True`` where it parses it to the host the user
    meant; a raw ``@`` in the password (which SQLAlchemy cuts at) falls back to hiding everything
    between the user and the last ``@``, so no part of such a password survives either.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not (sep and at and colon) or "/" in user:
        return url  # no user-info password (a path such as hf://datasets/x@rev has its "/" first)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    if parsed is not None and parsed.password is not None and "@" not in (parsed.host or ""):
        return parsed.render_as_string(hide_password=True)
    return f"{scheme}://{user}:{MASK}@{host}"


def _hide_in_text(match: re.Match[str]) -> str:
    url = match.group(0)
    end = len(url.rstrip(_TRAILING))
    return hide_password(url[:end]) + url[end:]


def redact(text: object) -> str:
    """`text` with every password in a URL replaced by ``***`` (user, host and path kept)."""
    return _QUERY.sub(rf"\g<1>{MASK}", _URL.sub(_hide_in_text, str(text)))
