"""A Fluentd ``in_forward`` peer for the tests, written from the Forward protocol v1 spec.

Fluentd itself cannot be installed here, so this plays its part on
127.0.0.1 (or a unix socket), over TCP or TLS:

- reads a msgpack stream and tells the modes apart by the type of the 2nd
  element: Message ``[tag, time, record, option?]``, Forward
  ``[tag, [[time, record], ...], option?]``, PackedForward ``[tag, bin|str,
  option?]`` and CompressedPackedForward (the same with
  ``{"compressed": "gzip"}``); ``nil`` is a heartbeat;
- decodes EventTime (ext type 0: uint32 seconds + uint32 nanoseconds);
- answers ``{"ack": chunk}`` when the option map has a ``chunk``, after the
  events are recorded (Fluentd acks once the events are in its buffer);
- with a shared key, runs the ``<security>`` handshake: HELO with nonce,
  a random ``auth`` salt (in_forward sends one whenever ``<security>`` is
  on) and keepalive on connect; checks PING's
  sha512_hex(salt + hostname + nonce + shared_key) and, with ``users``
  (``user_auth true``), sha512_hex(auth + username + password); answers
  PONG with its own digest, or PONG false with the reason and closes;
- ``deny_keepalive``: HELO says ``keepalive: false`` and the connection is
  closed after each ack, as in_forward does;
- records (tag, time, record, mode, chunk) per event;
- failure switches: ``behaviour = "drop"`` (read and lose, never ack),
  ``"stall"`` (stop reading), ``kill()`` (reset every connection and stop
  listening), ``kill_at_message = n`` (die on the n-th message read: after
  recording it but before the ack when ``kill_keeps_message``, like a crash
  between buffering and acking; else before recording it, like a crash
  with the events still in memory).

Run as a program it is a discarding receiver for benchmarks: it unpacks each
message and acks it but, like in_forward, never decodes packed entries.
"""
import argparse
import gzip
import hashlib
import os
import socket
import ssl
import struct
import sys
import threading
import time
from typing import Any, List, NamedTuple, Optional

import msgpack


class EventTime(NamedTuple):
    seconds: int
    nanoseconds: int


class Event(NamedTuple):
    tag: str
    time: Any  # int seconds or EventTime
    record: Any
    mode: str
    chunk: Optional[str]


def _ext_hook(code: int, data: bytes):
    if code == 0 and len(data) == 8:
        return EventTime(*struct.unpack(">II", data))
    return msgpack.ExtType(code, data)


def _unpacker() -> msgpack.Unpacker:
    # surrogateescape: out_forward sends packed entries as ``str`` holding binary bytes.
    return msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", ext_hook=_ext_hook)


def _as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _digest(salt: bytes, hostname: str, nonce: bytes, key: bytes) -> str:
    return hashlib.sha512(salt + hostname.encode("utf-8") + nonce + key).hexdigest()


class ProtocolError(Exception):
    pass


