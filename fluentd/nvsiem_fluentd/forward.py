"""The Forward protocol v1 pieces fluent-logger does not have (sans-I/O).

fluent-logger packs one ``[tag, time, record]`` Message per send with no
option map: no ``chunk``, so no ack; no PackedForward or gzip; no
HELO/PING/PONG. This module builds those messages and checks the replies;
``connection.py`` moves the bytes.
"""
import base64
import functools
import gzip
import hashlib
import re
import time
from typing import Any, List, Mapping, Tuple

import msgpack
from fluent.sender import EventTime
from nvparser import event_time as record_time

_TAG_WORD = re.compile(r"[a-z0-9_]+\Z")
# EventTime's seconds are an unsigned 32-bit number.
_EVENT_TIME_END = 1 << 32


class HandshakeRejected(Exception):
    """The server refused us in the ``<security>`` handshake; ``reason`` is its own words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def chunk_id(tag: str, blob: bytes, position: int) -> str:
    """The ``chunk`` option: Base64 of a 128-bit id, as the spec describes.

    Taken from the message's content and its place in the batch, so a batch
    sent again after a failure carries the same ids (as out_forward re-sends
    a buffer chunk), a receiver can tell a retry from new events, and two
    equal messages of one batch still need two acks.
    """
    digest = hashlib.blake2b(b"%d\0%s\0" % (position, tag.encode("utf-8")), digest_size=16)
    digest.update(blob)
    return base64.b64encode(digest.digest()).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _whole_seconds(seconds: int) -> EventTime:
    # Records of one batch mostly share a handful of seconds: build each EventTime once.
    return EventTime(seconds, 0)


def event_time(record: Mapping[str, Any]) -> EventTime:
    """The event's own time as an EventTime (``nvparser.event_time``), not its arrival time.

    A record that says nothing about its time, or a time EventTime cannot
    hold (before 1970, after 2106, a timestamp in milliseconds), gets the
    current time; the record keeps its own value either way.
    """
    seconds = record_time(record)
    if seconds is None or not 0 <= seconds < _EVENT_TIME_END:
        return EventTime.from_unix_nano(time.time_ns())
    if type(seconds) is int:
        return _whole_seconds(seconds)
    whole = int(seconds)
    # Parsed times carry at most microseconds; rounding there drops the float's noise.
    return EventTime(whole, round((seconds - whole) * 1e6) * 1000)


def tag_for(prefix: str, notification: Any) -> str:
    """``<prefix>.<notification>``; anything that is not a plain word becomes ``unknown``."""
    return _tag(prefix, notification if isinstance(notification, str) else "")


@functools.lru_cache(maxsize=256)
def _tag(prefix: str, notification: str) -> str:
    word = notification.lower()
    if not _TAG_WORD.match(word):
        word = "unknown"
    return f"{prefix}.{word}" if prefix else word


def packed_forward(tag: str, entries: List[bytes], compress: bool, position: int) -> Tuple[str, bytes]:
    """A PackedForward (or CompressedPackedForward) message asking for an ack: (chunk id, message).

    ``entries`` are msgpack ``[time, record]`` pairs; they travel as one
    ``bin`` blob, as the spec recommends (out_forward sends ``str``).
    ``position`` is the message's place in its batch (see ``chunk_id``).
    """
    blob = b"".join(entries)
    chunk = chunk_id(tag, blob, position)
    option = {"size": len(entries), "chunk": chunk}
    if compress:
        blob = gzip.compress(blob, compresslevel=1, mtime=0)
        option["compressed"] = "gzip"
    return chunk, msgpack.packb([tag, blob, option], use_bin_type=True)


def as_bytes(value: Any) -> bytes:
    """Handshake fields arrive as ``bin`` from Ruby (binary strings) or as ``str`` from others."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise TypeError(f"expected a string, got {type(value).__name__}")


def shared_key_digest(salt: bytes, hostname: str, nonce: bytes, shared_key: bytes) -> str:
    return hashlib.sha512(salt + hostname.encode("utf-8") + nonce + shared_key).hexdigest()


def read_helo(message: Any) -> Tuple[bytes, bytes, bool]:
    """``["HELO", {nonce, auth, keepalive}]`` -> (nonce, auth salt, keepalive)."""
    if not (isinstance(message, (list, tuple)) and len(message) == 2 and message[0] == "HELO"
            and isinstance(message[1], dict) and "nonce" in message[1]):
        raise HandshakeRejected(f"expected HELO from the server, got {_short(message)}")
    options = message[1]
    # in_forward's deny_keepalive: it closes the connection after each reply.
    return as_bytes(options["nonce"]), as_bytes(options.get("auth") or b""), options.get("keepalive") is not False


def ping(self_hostname: str, salt: bytes, nonce: bytes, shared_key: bytes, auth: bytes) -> bytes:
    """Our PING, with no user: username "" and, like out_forward, the password digest of "" and "".

    in_forward sends a random ``auth`` salt whenever ``<security>`` is on,
    and checks the user only with ``user_auth true``; such a server answers
    PONG false "username/password mismatch", which ``check_pong`` explains.
    """
    digest = shared_key_digest(salt, self_hostname, nonce, shared_key)
    password = hashlib.sha512(auth).hexdigest() if auth else ""
    return msgpack.packb(["PING", self_hostname, salt, digest, "", password], use_bin_type=True)


def check_pong(message: Any, salt: bytes, nonce: bytes, shared_key: bytes) -> str:
    """Accept ``["PONG", true, "", server_hostname, digest]`` and return the server's hostname.

    The server proves it knows the key too: its digest covers our salt, its
    hostname and the nonce it sent.
    """
    if not (isinstance(message, (list, tuple)) and len(message) == 5 and message[0] == "PONG"):
        raise HandshakeRejected(f"expected PONG from the server, got {_short(message)}")
    _, ok, reason, hostname, digest = message
    if not ok:
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        if "username/password" in text:
            text += (" (the server has user_auth on; this sink sends no user: turn user_auth off "
                     "for it, the shared key still authenticates both ends)")
        elif "shared_key" in text and shared_key != shared_key.strip():
            text += " (the key here starts or ends with whitespace, a newline from its file perhaps: it counts, as in Fluentd)"
        raise HandshakeRejected(text or "rejected without a reason")
    if not isinstance(hostname, str) or digest != shared_key_digest(salt, hostname, nonce, shared_key):
        raise HandshakeRejected("shared_key mismatch (the server's PONG digest is wrong)")
    return hostname


def _short(message: Any) -> str:
    text = repr(message)
    return text if len(text) <= 120 else text[:117] + "..."
