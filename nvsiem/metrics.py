"""Prometheus metrics and the /metrics + /healthz endpoint of ``nvsiem listen``.

Counters are incremented once per batch, never per record, so they cost
nothing measurable on the receive path. Gauges (spool bytes, backlog per
sink, sink up) are read from the live objects when Prometheus scrapes.
"""
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("nvsiem.metrics")


class Metrics:
    """The collector's counters, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received_bytes = Counter("nvsiem_received_bytes", "Bytes received", ["source"], registry=r)
        self.received_frames = Counter(
            "nvsiem_received_frames", "Frames received (records, dead letters and skipped lines)", ["source"], registry=r)
        self.parsed = Counter("nvsiem_parsed_records", "Records parsed and spooled", ["source", "notification"], registry=r)
        self.dead_letters = Counter("nvsiem_dead_letters", "Frames written to the dead-letter file", ["source"], registry=r)
        self.skipped = Counter("nvsiem_skipped_frames", "Blank lines and controller log lines", ["source"], registry=r)
        self.record_notes = Counter("nvsiem_record_notes", "Notes on records kept as sent: unknown keys, values of the wrong type",
                                    ["source"], registry=r)
        self.dropped = Counter(
            "nvsiem_dropped_frames", "Input refused because the spool was full or failing (UDP; webhook answered 500)",
            ["source", "reason"], registry=r)
        self.refused = Counter(
            "nvsiem_refused", "Connections, datagrams and webhook requests turned away before their input was read "
            "(sender not allowed, connection limit, no frame in time, TLS or authentication failed)",
            ["source", "reason"], registry=r)
        self.delivered = Counter("nvsiem_delivered_records", "Records confirmed by a sink", ["sink", "notification"], registry=r)
        self.sink_errors = Counter("nvsiem_sink_errors", "Failed sink batches", ["sink", "kind"], registry=r)
        self.duplicates = Counter("nvsiem_duplicates_dropped", "Copies of events already spooled (from syslog and "
                                  "REST, or re-sent), not spooled again", ["source", "notification"], registry=r)
        self.rest_requests = Counter("nvsiem_rest_requests", "Requests to a NeuVector controller's REST API",
                                     ["source", "outcome"], registry=r)
        self.rest_backfilled = Counter("nvsiem_rest_backfilled_records", "Records the REST API had that no push "
                                       "source had delivered", ["source", "notification"], registry=r)
        self.rest_ring_overruns = Counter("nvsiem_rest_ring_overruns", "Times the controller's ring had rotated past "
                                          "the newest event held: events lost upstream", ["source", "notification"],
                                          registry=r)

    def watch(self, collector) -> None:
        """Report the state of ``collector`` (spool and sinks) at scrape time."""
        self.registry.register(_StateCollector(collector))


class _StateCollector:
    def __init__(self, collector) -> None:
        self.collector = collector

    def collect(self):
        spool = self.collector.spool
        yield GaugeMetricFamily("nvsiem_spool_bytes", "Bytes in the spool", value=spool.used_bytes)
        yield GaugeMetricFamily("nvsiem_spool_quota_bytes", "Spool quota", value=spool.quota_bytes)
        yield GaugeMetricFamily("nvsiem_spool_full", "1 while the spool quota is reached", value=int(spool.full))
        backlog = GaugeMetricFamily("nvsiem_sink_backlog_bytes", "Spooled bytes a sink has not confirmed", labels=["sink"])
        up = GaugeMetricFamily("nvsiem_sink_up", "0 while a sink's last batch failed", labels=["sink"])
        for worker in self.collector.workers:
            backlog.add_metric([worker.label], worker.reader.backlog_bytes)
            up.add_metric([worker.label], int(worker.last_error is None))
        yield backlog
        yield up
        bound = GaugeMetricFamily("nvsiem_source_up", "1 while a source is listening", labels=["source"])
        for source in self.collector.sources:
            bound.add_metric([source.label], int(source.up))
        yield bound
        open_now = GaugeMetricFamily("nvsiem_source_connections", "Connections open on a stream or webhook source",
                                     labels=["source"])
        for source in self.collector.sources:
            if hasattr(source, "connections"):
                open_now.add_metric([source.label], source.connections)
        yield open_now


def serve(address: Tuple[str, int], metrics: Metrics, health: Callable[[], Tuple[bool, dict]]) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on ``address`` from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            elif path == "/healthz":
                ok, report = health()
                self._reply(200 if ok else 503, "application/json", json.dumps(report, indent=1).encode())
            else:
                self._reply(404, "text/plain", b"not found: try /metrics or /healthz\n")

        def _reply(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # scrapes every few seconds are not news
            log.debug("%s %s", self.address_string(), fmt % args)

    try:
        server = ThreadingHTTPServer(address, Handler)
    except OSError as exc:  # "[Errno 98] Address already in use" alone does not say which address
        host, port = address[:2]
        raise OSError("metrics on %s:%d: %s" % ("[%s]" % host if ":" in host else host, port,
                                                 exc.strerror or exc)) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
