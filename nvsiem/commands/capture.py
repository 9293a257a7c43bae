"""Capture syslog into the hex dump netcat-traditional writes with -o.

For systems whose nc is the OpenBSD one (no -o). Listens on --listen and
writes every read to --out in nc.traditional's format, byte for byte: one
group of lines per read, offsets counted from 0. Like nc, it copies what it
receives to stdout (--quiet: don't).

TCP: like 'nc -l', one connection, and it stops when the sender closes it;
--keep-open takes the next connection after that, each starting again at
offset 0 (nvsiem replay reads that as a new connection). Reads are 8192
bytes at most, as nc's are, so the dump lines up with the one nc would write.

UDP: one read per datagram. Unlike nc, which reads 8192 bytes and drops the
rest of a longer datagram, datagrams are kept whole (up to 65535 bytes), and
datagrams from every sender are taken (nc -u -l answers only the first).

Stops on Ctrl-C / SIGTERM (or the TCP sender closing) with the dump complete
and flushed. Nothing is sent back to the sender.
"""
import selectors
import signal
import socket
import sys

from nvparser import format_hexdump
from nvsiem.netaddr import parse_address

HELP = "listen and write an nc -o compatible hex dump of what arrives"
NC_READ_SIZE = 8192  # nc.traditional's read buffer (BIGSIZ)
MAX_DATAGRAM = 65535


def add_arguments(parser):
    parser.add_argument("--listen", required=True, metavar="URL",
                        help="tcp://HOST:PORT or udp://HOST:PORT (port 0: any free port, printed)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the hex dump to write (replaced)")
    parser.add_argument("--keep-open", action="store_true",
                        help="TCP: after a sender closes, take the next connection (nc -l stops)")
    parser.add_argument("--quiet", action="store_true", help="don't copy what arrives to stdout")
    parser.set_defaults(run=run)


def run(args) -> int:
    try:
        address = parse_address(args.listen)
    except ValueError as exc:
        return _fail("--listen %s" % exc)
    udp = address.scheme == "udp"
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)[0]
        listener = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(sockaddr)
        if not udp:
            listener.listen(1)
    except OSError as exc:
        return _fail("cannot listen on %s: %s" % (address, exc.strerror or exc))
    try:
        dump = open(args.out, "wb", buffering=0)
    except OSError as exc:
        listener.close()
        return _fail("cannot write %s: %s" % (args.out, exc.strerror))
    bound = address._replace(port=listener.getsockname()[1])
    print("nvsiem capture: listening on %s, writing %s" % (bound, args.out), file=sys.stderr, flush=True)
    capture = _Capture(dump, None if args.quiet else sys.stdout.buffer)
    with _StopSignals() as stop, listener, dump:
        if udp:
            capture.udp(listener, stop)
        else:
            capture.tcp(listener, stop, args.keep_open)
    print("nvsiem capture: %s" % capture.summary(), file=sys.stderr)
    return 0


def _fail(message: str) -> int:
    print("nvsiem capture: " + message, file=sys.stderr)
    return 2


class _Capture:
    def __init__(self, dump, copy):
        self.dump = dump
        self.copy = copy
        self.offset = 0
        self.reads = self.total = self.connections = 0

    def record(self, data: bytes) -> None:
        """One read: to stdout, then to the dump, as nc does."""
        if self.copy is not None:
            try:
                self.copy.write(data)
                self.copy.flush()
            except (BrokenPipeError, ValueError):
                print("nvsiem capture: stdout closed; still writing the dump", file=sys.stderr)
                self.copy = None
        self.dump.write(format_hexdump("<", self.offset, data).encode("ascii"))
        self.offset += len(data)
        self.reads += 1
        self.total += len(data)

    def udp(self, sock, stop) -> None:
        while stop.wait_readable(sock):
            self.record(sock.recv(MAX_DATAGRAM))

    def tcp(self, listener, stop, keep_open: bool) -> None:
        while stop.wait_readable(listener):
            conn, _ = listener.accept()
            self.connections += 1
            self.offset = 0  # nc counts from 0 for each run, so each connection does too
            with conn:
                while stop.wait_readable(conn):
                    try:
                        data = conn.recv(NC_READ_SIZE)
                    except ConnectionError:
                        data = b""
                    if not data:
                        break
                    self.record(data)
            if not keep_open or stop.stopped:
                return

    def summary(self) -> str:
        line = "%d bytes in %d reads" % (self.total, self.reads)
        if self.connections:
            line += " from %d connection%s" % (self.connections, "" if self.connections == 1 else "s")
        return line


class _StopSignals:
    """SIGINT / SIGTERM wake the select() instead of killing the process mid-write."""

    def __enter__(self):
        self.stopped = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._wake_w.fileno())
        self._old = {sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        return self

    def _note(self, signum, frame):
        self.stopped = True

    def wait_readable(self, sock) -> bool:
        """Block until ``sock`` has something (True) or a stop signal came (False)."""
        if self.stopped:
            return False
        self._selector.register(sock, selectors.EVENT_READ)
        try:
            while True:
                ready = {key.fileobj for key, _ in self._selector.select()}
                if self._wake_r in ready or self.stopped:
                    self.stopped = True
                    return False
                if sock in ready:
                    return True
        finally:
            self._selector.unregister(sock)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_fd)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        return False
