"""How fast ``nvsiem listen`` backfills from a NeuVector controller's REST API, against syslog over TCP.

    .venv/bin/python benchmarks/bench_rest.py [--per-list 4000] [--rounds 3]

The corpus: ``--per-list`` distinct records of each of the six lists
(event, activity, threat, violation, incident, audit), copies of the
reference samples' records with their own ``reported_timestamp`` (one
second apart), ``message`` and, for threats, violations and incidents,
``id``. Audits are whole scan reports and compliance audits, as the
controller's ring holds them (no per-CVE syslog copies). The same records
are sent as NeuVector's "syslog in JSON" lines for the TCP rows and held
by the REST test server (``tests/helpers/nv_rest_server.py``, in this
process) for the REST rows. The collector is the real command, pinned to
CPU 1 when there are two (``bench_listen.Listen``); sender and controller
run here, on CPU 0. Rows:

* ``floor: TCP recv -> split -> file``: as in ``bench_listen.py``.
* ``listen TCP -> parse -> spool``: the syslog lines over one TCP
  connection, timed until ``nvsiem_parsed_records_total`` counts them all.
* ``listen REST backfill -> spool``: a fresh collector whose only source is
  ``neuvector+https://`` (API key) against a controller holding the whole
  corpus, timed from the collector's process start until every record is
  spooled (the source polls as soon as it starts); with the ratio of that
  time less the collector's start-up (the TCP row's clock starts on a
  collector already up) to the TCP row's (target < 2), the ratio counting
  the start-up too, and the requests the controller got, by path.
* ``REST steady poll``: the poll after the backfill (``interval=1``): its
  requests, the records it read again and dropped as copies, and how long
  it took.

The x floor column is each row's rate divided by the TCP floor of the same round.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from bench_listen import CPUS, PIN, Listen, floor_tcp, send

import trustme
from helpers.loopback import free_port, wait_until
from helpers.nv_rest_server import DEFAULT_APIKEY_SECRET, RestController
from helpers.rest_elements import rest_element
from helpers.sample_stream import parsed, sample_lines
from nvparser import json_dumps
from nvsiem.dedup import identity

KINDS = ("event", "activity", "threat", "violation", "incident", "audit")
WITH_ID = ("threat", "violation", "incident")
BASE_TIME = 1754000000   # the first copy's reported_timestamp; each next copy one second later
INTERVAL = 1             # the shortest the source allows: the steady poll comes right after the backfill
POLL = 0.02              # how often the collector's metrics are read while timing
WAIT = 300               # bound on any wait


# -- the corpus ----------------------------------------------------------------------------------

def in_ring(record: dict) -> bool:
    """A record the controller's ring holds as such: audits only as whole scan reports or compliance audits."""
    if record["notification"] != "audit":
        return True
    name = record.get("name") or ""
    return identity(record)[0] != "copies" and (name.endswith(".Scan.Report") or name.startswith("Compliance."))


def templates() -> dict:
    """The reference samples' records by list, in file order."""
    by_kind = {kind: [] for kind in KINDS}
    for line in sample_lines(0):
        record = parsed(line)
        if record["notification"] in by_kind and in_ring(record):
            by_kind[record["notification"]].append(record)
    return by_kind


