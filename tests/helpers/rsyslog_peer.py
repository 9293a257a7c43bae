"""A real rsyslogd for the tests: a private relay or receiver on loopback, never the system daemon.

Which rsyslogd: ``NVSIEM_RSYSLOGD`` (a command line), else ``rsyslogd`` on
the PATH or in /usr/sbin. Without one the tests skip with one line; with
``NVSIEM_REQUIRE_RSYSLOG=1`` (CI) they fail instead.

``Rsyslog`` runs ``rsyslogd -n -C -f CONF -i PIDFILE`` in a directory of the
test's own: its config, pid file, work directory (queues, state) and log are
all there. The config loads only ``imtcp`` (no imuxsock, no imklog: the
instance never touches /dev/log or the kernel log), and its own internal
messages stay in the default ruleset, which has no action, so only what a
test sends is relayed.

``RsyslogReceiver`` is the same private daemon as a syslog receiver:
``imtcp`` (both framings), ``imudp``, or ``imtcp`` over TLS with the
``ossl`` or ``gtls`` netstream driver (Debian's ``rsyslog-openssl``,
``rsyslog-gnutls``; ``anon``, or
``x509/certvalid`` to require a client certificate). Each message it reads
becomes one JSON object in ``received.jsonl``: the raw message as sent
(``raw``) and what rsyslog's own RFC 5424 parser made of its header.
"""
import glob
import json
import os
import shlex
import shutil
import socket
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

from helpers.loopback import free_port, wait_until
from helpers.peer_daemon import PeerDaemon


def rsyslogd_command() -> Optional[List[str]]:
    configured = os.environ.get("NVSIEM_RSYSLOGD", "").strip()
    if configured:
        return shlex.split(configured)
    found = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    return [found] if found else None


def require_rsyslogd() -> List[str]:
    """The rsyslogd command, or skip (fail under ``NVSIEM_REQUIRE_RSYSLOG=1``) saying how to get one."""
    command = rsyslogd_command()
    if command:
        return command
    reason = "no rsyslogd: set NVSIEM_RSYSLOGD or install rsyslog (apt-get install rsyslog; make system-deps)"
    if os.environ.get("NVSIEM_REQUIRE_RSYSLOG") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


#: rsyslog's TLS netstream drivers and the Debian package of each.
TLS_DRIVERS = {"ossl": "rsyslog-openssl", "gtls": "rsyslog-gnutls"}


def require_tls_driver(driver: str = "ossl") -> None:
    """rsyslog's ``driver`` netstream driver (``lmnsd_<driver>``), or skip (fail under ``NVSIEM_REQUIRE_RSYSLOG=1``)."""
    require_rsyslogd()
    module = "lmnsd_%s.so" % driver
    if glob.glob("/usr/lib/*/rsyslog/" + module) or glob.glob("/usr/lib*/rsyslog/" + module):
        return
    reason = "rsyslog has no %s TLS driver: apt-get install %s (make system-deps)" % (driver, TLS_DRIVERS[driver])
    if os.environ.get("NVSIEM_REQUIRE_RSYSLOG") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def relay_config(workdir: Path, port: int, action: str) -> str:
    """imtcp on 127.0.0.1:``port``, every message it reads handed to ``action``.

    Nothing dropped, cut or held back on the way: ``maxMessageSize`` 64k (a
    NeuVector record can be 11.7 KB; rsyslog's default 8k would truncate it,
    and it must be set before any module loads), no rate limit on the input,
    no DNS lookups of the sender.
    """
    return f"""
global(workDirectory="{workdir}" maxMessageSize="64k" net.enableDNS="off")
module(load="imtcp")
ruleset(name="relay") {{
  {action}
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="relay" rateLimit.interval="0")
"""


def omfwd(port: int, framing: str, template: str) -> str:
    """An omfwd action to 127.0.0.1:``port`` over TCP; it retries for ever rather than discard a message."""
    return (f'action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" '
            f'TCP_Framing="{framing}" template="{template}" action.resumeRetryCount="-1" '
            f'action.resumeInterval="1")')


