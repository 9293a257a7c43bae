"""NeuVector webhook bodies -> the same records syslog gives.

NeuVector posts four formats (its webhook ``type``): key-value text, JSON,
Slack and Teams. None carries ``notification``; it is told from the keys.
The JSON format splices ``cluster`` and ``comment`` in unescaped, so they
are read as raw text and the rest is parsed as the JSON it is.
"""
import re
from typing import Optional

from ._decode import decode_text, json_object, text_record
from ._events import DeadLetter, Record
from .schema import ACTIVITY_NAMES, notification_of
from ._gotypes import KEY_CUT, coerce_floats

_KV_LEVEL = re.compile(r"level=([A-Z]+),cluster=")
_JSON_LEVEL = re.compile(r'\{(?:"level":"([A-Z]+)",)?"cluster":"')
# Where the record starts, in NeuVector's key order: [name,] level, reported_timestamp.
_KV_RECORD = re.compile(r",(?:name=[^,]*,)?level=[A-Za-z]+,reported_timestamp=")
_JSON_RECORD = re.compile(r'","(?:name":"[^"]*",")?level":"[A-Za-z]+","reported_timestamp":')
_DETAILS_CLUSTER = re.compile(r"\ncluster: ([^,\n]*)")
_CHAT_LEVEL = re.compile(r"\w+: ([A-Z]+) level(?:, Comment: (.*?))?(?:\*|\n|$)", re.S)


def parse_webhook(body: bytes, content_type: Optional[str] = None, offset: int = 0):
    """Decode one webhook request body into a Record or a DeadLetter.

    The format is told from the body itself: NeuVector before 5.3.3 sent
    ``application/json`` for key-value bodies too, so ``content_type`` is
    only a hint kept in the record.
    """
    try:
        return _parse(body, offset)
    except Exception as exc:  # noqa: BLE001 - a receiver must never raise
        return DeadLetter(body, "internal parser error (%s: %s); please report it with this body" % (type(exc).__name__, exc), offset)


def _parse(body: bytes, offset: int):
    text = decode_text(body).strip()
    if not text:
        return DeadLetter(body, "empty webhook body", offset)
    notes = []
    if text[:1] == "{":
        prefix = _spliced_prefix(text, _JSON_LEVEL, '","comment":"', _JSON_RECORD, ('","name":', '","level":'))
        if prefix:
            level, cluster, comment, rest = prefix
            meta = {"format": "json", "cluster": cluster, "comment": comment, "level": level}
            result = _json_record("{" + rest[2:], notes)
        else:
            result, meta = _chat(text, notes)
    else:
        prefix = _spliced_prefix(text, _KV_LEVEL, ",comment=", _KV_RECORD, (",name=", ",level="))
        if prefix is None:
            return DeadLetter(body, "not a NeuVector webhook: key-value body must start 'level=<LEVEL>,cluster=<name>,'", offset)
        level, cluster, comment, rest = prefix
        meta = {"format": "kv", "cluster": cluster, "comment": comment, "level": level}
        result = _kv_record(rest[1:], notes)
    if isinstance(result, str):
        return DeadLetter(body, result, offset)
    result["webhook"] = {k: v for k, v in meta.items() if v is not None}
    return Record(result, body, offset, tuple(notes))


def _spliced_prefix(text: str, start, comment_sep: str, record, record_starts):
    """Split NeuVector's unescaped ``cluster``/``comment`` prefix from the record.

    The comment, if any, runs up to the record, which starts with ``name``
    or ``level`` followed by ``reported_timestamp`` (``record``): so a
    comment may hold ``,level=`` itself. A record without that order (not
    from NeuVector's current code) starts at its first ``name`` or ``level``
    key (``record_starts``). Each search scans a character a bounded number
    of times, so the cost stays linear whatever the text holds. Returns
    (level, cluster, comment, rest) or None.
    """
    m = start.match(text)
    if m is None:
        return None
    found = record.search(text, m.end())
    if found is not None:
        end = found.start()
    else:
        ends = [i for i in (text.find(s, m.end()) for s in record_starts) if i >= 0]
        if not ends:
            return None
        end = min(ends)
    spliced = text[m.end():end]
    cluster, sep, comment = spliced.partition(comment_sep)
    return m.group(1), cluster, comment if sep else None, text[end:]


def _kv_record(kv: str, notes: list):
    keys = KEY_CUT.findall("," + kv)
    notification = notification_of(keys)
    if not notification:
        return "cannot tell the notification type from the webhook's keys"
    record = text_record(kv, notes, notification)
    if isinstance(record, str):
        return record
    return _with_notification(notification, record)


def _json_record(text: str, notes: list):
    record = json_object(text, "JSON webhook body")
    if isinstance(record, str):
        return record
    notification = notification_of(record)
    if not notification:
        return "cannot tell the notification type from the webhook's keys"
    return _with_notification(notification, coerce_floats(record, notification))


def _chat(text: str, notes: list):
    """Slack (``text``+``username``) and Teams (``text``+``title``) bodies embed the key-value text."""
    outer = json_object(text, "JSON webhook body")
    if isinstance(outer, str):
        return outer, {}
    if not isinstance(outer.get("text"), str):
        return "JSON webhook body is neither NeuVector's JSON, Slack nor Teams format", {}
    message = outer["text"]
    if "username" in outer:
        fmt, marker, heading = "slack", "\n>>> ", message.strip("*")
        cluster = str(outer["username"]).partition("NeuVector - ")[2] or None
    else:
        fmt, marker, heading = "teams", "\n> ", str(outer.get("title", ""))
        details = _DETAILS_CLUSTER.search(heading)
        cluster = details.group(1) if details else None
    kv = message.partition(marker)[2]
    if not kv.startswith("notification="):
        return "%s webhook without the 'notification=' text NeuVector appends" % fmt, {}
    level = _CHAT_LEVEL.match(heading)
    meta = {"format": fmt, "cluster": cluster,
            "comment": level.group(2) if level else None,
            "level": level.group(1) if level else None}
    record = text_record(kv, notes)
    return record, meta


def _with_notification(notification: str, record: dict) -> dict:
    if notification == "event" and record.get("name") in ACTIVITY_NAMES:
        notification = "activity"
    data = {"notification": notification}
    data.update(record)
    return data
