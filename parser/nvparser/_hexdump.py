"""netcat-traditional's ``-o`` hex dump: decode it, and write it byte for byte.

NeuVector's docs capture syslog with ``nc -l -p 8514 -o syslog-dump.hex``.
netcat-traditional (1.10, ``oprint()``) writes one group of lines per
read()/write() it logged, 16 bytes a line, in fixed columns::

    < 00000000 3c 31 33 34 3e 31 20 68 65 6c 6c 6f 0a          # <134>1 hello.
    D OFFSET   HEX (16 x "xx ", 48 columns)                     # ASCII

- ``D`` is ``<`` for bytes received from the network (and copied to stdout)
  and ``>`` for bytes sent to it; ``OFFSET`` counts bytes per direction, in
  8 lowercase hex digits (an unsigned 32-bit counter: it wraps at 4 GiB).
- The last line of a group may be short: its hex column is padded with
  spaces to column 59, and its ascii column is as long as its data.
- The ascii column shows bytes 32..126 as themselves and every other byte
  as ``.``.

What the format cannot tell: a group boundary is only visible where a line
is short, the direction changes or the offset restarts, so two reads whose
first has a multiple of 16 bytes look like one.  The decoder therefore gives
a :class:`HexChunk` per *visible* group: exactly one read (one UDP datagram)
unless a read had a multiple of 16 bytes, in which case it is merged with the
reads that follow it.  :func:`split_records` undoes such merges for syslog.

Sans-I/O and standard library only.
"""
import re
from typing import Iterable, Iterator, List, NamedTuple, Union

from ._framing import MAX_FRAME

LINE_BYTES = 16
_HEX_END = 59  # column of the '#' separator
_ASCII_START = 61
_MIN_LINE = _ASCII_START + 1  # without the LF: one data byte
_MAX_LINE = _ASCII_START + LINE_BYTES
_OFFSET_MOD = 1 << 32
# A line longer than this cannot be nc's: stop buffering it (bounded memory).
_MAX_RAW_LINE = 4096

# bytes.translate table rendering a byte the way nc's ascii column does.
_ASCII_COLUMN = bytes(b if 32 <= b < 127 else 0x2E for b in range(256))
_LINE_START = re.compile(rb"([<>]) ([0-9a-f]{8}) ")
# A well-formed line in one match: the fast path of _parse_line.
_LINE = re.compile(rb"([<>]) ([0-9a-f]{8}) ((?:[0-9a-f]{2} ){1,16})( *)# ([ -~]{1,16})")


class HexChunk(NamedTuple):
    """Consecutive dump lines of one direction with no visible boundary.

    ``direction`` is ``"<"`` (received by nc) or ``">"`` (sent by nc);
    ``offset`` is the position of ``data[0]`` in that direction's byte
    stream; ``line`` is the dump line number (1-based) where it starts.
    ``continued`` is True when the chunk was cut at ``max_chunk`` bytes and
    the next chunk of the same direction carries on without a boundary.
    """

    direction: str
    offset: int
    data: bytes
    line: int = 0
    continued: bool = False


class HexDumpError(NamedTuple):
    """A dump line that is not nc's format, or whose offset does not follow.

    ``raw`` is the line as read (without its LF).  A line rejected for its
    form contributes no data; a well-formed line whose offset jumps is
    reported here *and* its bytes start a new chunk, so nothing is dropped.
    """

    line: int
    reason: str
    raw: bytes


Event = Union[HexChunk, HexDumpError]


def format_hexdump(direction: str, offset: int, data: bytes) -> str:
    """The lines nc.traditional writes for one read (``<``) or write (``>``)."""
    if direction not in ("<", ">"):
        raise ValueError("direction must be '<' or '>'")
    lines = []
    for start in range(0, len(data), LINE_BYTES):
        part = data[start:start + LINE_BYTES]
        lines.append("%s %08x %-48s# %s\n" % (
            direction, (offset + start) % _OFFSET_MOD, part.hex(" "),
            part.translate(_ASCII_COLUMN).decode("ascii")))
    return "".join(lines)


