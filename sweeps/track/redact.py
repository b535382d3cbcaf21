"""Passwords out of everything pricer records or prints: ``postgresql://user:secret@host/db``
becomes ``postgresql://user:***@host/db`` in MLflow params and tags, model cards, logged study
files and error lines. Storage and tracking URLs are the usual carriers; any text may hold one
(a driver's error message quotes the URL it failed on), so `redact` takes free text.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:PASSWORD@host -- the password runs to the last "@" before the host
_USERINFO = re.compile(r"(\b[A-Za-z][\w+.-]*://[^\s:/@]*:)[^\s/]*(?=@[^\s@]*)")
# ...?password=PASSWORD&... as psycopg and SQLAlchemy also accept
_QUERY = re.compile(r"([?&](?:password|passwd|pwd|token)=)[^&\s]*", re.IGNORECASE)


def redact(text: object) -> str:
    """`text` with every password in a URL replaced by ``***`` (user, host and path kept)."""
    return _QUERY.sub(rf"\g<1>{MASK}", _USERINFO.sub(rf"\g<1>{MASK}", str(text)))
