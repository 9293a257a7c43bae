"""Fuzzing every entry point: no exception escapes, every byte is accounted for."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvparser import DeadLetter, Parser, Record, Skipped, parse_frame, parse_webhook

EVENTS = (Record, DeadLetter, Skipped)

# Inputs mixing real NeuVector fragments with arbitrary bytes find more than bytes alone.
FRAGMENTS = [b"<134>1 2025-03-14T09:26:47Z h /usr/local/bin/controller 13 neuvector - ", b"notification=",
             b"violation", b"threat", b"incident", b"event", b"audit", b"activity", b",", b"=", b"[", b"]",
             b"map[", b":", b" ", b"\n", b"\r", b"{\"notification\": \"event\", ", b"\"name\":", b"}",
             b"level=Info", b"message=", b"items=[D.1 WARN - a", b"12 ", b"2025-03-14T08:00:12Z stdout P ",
             b"\xff", b"\xe2\x82", b"\x00", b"level=CRITICAL,cluster=", b",comment=", b",name="]
fuzz_bytes = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12)), max_size=40).map(b"".join)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stream_events(data: bytes, chunk: int, max_frame: int):
    parser = Parser(max_frame=max_frame)
    events = []
    for i in range(0, len(data), chunk):
        events += parser.feed(data[i:i + chunk])
    return events + parser.close()


@FUZZ
@given(fuzz_bytes, st.integers(1, 64), st.integers(16, 512))
def test_stream_accounts_for_every_byte(data, chunk, max_frame):
    events = stream_events(data, chunk, max_frame)
    assert all(type(e) in EVENTS for e in events)
    covered = bytearray(len(data))
    for event in events:
        assert data[event.offset:event.offset + len(event.raw)] == event.raw
        for i in range(event.offset, event.offset + len(event.raw)):
            assert not covered[i]
            covered[i] = 1
    assert all(data[i] == 0x0A for i in range(len(data)) if not covered[i])


@FUZZ
@given(fuzz_bytes)
def test_parse_frame_always_returns_an_event(frame):
    event = parse_frame(frame)
    assert type(event) in EVENTS and event.raw == frame
    if type(event) is Record:
        assert isinstance(event.data.get("notification"), str)


@FUZZ
@given(st.lists(fuzz_bytes, max_size=8))
def test_datagrams_give_one_event_each(datagrams):
    parser = Parser(max_frame=256)
    for datagram in datagrams:
        events = parser.feed_datagram(datagram)
        assert len(events) == 1 and type(events[0]) in EVENTS
        assert events[0].raw == (datagram[:-1] if datagram.endswith(b"\n") else datagram)


@FUZZ
@given(fuzz_bytes, st.sampled_from([None, "application/json", "text/plain"]))
def test_parse_webhook_always_returns_a_record_or_dead_letter(body, content_type):
    event = parse_webhook(body, content_type)
    assert type(event) in (Record, DeadLetter) and event.raw == body
