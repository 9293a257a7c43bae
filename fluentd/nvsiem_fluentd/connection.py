"""One connection to one Fluentd server, built on fluent-logger's FluentSender.

What we take from FluentSender: its connect logic (TCP with TCP_NODELAY and
a timeout, or ``unix://`` sockets), its socket teardown and its lock.

What we do not take, and why: its ``emit``/``_send_data`` path. It sends
one Message-mode record per call with no ``chunk`` (so Fluentd never acks),
keeps failed bytes in an in-memory ``pendings`` buffer that it drops past
``bufmax``, and before and after each send does a non-blocking ``recv`` that
throws away whatever the server sent - which would be our acks and the HELO.
Here the on-disk spool is the buffer, so a batch counts as delivered only
when every ``chunk`` of it has come back acknowledged.
"""
import os
import socket
import ssl
import time
from typing import Optional, Sequence, Tuple

import msgpack
from fluent.sender import FluentSender

from .config import ForwardSettings, Server
from .forward import HandshakeRejected, check_pong, ping, read_helo

#: Replies are tiny ({"ack": id}); anything bigger is not a Fluentd talking to us.
_MAX_REPLY_BUFFER = 1024 * 1024
_NOTHING = object()
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class DeliveryError(Exception):
    """The server did not confirm, for a reason other than a socket error: worth retrying."""


class ForwardConnection(FluentSender):
    def __init__(self, server: Server, settings: ForwardSettings, ssl_context: Optional[ssl.SSLContext]):
        # FluentSender's connect honours ``timeout`` and ``unix://`` hosts; the tag is unused here.
        super().__init__(settings.tag_prefix, host=server.host, port=server.port, timeout=settings.connect_timeout)
        self.server = server
        self._settings = settings
        self._ssl_context = ssl_context
        self._replies = self._new_unpacker()
        self._keepalive = True  # until a HELO says otherwise

    @property
    def connected(self) -> bool:
        return self.socket is not None

    def deliver(self, messages: Sequence[Tuple[str, bytes]]) -> None:
        """Send ``(chunk, message)`` pairs back to back, then wait for every ack.

        A server whose HELO says ``keepalive: false`` (in_forward's
        ``deny_keepalive``) closes the connection after each reply: it gets
        one message per connection.
        """
        with self.lock:
            try:
                self._reconnect()
                if self._keepalive:
                    self._exchange(messages)
                    return
                for message in messages:
                    self._reconnect()
                    self._exchange([message])
                    self._close()
            except BaseException:
                # A half-used connection may still deliver stale acks or HELOs: start afresh.
                self._close()
                raise

    def _exchange(self, messages: Sequence[Tuple[str, bytes]]) -> None:
        deadline = time.monotonic() + self._settings.ack_timeout
        self.socket.settimeout(self._settings.ack_timeout)
        for _, message in messages:
            self.socket.sendall(message)
        self._await_acks({chunk for chunk, _ in messages}, deadline)

    def _reconnect(self) -> None:
        if self.socket is not None:
            return
        super()._reconnect()
        self._replies = self._new_unpacker()
        try:
            if self._ssl_context is not None:
                self.socket = self._ssl_context.wrap_socket(
                    self.socket, server_hostname=self._settings.server_hostname or self.server.host)
            if self._settings.shared_key is not None:
                self._handshake()
        except BaseException:
            self._close()
            raise

    def _handshake(self) -> None:
        deadline = time.monotonic() + self._settings.connect_timeout
        try:
            helo = self._next_reply(deadline, "HELO")
        except socket.timeout:
            raise DeliveryError(
                f"no HELO from {self.server} within {self._settings.connect_timeout:g}s: a shared key "
                "is set here, but the server does not seem to have <security> configured") from None
        nonce, auth, self._keepalive = read_helo(helo)
        salt = os.urandom(16)
        key = self._settings.shared_key
        self.socket.sendall(ping(self._settings.self_hostname, salt, nonce, key, auth))
        check_pong(self._next_reply(deadline, "PONG"), salt, nonce, key)

    def _await_acks(self, pending: set, deadline: float) -> None:
        while pending:
            reply = self._next_reply(deadline, "ack")
            if isinstance(reply, dict) and isinstance(reply.get("ack"), str):
                pending.discard(reply["ack"])
            elif isinstance(reply, (list, tuple)) and reply and reply[0] == "HELO":
                raise HandshakeRejected(
                    "the server requires the shared-key handshake (<security>): "
                    "set shared_key_file= or shared_key_env= in the fluentd URL")

    def _next_reply(self, deadline: float, waiting_for: str):
        """The next msgpack object from the server; raises on timeout or EOF."""
        reply = self._pop_reply()
        while reply is _NOTHING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout(f"timed out waiting for {waiting_for}")
            self.socket.settimeout(remaining)
            data = self.socket.recv(65536)
            if _QUICKACK is not None and not self.server.host.startswith("unix://"):
                # A server that leaves Nagle on holds its 2nd small ack until we ACK the
                # 1st; without this our delayed ACK costs ~40 ms per batch of several tags.
                self.socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            if not data:
                raise ConnectionResetError(f"server closed the connection while we waited for {waiting_for}")
            try:
                self._replies.feed(data)
            except msgpack.BufferFull:
                raise DeliveryError(f"{self.server} sent more than 1 MiB we cannot read as replies") from None
            reply = self._pop_reply()
        return reply

    def _pop_reply(self):
        try:
            return next(self._replies)
        except StopIteration:
            return _NOTHING
        except ValueError as e:  # msgpack's FormatError, StackError, ExtraData
            raise DeliveryError(f"{self.server} sent something that is not msgpack: {e}") from None

    @staticmethod
    def _new_unpacker() -> msgpack.Unpacker:
        return msgpack.Unpacker(raw=False, unicode_errors="surrogateescape",
                                max_buffer_size=_MAX_REPLY_BUFFER)

