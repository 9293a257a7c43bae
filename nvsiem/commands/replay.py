"""Replay a netcat hex dump (nc -o, or nvsiem capture): records out, syslog resent.

Reads DUMP as it streams (bounded memory, whatever its size), parses what nc
received (the '<' lines) and writes one JSON line per record to --out
(default stdout) and dead letters to --dead-letter (default stderr), the
same way as 'nvsiem parse'. Lines of the dump that are not nc's, or that
leave a hole, are dead letters too.

Transport: the dump does not say whether it was TCP or UDP. With --transport
auto the first reads decide: reads starting inside a record mean a TCP
stream; reads each holding one record without its final LF mean UDP
datagrams; if every read held whole LF-terminated frames, both read the
same and the stream reading is used. Force it with --transport tcp|udp.

--send udp://HOST:PORT sends each datagram (UDP reading) or each frame
(TCP reading: the stream cut where the parser found each frame to start,
so one NeuVector message a datagram, as NeuVector sends over UDP);
--send tcp://HOST:PORT writes the received bytes to one connection (a new
connection where the capture had one), frame by frame with --rate. The
bytes are the original syslog bytes, unchanged. nc dumps have no
timestamps, so replay goes as fast as the link allows unless --rate caps
it at N frames a second.

Exit status: 0 every frame parsed, 1 some were dead-lettered (or datagrams
could not be sent), 2 usage errors: bad option, unreadable DUMP, or the
--send destination refused or dropped the connection.
"""
import argparse
import os
import socket
import sys
import time

from nvparser import MAX_FRAME

from nvsiem.captures import TRANSPORTS, CaptureReader
from nvsiem.netaddr import parse_address
from nvsiem.output import EventWriter, max_frame_option, open_outputs

HELP = "parse an nc hex dump into JSON lines and optionally resend its syslog"
_READ = 1 << 20


def add_arguments(parser):
    parser.add_argument("dump", metavar="DUMP", help="hex dump written by nc -o or nvsiem capture ('-': stdin)")
    parser.add_argument("--transport", choices=TRANSPORTS, default="auto",
                        help="how nc received it: tcp (a byte stream) or udp (a datagram per read);"
                             " default: detect")
    parser.add_argument("--out", metavar="FILE", help="write records here instead of stdout")
    parser.add_argument("--dead-letter", metavar="FILE",
                        help="write dead letters here (JSON lines) instead of stderr")
    parser.add_argument("--send", metavar="URL", help="resend the syslog bytes to udp://HOST:PORT or tcp://HOST:PORT")
    parser.add_argument("--rate", type=_positive, metavar="N",
                        help="at most N frames a second (default: as fast as the link allows)")
    parser.add_argument("--max-frame", type=max_frame_option, default=MAX_FRAME, metavar="BYTES",
                        help="longest frame kept; longer ones are dead-lettered (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress line and no summary on stderr")
    parser.set_defaults(run=run)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a number above 0")
    return value


def run(args) -> int:
    try:
        target = parse_address(args.send) if args.send else None
    except ValueError as exc:
        return _usage("--send %s" % exc)
    try:
        dump = sys.stdin.buffer if args.dump == "-" else open(args.dump, "rb")
    except OSError as exc:
        return _usage("cannot read %s: %s" % (args.dump, exc.strerror))
    try:
        records, dead = open_outputs(args.out, args.dead_letter)
    except OSError as exc:
        return _usage("cannot write %s: %s" % (exc.filename, exc.strerror))
    try:
        sender = _Sender(target) if target else None
    except OSError as exc:
        return _usage("cannot send to %s: %s" % (target, exc.strerror or exc))
    writer = EventWriter(records, dead, source=args.dump)
    reader = CaptureReader(args.transport, args.max_frame)
    progress = _Progress(dump, enabled=not args.quiet and sys.stderr.isatty())
    pace = _Pace(args.rate)
    with dump:
        try:
            units = reader.units(progress.reading(dump))  # the transport is known from here on
            frames = _Frames() if sender is not None and reader.transport == "tcp" and (
                sender.udp or args.rate) else None
            for unit in units:
                writer.write(unit.events)
                if frames is None:
                    if sender is not None and unit.data:
                        sender.send(unit.data, unit.new_stream)
                    pace.wait(len(unit.events))
                else:
                    for frame, new_stream in frames.cut(unit):
                        sender.send(frame, new_stream)
                        pace.wait(1)
                progress.show(writer.tally)
            if frames is not None:
                for frame, new_stream in frames.rest():
                    sender.send(frame, new_stream)
        except _SendFailed as exc:
            progress.clear()
            records.flush()
            return _usage(str(exc))
        finally:
            if sender is not None:
                sender.close()
    records.flush()
    dead.flush()
    progress.clear()
    if not args.quiet:
        print("nvsiem replay: %s\n  read as %s (%s)%s%s" % (
            writer.tally.summary(), reader.transport, reader.why,
            "; %d bytes nc sent back ('>' lines) not replayed" % reader.sent_bytes if reader.sent_bytes else "",
            "\n  " + sender.summary() if sender is not None else ""), file=sys.stderr)
    failed = sender is not None and sender.failures
    return max(writer.tally.exit_status(), 1 if failed else 0)


