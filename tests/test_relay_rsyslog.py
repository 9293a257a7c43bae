"""A real rsyslog relay in front of ``nvsiem listen``: NeuVector -> imtcp -> omfwd -> tcp:// -> file://.

NeuVector's lines go into a private rsyslogd (``helpers/rsyslog_peer.py``)
over TCP; its ``omfwd`` forwards them to the collector with each framing
(``traditional``: LF-terminated; ``octet-counted``: RFC 6587) and each
stock template. Every record must arrive exactly once, and each must be
what nvparser makes of the line NeuVector sent: every body field exact,
with its JSON type. The ``syslog`` header is what the template writes
back, as rsyslog's documentation gives the two templates:

* ``RSYSLOG_SyslogProtocol23Format``:
  ``<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID%
  %MSGID% %STRUCTURED-DATA% %msg%\\n``. rsyslog has parsed NeuVector's
  RFC 5424 header into these properties and writes every one back, so the
  whole ``syslog`` object survives: ``pri`` (and ``facility``,
  ``severity``), ``version``, ``timestamp`` (re-rendered as RFC 3339, the
  same text for NeuVector's whole-second UTC ``Z`` times), ``hostname``,
  ``app_name``, ``procid``, ``msgid``.
* ``RSYSLOG_ForwardFormat``: ``<%PRI%>%TIMESTAMP:::date-rfc3339%
  %HOSTNAME% %syslogtag:1:32%%msg:::sp-if-no-1st-sp%%msg%``, an RFC 3164
  header with an RFC 3339 time. ``pri``, ``facility``, ``severity``,
  ``timestamp`` and ``hostname`` survive; the TAG rsyslog makes of an
  RFC 5424 message is ``APP-NAME[PROCID]`` (29 characters here, under the
  template's cut at 32), so ``app_name`` and ``procid`` survive too. The
  format has no version and no MSGID: nvparser gives ``null`` for both, as
  for any RFC 3164 header.

The header is the sender's, not the relay's, because both templates use
the message's own properties (``HOSTNAME``, ``TIMESTAMP``), not
``fromhost`` or ``timegenerated``.
"""
import json
from pathlib import Path

import pytest

from helpers.fluentd_peer import json_lines
from helpers.listen_harness import CollectorProcess, send_tcp
from helpers.loopback import free_port, wait_until
from helpers.nvsamples import assert_same_records
from helpers.rsyslog_peer import Rsyslog, omfwd, require_rsyslogd
from helpers.sample_stream import parsed, sample_lines

#: The ``syslog`` fields each template does not carry (nvparser reads them as null).
NOT_CARRIED = {
    "RSYSLOG_SyslogProtocol23Format": (),
    "RSYSLOG_ForwardFormat": ("version", "msgid"),
}

LINES = sample_lines(400)


@pytest.fixture(scope="module", autouse=True)
def rsyslogd_command():
    return require_rsyslogd()


def relayed(line: bytes, template: str) -> dict:
    """The record of ``line`` as it must arrive through ``template``: nvparser's, less what the template drops."""
    record = parsed(line)
    record["syslog"] = {**record["syslog"], **dict.fromkeys(NOT_CARRIED[template])}
    return record


def by_content(records):
    return sorted(records, key=lambda r: json.dumps(r, sort_keys=True))


@pytest.mark.parametrize("framing", ["traditional", "octet-counted"])
@pytest.mark.parametrize("template", sorted(NOT_CARRIED))
def test_each_record_arrives_once_through_rsyslog(tmp_path: Path, peers, framing, template):
    out = tmp_path / "out.jsonl"
    listen_port = free_port()
    collector = CollectorProcess(tmp_path, ["tcp://127.0.0.1:%d" % listen_port], ["file://%s" % out])
    peers.append(collector)
    collector.start()
    relay = Rsyslog(tmp_path / "rsyslog", omfwd(listen_port, framing, template))
    peers.append(relay)
    relay.start()

    send_tcp(relay.port, [line + b"\n" for line in LINES])
    wait_until(lambda: out.exists() and len(json_lines([out])) >= len(LINES), 30,
               "%d records through rsyslog" % len(LINES), interval=0.2)
    # Both stopped cleanly before counting: anything rsyslog sent twice has then reached the file.
    relay.stop()
    assert collector.terminate() == 0

    assert_same_records(by_content(json_lines([out])), by_content(relayed(line, template) for line in LINES))
