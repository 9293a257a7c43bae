"""NeuVector syslog into a real Fluentd: through ``nvsiem listen``, or into Fluentd's own ``in_syslog``.

    NVSIEM_FLUENTD=... .venv/bin/python benchmarks/bench_fluentd_real.py [--records 100000] [--rounds 3]

One Fluentd, found as the tests find it (``NVSIEM_FLUENTD``, else
``fluentd`` on the PATH; without one this prints why and exits 0). The
corpus is the tests' (``helpers/sample_stream.sample_lines``): every
one-line syslog sample of the reference, text and JSON mode, then numbered
copies, all different. Each row is one LF-framed TCP stream of it:

* floor: Fluentd's ``in_tcp`` with ``<parse> @type none``, each line one
  ``message`` string: the least a Fluentd input does with a line.
* ``nvsiem listen`` (tcp://) -> ``fluentd://`` (PackedForward, every chunk
  acked) -> ``in_forward``.
* ``in_syslog`` over TCP with its stock syslog parser, ``message_format
  rfc5424``, and ``message_format auto``.

Timed: every source goes to ``out_null`` (Fluentd's ``out_file`` writes
only about 10,000 records/s here whatever the input, so it would time
itself), from connect until ``in_monitor_agent`` counts the last record
into the row's output, after a tenth of it went through each row
untimed (the first stream into a fresh Fluentd runs at half speed). Rounds are interleaved; the report gives medians,
the per-round ratio to the floor, and the CPU time Fluentd (and for the
``nvsiem listen`` row, the collector) spent per record, steadier than the
wall clock on a shared machine. Fluentd is pinned to one core, the
collector and the sender to the other.

Checked: the same sources on other ports, under a label of their own,
write every record with ``out_file`` as JSON lines, once, and each output
is compared with nvparser's parse of every line: how many records came
through with every field exact (the same fields, the same JSON types).
``in_syslog`` keeps the header as ``host``, ``ident``, ``pid``, ``msgid`` and
``extradata``, and NeuVector's body as one ``message`` string, so none has
the fields; the report counts how many kept header and body intact, and
which fields a user gets.
"""
import argparse
import collections
import glob
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers.fluentd_peer import fluentd_command, json_lines  # noqa: E402
from helpers.listen_harness import CollectorProcess  # noqa: E402
from helpers.loopback import free_port  # noqa: E402
from helpers.peer_daemon import PeerDaemon  # noqa: E402
from helpers.sample_stream import parsed, sample_lines  # noqa: E402

CPUS = sorted(os.sched_getaffinity(0))
FLOOR, LISTEN, SYSLOG_5424, SYSLOG_AUTO = "floor", "listen", "syslog_rfc5424", "syslog_auto"
ROWS = {
    FLOOR: "floor: in_tcp, <parse> @type none",
    LISTEN: "nvsiem listen -> fluentd:// -> in_forward",
    SYSLOG_5424: "in_syslog, message_format rfc5424",
    SYSLOG_AUTO: "in_syslog, message_format auto",
}
#: The tag each row's records reach the outputs with (the sink tags them neuvector.<notification>,
#: in_syslog appends .<facility>.<severity>).
PATTERNS = {FLOOR: FLOOR, LISTEN: "neuvector.**", SYSLOG_5424: SYSLOG_5424 + ".**", SYSLOG_AUTO: SYSLOG_AUTO + ".**"}
TIMED, CHECKED = "TIMED", "CHECKED"


def in_syslog(row: str, message_format: str) -> str:
    return f"""@type syslog
  tag {row}
  <transport tcp>
  </transport>
  <parse>
    @type syslog
    message_format {message_format}
  </parse>"""


#: Each row's input (a source adds its label and port).
INPUTS = {
    FLOOR: f"""@type tcp
  tag {FLOOR}
  <parse>
    @type none
  </parse>""",
    LISTEN: "@type forward",
    SYSLOG_5424: in_syslog(SYSLOG_5424, "rfc5424"),
    SYSLOG_AUTO: in_syslog(SYSLOG_AUTO, "auto"),
}


def source(row: str, port: int, label: str) -> str:
    return f"""<source>
  {INPUTS[row]}
  @label @{label}
  bind 127.0.0.1
  port {port}
</source>
"""


def file_output(path: Path) -> str:
    return f"""@type file
    path {path}/records
    append true
    <format>
      @type json
    </format>
    <buffer>
      @type memory
      flush_mode interval
      flush_interval 0.2s
      chunk_limit_size 8m
      total_limit_size 2g
    </buffer>"""


