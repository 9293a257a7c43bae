"""``neuvector://<name>``: receive NeuVector syslog over TCP or TLS.

NeuVector's controller sends RFC 5424 syslog, one LF-terminated frame per
notification, on one long-lived connection (a new one after a leader
change). Each connection gets its own parser; a frame held back to see
whether the next line continues it is released after ``idle_flush``
seconds of silence. TCP only: UDP sockets are not allowed in app Python
(AppInspect), UDP goes through Splunk's own ``udp://`` input.
"""
import asyncio
import socket
import ssl
import sys
from typing import Optional

from nvparser import Parser
from nvparser.senders import AllowList, RefusalLog
from splunklib.modularinput import Argument, EventWriter

from .modinput import Emitter, NeuVectorScript, counted, int_param

READ_SIZE = 65536
#: As the collector's tcp:// and tls:// sources.
MAX_CONNECTIONS = 256
HANDSHAKE_SECONDS = 10


class NeuVectorTcpInput(NeuVectorScript):
    title = "NeuVector syslog (TCP/TLS)"
    description = ("Listens for NeuVector controller syslog over TCP or TLS and indexes one "
                   "JSON event per notification (neuvector:<type> sourcetypes).")
    arguments = (
        Argument("port", title="Port", description="TCP port to listen on",
                 data_type=Argument.data_type_number, required_on_create=True),
        Argument("bind", title="Bind address", description="Address to listen on (default 0.0.0.0)",
                 required_on_create=False),
        Argument("allow", title="Allowed senders",
                 description="Addresses and networks that may send, comma-separated (e.g. 10.0.0.0/8,fd00::/8); "
                             "others are refused before anything is read (default: any)",
                 required_on_create=False),
        Argument("tls_cert", title="TLS certificate",
                 description="PEM certificate chain; with tls_key, the input speaks TLS",
                 required_on_create=False),
        Argument("tls_key", title="TLS private key", description="PEM private key for tls_cert",
                 required_on_create=False),
        Argument("tls_client_ca", title="Client CA",
                 description="PEM CA bundle; when set, senders must present a certificate it signed",
                 required_on_create=False),
        Argument("idle_flush", title="Idle flush (seconds)",
                 description="Release a held last frame after this much silence (default 1)",
                 data_type=Argument.data_type_number, required_on_create=False),
        Argument("max_connections", title="Most connections",
                 description="Further connections are refused (default %d)" % MAX_CONNECTIONS,
                 data_type=Argument.data_type_number, required_on_create=False),
    )

    def settings(self, params: dict) -> dict:
        port = int_param(params, "port", None, 1, 65535)
        bind = params.get("bind") or "0.0.0.0"
        try:
            socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as exc:
            raise ValueError("bind=%s is not an address of this host: %s" % (bind, getattr(exc, "strerror", exc)))
        allow = params.get("allow")
        return {
            **super().settings(params),
            "port": port,
            "bind": bind,
            "allow": None if allow in (None, "") else AllowList(allow, "allow"),
            "tls": tls_context(params),
            "idle_flush": int_param(params, "idle_flush", 1, 1, 3600),
            "max_connections": int_param(params, "max_connections", MAX_CONNECTIONS, 1, 10000),
        }

    async def serve(self, stanza, config, emitter, metadata, stop):
        await _serve(stanza, config, emitter, stop)


def tls_context(params: dict) -> Optional[ssl.SSLContext]:
    """The server context of ``tls_cert``/``tls_key`` (and ``tls_client_ca``), None for plain TCP."""
    cert, key = params.get("tls_cert") or None, params.get("tls_key") or None
    client_ca = params.get("tls_client_ca") or None
    if bool(cert) != bool(key):
        raise ValueError("tls_cert and tls_key go together: give both for TLS, neither for plain TCP")
    if client_ca and not cert:
        raise ValueError("tls_client_ca needs tls_cert and tls_key")
    if not cert:
        return None
    pem = {name: _read(name, path) for name, path in (("tls_cert", cert), ("tls_key", key), ("tls_client_ca", client_ca))
           if path}
    if b"PRIVATE KEY-----" in pem["tls_cert"] and b"CERTIFICATE-----" in pem["tls_key"]:
        raise ValueError("tls_cert=%s and tls_key=%s: certificate and key swapped" % (cert, key))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        tls.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError("tls_cert=%s and tls_key=%s: certificate and key swapped or not a pair (%s)"
                         % (cert, key, exc.reason or exc)) from None
    if client_ca:
        try:
            tls.load_verify_locations(client_ca)
        except ssl.SSLError as exc:
            raise ValueError("tls_client_ca=%s holds no CA certificate (PEM): %s" % (client_ca, exc.reason or exc)) \
                from None
        tls.verify_mode = ssl.CERT_REQUIRED
    # No TLS 1.3 session tickets: NeuVector writes and closes without reading,
    # and unread tickets make its kernel reset the connection, which discards
    # the records this side has not read yet. Syslog senders never resume sessions.
    tls.num_tickets = 0
    return tls


