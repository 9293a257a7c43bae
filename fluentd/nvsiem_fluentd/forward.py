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
import os
import re
import time
from typing import Any, List, Mapping, Tuple

import msgpack
from fluent.sender import EventTime
from nvparser import event_time as record_time

_TAG_WORD = re.compile(r"[a-z0-9_]+\Z")


class HandshakeRejected(Exception):
    """The server refused us in the ``<security>`` handshake; ``reason`` is its own words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def new_chunk_id() -> str:
    """A fresh ``chunk`` option: Base64 of a random 128-bit id, as the spec describes."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _whole_seconds(seconds: int) -> EventTime:
    # Records of one batch mostly share a handful of seconds: build each EventTime once.
    return EventTime(seconds, 0)


def event_time(record: Mapping[str, Any]) -> EventTime:
    """The event's own time as an EventTime (``nvparser.event_time``), not its arrival time.

    Only a record that says nothing about its time gets the current time.
    """
    seconds = record_time(record)
    if seconds is None:
        return EventTime.from_unix_nano(time.time_ns())
    if type(seconds) is int:
        return _whole_seconds(seconds)
    whole = int(seconds)
    return EventTime(whole, round((seconds - whole) * 1e9))


@functools.lru_cache(maxsize=256)
def tag_for(prefix: str, notification: Any) -> str:
    """``<prefix>.<notification>``; anything that is not a plain word becomes ``unknown``."""
    word = notification.lower() if isinstance(notification, str) else ""
    if not _TAG_WORD.match(word):
        word = "unknown"
    return f"{prefix}.{word}" if prefix else word


def packed_forward(tag: str, entries: List[bytes], chunk: str, compress: bool) -> bytes:
    """A PackedForward (or CompressedPackedForward) message asking for an ack of ``chunk``.

    ``entries`` are msgpack ``[time, record]`` pairs; they travel as one
    ``bin`` blob, as the spec recommends (out_forward sends ``str``).
    """
    blob = b"".join(entries)
    option = {"size": len(entries), "chunk": chunk}
    if compress:
        blob = gzip.compress(blob, compresslevel=1, mtime=0)
        option["compressed"] = "gzip"
    return msgpack.packb([tag, blob, option], use_bin_type=True)


def as_bytes(value: Any) -> bytes:
    """Handshake fields arrive as ``bin`` from Ruby (binary strings) or as ``str`` from others."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise TypeError(f"expected a string, got {type(value).__name__}")


def shared_key_digest(salt: bytes, hostname: str, nonce: bytes, shared_key: bytes) -> str:
    return hashlib.sha512(salt + hostname.encode("utf-8") + nonce + shared_key).hexdigest()


def read_helo(message: Any) -> Tuple[bytes, bytes]:
    """``["HELO", {nonce, auth, keepalive}]`` -> (nonce, auth salt)."""
    if not (isinstance(message, (list, tuple)) and len(message) == 2 and message[0] == "HELO"
            and isinstance(message[1], dict) and "nonce" in message[1]):
        raise HandshakeRejected(f"expected HELO from the server, got {_short(message)}")
    options = message[1]
    return as_bytes(options["nonce"]), as_bytes(options.get("auth") or b"")


def ping(self_hostname: str, salt: bytes, nonce: bytes, shared_key: bytes, auth: bytes) -> bytes:
    """Our PING. User/password authentication is not supported: a server asking for it is refused clearly."""
    if auth:
        raise HandshakeRejected("the server requires username/password authentication (<user> in "
                                "<security>), which this sink does not support; use a shared key only")
    digest = shared_key_digest(salt, self_hostname, nonce, shared_key)
    return msgpack.packb(["PING", self_hostname, salt, digest, "", ""], use_bin_type=True)


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
        raise HandshakeRejected(text or "rejected without a reason")
    if not isinstance(hostname, str) or digest != shared_key_digest(salt, hostname, nonce, shared_key):
        raise HandshakeRejected("shared_key mismatch (the server's PONG digest is wrong)")
    return hostname


def _short(message: Any) -> str:
    text = repr(message)
    return text if len(text) <= 120 else text[:117] + "..."