def fluentd_config(ports: dict, monitor_port: int, out: Path) -> str:
    timed = "".join(f"  <match {PATTERNS[row]}>\n    @id {TIMED}_{row}\n    @type null\n  </match>\n" for row in ROWS)
    checked = "".join(f"  <match {PATTERNS[row]}>\n    {file_output(out / row)}\n  </match>\n" for row in ROWS)
    sources = "".join(source(row, ports[label][row], label) for label in (TIMED, CHECKED) for row in ROWS)
    return f"""
<system>
  log_level warn
</system>
<source>
  @type monitor_agent
  bind 127.0.0.1
  port {monitor_port}
</source>
{sources}
<label @{TIMED}>
{timed}</label>
<label @{CHECKED}>
{checked}</label>
<label @FLUENT_LOG>
  <match **>
    @type null
  </match>
</label>
"""


def pinned(cpu: int, argv: list) -> list:
    return ["taskset", "-c", str(cpu), *argv] if len(CPUS) > 1 else argv


def start_fluentd(work: Path, ports: dict, monitor_port: int) -> PeerDaemon:
    config = work / "fluent.conf"
    config.write_text(fluentd_config(ports, monitor_port, work / "out"))
    daemon = PeerDaemon("fluentd", pinned(CPUS[-1], [*fluentd_command(), "-c", str(config)]), work / "fluentd.log")
    every_port = [monitor_port, *ports[TIMED].values(), *ports[CHECKED].values()]
    return daemon.start(every_port, timeout=120)


def start_collector(work: Path, forward_port: int) -> Tuple[CollectorProcess, int]:
    """``nvsiem listen`` from a free TCP port to ``fluentd://`` at ``forward_port``; (collector, its port)."""
    work.mkdir()
    port = free_port()
    collector = CollectorProcess(work, ["tcp://127.0.0.1:%d" % port], ["fluentd://127.0.0.1:%d" % forward_port],
                                 "--log-level", "warning")
    collector.args = pinned(CPUS[0], collector.args)
    return collector.start(), port