def _usage(message: str) -> int:
    print("nvsiem replay: " + message, file=sys.stderr)
    return 2


class _SendFailed(Exception):
    pass


class _Sender:
    """Resends datagrams (udp://) or stream bytes (tcp://), unchanged."""

    def __init__(self, address):
        self.address = address
        self.udp = address.scheme == "udp"
        self.units = self.bytes = self.failures = 0
        self.last_error = ""
        self.sock = None
        self._connect()

    def _connect(self) -> None:
        if self.udp:
            family = socket.getaddrinfo(self.address.host, self.address.port, type=socket.SOCK_DGRAM)[0]
            self.sock = socket.socket(family[0], socket.SOCK_DGRAM)
            self._destination = family[4]
        else:
            self.sock = socket.create_connection((self.address.host, self.address.port), timeout=30)

    def send(self, data: bytes, new_stream: bool) -> None:
        if self.udp:
            try:
                self.sock.sendto(data, self._destination)
            except OSError as exc:  # e.g. EMSGSIZE: longer than a datagram can be
                self.failures += 1
                self.last_error = "%d bytes: %s" % (len(data), exc.strerror or exc)
                return
        else:
            try:
                if new_stream:
                    self.sock.close()
                    self._connect()
                self.sock.sendall(data)
            except OSError as exc:
                raise _SendFailed("sending to %s failed after %d bytes: %s"
                                  % (self.address, self.bytes, exc.strerror or exc)) from None
        self.units += 1
        self.bytes += len(data)

    def close(self) -> None:
        self.sock.close()

    def summary(self) -> str:
        line = "sent %d %s, %d bytes, to %s" % (
            self.units, "datagrams" if self.udp else "writes", self.bytes, self.address)
        if self.failures:
            line += "; %d datagrams could not be sent (last: %s)" % (self.failures, self.last_error)
        return line


class _Frames:
    """A TCP capture's bytes, cut into its frames where the parser found each to start.

    Events come a little after their bytes (the parser holds the last line
    until the next shows it is complete), so bytes wait here until the
    next frame's start is known. A jump in the stream (a new connection, or
    a hole in the dump) ends the frame before it.
    """

    def __init__(self):
        self.buf = bytearray()
        self.start = 0  # stream offset of buf[0]
        self.new_stream = False  # the next frame out opens a new connection

    def cut(self, unit):
        out = []
        if unit.data:
            if unit.new_stream or unit.offset != self.start + len(self.buf):
                out += self.rest()
                self.start, self.new_stream = unit.offset, unit.new_stream or self.new_stream
            self.buf += unit.data
        for event in unit.events:
            at = getattr(event, "offset", -1) - self.start
            if 0 < at <= len(self.buf):
                out.append((bytes(self.buf[:at]), self.new_stream))
                del self.buf[:at]
                self.start += at
                self.new_stream = False
        return out

    def rest(self):
        out = [(bytes(self.buf), self.new_stream)] if self.buf else []
        self.buf = bytearray()
        self.start += len(out[0][0]) if out else 0
        self.new_stream = False
        return out


class _Pace:
    """Sleeps so that at most ``rate`` frames a second go out (None: no limit)."""

    def __init__(self, rate):
        self.rate = rate
        self.frames = 0
        self.start = time.monotonic()

    def wait(self, frames: int) -> None:
        if self.rate and frames:
            self.frames += frames
            delay = self.start + self.frames / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


class _Progress:
    """A progress line on a terminal, twice a second at most."""

    def __init__(self, dump, enabled: bool):
        self.enabled = enabled
        self.done = 0
        self.shown = 0.0
        try:
            self.total = os.fstat(dump.fileno()).st_size if enabled else 0
        except (OSError, ValueError):
            self.total = 0

    def reading(self, dump):
        for data in iter(lambda: dump.read(_READ), b""):
            self.done += len(data)
            yield data

    def show(self, tally) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.shown < 0.5:
            return
        self.shown = now
        share = " %3d%%" % (100 * self.done // self.total) if self.total else ""
        sys.stderr.write("\rnvsiem replay:%s %.1f MB read, %d records, %d dead letters\033[K"
                         % (share, self.done / 1e6, tally.records, tally.dead_letters))
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
