"""``udp://HOST:PORT``: one syslog frame per datagram, none lost to a busy parser.

The socket is bound here (so a bad address fails at start) with
``SO_RCVBUF`` raised (8 MiB asked by default; the kernel caps it at
``net.core.rmem_max`` and a warning says so), then handed to a receiver
process (``udp_receiver.py``) that only moves datagrams to raw files in the
spool directory. This thread reads those files in order, parses each
datagram and spools the records, keeping its position in
``udp-<port>.offset``; consumed files are deleted.

So a burst, or a parser slower than the sender for a while, becomes a raw
backlog on disk instead of kernel drops. asyncio's default datagram
transport (one datagram per loop iteration) and a ``recv`` thread sharing
the GIL with the parser were both measured losing datagrams at 50,000/s.

While the spool is full the raw files grow instead (up to the spool quota
again; beyond it the receiver drops and counts: ``nvsiem_dropped_frames_total``
with reason ``backlog_full``). After a crash, datagrams parsed since the last
saved position (one batch) are parsed again; so is the batch the spool
refuses at stop (it is full), and everything after it.
"""
import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Optional

from nvparser import DeadLetter

from ..statefile import load_state, save_state
from .base import Source, log
from .udp_receiver import raw_files

_READ = 1 << 20
_LENGTH = struct.Struct("<I")