def emitted(monitor_port: int, plugin_id: str) -> int:
    """Records ``in_monitor_agent`` counts into the output ``plugin_id``."""
    with urllib.request.urlopen("http://127.0.0.1:%d/api/plugins.json" % monitor_port, timeout=10) as r:
        plugins = json.load(r)["plugins"]
    return next(p["emit_records"] for p in plugins if p.get("plugin_id") == plugin_id)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and every process under it (Fluentd's supervisor forks its worker)."""
    total, todo = 0, [pid]
    while todo:
        pid = todo.pop()
        try:
            fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path("/proc/%d/task" % pid).iterdir():
                todo += map(int, (task / "children").read_text().split())
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total / os.sysconf("SC_CLK_TCK")


def stream(port: int, data: bytes, count: int, done: Callable[[], int], quiet: float = 5.0) -> Tuple[int, float]:
    """Send ``data`` (``count`` records); (records ``done`` counts, seconds from connect to the last).

    Waits until all ``count`` are counted or none more for ``quiet`` seconds (an input that
    drops some), so the time is to the last record that came through.
    """
    base = done()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
    got, last = 0, time.perf_counter()
    while got < count and time.perf_counter() - last < quiet:
        now = done() - base
        if now > got:
            got, last = now, time.perf_counter()
        time.sleep(0.02)
    return got, last - start


def written(out: Path, row: str) -> list:
    return json_lines(glob.glob(str(out / row / "records*")))


def lines_written(out: Path, row: str) -> int:
    total = 0
    for path in glob.glob(str(out / row / "records*")):
        with open(path, "rb") as f:
            total += f.read().count(b"\n")
    return total


def exact_records(records: list, lines: list) -> int:
    """How many lines' records are in ``records`` with every field and JSON type nvparser gives.

    Counted, not a set: a text-mode line and its JSON-mode twin make the same record.
    (json.dumps tells 10 from 10.0 and 1 from true.)
    """
    expected = collections.Counter(json.dumps(parsed(line), sort_keys=True) for line in lines)
    return sum((expected & collections.Counter(json.dumps(r, sort_keys=True) for r in records)).values())


def syslog_intact(records: list, lines: list) -> int:
    """How many lines ``in_syslog`` kept whole: header fields as sent, the body one unchanged ``message``."""
    def fields(host, ident, pid, msgid, message):
        return json.dumps([host, ident, pid, msgid, message])

    sent = collections.Counter()
    for line in lines:
        head = parsed(line)["syslog"]
        body = line.decode("utf-8").split(" - ", 1)[1]  # NeuVector's SD is always "-"
        sent[fields(head["hostname"], head["app_name"], head["procid"], head["msgid"], body)] += 1
    got = collections.Counter(fields(r.get("host"), r.get("ident"), r.get("pid"), r.get("msgid"), r.get("message"))
                              for r in records)
    return sum((sent & got).values())


def check(row: str, records: list, lines: list) -> str:
    report = "%d of %d records with every field exact" % (exact_records(records, lines), len(lines))
    if row in (SYSLOG_5424, SYSLOG_AUTO):
        report += "; %d with header and body intact; fields: %s" % (
            syslog_intact(records, lines), ", ".join(sorted({k for r in records for k in r})))
    elif row == FLOOR:
        intact = collections.Counter(line.decode("utf-8") for line in lines) & collections.Counter(
            r.get("message") for r in records)
        report += "; %d lines intact as message" % sum(intact.values())
    return report


def checked(work: Path, ports: dict, lines: list) -> dict:
    """Each row's stream once into the out_file outputs; the check of each."""
    data = b"".join(line + b"\n" for line in lines)
    collector, collector_port = start_collector(work / "checked-collector", ports[LISTEN])
    try:
        reports = {}
        for row in ROWS:
            port = collector_port if row == LISTEN else ports[row]
            stream(port, data, len(lines), lambda: lines_written(work / "out", row))
            reports[row] = check(row, written(work / "out", row), lines)
        return reports
    finally:
        collector.stop()


def timed(work: Path, ports: dict, monitor_port: int, fluentd_pid: int, data: bytes, rounds: int) -> dict:
    """Each row's stream into out_null, ``rounds`` interleaved rounds: per round (records/s, records,
    Fluentd's CPU µs per record, the collector's)."""
    collector, collector_port = start_collector(work / "timed-collector", ports[LISTEN])
    pids = fluentd_pid, collector.proc.pid
    targets = {**ports, LISTEN: collector_port}

    def run(row: str, chunk: bytes) -> Tuple[int, float]:
        return stream(targets[row], chunk, chunk.count(b"\n"), lambda: emitted(monitor_port, "%s_%s" % (TIMED, row)))

    try:
        warm_up = data[:data.index(b"\n", len(data) // 10) + 1]
        for row in ROWS:
            run(row, warm_up)
        rates = {row: [] for row in ROWS}
        for _ in range(rounds):
            for row in ROWS:
                before = [cpu_seconds(pid) for pid in pids]
                got, seconds = run(row, data)
                used = [(cpu_seconds(pid) - cpu) / max(got, 1) * 1e6 for pid, cpu in zip(pids, before)]
                rates[row].append((got / seconds, got, *used))
        return rates
    finally:
        collector.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--check-records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not fluentd_command():
        print("skipped: no Fluentd (set NVSIEM_FLUENTD to a fluentd command, such as the one .ci/fluentd-peer "
              "prints, or put fluentd on the PATH)")
        return 0
    if len(CPUS) > 1:
        os.sched_setaffinity(0, {CPUS[0]})
    lines = sample_lines(args.records)
    data = b"".join(line + b"\n" for line in lines)
    print("%d records, %d B each on average (text and JSON mode), %.1f NeuVector fields + the syslog header "
          "per record as nvparser reads them; %d interleaved rounds; Fluentd on CPU %d, collector and sender on CPU %d"
          % (len(lines), len(data) // len(lines), statistics.mean(len(parsed(line)) - 1 for line in lines),
             args.rounds, CPUS[-1], CPUS[0]))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ports = {label: {row: free_port() for row in ROWS} for label in (TIMED, CHECKED)}
        monitor_port = free_port()
        fluentd = start_fluentd(work, ports, monitor_port)
        try:
            rates = timed(work, ports[TIMED], monitor_port, fluentd.proc.pid, data, args.rounds)
            reports = checked(work, ports[CHECKED], lines[:args.check_records])
        finally:
            fluentd.stop()
            log = fluentd.log_tail()
    floors = [round_[0] for round_ in rates[FLOOR]]
    for row, name in ROWS.items():
        rate, _, fluentd_cpu, collector_cpu = (statistics.median(column) for column in zip(*rates[row]))
        ratios = [round_[0] / floor for round_, floor in zip(rates[row], floors)]
        short = [round_[1] for round_ in rates[row] if round_[1] < len(lines)]
        cpu = "CPU µs/record: Fluentd %.1f" % fluentd_cpu + (", collector %.1f" % collector_cpu if row == LISTEN else "")
        print(f"{name:42s} {rate:>9,.0f} records/s  x{statistics.median(ratios):.2f} floor  {cpu}  "
              f"(rounds: {', '.join(f'{round_[0]:,.0f}' for round_ in rates[row])})"
              + (f"  only {short} of {len(lines)} records came through" if short else ""))
        print(f"{'':42s} {reports[row]}")
    if log.strip():
        print("Fluentd's log (warnings and errors):\n" + log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
