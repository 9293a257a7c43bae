"""Stream bytes -> frames.

NeuVector ends every frame with LF on UDP, TCP and TLS alike. A relay may
re-frame with RFC 6587 octet counting (``LEN SP <PRI>…``), detected frame by
frame. In text mode a value can hold a raw LF, so a frame may span several
physical lines: a line that does not start a new record (``<PRI>``, a
timestamp, a bare body: ``schema.RECORD_START``; not any ``<``) is rejoined
onto the one before it, unless that frame's body is JSON: JSON mode escapes
every LF, so such a line is a frame of its own. The framer therefore holds
the last line until the next one shows whether it continues; ``flush``
releases it after an idle period.

A frame is ``(raw, offset, reason)``: ``reason`` is None for a frame to
decode, or why its bytes are dead letters (too long). ``raw`` is the exact
bytes between separators, so frames plus one LF each add up to the input;
an octet-counted frame's ``raw`` starts with its ``LEN SP`` (the decoder
reads the header after it).
"""
import re
from typing import List, Optional, Tuple

from .schema import RECORD_START

Frame = Tuple[bytes, int, Optional[str]]

# RFC 6587 octet counting: "LEN SP" before a message that opens with "<" (its PRI).
OCTET_COUNT = re.compile(rb"([1-9]\d{0,5}) (?=<)")
_PRI_START = re.compile(rb"<\d{1,3}>")  # what RECORD_START takes of a line opening with "<"
_CRI_PREFIX = re.compile(rb"\d{4}-\d\d-\d\dT\S+ (?:stdout|stderr) ([FP]) ")
_DIGITS = frozenset(b"123456789")
_DIGIT_BYTES = frozenset(bytes([d]) for d in _DIGITS)


def starts_record(line: bytes) -> bool:
    # Not any "<": a value's next line can open with one (a here-doc's "<?xml").
    cri = _CRI_PREFIX.match(line)
    if cri is not None:
        # A CRI runtime prefixes every line, continuation lines too: look past it.
        rest = line[cri.end():]
        return not rest or RECORD_START.match(rest) is not None
    return RECORD_START.match(line) is not None


def _cri_partial(line: bytes) -> bool:
    cri = _CRI_PREFIX.match(line)
    return cri is not None and cri.group(1) == b"P"


def _json_body(first_line: bytes) -> bool:
    """Whether a frame with this first line has a JSON-mode body.

    JSON mode escapes every LF, so nothing is ever joined onto such a frame.
    The body starts at the first ``{"notification"`` or ``notification=``,
    as the header reader finds it; in a text-mode body a ``{"notification"``
    inside a value comes after its own ``notification=``.
    """
    json_at = first_line.find(b'{"notification"', 0, 2048)
    if json_at < 0:
        return False
    text_at = first_line.find(b"notification=", 0, json_at)
    return text_at < 0


#: The default bound on one frame, in bytes: a longer one is dead-lettered in pieces.
MAX_FRAME = 65536


