"""Keep secrets out of everything we write or print: logs, error lines, metrics.json, reports, checkpoints.

Two kinds of secret reach us: credentials inside URLs (`s3://KEY:SECRET@host/...`, `?token=...`,
pre-signed `X-Amz-Signature=...`), and configuration values under secret-looking keys (an SSH config's
`connect_options: {password: ...}`, `passphrase`, tokens). Both are replaced by `***`; the rest of the
value stays, so that a log line still says which store or host it is about.
May use: the standard library only.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
# Keys whose values are secrets themselves (not paths to files that hold them, such as a TLS `key`).
_SECRET_KEY = re.compile(
    r"pass(word|phrase|wd)?$|secret|token|credential|api_?key|access_?key|private_?key"
    r"|signature|session_?key",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?P<user>[^/\s@:]*):(?P<password>[^\s@]+)@")
_QUERY_SECRET = re.compile(r"(?P<name>[?&][^=&\s#]+)=(?P<value>[^&\s#]+)")


def is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY.search(str(name)))


def redact_text(text: str) -> str:
    """`text` with URL passwords and secret query parameters masked."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(text))
    return _QUERY_SECRET.sub(
        lambda m: f"{m['name']}={MASK}" if is_secret_key(m["name"].lstrip("?&")) else m[0], text
    )


def redact(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every secret masked."""
    if isinstance(value, dict):
        return {
            k: (MASK if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