def copy_of(template: dict, n: int) -> dict:
    """Copy ``n`` of a record, told apart from every other copy; without the syslog header."""
    record = {k: v for k, v in template.items() if k != "syslog"}
    stamp = BASE_TIME + n
    record["reported_timestamp"] = stamp
    record["reported_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
    if record["notification"] in WITH_ID:
        record["id"] = str(uuid.UUID(int=KINDS.index(record["notification"]) << 64 | n))
    if record.get("message"):
        record["message"] += " (copy %d)" % n
    return record


def syslog_line(record: dict, header: dict) -> bytes:
    """The line NeuVector sends for ``record`` in "syslog in JSON" mode."""
    return b"<%d>1 %s %s /usr/local/bin/controller 13 neuvector - %s\n" % (
        header["pri"], record["reported_at"].encode(), header["hostname"].encode(), json_dumps(record))


def corpus(per_list: int):
    """(the syslog lines, the REST elements) of ``per_list`` distinct records of each list."""
    lines, elements = [], []
    for kind, records in templates().items():
        for n in range(per_list):
            template = records[n % len(records)]
            record = copy_of(template, n)
            lines.append(syslog_line(record, template["syslog"]))
            elements.append(rest_element(record))
    return lines, elements


# -- the rows ---------------------------------------------------------------------------------------

def wait_parsed(collector: Listen, n: int) -> float:
    wait_until(lambda: collector.metric("nvsiem_parsed_records_total") >= n, WAIT, "%d records spooled" % n,
               interval=POLL)
    return time.perf_counter()


def listen_tcp(data: bytes, n: int, work: Path):
    """(seconds from the first byte sent until all ``n`` records are spooled, the collector's start-up seconds)."""
    port = free_port()
    begun = time.perf_counter()
    collector = Listen(work, "tcp://127.0.0.1:%d" % port, "file://%s?max_bytes=0" % (work / "tcp.jsonl"))
    startup = time.perf_counter() - begun
    try:
        start = send(port, data)
        return wait_parsed(collector, n) - start, startup
    finally:
        collector.stop()


def listen_rest(controller: RestController, elements: list, work: Path) -> dict:
    """The backfill of every element from a fresh collector, then the poll after it."""
    apikey = work / "apikey"
    apikey.write_text("siem:" + DEFAULT_APIKEY_SECRET)
    url = "%s?apikey_file=%s&ca=%s&tls_name=neuvector&interval=%d" % (
        controller.url, apikey, controller.ca_file, INTERVAL)
    before = len(controller.requests)
    start = time.perf_counter()
    collector = Listen(work, url, "file://%s?max_bytes=0" % (work / "rest.jsonl"))
    try:
        seconds = wait_parsed(collector, len(elements)) - start
        backfill = controller.requests[before:]
        steady = steady_poll(controller, collector, elements, before + len(backfill), len(backfill))
        return {"seconds": seconds, "requests": Counter(path for _, path, _, _ in backfill),
                "new_records": collector.metric("nvsiem_parsed_records_total") - len(elements), **steady}
    finally:
        collector.stop()


def steady_poll(controller: RestController, collector: Listen, elements: list, first: int, count: int) -> dict:
    """The next poll (``count`` requests from request ``first`` on) and the copies it drops.

    Every element since each request's ``f_since`` is read again, so that many copies are dropped.
    """
    wait_until(lambda: len(controller.requests) > first, WAIT, "the next poll", interval=POLL)
    start = time.perf_counter()
    wait_until(lambda: len(controller.requests) >= first + count, WAIT, "every list read again", interval=POLL)
    poll = controller.requests[first:first + count]
    read_again = sum(read_since(elements, path, int(query["f_since"])) for _, path, query, _ in poll)
    wait_until(lambda: collector.metric("nvsiem_duplicates_dropped_total") >= read_again, WAIT,
               "%d copies dropped" % read_again, interval=POLL)
    return {"steady_seconds": time.perf_counter() - start, "steady_requests": Counter(p for _, p, _, _ in poll),
            "duplicates": collector.metric("nvsiem_duplicates_dropped_total")}


def read_since(elements: list, path: str, since: int) -> int:
    """How many elements the controller answers ``path?f_since=since`` with."""
    kinds = WITH_ID if path == "/v1/log/security" else (path.rsplit("/", 1)[1],)
    return sum(1 for kind, element in elements if kind in kinds and element["reported_timestamp"] >= since)


def requests_text(requests: Counter) -> str:
    return "%d requests (%s)" % (sum(requests.values()), ", ".join("%s %d" % kv for kv in sorted(requests.items())))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-list", type=int, default=4000,
                    help="records of each of the six lists (the ring holds 4,096)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if len(CPUS) > 1:
        os.sched_setaffinity(0, {CPUS[0]})
    lines, elements = corpus(args.per_list)
    data, n = b"".join(lines), len(lines)
    rounds = []
    with RestController(trustme.CA(), ring_size=max(4096, args.per_list)) as controller:
        for element in elements:
            controller.add(*element)
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                (work / "tcp").mkdir()
                (work / "rest").mkdir()
                floor = n / floor_tcp(data, work)
                tcp, startup = listen_tcp(data, n, work / "tcp")
                rest = listen_rest(controller, elements, work / "rest")
                rounds.append({"floor": floor, "tcp_seconds": tcp, "startup_seconds": startup, **rest})
    print_table(rounds, n, len(data), args)
    if args.json:
        Path(args.json).write_text(json.dumps(rounds, indent=1))
    return 0


def print_table(rounds: list, n: int, size: int, args) -> None:
    def median(key):
        return statistics.median(r[key] for r in rounds)

    floor, tcp, rest = median("floor"), median("tcp_seconds"), median("seconds")
    ratio = statistics.median(r["seconds"] / r["tcp_seconds"] for r in rounds)
    # the TCP row starts its clock on a collector already up; this is the REST row on the same terms
    warm = statistics.median((r["seconds"] - r["startup_seconds"]) / r["tcp_seconds"] for r in rounds)
    last = rounds[-1]
    print("%d records (%d of each of the six lists), %d bytes on average as syslog lines, %d rounds, medians; "
          "collector on CPU %s, sender and controller on CPU %s" % (
              n, args.per_list, size // n, args.rounds, PIN[-1] if PIN else "any", CPUS[0]))
    print("%-36s %12s %9s %9s" % ("", "records/s", "x floor", "seconds"))
    print("%-36s %12.0f %9.3f %9.3f" % ("floor: TCP recv -> split -> file", floor, 1.0, n / floor))
    print("%-36s %12.0f %9.3f %9.3f  collector start-up %.2f s, not counted" % (
        "listen TCP -> parse -> spool", n / tcp, n / tcp / floor, tcp, median("startup_seconds")))
    print("%-36s %12.0f %9.3f %9.3f  REST/TCP %.2f less the start-up, as the TCP row (target < 2: %s), %.2f from "
          "process start; %s" % (
              "listen REST backfill -> spool", n / rest, n / rest / floor, rest, warm, "met" if warm < 2 else "MISSED",
              ratio, requests_text(last["requests"])))
    print("%-36s %12s %9s %9.3f  %s, %d records read again and dropped as copies, %d new" % (
        "REST steady poll (interval %d s)" % INTERVAL, "", "", median("steady_seconds"),
        requests_text(last["steady_requests"]), last["duplicates"], last["new_records"]))


if __name__ == "__main__":
    sys.exit(main())
