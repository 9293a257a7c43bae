"""``FluentdSink``: the collector's ``fluentd://`` destination.

fluent-logger alone is at-most-once (Message mode, no ack, no TLS, no
shared key; see ``connection.py``). This sink keeps its connection handling
and ``EventTime`` and adds the Forward protocol v1 parts that make delivery
at-least-once: PackedForward batches with a ``chunk`` id per message, an
ack for every chunk before ``send`` returns, optional gzip, TLS, the
HELO/PING/PONG shared-key handshake, and failover across several servers.
"""
import socket
import ssl
import time
from typing import Dict, List, Sequence, Tuple

import msgpack

from nvsiem.sinks.api import Sink, SinkError, decode_record, tls_client_context, unparsed_record

from .config import ConfigError, ForwardSettings, Server, parse_url
from .connection import DeliveryError, ForwardConnection
from .forward import HandshakeRejected, event_time, packed_forward, tag_for


class FluentdSink(Sink):

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settings = parse_url(url)
        # One PackedForward message per tag and batch: let the collector hand us that many.
        self.max_batch = self.settings.batch
        context = _ssl_context(self.settings) if self.settings.tls else None
        self._connections = [ForwardConnection(s, self.settings, context) for s in self.settings.servers]
        self._failed_at: Dict[Server, float] = {}
        self._packer = msgpack.Packer(use_bin_type=True)

    def send(self, batch: Sequence[bytes]) -> None:
        if not batch:
            return
        messages = self._encode(batch)
        failures: List[Tuple[Server, Exception]] = []
        for connection in self._in_preference_order():
            try:
                self._deliver(connection, messages)
            except (OSError, DeliveryError, HandshakeRejected) as e:
                self._failed_at[connection.server] = time.monotonic()
                failures.append((connection.server, e))
                continue
            self._failed_at.pop(connection.server, None)
            return
        raise _as_sink_error(failures)

    def close(self) -> None:
        for connection in self._connections:
            connection.close()

    def _encode(self, batch: Sequence[bytes]) -> List[Tuple[str, bytes]]:
        """Group by tag, cut at ``batch`` records or ``max_bytes``: (chunk id, message) pairs."""
        prefix, limit, max_bytes = self.settings.tag_prefix, self.settings.batch, self.settings.max_bytes
        pack = self._packer.pack
        open_groups: Dict[str, Tuple[List[bytes], List[int]]] = {}
        finished: List[Tuple[str, List[bytes]]] = []
        for item in batch:
            record = decode_record(item)
            try:
                entry = pack([event_time(record), record])
            except (OverflowError, ValueError, TypeError) as e:  # e.g. an integer beyond 64 bits
                record = unparsed_record(item, f"not representable in msgpack: {e}")
                entry = pack([event_time(record), record])
            tag = tag_for(prefix, record.get("notification"))
            entries, size = open_groups.setdefault(tag, ([], [0]))
            if entries and (len(entries) >= limit or size[0] + len(entry) > max_bytes):
                finished.append((tag, entries))
                entries, size = open_groups[tag] = ([], [0])
            entries.append(entry)
            size[0] += len(entry)
        finished.extend((tag, entries) for tag, (entries, _) in open_groups.items())
        compress = self.settings.compress
        return [packed_forward(tag, entries, compress, position) for position, (tag, entries) in enumerate(finished)]

    def _in_preference_order(self) -> List[ForwardConnection]:
        """Servers in URL order, those that failed in the last ``retry_after`` seconds last."""
        cutoff = time.monotonic() - self.settings.retry_after
        return sorted(self._connections, key=lambda c: self._failed_at.get(c.server, cutoff) > cutoff)

    @staticmethod
    def _deliver(connection: ForwardConnection, messages) -> None:
        reused = connection.connected
        try:
            connection.deliver(messages)
        except ConnectionError:
            # An idle connection the server has since closed fails on first use: one fresh try.
            if not reused:
                raise
            connection.deliver(messages)


def _ssl_context(settings: ForwardSettings) -> ssl.SSLContext:
    try:
        return tls_client_context(settings.ca, settings.cert, settings.key, settings.verify)
    except ValueError as e:
        raise ConfigError(f"fluentd+tls: {e}") from None


def _as_sink_error(failures: List[Tuple[Server, Exception]]) -> SinkError:
    reasons = "; ".join(f"{server}: {_explain(error)}" for server, error in failures)
    permanent = all(_is_permanent(error) for _, error in failures)
    return SinkError(f"fluentd: batch not acknowledged by any server ({reasons})", permanent=permanent)


def _is_permanent(error: Exception) -> bool:
    return isinstance(error, (HandshakeRejected, ssl.SSLCertVerificationError))


def _explain(error: Exception) -> str:
    if isinstance(error, HandshakeRejected):
        return f"handshake rejected by the server: {error.reason}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed ({error.verify_message}): "
                "set ca= to the CA that signed the server's certificate, or server_hostname= to a name it holds")
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.timeout):
        return f"timed out ({error})" if str(error) else "timed out"
    return str(error) or type(error).__name__