class LineFramer:
    """Incremental LF / octet-counting framer with continuation rejoining."""

    def __init__(self, max_frame: int = MAX_FRAME, octet_counting: bool = True):
        self.max_frame = max_frame
        self.octet_counting = octet_counting
        self._buf = b""          # bytes not yet framed
        self._base = 0           # stream offset of _buf[0]
        self._lines: List[bytes] = []   # the held frame, line by line
        self._held_offset = 0
        self._held_size = 0
        self._blanks: List[Tuple[bytes, int]] = []  # blank lines after it
        self._oversize = 0       # bytes of an overlong line/frame still to dead-letter
        self._oversize_lf = False  # the overlong thing ends at LF (vs. a byte count)

    # -- public -----------------------------------------------------------
    def feed(self, data: bytes) -> List[Frame]:
        out: List[Frame] = []
        if self._buf:
            data = self._buf + data
        base = self._base
        pos = 0 if self._oversize or self._oversize_lf else self._plain_lines(data, base, out)
        n = len(data)
        while pos < n:
            if self._oversize_lf or self._oversize:
                pos = self._discard(data, pos, base, out)
                continue
            if self.octet_counting and data[pos] in _DIGITS:
                m = OCTET_COUNT.match(data, pos)
                if m:
                    size = int(m.group(1))
                    start = m.end()
                    if size > self.max_frame:
                        self._release(out)
                        self._oversize = start + size - pos
                        continue
                    if start + size > n:
                        break  # wait for the rest of the frame
                    self._release(out)
                    out.append((data[pos:start + size], base + pos, None))
                    pos = start + size
                    continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            self._line(data[pos:nl], base + pos, out)
            pos = nl + 1
        rest = data[pos:]
        if len(rest) > self.max_frame + 16:  # room for an octet count's header
            self._release(out)
            out.append((rest, base + pos, "line longer than max_frame (%d bytes) without a line end" % self.max_frame))
            pos, rest = n, b""
            self._oversize_lf = True
        self._buf = rest
        self._base = base + pos
        return out

    def flush(self) -> List[Frame]:
        """Release the held frame: no continuation line came in time."""
        out: List[Frame] = []
        self._release(out)
        return out

    def close(self) -> List[Frame]:
        """End of stream: an unterminated last line is a frame of its own."""
        out: List[Frame] = []
        if self._buf:
            if self._oversize_lf or self._oversize:
                out.append((self._buf, self._base, "end of a frame longer than max_frame (%d bytes)" % self.max_frame))
            else:
                self._line(self._buf, self._base, out)
        self._release(out)
        self._base += len(self._buf)
        self._buf = b""
        self._oversize = 0
        self._oversize_lf = False
        return out

    # -- internals --------------------------------------------------------
    def _plain_lines(self, data: bytes, base: int, out: List[Frame]) -> int:
        """Frame the complete lines of ``data`` with one split; return where it stopped.

        The common case, a line that starts with ``<PRI>`` after a one-line
        frame, is handled inline; a line that may be an octet count hands the
        rest to the byte loop.
        """
        if b"\n" not in data:
            return 0
        lines = data.split(b"\n")  # not data[:end].split: that copies the whole chunk first
        lines.pop()  # the unterminated rest, left to the byte loop
        pos = 0
        max_frame = self.max_frame
        octet_counting = self.octet_counting
        pri_start = _PRI_START.match
        append = out.append
        held = self._lines
        # The usual step needs one held line that is a whole frame (a CRI partial line, which
        # the next one continues, starts with a digit) and no blank line after it. The step
        # keeps that true, so it is checked again only after _line; meanwhile the held
        # line's offset lives in a local.
        plain = len(held) == 1 and not self._blanks and held[0][:1] == b"<"
        offset = self._held_offset
        for line in lines:
            if plain and line[:1] == b"<" and len(line) <= max_frame and pri_start(line) is not None:
                append((held[0], offset, None))
                held[0] = line
                offset = base + pos
            else:
                if plain:
                    self._held_offset, self._held_size = offset, len(held[0])
                if octet_counting and line[:1] in _DIGIT_BYTES and OCTET_COUNT.match(line):
                    return pos
                self._line(line, base + pos, out)
                held = self._lines
                plain = len(held) == 1 and not self._blanks and held[0][:1] == b"<"
                offset = self._held_offset
            pos += len(line) + 1
        if plain:
            self._held_offset, self._held_size = offset, len(held[0])
        return pos

    def _line(self, line: bytes, offset: int, out: List[Frame]) -> None:
        if len(line) > self.max_frame:
            self._release(out)
            out.append((line, offset, "line longer than max_frame (%d bytes)" % self.max_frame))
            return
        if not line or line == b"\r":
            if not self._lines or _json_body(self._lines[0]) and not _cri_partial(self._lines[-1]):
                self._release(out)  # nothing is joined onto a JSON-mode frame: a frame of its own
                out.append((line, offset, None))
                return
            self._blanks.append((line, offset))  # blank, or part of a multi-line value: next line tells
            self._held_size += len(line) + 1  # counted now: a flood of them must not grow without end
            if self._held_size > self.max_frame:
                # No record within max_frame goes on past this many blank lines (keep-alive LFs,
                # say): the held frame ends here, and each blank line is a frame of its own.
                self._release(out)
            return
        if self._lines and (_cri_partial(self._lines[-1])
                            or not starts_record(line) and not _json_body(self._lines[0])):
            for blank, _ in self._blanks:
                self._lines.append(blank)
            self._blanks = []
            self._lines.append(line)
            self._held_size += len(line) + 1
            if self._held_size > self.max_frame:
                out.append((b"\n".join(self._lines), self._held_offset,
                            "record longer than max_frame (%d bytes) across lines" % self.max_frame))
                self._lines = []
            return
        self._release(out)
        self._lines = [line]
        self._held_offset = offset
        self._held_size = len(line)

    def _release(self, out: List[Frame]) -> None:
        if self._lines:
            out.append((b"\n".join(self._lines), self._held_offset, None))
            self._lines = []
        for blank, offset in self._blanks:
            out.append((blank, offset, None))
        self._blanks = []

    def _discard(self, data: bytes, pos: int, base: int, out: List[Frame]) -> int:
        """Dead-letter the rest of an overlong frame as it streams past."""
        if self._oversize:
            end = min(len(data), pos + self._oversize)
            self._oversize -= end - pos
            after = end
        else:
            nl = data.find(b"\n", pos)
            if nl < 0:
                end = after = len(data)
            else:
                end, after = nl, nl + 1
                self._oversize_lf = False
        if end > pos:
            out.append((data[pos:end], base + pos, "rest of a frame longer than max_frame (%d bytes)" % self.max_frame))
        return after
