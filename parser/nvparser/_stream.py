"""The parser a caller drives: bytes in, events out."""
from typing import List

from ._decode import parse_declined, parse_frame
from ._events import DeadLetter
from ._fast import fast_record
from ._framing import MAX_FRAME, LineFramer

FRAMINGS = ("auto", "lf", "octet-counting")


class Parser:
    """Sans-I/O NeuVector parser for one byte stream or one datagram source.

    ``framing``: ``auto`` (LF frames, RFC 6587 octet counting detected frame
    by frame), ``lf`` (never octet counting: a line that starts with digits
    and a space is still a line). ``max_frame`` bounds memory: a longer
    frame is dead-lettered in pieces as it streams past, never buffered.
    """

    def __init__(self, framing: str = "auto", max_frame: int = MAX_FRAME):
        if framing not in FRAMINGS:
            raise ValueError("framing must be one of %s, not %r" % (", ".join(FRAMINGS), framing))
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._framer = LineFramer(max_frame, octet_counting=framing != "lf")
        self._datagram_offset = 0

    def feed(self, data: bytes) -> List:
        """Stream bytes (TCP, TLS, a file): events for every frame completed so far.

        The last complete line is held until the next one shows whether it
        continues it; call ``flush`` when the stream goes idle.
        """
        return _decode_all(self._framer.feed(_as_bytes(data)))

    def feed_datagram(self, data: bytes) -> List:
        """One UDP datagram: one frame (its trailing LF removed)."""
        data = _as_bytes(data)
        offset = self._datagram_offset
        self._datagram_offset += len(data)
        raw = data[:-1] if data[-1:] == b"\n" else data
        if len(raw) > self.max_frame:
            return [DeadLetter(raw, "datagram longer than max_frame (%d bytes)" % self.max_frame, offset)]
        return [parse_frame(raw, offset)]

    def flush(self) -> List:
        """Release the held last frame (the stream has been idle)."""
        return _decode_all(self._framer.flush())

    def close(self) -> List:
        """End of stream: everything still buffered, as events."""
        return _decode_all(self._framer.close())


def _as_bytes(data) -> bytes:
    """Bytes as given; a bytearray or memoryview (a socket's recv_into buffer) copied to bytes."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        raise TypeError("the parser takes bytes, not str: encode it, or read the file in binary mode")
    return bytes(data)


def _decode_all(frames) -> List:
    try:
        # fast_record takes nearly every frame NeuVector sends; the general path the rest.
        return [(fast_record(raw, offset) or parse_declined(raw, offset)) if reason is None
                else DeadLetter(raw, reason, offset)
                for raw, offset, reason in frames]
    except Exception:  # noqa: BLE001 - parse_frame guards each frame on its own
        return [parse_frame(raw, offset) if reason is None else DeadLetter(raw, reason, offset)
                for raw, offset, reason in frames]
