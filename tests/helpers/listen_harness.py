"""What the ``nvsiem listen`` tests and benchmark share.

* Numbered records: the reference sample ``violation-text-1`` (a 1,043-byte
  RFC 5424 frame) with its ``id=`` value replaced by ``seq-00000042``, so a
  test can count every record end to end by its id.
* ``CollectorProcess``: the real command in a subprocess (``kill -9``,
  SIGTERM), health polled on its metrics port.
* ``ControlledSink``: a sink a test can make fail, stall and recover while a
  stream runs (in-process collectors only).
"""
import collections
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Sequence


from helpers.loopback import free_port, wait_until
from helpers.nvsamples import load_samples

from nvsiem.sinks.api import Sink, SinkError

REPO = Path(__file__).resolve().parents[2]
_SAMPLES = {s.id: s for s in load_samples()}
_ID = re.compile(rb"(,id=|\"id\":\")[0-9a-f-]{36}")


def sample(sample_id: str) -> bytes:
    """The first raw line of a reference sample (no trailing LF)."""
    return _SAMPLES[sample_id].lines[0]


def numbered(template: bytes, n: int) -> bytes:
    """``template`` with its record id replaced by ``seq-%08d``; ends with LF when the template does not."""
    line = _ID.sub(lambda m: m.group(1) + b"seq-%08d" % n, template, count=1)
    assert line != template, "template has no id to number"
    return line


def frames(start: int, stop: int, template: bytes = b"") -> List[bytes]:
    """Numbered syslog frames ``start..stop-1``, each ending with LF."""
    template = template or sample("violation-text-1")
    return [numbered(template, i) + b"\n" for i in range(start, stop)]


def seq_of(record: dict) -> int:
    return int(record["id"][4:])


def delivered(pattern: str) -> collections.Counter:
    """How many times each sequence number is in the JSON-lines files matching ``pattern`` (rotated ones too)."""
    seen = collections.Counter()
    for path in glob.glob(pattern):
        with open(path, "rb") as f:
            for line in f:
                # A last line without LF is a write a kill cut short: the sink writes it again on restart.
                if line.endswith(b"\n") and line.strip():
                    seen[seq_of(json.loads(line))] += 1
    return seen


def wait_each_once(pattern: str, count: int, what: str = "all records") -> None:
    """Wait for records 0..count-1 in the files matching ``pattern``; each must be there exactly once."""
    wait_until(lambda: sum(delivered(pattern).values()) >= count, what=what)
    assert delivered(pattern) == {i: 1 for i in range(count)}


def send_tcp(port: int, data: Sequence[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(data))


def send_datagrams(port: int, count: int, burst: int, pause: float) -> None:
    """Records 0..count-1, one datagram each, pausing after every ``burst``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for n, frame in enumerate(frames(0, count)):
        sock.sendto(frame, ("127.0.0.1", port))
        if n % burst == burst - 1:
            time.sleep(pause)
    sock.close()


class CollectorProcess:
    """``nvsiem listen`` as a child process with its own spool and metrics port."""

    def __init__(self, workdir: Path, listen: List[str], to: List[str], *extra: str, env: Dict[str, str] = None):
        self.workdir = workdir
        self.metrics_port = free_port()
        self.args = [sys.executable, "-m", "nvsiem", "listen", "--spool", str(workdir / "spool"),
                     "--metrics", "tcp://127.0.0.1:%d" % self.metrics_port, "--log-format", "text",
                     "--idle-flush", "0.1", "--retry-max", "0.5", *extra]
        for url in listen:
            self.args += ["--listen", url]
        for url in to:
            self.args += ["--to", url]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
                    **(env or {})}
        self.proc = None
        self.log = workdir / "collector.log"

    def start(self) -> "CollectorProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=self.workdir, env=self.env, stdout=log, stderr=log)
        wait_until(lambda: self.health() is not None or self.proc.poll() is not None, 20, "collector to be healthy")
        if self.proc.poll() is not None:
            raise AssertionError("collector exited %s:\n%s" % (self.proc.returncode, self.log.read_text()))
        return self

    def get(self, path: str):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.metrics_port, path), timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None

    def health(self):
        got = self.get("/healthz")
        return json.loads(got[1]) if got and got[0] == 200 else None

    def metric(self, name: str, **labels) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        status, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if m and m.group(1) == name:
                have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                if all(have.get(k) == v for k, v in labels.items()):
                    total += float(m.group(3))
        return total

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class ControlledSink(Sink):
    """A destination that stores batches in memory and does what the test says.

    ``mode``: ``ok``; ``fail`` (raise before storing: a SIEM that is down);
    ``refuse`` (a permanent SinkError: a SIEM that rejects the configuration);
    ``partial`` (store half the batch, then raise: a SIEM that failed mid-batch,
    so the retry duplicates that half); ``stall`` (block until the mode changes:
    a SIEM that hangs).
    """

    schemes = ("test",)
    max_batch = 100
    instances: List["ControlledSink"] = []

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.mode = "ok"
        self.records: List[dict] = []
        self.attempts = 0
        self.partial_failures = 0
        self.changed = threading.Condition()
        ControlledSink.instances.append(self)

    def set_mode(self, mode: str) -> None:
        with self.changed:
            self.mode = mode
            self.changed.notify_all()

    def send(self, batch: Sequence[bytes]) -> None:
        self.attempts += 1
        with self.changed:
            while self.mode == "stall":
                self.changed.wait()
            mode = self.mode
        if mode == "fail":
            raise SinkError("test destination is down")
        if mode == "refuse":
            raise SinkError("test destination rejects the token", permanent=True)
        if mode == "partial":
            self.partial_failures += 1
            self.records.extend(json.loads(x) for x in batch[: len(batch) // 2])
            raise SinkError("test destination failed mid-batch")
        self.records.extend(json.loads(x) for x in batch)

    @property
    def seqs(self) -> collections.Counter:
        return collections.Counter(seq_of(r) for r in self.records)


def start_collector(tmp_path: Path, listen: List[str], to: List[str] = None, **settings):
    """An in-process collector (metrics off) with short timings; its sources are bound to ``.port``."""
    from argparse import Namespace

    from nvsiem import config
    from nvsiem.collector import Collector
    from nvsiem.sources import open_source

    values = {"idle_flush": "0.1", "retry_max": "0.2", "drain_timeout": "5", "metrics": "off",
              "spool": str(tmp_path / "spool")}
    values.update({k: str(v) for k, v in settings.items()})
    cfg = config.resolve(Namespace(listen=listen, to=to or ["file://%s" % (tmp_path / "out.jsonl")], **values),
                         environ={})
    collector = Collector(cfg)
    collector.open_sinks(cfg.to)
    collector.start_sources([open_source(url, collector) for url in cfg.listen])
    return collector
