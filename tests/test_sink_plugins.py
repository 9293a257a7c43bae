"""Sinks are plugins: a package outside the repository adds one through the ``nvsiem.sinks`` entry points.

The third-party package here is a module plus the ``.dist-info`` an install
leaves (``METADATA``, ``entry_points.txt``) in a directory on PYTHONPATH:
what ``importlib.metadata`` reads, as pip would have laid it out.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from helpers.listen_harness import REPO, CollectorProcess, frames, seq_of
from helpers.loopback import free_port, wait_until

EXAMPLE_SINK = '''
import json
from nvsiem.sinks.api import Sink, SinkError, parse_bool


class ExampleSink(Sink):
    """``example:///PATH?upper=true``: each record's notification, one per line."""

    def __init__(self, url):
        super().__init__(url)
        self.path = url.split("://", 1)[1].split("?", 1)[0]
        self.upper = parse_bool("upper=true" in url)

    def send(self, batch):
        with open(self.path, "a", encoding="utf-8") as out:
            for raw in batch:
                record = json.loads(raw)
                kind = record["notification"].upper() if self.upper else record["notification"]
                out.write("%s %s\\n" % (kind, record["id"]))


class NotASink:
    pass
'''


def install(site: Path, dist: str, module: str, code: str, entry_points: str) -> None:
    """Lay out an installed distribution the way pip does: the module and its .dist-info."""
    (site / (module + ".py")).write_text(code)
    info = site / ("%s-1.0.dist-info" % dist)
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % dist)
    (info / "entry_points.txt").write_text("[nvsiem.sinks]\n" + entry_points)


def env_with(site: Path) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO / "tests")])}


def nvsiem(site: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nvsiem", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **env_with(site)))


def test_a_sink_from_another_package_is_found_through_its_entry_point(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "nvsiem_example", "nvsiem_example", EXAMPLE_SINK, "example = nvsiem_example:ExampleSink\n")
    out, port = tmp_path / "out.txt", free_port()
    collector = CollectorProcess(tmp_path, ["tcp://127.0.0.1:%d" % port], ["example://%s?upper=true" % out],
                                 env=env_with(site)).start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"".join(frames(0, 50)))
        wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 50, what="50 records in the plugin")
    finally:
        collector.stop()
    lines = [line.split() for line in out.read_text().splitlines()]
    assert {kind for kind, _ in lines} == {"VIOLATION"}
    assert sorted(seq_of({"id": record_id}) for _, record_id in lines) == list(range(50))


def test_the_collector_core_names_no_adapter():
    """The core finds its adapters through entry points only: no adapter package in its code."""
    for path in (REPO / "nvsiem").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for adapter in ("nvsiem_fluentd", "nvsiem_splunk", "nvsiem_syslog"):
            assert adapter not in text, "%s names %s" % (path.relative_to(REPO), adapter)


def test_the_packs_own_adapters_are_entry_points():
    done = subprocess.run([sys.executable, "-c", "import json; from nvsiem.sinks import SINKS; print(json.dumps(SINKS))"],
                          capture_output=True, text=True, timeout=60, check=True)
    sinks = json.loads(done.stdout)
    assert sinks["fluentd+tls"] == "nvsiem_fluentd.sink:FluentdSink"
    assert sinks["splunk-hec"] == "nvsiem_splunk_hec.sink:HecSink"
    assert sinks["syslog+tls"].startswith("nvsiem_syslog.")
    assert sinks["file"] == "nvsiem.sinks.file:FileSink"


def test_two_packages_claiming_one_scheme_is_an_error_naming_both(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "nvsiem_one", "nvsiem_one", EXAMPLE_SINK, "dup = nvsiem_one:ExampleSink\n")
    install(site, "nvsiem_two", "nvsiem_two", EXAMPLE_SINK, "dup = nvsiem_two:ExampleSink\n")
    done = nvsiem(site, "listen", "--spool", str(tmp_path / "spool"), "--metrics", "off",
                  "--listen", "tcp://127.0.0.1:0", "--to", "dup:///x")
    assert done.returncode != 0
    assert "nvsiem_one:ExampleSink" in done.stderr and "nvsiem_two:ExampleSink" in done.stderr


def test_an_entry_point_that_is_not_a_sink_is_refused(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "nvsiem_odd", "nvsiem_odd", EXAMPLE_SINK, "odd = nvsiem_odd:NotASink\n")
    done = nvsiem(site, "listen", "--spool", str(tmp_path / "spool"), "--metrics", "off",
                  "--listen", "tcp://127.0.0.1:0", "--to", "odd:///x")
    assert done.returncode != 0 and "not an nvsiem.sinks.api.Sink" in done.stderr


def test_a_plugin_that_fails_to_start_gives_one_clear_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "nvsiem_example", "nvsiem_example", EXAMPLE_SINK, "example = nvsiem_example:ExampleSink\n")
    done = nvsiem(site, "listen", "--spool", str(tmp_path / "spool"), "--metrics", "off", "--log-format", "text",
                  "--listen", "tcp://127.0.0.1:0", "--to", "example:no-path")  # the plugin itself raises IndexError
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "example:no-path: the sink failed to start: IndexError" in done.stderr