def _argv(workdir: Path, config: str) -> List[str]:
    """rsyslogd in the foreground on ``config`` (written to ``workdir``), its pid file there too."""
    (workdir / "work").mkdir(parents=True, exist_ok=True)
    path = workdir / "rsyslog.conf"
    path.write_text(config)
    # -C: no chdir to /; -i: a pid file of its own, so the system daemon's is never read or written.
    return [*require_rsyslogd(), "-n", "-C", "-f", str(path), "-i", str(workdir / "rsyslogd.pid")]


class Rsyslog(PeerDaemon):
    """One private rsyslogd relaying from imtcp on a free port (``.port``) to ``action``."""

    def __init__(self, workdir: Path, action: str, name: str = "rsyslogd"):
        self.port = free_port()
        super().__init__(name, _argv(workdir, relay_config(workdir / "work", self.port, action)),
                         workdir / "rsyslogd.log")

    def start(self, timeout: float = 30.0) -> "Rsyslog":
        super().start([self.port], timeout)
        return self


class ReceiverTls(NamedTuple):
    """The receiver's CA, certificate and key (PEM files), whether it requires a client certificate, its driver."""

    ca: Path
    cert: Path
    key: Path
    client_certificates: bool = False
    driver: str = "ossl"


#: What the receiver writes per message: the raw message and rsyslog's reading of its RFC 5424 header.
_RECEIVED = """template(name="received" type="list" option.jsonf="on") {
  property(outname="raw" name="rawmsg" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
}"""


def receiver_config(workdir: Path, port: int, out: Path, transport: str, tls: Optional[ReceiverTls]) -> str:
    """imtcp, imudp or imtcp over TLS on 127.0.0.1:``port``, every message into ``out``.

    As the relay, nothing cut or held back; control characters are kept as
    they came (rsyslog's default writes a tab as ``#011``, which would
    change LEEF's delimiter), and the UDP input gets a 4 MiB buffer.
    """
    drivers = ""
    if tls is not None:
        drivers = (f' DefaultNetstreamDriverCAFile="{tls.ca}" DefaultNetstreamDriverCertFile="{tls.cert}"'
                   f' DefaultNetstreamDriverKeyFile="{tls.key}"')
    if transport == "udp":
        module = 'module(load="imudp")'
        listener = f'input(type="imudp" address="127.0.0.1" port="{port}" ruleset="receive" rcvbufSize="4m" rateLimit.interval="0")'
    else:
        mode = ""
        if tls is not None:
            auth = "x509/certvalid" if tls.client_certificates else "anon"
            mode = f' StreamDriver.Name="{tls.driver}" StreamDriver.Mode="1" StreamDriver.AuthMode="{auth}"'
        module = f'module(load="imtcp"{mode})'
        listener = f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="receive" rateLimit.interval="0")'
    return f"""
global(workDirectory="{workdir}" maxMessageSize="64k" net.enableDNS="off"
       parser.escapeControlCharactersOnReceive="off"{drivers})
{module}
{_RECEIVED}
ruleset(name="receive") {{
  action(type="omfile" file="{out}" template="received")
}}
{listener}
"""


class RsyslogReceiver(PeerDaemon):
    """A private rsyslogd receiving syslog on ``.port`` (``tcp``, ``udp`` or ``tls``) into ``.out``."""

    def __init__(self, workdir: Path, transport: str = "tcp", tls: Optional[ReceiverTls] = None,
                 name: str = "rsyslogd receiver"):
        self.transport = transport
        self.port = free_port()
        self.out = workdir / "received.jsonl"
        config = receiver_config(workdir / "work", self.port, self.out, transport, tls)
        super().__init__(name, _argv(workdir, config), workdir / "rsyslogd.log")

    def start(self, timeout: float = 30.0) -> "RsyslogReceiver":
        if self.transport != "udp":
            super().start([self.port], timeout)
            return self
        super().start([], timeout)
        wait_until(lambda: not self.running or _udp_bound(self.port), timeout, "rsyslogd to bind UDP %d" % self.port)
        if not self.running:
            raise AssertionError("%s exited:\n%s" % (self.name, self.log_tail()))
        return self

    def received(self) -> List[dict]:
        """Every message written so far (a line rsyslog is still writing is left for later)."""
        if not self.out.exists():
            return []
        lines = self.out.read_bytes().split(b"\n")
        return [json.loads(line) for line in lines[:-1] if line]


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
