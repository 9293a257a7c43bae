"""What settings and URLs share: option values, secrets, redaction, file paths.

The collector's settings and every source's and sink's URL options read
sizes and booleans the same way, and a secret given as ``token_file=PATH``
or ``token_env=NAME`` the same way, so one spelling works everywhere.
"""
import os
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

#: Query parameters whose name holds one of these are secrets: masked in logs, read from files or env.
SECRET_WORDS = ("token", "key", "secret", "password")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_size(text) -> int:
    """``4096``, ``64K``, ``16M``, ``1G``, ``2GiB`` -> bytes (powers of 1024)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError("not a size: %r (examples: 4096, 64K, 16M, 1G)" % text)
    return int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))


def parse_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("not a boolean: %r" % text)


def resolve_secrets(url: str) -> str:
    """Replace ``<secret>_file=PATH`` / ``<secret>_env=NAME`` by ``<secret>=value``."""
    parts = urlsplit(url)
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        base, _, via = key.rpartition("_")
        if via in ("file", "env") and any(w in base.lower() for w in SECRET_WORDS):
            if via == "file":
                try:
                    # Verbatim: each sink knows whether whitespace counts
                    # (a Fluentd shared key) or not (a HEC token).
                    with open(value, encoding="utf-8", newline="") as f:
                        value = f.read()
                except OSError as exc:
                    raise ValueError("cannot read %s for %s: %s" % (value, base, exc.strerror)) from None
            else:
                if value not in os.environ:
                    raise ValueError("environment variable %s (for %s) is not set" % (value, base))
                value = os.environ[value]
            key = base
        query.append((key, value))
    return rebuild_url(url, query=urlencode(query, safe="/,:"))


def redact_url(url: str) -> str:
    """Drop userinfo and secret-looking query values from a URL."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [
        (k, "***" if any(s in k.lower() for s in SECRET_WORDS) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return rebuild_url(url, netloc=netloc, query=urlencode(query, safe="/,:*"), fragment="")


def rebuild_url(url: str, **changes: str) -> str:
    """``url`` with some of its parts replaced (``netloc``, ``query``, ``fragment``).

    Unlike ``urlunsplit`` this keeps the ``//`` of any scheme: a plugin's
    ``example:///path`` stays itself, not ``example:/path``.
    """
    parts = urlsplit(url)._replace(**changes)
    slashes = "//" if url[len(parts.scheme) + 1:].startswith("//") else ""
    return "%s:%s%s%s%s%s" % (parts.scheme, slashes, parts.netloc, parts.path,
                              "?" + parts.query if parts.query else "", "#" + parts.fragment if parts.fragment else "")


def path_of(url: str) -> str:
    """The filesystem path a ``file://`` or ``tail://`` URL names (``file://rel/x`` is relative)."""
    parts = urlsplit(url)
    return unquote(parts.netloc + parts.path)
