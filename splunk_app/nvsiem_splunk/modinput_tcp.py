"""``neuvector://<name>``: receive NeuVector syslog over TCP or TLS.

NeuVector's controller sends RFC 5424 syslog, one LF-terminated frame per
notification, on one long-lived connection (a new one after a leader
change). Each connection gets its own parser; a frame held back to see
whether the next line continues it is released after ``idle_flush``
seconds of silence. TCP only: UDP sockets are not allowed in app Python
(AppInspect), UDP goes through Splunk's own ``udp://`` input.
"""
import asyncio
import ssl
import sys
from typing import Optional

from nvparser import Parser
from splunklib.modularinput import Argument, EventWriter

from .modinput import Emitter, NeuVectorScript, int_param

READ_SIZE = 65536


class NeuVectorTcpInput(NeuVectorScript):
    title = "NeuVector syslog (TCP/TLS)"
    description = ("Listens for NeuVector controller syslog over TCP or TLS and indexes one "
                   "JSON event per notification (neuvector:<type> sourcetypes).")
    arguments = (
        Argument("port", title="Port", description="TCP port to listen on",
                 data_type=Argument.data_type_number, required_on_create=True),
        Argument("bind", title="Bind address", description="Address to listen on (default 0.0.0.0)",
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
                 description="Further connections are refused (default 64)",
                 data_type=Argument.data_type_number, required_on_create=False),
    )

    def settings(self, params: dict) -> dict:
        cert, key = params.get("tls_cert") or None, params.get("tls_key") or None
        client_ca = params.get("tls_client_ca") or None
        if bool(cert) != bool(key):
            raise ValueError("tls_cert and tls_key go together: give both for TLS, neither for plain TCP")
        if client_ca and not cert:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        tls = None
        if cert:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                tls.load_cert_chain(cert, key)
                if client_ca:
                    tls.load_verify_locations(client_ca)
                    tls.verify_mode = ssl.CERT_REQUIRED
            except (OSError, ssl.SSLError) as exc:
                raise ValueError("cannot load the TLS certificate/key: %s" % exc) from None
        return {
            **super().settings(params),
            "port": int_param(params, "port", None, 1, 65535),
            "bind": params.get("bind") or "0.0.0.0",
            "tls": tls,
            "idle_flush": int_param(params, "idle_flush", 1, 1, 3600),
            "max_connections": int_param(params, "max_connections", 64, 1, 10000),
        }

    async def serve(self, stanza, config, emitter, metadata, stop):
        await _serve(stanza, config, emitter, stop)


async def _serve(stanza: str, config: dict, emitter: Emitter, stop: asyncio.Event) -> None:
    ew = emitter.writer
    connections = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peer = writer.get_extra_info("peername") or ("?", 0)
        if len(connections) >= config["max_connections"]:
            ew.log(EventWriter.WARN, "%s: refusing %s:%s: already %d connections (max_connections)"
                   % (stanza, peer[0], peer[1], len(connections)))
            writer.close()
            return
        task = asyncio.current_task()
        connections.add(task)
        ew.log(EventWriter.INFO, "%s: connection from %s:%s" % (stanza, peer[0], peer[1]))
        try:
            await _read_connection(reader, peer[0], config, emitter)
        finally:
            connections.discard(task)
            writer.close()
            ew.log(EventWriter.INFO, "%s: connection from %s:%s closed" % (stanza, peer[0], peer[1]))

    try:
        server = await asyncio.start_server(on_connection, config["bind"], config["port"], ssl=config["tls"],
                                            reuse_address=True,
                                            **({"ssl_handshake_timeout": 30} if config["tls"] else {}))
    except OSError as exc:
        ew.log(EventWriter.ERROR, "%s: cannot listen on %s:%d: %s" % (stanza, config["bind"], config["port"],
                                                                      exc.strerror or exc))
        raise SystemExit(1) from None
    ew.log(EventWriter.INFO, "%s: listening on %s:%d (%s)" % (
        stanza, config["bind"], config["port"], "TLS" if config["tls"] else "TCP"))
    await stop.wait()
    server.close()
    # Connections end cleanly: what they buffered is parsed and written.
    for task in list(connections):
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)
    ew.log(EventWriter.INFO, "%s: stopped: %d records, %d dead letters, %d skipped" % (
        stanza, emitter.counts["records"], emitter.counts["dead_letters"], emitter.counts["skipped"]))


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
