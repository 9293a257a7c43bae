"""Receive NeuVector events and deliver them to one or more SIEMs without losing any.

Sources (--listen, repeatable): udp://, tcp://, tls://HOST:PORT?cert=FILE&key=FILE,
webhook://HOST:PORT (webhooks:// or ?cert=&key= for HTTPS), file:///path/to/pod.log,
neuvector+https://CONTROLLER:10443?apikey_file=FILE (what syslog lost, read back from the REST API).
Sinks (--to, repeatable): file://PATH, stdout://, fluentd://, splunk-hec://...;
add ?types=violation,threat to send a sink only those notifications.

Every record is written to the spool (--spool DIR) before it counts as
received; each sink reads the spool at its own pace and advances only past
records the SIEM confirmed. Metrics on /metrics, health on /healthz.
SIGTERM stops the sources, then gives the sinks --drain-timeout seconds.
"""
import logging
import signal
import sys
import threading

from .. import config as settings
from ..collector import Collector
from ..logs import setup_logging
from ..metrics import serve
from ..netaddr import parse_address
from ..sources import open_source

HELP = "receive syslog/webhooks/pod logs and deliver them to sinks (spooled, at-least-once)"
log = logging.getLogger("nvsiem.listen")


def add_arguments(parser) -> None:
    settings.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    try:
        cfg = settings.resolve(args)
    except (OSError, ValueError) as exc:
        print("nvsiem listen: %s" % exc, file=sys.stderr)
        return 2
    setup_logging(cfg.log_format, cfg.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    collector = None
    try:
        collector = Collector(cfg)
        collector.open_sinks(cfg.to)
        sources = [open_source(url, collector) for url in cfg.listen]
        collector.start_sources(sources)
        if cfg.metrics.lower() not in ("", "off", "none"):
            collector.metrics.watch(collector)
            server = serve(address_of(cfg.metrics), collector.metrics, collector.health)
            log.info("metrics on http://%s:%d/metrics, health on /healthz", *server.server_address[:2])
    except (OSError, ValueError, ImportError) as exc:
        log.error("cannot start: %s", exc)
        if collector is not None:
            collector.abandon()
        return 2
    log.info("listening", extra={"sources": [s.label for s in sources], "sinks": [w.label for w in collector.workers],
                                 "spool": cfg.spool})
    stop.wait()
    log.info("stopping: draining sources, then sinks for up to %.0f s", cfg.drain_timeout)
    collector.stop()
    log.info("stopped")
    return 0


def address_of(url: str):
    """(host, port) of ``--metrics``: ``tcp://0.0.0.0:9090`` or ``0.0.0.0:9090``."""
    address = parse_address(url if "://" in url else "tcp://" + url, schemes=("tcp", "http"))
    return address.host, address.port
