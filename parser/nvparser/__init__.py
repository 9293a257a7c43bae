"""nvparser: NeuVector syslog, captures, pod logs and webhooks -> typed records.

Sans-I/O and standard-library only: it takes bytes and gives events; it
never opens a socket or a file.

    from nvparser import Parser, Record, DeadLetter, Skipped

    p = Parser()                      # framing="auto", max_frame=MAX_FRAME (64 KiB)
    for event in p.feed(chunk):       # stream bytes (TCP, TLS, files)
        ...
    for event in p.feed_datagram(d):  # one UDP datagram
        ...
    for event in p.close():           # end of stream: flush what is pending
        ...

Each event is a Record (``.data`` is the typed record), a DeadLetter (raw
bytes plus a reason a person can act on) or a Skipped (a blank line or a
controller log line). ``parse_frame`` decodes one frame, ``json_record`` an already decoded JSON body, ``parse_webhook``
one webhook body; ``schema`` describes NeuVector's records; ``event_time``
tells when a record's event happened. ``HexDumpDecoder`` reads
netcat-traditional's ``-o`` hex dumps and ``format_hexdump`` writes them.
"""
from . import schema
from ._codec import json_dumps, json_lists, json_loads
from ._decode import json_record, parse_frame
from ._events import DeadLetter, Record, Skipped, event_time
from ._framing import MAX_FRAME
from ._hexdump import (HexChunk, HexDumpDecoder, HexDumpError, format_hexdump, is_record_start, read_hexdump,
                       split_records)
from ._stream import Parser
from ._webhook import parse_webhook

__all__ = [
    "Parser", "Record", "DeadLetter", "Skipped", "parse_frame", "json_record", "parse_webhook",
    "schema", "json_dumps", "json_lists", "json_loads", "event_time",
    "HexChunk", "HexDumpDecoder", "HexDumpError", "format_hexdump", "is_record_start", "read_hexdump",
    "split_records", "MAX_FRAME",
]
