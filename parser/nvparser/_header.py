"""Syslog headers in front of a NeuVector body.

NeuVector always writes RFC 5424 (``<PRI>1 TS HOST APP PROCID MSGID - MSG``),
but what reaches a parser may have been rewritten: receivers print it without
``<PRI>1 `` (NeuVector's own docs show that form), relays rewrite it as
RFC 3164, pod logs have no header at all. Each form is recognised by its
first bytes; anything else is searched for the body's own start.
"""
import re
from typing import Optional, Tuple

BODY_STARTS = ("notification=", "{")

_PRI = re.compile(r"<(\d{1,3})>")
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_BSD_TS = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
_BODY = re.compile(r'notification=|\{"notification"')

_SYSLOG_KEYS = ("pri", "facility", "severity", "version", "timestamp",
                "hostname", "app_name", "procid", "msgid")


def _nil(value: str) -> Optional[str]:
    return None if value == "-" else value


def split_header(line: str) -> Tuple[Optional[dict], Optional[str], str]:
    """Return ``(syslog fields or None, body or None, reason if no body)``."""
    first = line[:1]
    if first == "{" or line.startswith("notification="):
        return None, line, ""
    if first == "<":
        m = _PRI.match(line)
        if m:
            pri = int(m.group(1))
            rest = line[m.end():]
            if rest[:2] == "1 ":
                return _rfc5424(rest[2:], pri, 1)
            return _rfc3164(rest, pri)
    elif _RFC3339.match(line):
        # The receiver-printed RFC 5424 form: no PRI, no version.
        return _rfc5424(line, None, None)
    elif _BSD_TS.match(line):
        # RFC 3164 without PRI: rsyslog's default file format.
        return _rfc3164(line, None)
    return _search(line, None)


def _rfc5424(rest: str, pri: Optional[int], version: Optional[int]):
    parts = rest.split(" ", 6)
    if len(parts) == 7:
        ts, host, app, procid, msgid, tail = parts[0], parts[1], parts[2], parts[3], parts[4], parts[5] + " " + parts[6]
        sd, msg = _structured_data(tail)
        if msg is not None and msg[:1] == "\ufeff":  # RFC 5424 allows a BOM before MSG
            msg = msg[1:]
        if msg is not None and msg.startswith(BODY_STARTS):
            syslog = {
                "pri": pri,
                "facility": pri >> 3 if pri is not None else None,
                "severity": pri & 7 if pri is not None else None,
                "version": version,
                "timestamp": _nil(ts),
                "hostname": _nil(host),
                "app_name": _nil(app),
                "procid": _nil(procid),
                "msgid": _nil(msgid),
            }
            if sd != "-":
                syslog["structured_data"] = sd
            return syslog, msg, ""
    return _search(rest, pri)


def _structured_data(tail: str):
    """Split ``SD MSG``: ``-`` from NeuVector, ``[id k="v"]…`` from some relays."""
    if tail[:2] == "- ":
        return "-", tail[2:]
    if tail == "-":
        return "-", ""
    if tail[:1] != "[":
        return "-", None
    i, n = 0, len(tail)
    while i < n and tail[i] == "[":
        i += 1
        while i < n and tail[i] != "]":
            i += 2 if tail[i] == "\\" else 1
        i += 1
    if tail[i:i + 1] == " ":
        return tail[:i], tail[i + 1:]
    return tail[:i], tail[i:] if i >= n else None


def _rfc3164(rest: str, pri: Optional[int]):
    """``<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`` or with an RFC 3339 time.

    Without a PRI (``pri`` None: only the ``Mmm dd`` form comes here) the
    TAG must end with ":" or be absent, as rsyslog writes it; any other text
    there is an unknown header, kept as text.
    """
    m = _BSD_TS.match(rest)
    if m:
        ts, after = rest[:m.end() - 1], rest[m.end():]
    elif _RFC3339.match(rest):
        ts, _, after = rest.partition(" ")
    else:
        return _search(rest, pri)
    body = _BODY.search(after)
    if body is None:
        return None, None, "no NeuVector body ('notification=' or '{\"notification\"') after the RFC 3164 header"
    host, _, tag = after[:body.start()].strip().partition(" ")
    if pri is None and tag and tag[-1:] != ":":
        return _search(rest, None)
    app, _, procid = tag.rstrip(": ").partition("[")
    syslog = {
        "pri": pri, "facility": pri >> 3 if pri is not None else None,
        "severity": pri & 7 if pri is not None else None, "version": None,
        "timestamp": ts, "hostname": host or None, "app_name": app or None,
        "procid": procid.rstrip("]") or None, "msgid": None,
    }
    return syslog, after[body.start():], ""


def _search(text: str, pri: Optional[int]):
    """An unknown header: find the body and keep the header text as sent."""
    body = _BODY.search(text, 0, 2048)
    if body is None:
        return None, None, "no NeuVector body: expected 'notification=' or '{\"notification\"' within the first 2048 characters"
    syslog = dict.fromkeys(_SYSLOG_KEYS)
    if pri is not None:
        syslog.update(pri=pri, facility=pri >> 3, severity=pri & 7)
    syslog["header"] = text[:body.start()].rstrip()
    return syslog, text[body.start():], ""
