"""netcat hex dumps (``nc -o``) -> the syslog that was received, and its records.

The dump holds what nc received (``<`` lines), read by read; it does not say
whether that was TCP or UDP, so the transport is given or detected:

- ``tcp``: the reads are one byte stream, framed by the parser (LF,
  continuation lines, octet counting). An offset restarting at 0 is a new
  connection (``nvsiem capture --keep-open``, or dumps joined with cat).
- ``udp``: each read is one datagram, one frame. Reads whose size is a
  multiple of 16 bytes look merged in nc's format; they are split again at
  record starts (``nvparser.split_records``, a heuristic).
- ``auto``: looks at the first reads (at most 256 or 4 MiB). A read that
  starts inside a record, or offsets restarting at 0 (a new connection),
  mean a stream: ``tcp``. Reads that each hold one whole record but end
  without LF mean datagrams: ``udp`` (NeuVector ends
  every frame with LF; a relay or nc's truncation did not). So does a
  syslog header right after a byte that is not LF, at a multiple of 16
  bytes into a read: datagrams the dump ran together (one nc cut at 8192
  bytes, say). If every read held whole LF-terminated frames both read the
  same, and ``tcp`` is used.

Lines nc *sent* (``>``) are not syslog and are only counted. Lines of the
dump that are not nc's, or that leave a hole, become dead letters (the line
and why); a frame the hole cut short is dead-lettered too, never passed off
as a record.
"""
from itertools import chain
from typing import Iterable, Iterator, List, NamedTuple

from nvparser import MAX_FRAME, DeadLetter, HexChunk, HexDumpDecoder, Parser, Record, is_record_start, split_records

TRANSPORTS = ("auto", "tcp", "udp")
# nc.traditional reads into an 8192-byte buffer: a longer UDP datagram loses the rest.
NC_READ_SIZE = 8192
_SAMPLE_READS = 256
_SAMPLE_BYTES = 4 << 20
_SAMPLE_ITEMS = 4096  # reads and bad lines: a dump of nothing but bad lines stops the look too
_MAX_PENDING = 1 << 20  # a datagram merged across max_chunk cuts never grows past this


class Unit(NamedTuple):
    """What one step of a replay received and what it parsed to.

    ``data``: the bytes to re-send, one datagram (udp) or the next bytes of
    the stream (tcp), empty when only events came out; ``events``: parser
    events and dead letters; ``new_stream``: a new TCP connection starts here;
    ``offset``: where ``data`` starts in its connection's byte stream (the
    events' offsets count the same way).
    """

    data: bytes
    events: List
    new_stream: bool = False
    offset: int = 0


class CaptureReader:
    """Reads a dump given as byte chunks; ``units()`` yields :class:`Unit`."""

    def __init__(self, transport: str = "auto", max_frame: int = MAX_FRAME):
        if transport not in TRANSPORTS:
            raise ValueError("transport must be one of %s" % ", ".join(TRANSPORTS))
        self.transport = transport
        self.why = "given" if transport != "auto" else ""
        self.max_frame = max_frame
        self.sent_bytes = 0  # '>' lines: what nc sent, not replayed
        self._received = 0  # '<' bytes so far: offsets of dump-error dead letters

    def units(self, dump: Iterable[bytes]) -> Iterator[Unit]:
        items = self._decoded(dump)
        if self.transport == "auto":
            sample, reads, size = [], [], 0
            for item in items:
                sample.append(item)
                if isinstance(item, HexChunk):
                    reads.append(item)
                    size += len(item.data)
                if len(reads) >= _SAMPLE_READS or size >= _SAMPLE_BYTES or len(sample) >= _SAMPLE_ITEMS:
                    break
            self.transport, self.why = _detect(reads)
            items = chain(sample, items)
        if self.transport == "udp":
            return self._datagrams(items)
        return self._stream(items)

    def _decoded(self, dump: Iterable[bytes]):
        """Received chunks and dump errors (as dead letters), in dump order."""
        decoder = HexDumpDecoder()
        for data in dump:
            yield from self._received_only(decoder.feed(data))
        yield from self._received_only(decoder.close())

    def _received_only(self, events):
        for event in events:
            if isinstance(event, HexChunk):
                if event.direction == "<":
                    self._received += len(event.data)
                    yield event
                else:
                    self.sent_bytes += len(event.data)
            else:
                yield DeadLetter(event.raw, "hex dump line %d: %s" % (event.line, event.reason), self._received)

    def _stream(self, items) -> Iterator[Unit]:
        parser, started, ended_with_lf = Parser(max_frame=self.max_frame), False, True
        base = 0  # stream offset where the current parser's bytes start (after a hole: past it)
        after_hole = headless = False  # headless: the next frame begins inside a hole
        for item in items:
            if isinstance(item, DeadLetter):
                yield Unit(b"", _shifted(_close(parser, ended_with_lf, _CUT_BY_HOLE), base) + [item])
                parser, ended_with_lf, after_hole = Parser(max_frame=self.max_frame), True, True
                continue
            new_stream = started and item.offset == 0
            if new_stream:
                yield Unit(b"", _shifted(_close(parser, ended_with_lf,
                                                "frame cut short: its connection ended before its LF"), base))
                parser, headless, base = Parser(max_frame=self.max_frame), False, 0
            if after_hole:
                after_hole, headless, base = False, not is_record_start(item.data), item.offset
            started, ended_with_lf = True, item.data.endswith(b"\n")
            events = _shifted(parser.feed(item.data), base)
            if headless and events:
                events[:1] = _cut(events[:1], _BEGINS_IN_HOLE)
                headless = False
            yield Unit(item.data, events, new_stream, item.offset)
        yield Unit(b"", _shifted(_close(parser, ended_with_lf, "frame cut short: the capture ends before its LF"), base))

    def _datagrams(self, items) -> Iterator[Unit]:
        parser = Parser(max_frame=self.max_frame)
        pending = b""  # a read cut at max_chunk: the rest follows
        headless = False
        for item in items:
            if isinstance(item, DeadLetter):
                if pending:
                    yield Unit(b"", [DeadLetter(pending, _CUT_BY_HOLE, item.offset)])
                    pending = b""
                yield Unit(b"", [item])
                headless = True
                continue
            pieces = split_records(pending + item.data)
            pending = pieces.pop() if item.continued and len(pieces[-1]) < _MAX_PENDING else b""
            for piece in pieces:
                events = _datagram(parser, piece)
                if headless and not is_record_start(piece):
                    events = _cut(events, _BEGINS_IN_HOLE)
                headless = False
                yield Unit(piece, events)
        if pending:
            yield Unit(pending, _datagram(parser, pending))