class UdpSource(Source):
    def start(self) -> None:
        host, port = self.address()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        wanted = self.config.udp_rcvbuf
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports twice what it grants
        if got < wanted:
            log.warning("%s: SO_RCVBUF is %d bytes, not the %d asked: raise net.core.rmem_max "
                        "(sysctl -w net.core.rmem_max=%d) or bursts will be dropped by the kernel",
                        self.label, got, wanted, wanted)
        for attempt in range(40):
            try:
                sock.bind((host, port))
                break
            except OSError as exc:
                # The receiver of a collector that just died may still be draining this port.
                if exc.errno != errno.EADDRINUSE or attempt == 39:
                    raise
                time.sleep(0.05)
        self.port = sock.getsockname()[1]
        self.key = port or self.port  # names the raw files: stable across restarts
        for other in self.collector.sources:
            if other is not self and isinstance(other, UdpSource) and getattr(other, "key", None) == self.key:
                sock.close()
                raise ValueError("%s and %s: two UDP listeners on one port; the spool names raw files by port, "
                                 "use another port for one of them" % (other.label, self.label))
        self.directory = self.collector.spool.directory
        self._offset_path = os.path.join(self.directory, "udp-%d.offset" % self.key)
        self._status_path = os.path.join(self.directory, "udp-%d.status" % self.key)
        self._sock = sock  # kept: a receiver that died is started again on it
        self._start_receiver()
        _lower_own_priority()
        self.up = True
        self.spawn(self._consume, "udp-%d" % self.port)
        # Not in the consumer loop: that waits for room while the receiver drops most.
        self.spawn(self._watch_status, "udp-%d-status" % self.port)

    def _start_receiver(self) -> None:
        # Each receiver counts from 0 in the status file: a file left by the one before is not new news.
        self._dropped_seen = self._refused_seen = 0
        try:
            os.unlink(self._status_path)
        except FileNotFoundError:
            pass
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
        fd = self._sock.fileno()
        self.child = subprocess.Popen(
            [sys.executable, "-m", "nvsiem.sources.udp_receiver", "--fd", str(fd),
             "--dir", self.directory, "--port", str(self.key), "--parent", str(os.getpid()),
             # The spool's own segment size (lowered for a small quota): a raw file must roll,
             # and go once parsed, before the backlog reaches its bound.
             "--segment-bytes", str(self.collector.spool.segment_bytes),
             "--max-backlog", str(self.collector.spool.quota_bytes),
             "--label", self.label, "--log-format", self.config.log_format, "--log-level", self.config.log_level]
            + (["--allow", self.query["allow"]] if "allow" in self.query else []),
            pass_fds=[fd], env=env, stdout=subprocess.PIPE)
        if self.child.stdout.readline() != b"ready\n":  # receiving before start() returns
            raise OSError("%s: the UDP receiver process did not start (exit status %s)" % (self.label, self.child.wait()))

    def _watch_status(self) -> None:
        """Each second: count what the receiver dropped; start it again if it died."""
        while not self._stopping.wait(1.0):
            self._read_status()
            status = self.child.poll()
            if status is not None and not self._stopping.is_set():
                self.up = False
                log.error("%s: the UDP receiver process died (exit status %s); starting it again", self.label, status)
                self._read_status()  # its last counts
                try:
                    self._start_receiver()
                except OSError as exc:
                    log.error("%s: %s", self.label, exc)
                    continue
                self.up = True

    def _load_position(self):
        state = load_state(self._offset_path, {"file": 0, "offset": 0})
        return int(state["file"]), int(state["offset"])

    def _save_position(self, number: int, offset: int) -> None:
        save_state(self._offset_path, {"file": number, "offset": offset})

    def _consume(self) -> None:
        parser = self.parser()
        number, offset = self._load_position()
        f, f_number, stop_by = None, None, None
        while True:
            if stop_by is None and self._stopping.is_set():
                stop_by = time.monotonic() + self.config.drain_timeout
            files = raw_files(self.directory, self.key)
            for old, path in files:
                if old < number:
                    os.unlink(path)  # parsed before a restart
            files = [(n, p) for n, p in files if n >= number]
            now = time.monotonic()
            if stop_by is not None and (now > stop_by or (self.child.poll() is not None and self._caught_up(files, f))):
                break
            if not files:
                self._stopping.wait(0.01)
                continue
            if files[0][0] != number:
                number, offset = files[0][0], 0
            if f_number != number:
                if f:
                    f.close()
                f, f_number = open(files[0][1], "rb"), number
            f.seek(offset)
            data = f.read(_READ)
            used = self._parse(parser, data) if data else 0
            if used is None:  # refused at stop: the position stays, the next start parses it
                break
            if used:
                offset += used
                self._save_position(number, offset)
                continue
            if len(files) > 1 and not f.read(1):  # a newer file exists: this one is complete
                torn = data[used:]
                if torn:
                    self.collector.accept([DeadLetter(bytes(torn), "torn raw UDP record (power loss?)", offset)],
                                          self.label)
                f.close()
                f, f_number = None, None
                os.unlink(files[0][1])
                number, offset = files[1][0], 0
                self._save_position(number, offset)
                continue
            self._stopping.wait(0.005)
        if f:
            f.close()

    def _caught_up(self, files, f) -> bool:
        return len(files) <= 1 and (f is None or not f.read(1))

    def _parse(self, parser, data: bytes) -> Optional[int]:
        """Parse the complete raw records at the start of ``data``; the bytes used, None if the spool refused them."""
        pos, end, events, datagrams = 0, len(data), [], 0
        unpack, feed = _LENGTH.unpack_from, parser.feed_datagram
        while pos + 4 <= end:
            (size,) = unpack(data, pos)
            if pos + 4 + size > end:
                break
            events += feed(data[pos + 4:pos + 4 + size])
            pos += 4 + size
            datagrams += 1
        if pos:
            self.received(pos - 4 * datagrams)
            # Waiting for room in the spool just lets the raw files grow.
            if not self.collector.accept(events, self.label, timeout=None):
                return None
        return pos

    def _read_status(self) -> None:
        try:
            status = load_state(self._status_path, {"dropped": 0, "refused": 0})
            dropped, refused = status["dropped"], status.get("refused", 0)
        except (OSError, ValueError, KeyError):
            return
        if dropped > self._dropped_seen:
            self.collector.refused(self.label, dropped - self._dropped_seen, "backlog_full")
            self._dropped_seen = dropped
        if refused > self._refused_seen:  # logged by the receiver, once a minute per sender
            self.collector.metrics.refused.labels(self.label, "not_allowed").inc(refused - self._refused_seen)
            self._refused_seen = refused

    def stop(self) -> None:
        self._stopping.set()
        self.up = False
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        self.child.wait(30)
        super().stop()
        self._sock.close()
        self._read_status()  # the receiver's last counts, written as it exited


def _lower_own_priority() -> None:
    """Let the receiver process win the CPU over this process's threads.

    Raising our own threads' nice value needs no privilege; with the parser
    and the sinks at +5, the receiver (nice 0) gets the CPU as soon as a
    datagram arrives, even on a single core.
    """
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:  # not Linux: leave priorities alone
        return
    for task in tasks:
        try:
            os.setpriority(os.PRIO_PROCESS, int(task), max(5, os.getpriority(os.PRIO_PROCESS, int(task))))
        except OSError:
            pass