class HexDumpDecoder:
    """Incremental decoder: ``feed(bytes)`` and ``close()`` give events.

    Events come in dump order: :class:`HexChunk` for data and
    :class:`HexDumpError` for lines that are not nc's or do not follow on.
    No input raises; every line ends up in a chunk, an error, or both (an
    offset jump).  Memory is bounded by ``max_chunk`` plus one line.

    An offset that restarts at 0 starts a new stream without an error: that
    is what two dumps joined with ``cat`` or ``nvsiem capture --keep-open``
    look like.  A CR before the LF is tolerated (a dump saved on Windows).
    """

    def __init__(self, max_chunk: int = MAX_FRAME):
        if max_chunk < LINE_BYTES:
            raise ValueError("max_chunk must be at least %d" % LINE_BYTES)
        self._max_chunk = max_chunk
        self._buffer = b""
        self._discarding = False  # inside an over-long line, up to its LF
        self._line_no = 0
        # Per direction: the offset the next line must have (None = unknown).
        self._expected = {"<": None, ">": None}
        # The chunk being built: direction, offset, first line, parts, size.
        self._open_direction = None
        self._open_offset = self._open_line = self._open_size = 0
        self._open_parts: List[bytes] = []

    def feed(self, data: bytes) -> List[Event]:
        events: List[Event] = []
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if self._discarding:
                self._discarding = False
                continue
            self._line(line, events)
        rest = buffer[start:]
        if len(rest) > _MAX_RAW_LINE and not self._discarding:
            self._line_no += 1
            self._end_chunk(events)
            events.append(HexDumpError(self._line_no, "line longer than %d bytes: not an nc hex dump"
                                       % _MAX_RAW_LINE, rest[:_MAX_RAW_LINE]))
            self._discarding = True
        self._buffer = b"" if self._discarding else rest
        return events

    def close(self) -> List[Event]:
        """End of input: a last line without LF is decoded, the open chunk given."""
        events: List[Event] = []
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = b""
        self._discarding = False
        self._end_chunk(events)
        return events

    def _line(self, line: bytes, events: List[Event]) -> None:
        self._line_no += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        parsed = _parse_line(line)
        if isinstance(parsed, str):
            self._end_chunk(events)
            events.append(HexDumpError(self._line_no, parsed, line))
            # Its bytes are reported lost here: don't report them again as a
            # gap at the next line of its direction (of both, if unreadable).
            for direction in (line[:1].decode("latin-1"),) if line[:1] in (b"<", b">") else "<>":
                self._expected[direction] = None
            return
        direction, offset, data = parsed
        expected = self._expected[direction]
        if expected is not None and offset != expected % _OFFSET_MOD:
            self._end_chunk(events)
            if offset != 0:
                events.append(HexDumpError(self._line_no, _gap_reason(expected % _OFFSET_MOD, offset), line))
            expected = None
        if expected is None:
            expected = offset
        self._expected[direction] = expected + len(data)
        self._append(direction, expected, data, events)

    def _append(self, direction: str, offset: int, data: bytes, events: List[Event]) -> None:
        if self._open_direction != direction:
            self._end_chunk(events)
            self._open_direction, self._open_offset, self._open_line = direction, offset, self._line_no
        self._open_parts.append(data)
        self._open_size += len(data)
        if len(data) < LINE_BYTES:
            self._end_chunk(events)
        elif self._open_size >= self._max_chunk:
            self._end_chunk(events, continued=True)

    def _end_chunk(self, events: List[Event], continued: bool = False) -> None:
        if self._open_direction is not None:
            events.append(HexChunk(self._open_direction, self._open_offset,
                                   b"".join(self._open_parts), self._open_line, continued))
            self._open_direction = None
            self._open_parts = []
            self._open_size = 0


def _gap_reason(expected: int, offset: int) -> str:
    if offset > expected:
        return "offset jumps from %08x to %08x: %d bytes missing" % (expected, offset, offset - expected)
    return "offset goes back from %08x to %08x" % (expected, offset)


def _parse_line(line: bytes):
    """(direction, offset, data) for one of nc's lines, else the reason it is not."""
    match = _LINE.fullmatch(line)
    if match is not None:
        hex_part, ascii_part = match.group(3), match.group(5)
        if len(hex_part) == 3 * len(ascii_part) and len(hex_part) + len(match.group(4)) == 48:
            data = bytes.fromhex(hex_part.decode("ascii"))
            if data.translate(_ASCII_COLUMN) == ascii_part:
                return match.group(1).decode("ascii"), int(match.group(2), 16), data
    return _parse_line_slowly(line)


