"""Real netcat-traditional captures on 127.0.0.1 for the tests.

Each send waits until nc has logged it (the dump grew by the expected size),
so every send is one read() of nc's, whatever the machine's speed.
"""
import os
import shutil
import socket
import subprocess

import pytest

from helpers.loopback import free_port, wait_until

NC = shutil.which("nc.traditional")
needs_nc = pytest.mark.skipif(
    NC is None, reason="nc.traditional not installed (Debian/Ubuntu: apt-get install netcat-traditional)")

WAIT = 15.0  # seconds: a bound on waiting, never an expectation of speed


def logged_bytes(path) -> int:
    """Data bytes in the complete lines of a dump: each line is 62 + n bytes."""
    try:
        with open(path, "rb") as dump:
            text = dump.read()
    except FileNotFoundError:
        return 0
    end = text.rfind(b"\n") + 1
    return end - 62 * text.count(b"\n", 0, end)


def listening(port: int, udp: bool) -> bool:
    """Whether something is bound to 127.0.0.1:port (TCP: in LISTEN state)."""
    table = "/proc/net/udp" if udp else "/proc/net/tcp"
    wanted = "0100007F:%04X" % port
    with open(table) as rows:
        for row in rows.readlines()[1:]:
            fields = row.split()
            if fields[1] == wanted and (udp or fields[3] == "0A"):
                return True
    return False


class Listener:
    """Run a listener (``argv`` with PORT in it), send to it, stop it."""

    def __init__(self, argv, dump_path, udp=False, stdin=None, stdout_path=None):
        self.port = free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.udp = udp
        self.dump_path = dump_path
        self.expected = 0  # data bytes the dump must hold once all is logged
        argv = [a.replace("PORT", str(self.port)) for a in argv]
        self.stdout = open(stdout_path or os.devnull, "wb")
        self.process = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                        stdout=self.stdout, stderr=subprocess.PIPE)
        wait_until(lambda: listening(self.port, udp) or self.process.poll() is not None, WAIT, "the listener", 0.005)
        if self.process.poll() is not None:
            raise AssertionError("listener exited: %r" % self.process.stderr.read())
        if udp:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.connect(("127.0.0.1", self.port))
        else:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def logged(self, count: int) -> None:
        """Wait until the dump holds ``count`` more bytes (either direction)."""
        self.expected += count
        wait_until(lambda: logged_bytes(self.dump_path) >= self.expected, WAIT, "the dump to grow", 0.005)

    def send(self, data: bytes, logged: int = None) -> None:
        """Send, and wait until the listener logged it (``logged`` bytes of it)."""
        if self.udp:
            self.sock.send(data)
        else:
            self.sock.sendall(data)
        self.logged(len(data) if logged is None else logged)

    def stop(self) -> bytes:
        """Close our end (TCP: the listener then exits) and give the dump."""
        self.sock.close()
        if self.udp:
            self.process.terminate()
        try:
            self.process.wait(timeout=WAIT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process.stderr.close()
            self.stdout.close()
        with open(self.dump_path, "rb") as dump:
            return dump.read()


def nc_listener(dump_path, udp=False, **kwargs) -> Listener:
    argv = [NC, "-l", "-s", "127.0.0.1", "-p", "PORT", "-o", str(dump_path)]
    return Listener(argv[:1] + (["-u"] if udp else []) + argv[1:], dump_path, udp=udp, **kwargs)


def nc_capture(dump_path, frames, udp=False) -> bytes:
    """Capture ``frames`` with nc.traditional, one read (datagram) each: the dump."""
    nc = nc_listener(dump_path, udp=udp)
    for frame in frames:
        nc.send(frame)
    return nc.stop()


def syslog_frames(samples) -> list:
    """The syslog frames of the reference samples, as NeuVector writes them.

    Samples sent as syslog (text and JSON modes over UDP, TCP or TLS), in
    file order; a frame is a line starting with '<' plus the lines that
    continue it (a text-mode value holding a raw LF), each ending with LF.
    """
    frames = []
    for sample in samples:
        if sample.mode not in ("text", "json") or not sample.transport.startswith(("UDP", "TCP")):
            continue
        for line in sample.lines:
            if line.startswith(b"<") or not frames:
                frames.append(line + b"\n")
            else:
                frames[-1] += line + b"\n"
    return frames