def _read(name: str, path: str) -> bytes:
    # ssl names no file in its errors ("[Errno 2] No such file or directory").
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError("cannot read %s=%s: %s" % (name, path, exc.strerror or exc)) from None


async def _serve(stanza: str, config: dict, emitter: Emitter, stop: asyncio.Event) -> None:
    ew = emitter.writer
    loop = asyncio.get_running_loop()
    connections = set()
    refusals = RefusalLog()
    refused = {"not_allowed": 0, "connection_limit": 0}

    def refuse(conn: socket.socket, host: str, reason: str, why: str) -> None:
        conn.close()
        refused[reason] += 1
        if refusals.worth_logging(host, reason):
            ew.log(EventWriter.WARN, "%s: refused %s: %s (%d refused so far for this reason; logged once a "
                                     "minute per sender)" % (stanza, host, why, refused[reason]))

    async def connection(conn: socket.socket, peer) -> None:
        reader = asyncio.StreamReader(limit=READ_SIZE)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, conn, **({"ssl": config["tls"], "ssl_handshake_timeout": HANDSHAKE_SECONDS}
                                           if config["tls"] else {}))
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            conn.close()
            ew.log(EventWriter.WARN, "%s: TLS handshake with %s:%s failed: %s" % (stanza, peer[0], peer[1], exc))
            return
        ew.log(EventWriter.INFO, "%s: connection from %s:%s" % (stanza, peer[0], peer[1]))
        try:
            await _read_connection(reader, peer[0], config, emitter)
        finally:
            transport.close()
            ew.log(EventWriter.INFO, "%s: connection from %s:%s closed" % (stanza, peer[0], peer[1]))

    async def accept(listener: socket.socket) -> None:
        while True:
            conn, peer = await loop.sock_accept(listener)
            host = peer[0]
            # Refused before any byte is read, the TLS handshake included.
            if config["allow"] is not None and host not in config["allow"]:
                refuse(conn, host, "not_allowed", "not in allow=%s" % config["allow"].spec)
            elif len(connections) >= config["max_connections"]:
                refuse(conn, host, "connection_limit", "already %d connections (max_connections)" % len(connections))
            else:
                task = loop.create_task(connection(conn, peer))
                connections.add(task)
                task.add_done_callback(connections.discard)

    try:
        listener = _listen(config["bind"], config["port"])
    except OSError as exc:
        ew.log(EventWriter.ERROR, "%s: cannot listen on %s:%d: %s" % (stanza, config["bind"], config["port"],
                                                                      exc.strerror or exc))
        raise SystemExit(1) from None
    ew.log(EventWriter.INFO, "%s: listening on %s:%d (%s)" % (
        stanza, config["bind"], config["port"], "TLS" if config["tls"] else "TCP"))
    acceptor = loop.create_task(accept(listener))
    await stop.wait()
    acceptor.cancel()
    await asyncio.gather(acceptor, return_exceptions=True)
    listener.close()
    # Connections end cleanly: what they buffered is parsed and written.
    for task in list(connections):
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)
    ew.log(EventWriter.INFO, "%s: stopped: %s%s" % (
        stanza, emitter.summary(), "".join("; %s refused (%s)" % (counted(n, "connection"), reason.replace("_", " "))
                for reason, n in refused.items() if n)))


def _listen(bind: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


async def _read_connection(reader: asyncio.StreamReader, peer: str, config: dict, emitter: Emitter) -> None:
    parser = Parser(framing=config["framing"], max_frame=config["max_frame"])
    try:
        while True:
            try:
                data: Optional[bytes] = await asyncio.wait_for(reader.read(READ_SIZE), config["idle_flush"])
            except asyncio.TimeoutError:
                emitter.write(parser.flush(), host=peer)
                continue
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                emitter.writer.log(EventWriter.WARN, "%s: connection from %s ended: %s"
                                   % (emitter.stanza, peer, exc))
                break
            if not data:
                break
            emitter.write(parser.feed(data), host=peer)
    finally:
        # End of stream, an error or shutdown: what the kernel already
        # received and what the parser holds are still written.
        await _drain(reader, parser, peer, emitter)
        emitter.write(parser.close(), host=peer)


async def _drain(reader: asyncio.StreamReader, parser: Parser, peer: str, emitter: Emitter) -> None:
    while True:
        try:
            data = await asyncio.wait_for(reader.read(READ_SIZE), 0.1)
        except (asyncio.TimeoutError, asyncio.CancelledError, ConnectionError, ssl.SSLError, OSError):
            return
        if not data:
            return
        emitter.write(parser.feed(data), host=peer)


def main() -> int:
    return NeuVectorTcpInput().run(sys.argv)
