"""A real server program the tests run as a peer (Fluentd, rsyslogd) on loopback.

It runs in a process group of its own, its output in a log file, so that a
test can kill it and every process it forked at once (``kill9``), and a
failed test leaves nothing running (``stop`` is safe to call at any time).
Every wait is bounded.
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from helpers.loopback import wait_until


class PeerDaemon:
    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Optional[Dict[str, str]] = None):
        self.name = name
        self.argv: List[str] = list(argv)
        self.log = log
        self.env = env
        self.proc: Optional[subprocess.Popen] = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ports: Sequence[int] = (), timeout: float = 60.0) -> "PeerDaemon":
        """Start it and wait until every TCP port in ``ports`` accepts connections."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self.env, start_new_session=True)
        try:
            wait_until(lambda: not self.running or all(_accepts(p) for p in ports), timeout,
                       "%s to listen on %s" % (self.name, ", ".join(map(str, ports))))
        except AssertionError:
            self.stop()
            raise AssertionError("%s did not start listening:\n%s" % (self.name, self.log_tail())) from None
        if not self.running:
            raise AssertionError("%s exited with %s:\n%s" % (self.name, self.proc.returncode, self.log_tail()))
        return self

    def signal(self, number: int) -> None:
        """Send ``number`` to the main process only (e.g. SIGUSR1: Fluentd flushes its buffers)."""
        if self.running:
            self.proc.send_signal(number)

    def kill9(self) -> None:
        """A crash: SIGKILL to the whole process group, nothing gets to clean up."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait for a clean exit; SIGKILL to the group past ``timeout``."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()  # also reaps workers the main process left behind

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log.read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text.encode() in self.log.read_bytes(), timeout, "%r in the %s log" % (text, self.name),
                   interval=0.1)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        time.sleep(0.1)
        return False