class ForwardServer:
    def __init__(self, port: int = 0, *, unix_path: Optional[str] = None, shared_key: Optional[bytes] = None,
                 self_hostname: str = "fluentd-test", ssl_context: Optional[ssl.SSLContext] = None,
                 discard: bool = False, users: Optional[dict] = None, deny_keepalive: bool = False):
        self.port = port
        self.users = users  # username -> password, for user_auth
        self.deny_keepalive = deny_keepalive
        self.unix_path = unix_path
        self.shared_key = shared_key
        self.self_hostname = self_hostname
        self.ssl_context = ssl_context
        self.discard = discard
        self.behaviour = "ok"
        self.kill_at_message: Optional[int] = None
        self.kill_keeps_message = True
        self.received = 0                  # messages read, recorded or not
        self.events: List[Event] = []      # kept across kill() / start()
        self.messages = 0                  # messages recorded (all modes)
        self.records = 0                   # events recorded or, when discarding, counted
        self.acks_sent = 0
        self.errors: List[str] = []        # protocol errors and rejected handshakes, in words
        self._changed = threading.Condition()
        self._listener: Optional[socket.socket] = None
        self._connections: List[socket.socket] = []
        self._running = False

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "ForwardServer":
        if self.unix_path:
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.unix_path)
        else:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            self.port = listener.getsockname()[1]
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener, self._running = listener, True
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()
        return self

    def kill(self) -> None:
        """Die like a killed process: stop listening, reset every connection, ack nothing more."""
        self._running = False
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # stop listening now, even mid-accept
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._changed:
            connections, self._connections = self._connections, []
        for conn in connections:
            _reset(conn)

    stop = kill

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    # -- connections -----------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while self._running:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if not self._running:
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(None)
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            with self._changed:
                if not self._running:
                    return _reset(conn)
                self._connections.append(conn)
            self._converse(conn)
        except (OSError, ssl.SSLError) as e:
            self._note_error(f"connection: {e}")
        except ProtocolError as e:
            self._note_error(str(e))
        finally:
            _close(conn)
            with self._changed:
                if conn in self._connections:
                    self._connections.remove(conn)
                self._changed.notify_all()

    def _converse(self, conn: socket.socket) -> None:
        unpacker = _unpacker()
        nonce = os.urandom(16) if self.shared_key is not None else None
        auth = os.urandom(16)
        if nonce is not None:
            conn.sendall(msgpack.packb(["HELO", {"nonce": nonce, "auth": auth, "keepalive": not self.deny_keepalive}]))
        while True:
            while self.behaviour == "stall" and self._running:
                time.sleep(0.01)
            data = conn.recv(1 << 20)
            if not data or not self._running:
                return
            unpacker.feed(data)
            for message in unpacker:
                if nonce is not None:
                    if not self._answer_ping(conn, message, nonce, auth):
                        return
                    nonce = None
                    continue
                if not self._handle(conn, message):
                    return

    def _answer_ping(self, conn: socket.socket, message, nonce: bytes, auth: bytes) -> bool:
        if not (isinstance(message, list) and len(message) == 6 and message[0] == "PING"):
            self._note_error(f"expected PING, got {message!r:.80}")
            conn.sendall(msgpack.packb(["PONG", False, "PING message is required first", "", ""]))
            return False
        _, hostname, salt, digest, username, password = message
        salt = _as_bytes(salt)
        if digest != _digest(salt, hostname, nonce, self.shared_key):
            self._note_error(f"shared_key mismatch from {hostname}")
            conn.sendall(msgpack.packb(["PONG", False, "shared_key mismatch", "", ""]))
            return False
        if self.users is not None and not (
                username in self.users
                and password == hashlib.sha512(auth + username.encode() + self.users[username]).hexdigest()):
            self._note_error(f"username/password mismatch from {hostname}")
            conn.sendall(msgpack.packb(["PONG", False, "username/password mismatch", "", ""]))
            return False
        conn.sendall(msgpack.packb(
            ["PONG", True, "", self.self_hostname, _digest(salt, self.self_hostname, nonce, self.shared_key)]))
        return True

    def _handle(self, conn: socket.socket, message) -> bool:
        if message is None:  # heartbeat
            return True
        if not (isinstance(message, list) and len(message) >= 2 and isinstance(message[0], str)):
            raise ProtocolError(f"not a forward message: {message!r:.80}")
        tag, second = message[0], message[1]
        if isinstance(second, (int, float, EventTime)):
            mode, option = "Message", _option(message, 3)
            entries = [(second, message[2])]
        elif isinstance(second, list):
            mode, option = "Forward", _option(message, 2)
            entries = second
        elif isinstance(second, (bytes, str)):
            option = _option(message, 2)
            blob = _as_bytes(second)
            mode = "PackedForward"
            if option.get("compressed") == "gzip":
                mode, blob = "CompressedPackedForward", gzip.decompress(blob)
            entries = None if self.discard else _unpack_entries(blob)
        else:
            raise ProtocolError(f"unknown event mode: 2nd element is {type(second).__name__}")

        if self.behaviour == "drop":
            return True
        chunk = option.get("chunk")
        with self._changed:
            self.received += 1
            dying = self.kill_at_message is not None and self.received >= self.kill_at_message
            if dying and not self.kill_keeps_message:  # crashed before the events reached the buffer
                self.kill_at_message = None
                self._changed.notify_all()
        if dying and self.kill_at_message is None:
            self.kill()
            return False
        with self._changed:
            self.messages += 1
            if entries is None:
                self.records += option.get("size", 0)
            else:
                for entry in entries:
                    if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
                        raise ProtocolError(f"{mode} entry is not [time, record]: {entry!r:.80}")
                    if not self.discard:
                        self.events.append(Event(tag, entry[0], entry[1], mode, chunk))
                self.records += len(entries)
            if dying:  # crashed between buffering the events and acking them
                self.kill_at_message = None
            self._changed.notify_all()
        if dying:
            self.kill()
            return False
        if chunk is not None:
            with self._changed:
                self.acks_sent += 1  # counted first: the client may act on the ack at once
            conn.sendall(msgpack.packb({"ack": chunk}))
            if self.deny_keepalive:
                return False  # closes, as in_forward does once the reply is written
        return True

    def _note_error(self, text: str) -> None:
        with self._changed:
            self.errors.append(text)
            self._changed.notify_all()


def _option(message: list, index: int) -> dict:
    option = message[index] if len(message) > index else None
    if option is None:
        return {}
    if not isinstance(option, dict):
        raise ProtocolError(f"option is not a map: {option!r:.80}")
    return option


def _unpack_entries(blob: bytes) -> list:
    unpacker = _unpacker()
    unpacker.feed(blob)
    return list(unpacker)


def _reset(conn: socket.socket) -> None:
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    _close(conn)


def _close(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description="discarding Forward-protocol receiver for benchmarks")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = ForwardServer(args.port, discard=True).start()
    print(f"LISTENING {server.port}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.kill()
    print(f"RECORDS {server.records} MESSAGES {server.messages} ACKS {server.acks_sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