_CUT_BY_HOLE = "frame cut short by a hole in the capture"
_BEGINS_IN_HOLE = "frame begins in a hole in the capture: its start is missing"


def _datagram(parser: Parser, datagram: bytes) -> List:
    events = parser.feed_datagram(datagram)
    if len(datagram) == NC_READ_SIZE and not datagram.endswith(b"\n"):
        return _cut(events, "datagram of exactly %d bytes without its LF: nc.traditional reads UDP into an"
                    " %d-byte buffer and drops the rest of a longer datagram (nvsiem capture keeps it whole)"
                    % (NC_READ_SIZE, NC_READ_SIZE))
    return events


def _shifted(events: List, base: int) -> List:
    """Events of a parser that started ``base`` bytes into the stream, with stream offsets."""
    if base:
        return [e._replace(offset=e.offset + base) for e in events]
    return events


def _close(parser: Parser, ended_with_lf: bool, reason: str) -> List:
    """End a stream; if its last bytes were not a whole frame, that frame is cut."""
    events = parser.close()
    if events and not ended_with_lf:
        events[-1:] = _cut(events[-1:], reason)
    return events


def _detect(reads: List[HexChunk]):
    if not reads:
        return "tcp", "nothing to detect: no line of data nc received; for syslog itself, use nvsiem parse"
    if any(not is_record_start(r.data) for r in reads):
        return "tcp", "detected: a read starts inside a record"
    if any(r.offset == 0 for r in reads[1:]):
        return "tcp", "detected: the offsets restart at 0, a new connection"
    if any(not r.data.endswith(b"\n") for r in reads[:-1]):
        return "udp", "detected: reads hold one record each, not all ending with LF"
    if any(_runs_datagrams_together(r.data) for r in reads):
        return "udp", ("detected: a syslog header follows a frame without its LF where nc's dump hides "
                       "datagram boundaries (a multiple of 16 bytes into a read)")
    return "tcp", "detected: every read held whole LF-terminated frames, which TCP and UDP read alike"


def _runs_datagrams_together(data: bytes) -> bool:
    """A ``<PRI>`` record start right after a byte that is not LF, at a multiple of 16 bytes into ``data``.

    NeuVector ends every frame with LF, so in a stream a header always
    follows an LF; nc's dump shows no boundary after a datagram whose size
    is a multiple of 16 (one nc cut at 8192 bytes, say).
    """
    position = data.find(b"<", 16)
    while position > 0:
        if position % 16 == 0 and data[position - 1] != 0x0A and is_record_start(data[position:position + 64]):
            return True
        position = data.find(b"<", position + 1)
    return False


def _cut(events: List, reason: str) -> List:
    """Frames that did not end as NeuVector ends frames -> dead letters saying why."""
    return [DeadLetter(e.raw, reason, e.offset) if isinstance(e, (Record, DeadLetter)) else e for e in events]


def events_from_hexdump(dump: Iterable[bytes], max_frame: int = MAX_FRAME,
                        transport: str = "auto") -> Iterator[List]:
    """Parser events of a dump, a list per step (what ``nvsiem parse`` reads)."""
    for unit in CaptureReader(transport, max_frame).units(dump):
        yield unit.events
