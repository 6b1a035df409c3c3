"""The one secret scrubber every message passes through.

Secrets qbr knows by value (API keys, presigned URLs it made) are replaced by a placeholder;
then anything shaped like a credential is removed whatever its value: a URL's user info, a
URL's query string (a presigned URL's signature lives there) and `key=value` pairs whose key
names a secret.
"""

from __future__ import annotations

import re
from typing import Iterable

URL_QUERY = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"`<>]*)\?[^\s'\"`<>]*")
URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"`<>]+@")
SECRET_PARAM = re.compile(r"(?i)\b(x-amz-[a-z-]+|signature|sig|token|api[_-]?key|key|password|secret)=[^&\s'\"`<>]+")


def redact(text: str, known: Iterable[tuple[str, str]] = (), *, min_length: int = 1) -> str:
    """`text` with every known (secret, placeholder) pair replaced, longest first, then every
    credential-shaped part removed. Secrets shorter than `min_length` are left (a one-letter
    test key would otherwise eat every such letter of qbr's own words)."""
    for secret, placeholder in sorted(known, key=lambda pair: -len(pair[0])):
        if secret and len(secret) >= min_length:
            text = text.replace(secret, placeholder)
    text = URL_USERINFO.sub(r"\1", text)
    text = URL_QUERY.sub(r"\1", text)
    return SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", text)
