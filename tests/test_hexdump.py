"""netcat-traditional's -o hex dump: decoder and encoder against real nc captures.

The reference for the format is nc.traditional itself: each test makes a
capture on 127.0.0.1 with known bytes and checks the decoder gives those
bytes back and the encoder writes the very same file.
"""
import os

from hypothesis import given, settings, strategies as st

from helpers.nc_capture import nc_capture, needs_nc, nc_listener
from nvparser._hexdump import (HexChunk, HexDumpDecoder, HexDumpError, format_hexdump,
                               read_hexdump, split_records)

# Lengths chosen so that every read ends on a short line (a visible boundary):
# 1 byte, 15, 17, 255, a 20000-byte read that nc takes in 8192-byte pieces.
TCP_SENDS = [b"<134>1 hello\n", bytes(range(256))[:-1], b"x" * 15, b"y" * 17, b"\x00\x7f\x80\xff", b"z"]


def decode(text: bytes, pieces: int = 1, **kwargs):
    size = max(1, len(text) // pieces)
    return list(read_hexdump((text[i:i + size] for i in range(0, len(text), size)), **kwargs))


def chunks_of(events, direction="<"):
    return [e for e in events if isinstance(e, HexChunk) and e.direction == direction]


def errors_of(events):
    return [e for e in events if isinstance(e, HexDumpError)]


@needs_nc
def test_tcp_capture_decodes_to_each_read_and_reencodes_byte_for_byte(tmp_path):
    dump = tmp_path / "tcp.hex"
    reply = b"hello from the listener\nsecond line\n"  # 36 bytes nc sends: '>' lines
    (tmp_path / "stdin").write_bytes(reply)
    with open(tmp_path / "stdin", "rb") as stdin:
        nc = nc_listener(dump, stdin=stdin)
    got = b""
    while len(got) < len(reply):
        got += nc.sock.recv(4096)
    assert got == reply
    nc.logged(len(reply))
    for data in TCP_SENDS:
        nc.send(data)
    big = bytes(i % 251 for i in range(20000))
    nc.sock.sendall(big)
    text = nc.stop()
    assert text.startswith(b"> 00000000 68 65 6c 6c 6f 20 66 72 6f 6d 20 74 68 65 20 6c # hello from the l\n")

    events = decode(text, pieces=7)
    assert errors_of(events) == []
    sent = [(c.offset, c.data) for c in chunks_of(events, ">")]
    assert sent == [(0, reply)]
    received = chunks_of(events)
    offsets = [sum(map(len, TCP_SENDS[:i])) for i in range(len(TCP_SENDS))]
    assert [(c.offset, c.data) for c in received[:len(TCP_SENDS)]] == list(zip(offsets, TCP_SENDS))
    # The big send arrives in reads whose size the kernel chose: the bytes and
    # their offsets are exact whatever the split.
    rest = received[len(TCP_SENDS):]
    assert b"".join(c.data for c in rest) == big
    assert rest[0].offset == sum(map(len, TCP_SENDS))
    assert all(a.offset + len(a.data) == b.offset for a, b in zip(rest, rest[1:]))
    assert all(len(c.data) <= 65536 for c in rest)

    # Encoding the decoded reads gives nc's file back, byte for byte.
    assert "".join(format_hexdump(c.direction, c.offset, c.data) for c in events).encode() == text


@needs_nc
def test_udp_capture_keeps_datagrams_and_shows_nc_truncating_at_8192(tmp_path):
    dump = tmp_path / "udp.hex"
    nc = nc_listener(dump, udp=True)
    datagrams = [b"<134>1 2025-03-14T09:26:47Z a - notification=event,name=A\n",
                 b"{\"notification\": \"audit\", \"x\": 1}\n", b"\n", b"q" * 8191]
    for datagram in datagrams:
        nc.send(datagram)
    nc.send(b"L" * 10000, logged=8192)  # nc reads UDP into an 8192-byte buffer
    nc.send(b"after\n")
    text = nc.stop()

    events = decode(text)
    assert errors_of(events) == []
    assert [c.data for c in chunks_of(events)] == datagrams + [b"L" * 8192 + b"after\n"]
    assert "".join(format_hexdump(c.direction, c.offset, c.data) for c in events).encode() == text


@needs_nc
def test_udp_datagrams_of_16_bytes_merge_and_split_records_recovers_them(tmp_path):
    # 32-byte and 48-byte frames fill whole lines: nc's dump cannot show where they end.
    frames = [b"<132>1 2025-03-14T09:26:47Z h\n" + b"x",
              b"<133>1 2025-03-14T09:26:48Z h - notification=threat,\n",
              b"{\"notification\": \"event\", \"a\":1}\n"]
    frames = [frame.ljust(size, b" ") for frame, size in zip(frames, (32, 64, 48))]
    assert [len(f) % 16 for f in frames] == [0, 0, 0]
    text = nc_capture(tmp_path / "udp16.hex", frames + [b"<134>1 2025-03-14T09:26:49Z tail\n"], udp=True)
    (merged,) = chunks_of(decode(text))
    assert split_records(merged.data) == frames + [b"<134>1 2025-03-14T09:26:49Z tail\n"]


# nc's own lines (from the TCP capture above), to corrupt one way at a time.
GOOD = [
    b"< 00000000 3c 31 33 34 3e 31 20 68 65 6c 6c 6f 0a          # <134>1 hello.",
    b"< 0000000d 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f # ................",
    b"< 0000001d 10 11                                           # ..",
]


def test_each_kind_of_bad_line_is_reported_and_decoding_goes_on():
    bad_lines = {
        b"< 0000000d 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f # ...............x": "ascii column",
        b"< 0000000d 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0F # ................": "hex column",
        b"< 0000000d 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0g # ................": "hex column",
        b"< 0000000d 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e0f  # ................": "hex column",
        b"< 0000000d 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f | ................": "'# '",
        b"= 0000000d 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f # ................": "'< ' or '> '",
        b"< 0000000D 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f # ................": "8 lowercase hex",
        b"< 0000000d 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f # ................ extra": "characters",
        format_hexdump("<", 13, bytes(7)).encode()[:-2]: "more bytes",
        b"hello world": "characters",
        b"": "0 characters",
    }
    for bad, why in bad_lines.items():
        text = b"\n".join([GOOD[0], bad, GOOD[2]]) + b"\n"
        events = decode(text)
        (error,) = errors_of(events)
        assert (error.line, error.raw) == (2, bad), bad
        assert why in error.reason, (bad, error.reason)
        # The lines around it still decode; the lost line is reported once,
        # not again as a gap before the next line.
        assert [(c.offset, c.data, c.line) for c in chunks_of(events)] == [
            (0, b"<134>1 hello\n", 1), (0x1d, b"\x10\x11", 3)], bad


def test_offset_gap_is_reported_and_the_bytes_are_kept():
    text = b"\n".join([GOOD[0], GOOD[2]]) + b"\n"
    events = decode(text)
    assert events[0] == HexChunk("<", 0, b"<134>1 hello\n", 1)
    assert events[1] == HexDumpError(2, "offset jumps from 0000000d to 0000001d: 16 bytes missing", GOOD[2])
    assert events[2] == HexChunk("<", 0x1d, b"\x10\x11", 2)
    back = decode(b"\n".join([GOOD[0], GOOD[1], GOOD[0].replace(b"00000000", b"00000005")]) + b"\n")
    assert errors_of(back)[0].reason == "offset goes back from 0000001d to 00000005"


def test_offset_restarting_at_zero_is_a_new_stream_not_an_error():
    # Two dumps joined with cat, or nvsiem capture --keep-open.
    text = b"\n".join([GOOD[0], GOOD[0]]) + b"\n"
    assert decode(text) == [HexChunk("<", 0, b"<134>1 hello\n", 1), HexChunk("<", 0, b"<134>1 hello\n", 2)]


def test_crlf_missing_final_lf_and_overlong_lines():
    text = b"\r\n".join(GOOD)  # saved on Windows, and no LF after the last line
    assert errors_of(decode(text, pieces=5)) == []
    assert b"".join(c.data for c in chunks_of(decode(text))) == b"<134>1 hello\n" + bytes(range(16)) + b"\x10\x11"
    decoder = HexDumpDecoder()
    events = decoder.feed(b"x" * 10000) + decoder.feed(b"y" * 10000) + decoder.feed(b"z\n" + GOOD[0] + b"\n")
    events += decoder.close()
    assert [type(e) for e in events] == [HexDumpError, HexChunk]
    assert events[0].line == 1 and "longer than" in events[0].reason and len(events[0].raw) <= 4096
    assert events[1].line == 2


def test_max_chunk_cuts_long_reads_and_marks_them_continued():
    data = bytes(range(256)) * 10
    events = decode(format_hexdump("<", 0, data).encode(), max_chunk=1024)
    assert [(c.offset, len(c.data), c.continued) for c in events] == [
        (0, 1024, True), (1024, 1024, True), (2048, 512, False)]
    assert b"".join(c.data for c in events) == data


def test_format_matches_ncs_layout():
    # Columns from netcat 1.10 oprint(): 'D OFFSET ' + 16 x 'xx ' + '# ' + ascii.
    assert format_hexdump(">", 0x1234abcd, b"\t~ \x7f") == \
        "> 1234abcd 09 7e 20 7f" + " " * 37 + "# .~ .\n"
    assert format_hexdump("<", 0, b"") == ""
    assert format_hexdump("<", 0xFFFFFFF8, b"A" * 17).splitlines()[1].startswith("< 00000008 41 ")


def test_split_records_keeps_header_and_body_together():
    text = b"<134>1 2025-03-14T09:26:47Z host /usr/local/bin/controller 13 neuvector - notification=event,name=A\n"
    json_ = b"<130>1 2025-03-14T12:01:45Z host /usr/local/bin/controller 13 neuvector - {\"notification\": \"threat\", \"a\":1}"
    bare = b"notification=audit,name=Registry.Scan.Report,message="
    legacy = b"2020-01-24T21:39:34Z neuvector-controller-pod-575f /usr/local/bin/controller 12 neuvector - notification=violation,x=1"
    rfc3164 = b"<134>Mar 14 09:26:47 host controller: notification=event,name=B"
    assert split_records(text + json_ + bare + legacy + rfc3164) == [text, json_, bare, legacy, rfc3164]
    assert split_records(b"junk" + text) == [b"junk", text]
    assert split_records(b"") == []
    # A value that merely mentions a timestamp or the word notification stays whole.
    one = b"notification=event,reported_at=2025-03-14T09:26:45Z,message=the notification=foo mail"
    assert split_records(one) == [one]


groups = st.lists(st.tuples(st.sampled_from("<>"), st.binary(max_size=70)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(groups, st.integers(0, 2 ** 32 - 1), st.integers(1, 200))
def test_format_then_decode_round_trips(pieces, start, feed_size):
    offsets = {"<": start, ">": start}
    text = ""
    for direction, data in pieces:
        text += format_hexdump(direction, offsets[direction], data)
        offsets[direction] += len(data)
    raw = text.encode()
    events = list(read_hexdump(raw[i:i + feed_size] for i in range(0, len(raw), feed_size)))
    assert errors_of(events) == []
    for direction in "<>":
        sent = b"".join(d for w, d in pieces if w == direction)
        assert b"".join(c.data for c in chunks_of(events, direction)) == sent
    # Boundaries after a read of a multiple of 16 bytes are invisible, all the
    # others are kept: re-encoding the chunks gives the same text.
    assert "".join(format_hexdump(c.direction, c.offset, c.data) for c in events) == text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600),
                 st.lists(st.sampled_from(GOOD + [b"", b"\r", b"< 00000000 ", b"> 0000000d 41 # A"]),
                          max_size=10).map(b"\n".join)),
       st.integers(1, 97))
def test_every_line_becomes_data_or_an_error(text, feed_size):
    events = list(read_hexdump(text[i:i + feed_size] for i in range(0, len(text), feed_size)))
    lines = text.split(b"\n")
    count = len(lines) - (1 if lines[-1] == b"" else 0)
    covered = []
    for event in events:
        if isinstance(event, HexChunk):
            covered += range(event.line, event.line + -(-len(event.data) // 16))
        elif not event.reason.startswith("offset"):
            covered.append(event.line)
    assert sorted(covered) == list(range(1, count + 1))


def test_example_capture_decodes_cleanly():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "syslog-dump.hex")
    with open(path, "rb") as dump:
        events = list(read_hexdump(dump))
    assert events and errors_of(events) == []