def _parse_line_slowly(line: bytes):
    """_parse_line column by column, to say what is wrong with a line."""
    if not _MIN_LINE <= len(line) <= _MAX_LINE:
        return "not an nc hex dump line: %d characters, expected %d to %d" % (
            len(line), _MIN_LINE, _MAX_LINE)
    head = _LINE_START.match(line)
    if head is None:
        return "not an nc hex dump line: expected '< ' or '> ', 8 lowercase hex digits and a space"
    if line[_HEX_END:_ASCII_START] != b"# ":
        return "not an nc hex dump line: no '# ' at column %d" % (_HEX_END + 1)
    count = len(line) - _ASCII_START
    hex_part = line[11:11 + 3 * count]
    try:
        data = bytes.fromhex(hex_part.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        data = b""
    if (len(data) != count or hex_part[2::3] != b" " * count
            or hex_part.lower() != hex_part):
        return "hex column does not hold the %d bytes the ascii column shows" % count
    if line[11 + 3 * count:_HEX_END].strip(b" "):
        return "hex column has more bytes than the ascii column shows"
    if data.translate(_ASCII_COLUMN) != line[_ASCII_START:]:
        return "ascii column does not match the hex bytes"
    return head.group(1).decode(), int(head.group(2), 16), data


def read_hexdump(source: Iterable[bytes], max_chunk: int = MAX_FRAME) -> Iterator[Event]:
    """Decode a dump from an iterable of bytes (a file opened ``"rb"``, chunks).

    Streams: memory stays bounded whatever the size of the dump.
    """
    decoder = HexDumpDecoder(max_chunk)
    for data in source:
        yield from decoder.feed(data)
    yield from decoder.close()


# Where a NeuVector record starts: a syslog header (RFC 5424 "<PRI>1 " +
# timestamp, "<PRI>" + an RFC 3339 or RFC 3164 timestamp, or a receiver's
# rewrite without PRI: "TIMESTAMP HOST APP PID MSGID - "), or the body itself
# when a relay stripped the header.
_TYPES = rb"(?:violation|threat|incident|event|activity|audit)"
_RECORD_START = re.compile(
    rb"<\d{1,3}>(?:1 )?(?:\d{4}-\d\d-\d\dT|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )"
    rb"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) \S+ \S+ \d+ \S+ - "
    rb"|\{\"notification\": ?\"" + _TYPES + rb"\""
    rb"|notification=" + _TYPES + rb","
)


def is_record_start(data: bytes) -> bool:
    """Whether ``data`` begins the way a NeuVector record does (see split_records)."""
    return _RECORD_START.match(data) is not None


def split_records(data: bytes) -> List[bytes]:
    """Split bytes holding several NeuVector records at the record starts.

    A heuristic for UDP captures where datagrams got merged: nc's dump hides
    the boundary after a datagram of a multiple of 16 bytes, and a relay
    that forwards datagrams without their trailing LF makes them run
    together.  A record starts at ``<PRI>1 `` + timestamp, ``<PRI>`` +
    timestamp, ``TIMESTAMP HOST APP PID MSGID - `` (a header rewritten
    without PRI), ``{"notification": "<type>"`` or ``notification=<type>,``;
    the first body start on a header's own line belongs to that header.  It
    splits wrongly if a value (a text-mode ``rest_body``, say) holds such a
    start; JSON mode cannot, as it escapes quotes inside strings.  Bytes
    before the first start stay a piece of their own.
    """
    pieces, previous = [], 0
    header_awaits_body = False  # the current piece began with a header, no body yet
    for match in _RECORD_START.finditer(data):
        position = match.start()
        is_body = data[position] in b"{n"
        if is_body and header_awaits_body and b"\n" not in data[previous:position]:
            header_awaits_body = False
            continue
        header_awaits_body = not is_body
        if position != previous:
            pieces.append(data[previous:position])
            previous = position
    pieces.append(data[previous:])
    return pieces if data else []
