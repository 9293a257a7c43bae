"""The UDP receiver process: datagrams from a socket to raw files, nothing else.

Run by ``UdpSource`` with the bound socket passed as a file descriptor. It is
a process of its own because a thread that makes one ``recv`` call per
datagram, in a process whose other threads parse, waits for the GIL after
every call (up to the 5 ms switch interval each time) and the kernel drops
what no longer fits in the socket buffer. Alone, this loop drains well over
100,000 datagrams/s.

Raw file format (``udp-<port>-<n>.raw`` in the spool directory): each
datagram as a 4-byte little-endian length, then its bytes. Files roll at
``--segment-bytes``; the collector deletes those it has parsed. Writes go
to the OS at least every 10 ms, so a crash of the collector loses no
datagram this process took; when the collector dies (its pid is no longer
our parent) or sends SIGTERM, this process drains the socket, writes and
exits. When the raw files hold more than ``--max-backlog`` bytes (the
parser is far behind), datagrams are dropped and counted in the status file
``udp-<port>.status`` rather than filling the disk. A write that fails (the
disk is full) is cut back, and the datagrams it held are dropped and
counted the same way: memory stays bounded and the receiver goes on.
"""
import argparse
import logging
import os
import signal
import socket
import struct
import sys
import time

from ..logs import FORMATS, LEVELS, setup_logging
from ..statefile import save_state
from .access import Gate

_FLUSH_BYTES = 256 << 10
_FLUSH_SECONDS = 0.01

log = logging.getLogger("nvsiem.udp")


def raw_name(port: int, number: int) -> str:
    return "udp-%d-%012d.raw" % (port, number)


def raw_files(directory: str, port: int):
    """(number, path) of the raw files for ``port``, oldest first."""
    prefix, found = "udp-%d-" % port, []
    for name in os.listdir(directory):
        if name.startswith(prefix) and name.endswith(".raw"):
            found.append((int(name[len(prefix):-4]), os.path.join(directory, name)))
    return sorted(found)


class Receiver:
    def __init__(self, sock: socket.socket, directory: str, port: int, segment_bytes: int, max_backlog: int,
                 gate: Gate = None):
        self.sock, self.directory, self.port = sock, directory, port
        self.gate = gate  # with allow=: datagrams from other senders are dropped, counted and logged here
        self.segment_bytes, self.max_backlog = segment_bytes, max_backlog
        existing = raw_files(directory, port)
        self.number = existing[-1][0] + 1 if existing else 1  # never append to a file written before
        self.file = self._open()
        self.size = 0
        self.buf = bytearray()
        self.buffered = 0  # datagrams in buf
        self.received = self.dropped = self.refused = 0
        self.dropping = False
        self.write_error = None
        self.stopping = False
        self.status_path = os.path.join(directory, "udp-%d.status" % port)

    def _open(self):
        return open(os.path.join(self.directory, raw_name(self.port, self.number)), "ab", buffering=0)

    def flush(self) -> None:
        if not self.buf:
            return
        try:
            if self.size and self.size + len(self.buf) > self.segment_bytes:
                new = self._open()
                self.file.close()
                self.number += 1
                self.file, self.size = new, 0
            view = memoryview(self.buf)
            while view:
                view = view[self.file.write(view):]
            self.size += len(self.buf)
            if self.write_error:
                self.write_error = None
                log.info("udp port %d: writing raw files again", self.port)
        except OSError as exc:
            try:
                os.ftruncate(self.file.fileno(), self.size)  # no torn record for the parser
            except OSError:
                pass
            self.dropped += self.buffered
            if str(exc) != self.write_error:
                self.write_error = str(exc)
                log.error("udp port %d: cannot write raw files (%s): dropping datagrams, counted", self.port, exc)
        self.buf = bytearray()
        self.buffered = 0

    def check(self) -> None:
        """Every half second: is the backlog over its bound? Write the status file."""
        backlog = sum(os.path.getsize(p) for _, p in raw_files(self.directory, self.port) if os.path.exists(p))
        dropping = backlog > self.max_backlog
        if dropping != self.dropping:
            self.dropping = dropping
            log.log(logging.ERROR if dropping else logging.INFO, "udp port %d: %s (%d raw bytes not parsed yet)",
                    self.port, "parser far behind, dropping datagrams" if dropping
                    else "backlog back under its bound, receiving again", backlog)
        try:
            save_state(self.status_path, {"received": self.received, "dropped": self.dropped, "refused": self.refused})
        except OSError:
            pass  # a full disk: the counts are written at the next check with room

    def _recv_allowed(self, size: int) -> bytes:
        """The next datagram from an allowed sender (``recvfrom`` costs more than ``recv``: only with allow=)."""
        while True:
            datagram, peer = self.sock.recvfrom(size)
            if self.gate.admits(peer[0]):
                return datagram
            self.refused += 1

    def run(self, parent: int) -> None:
        recv = self.sock.recv if self.gate is None else self._recv_allowed
        pack = struct.Struct("<I").pack
        self.sock.settimeout(_FLUSH_SECONDS)
        next_flush = next_check = time.monotonic()
        n = 0
        while True:
            try:
                datagram = recv(65536)
            except socket.timeout:
                datagram = None
            if datagram is not None:
                self.received += 1
                if self.dropping:
                    self.dropped += 1
                else:
                    self.buf += pack(len(datagram))
                    self.buf += datagram
                    self.buffered += 1
                n += 1
                if len(self.buf) < _FLUSH_BYTES and n & 63:
                    continue
            now = time.monotonic()
            if len(self.buf) >= _FLUSH_BYTES or now >= next_flush or datagram is None:
                self.flush()
                next_flush = now + _FLUSH_SECONDS
            if now >= next_check:
                self.check()
                next_check = now + 0.5
            if self.stopping or os.getppid() != parent:
                break
        self.drain()

    def drain(self) -> None:
        """Take what the kernel still holds for us, write it, stop."""
        self.sock.setblocking(False)
        pack = struct.Struct("<I").pack
        recv = self.sock.recv if self.gate is None else self._recv_allowed
        while True:
            try:
                datagram = recv(65536)
            except OSError:
                break
            self.received += 1
            self.buf += pack(len(datagram))
            self.buf += datagram
            self.buffered += 1
        self.flush()
        self.file.close()
        self.check()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="nvsiem UDP receiver (started by nvsiem listen)")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--segment-bytes", type=int, default=64 << 20)
    ap.add_argument("--max-backlog", type=int, default=1 << 30)
    ap.add_argument("--label", default="udp")
    ap.add_argument("--allow", help="the source's allow= list")
    ap.add_argument("--log-format", choices=FORMATS, default="json")  # the collector's own settings
    ap.add_argument("--log-level", choices=LEVELS, default="info")
    args = ap.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    sock = socket.socket(fileno=args.fd)
    gate = Gate(args.label, args.allow) if args.allow is not None else None
    receiver = Receiver(sock, args.dir, args.port, args.segment_bytes, args.max_backlog, gate)

    def stop(*_):
        receiver.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the collector, which stops us in order
    sys.stdout.write("ready\n")
    sys.stdout.close()
    receiver.run(args.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
