"""One frame -> one event: every header form, bad input, encodings."""
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nvparser import DeadLetter, Record, Skipped, parse_frame

BODY = "notification=event,name=User.Login,level=Info,reported_timestamp=1741939212,message=User admin login"
EXPECTED = {"notification": "event", "name": "User.Login", "level": "Info",
            "reported_timestamp": 1741939212, "message": "User admin login"}


def data_without(frame, *drop):
    event = parse_frame(frame.encode() if isinstance(frame, str) else frame)
    assert type(event) is Record, event
    return {k: v for k, v in event.data.items() if k not in drop}, event.data


def test_rfc5424_as_neuvector_sends_it():
    body, data = data_without("<134>1 2025-03-14T08:00:13Z pod-a /usr/local/bin/controller 13 neuvector - " + BODY, "syslog")
    assert body == EXPECTED
    assert data["syslog"] == {"pri": 134, "facility": 16, "severity": 6, "version": 1,
                              "timestamp": "2025-03-14T08:00:13Z", "hostname": "pod-a",
                              "app_name": "/usr/local/bin/controller", "procid": "13", "msgid": "neuvector"}


def test_rfc5424_with_structured_data_from_a_relay():
    frame = '<134>1 2025-03-14T08:00:13Z pod-a app 13 neuvector [meta x="a\\] b"][y z="1"] ' + BODY
    body, data = data_without(frame, "syslog")
    assert body == EXPECTED
    assert data["syslog"]["structured_data"] == '[meta x="a\\] b"][y z="1"]'


def test_rfc3164_written_by_a_relay():
    body, data = data_without("<134>Mar 14 08:00:13 pod-a controller[13]: " + BODY, "syslog")
    assert body == EXPECTED
    assert data["syslog"] == {"pri": 134, "facility": 16, "severity": 6, "version": None,
                              "timestamp": "Mar 14 08:00:13", "hostname": "pod-a",
                              "app_name": "controller", "procid": "13", "msgid": None}


def test_rfc3164_with_an_iso_timestamp():
    body, data = data_without("<134>2025-03-14T08:00:13+00:00 pod-a neuvector: " + BODY, "syslog")
    assert body == EXPECTED
    assert data["syslog"]["timestamp"] == "2025-03-14T08:00:13+00:00"
    assert data["syslog"]["app_name"] == "neuvector"


def test_receiver_printed_header_without_pri():
    body, data = data_without("2020-01-24T21:39:34Z pod-a /usr/local/bin/controller 12 neuvector - " + BODY, "syslog")
    assert body == EXPECTED
    assert data["syslog"]["pri"] is None and data["syslog"]["procid"] == "12"


def test_unknown_header_keeps_its_text():
    body, data = data_without("Mar 14 08:00:13 relay7 >>> " + BODY, "syslog")
    assert body == EXPECTED
    assert data["syslog"]["header"] == "Mar 14 08:00:13 relay7 >>>"


def test_bare_pod_log_body_has_no_syslog_object():
    body, data = data_without(BODY)
    assert data == EXPECTED


def test_cri_log_line():
    body, data = data_without("2025-03-14T08:00:12.345678901Z stdout F " + BODY, "cri")
    assert body == EXPECTED
    assert data["cri"] == {"timestamp": "2025-03-14T08:00:12.345678901Z", "stream": "stdout"}


def test_cri_partial_lines_are_reassembled():
    frame = ("2025-03-14T08:00:12.1Z stdout P " + BODY[:40] + "\n2025-03-14T08:00:12.1Z stdout F " + BODY[40:])
    body, _ = data_without(frame, "cri")
    assert body == EXPECTED


def test_kubectl_timestamps_prefix():
    body, data = data_without("2025-03-14T08:00:12.345678901Z " + BODY, "syslog")
    assert body == EXPECTED


@pytest.mark.parametrize("line,reason", [
    ("2025-03-14T08:00:12.345|INFO|CTL|main: controller started", "controller log line"),
    ("", "blank line"),
    ("   ", "blank line"),
])
def test_not_notifications_are_skipped(line, reason):
    event = parse_frame(line.encode())
    assert type(event) is Skipped and reason in event.reason


@pytest.mark.parametrize("frame,reason", [
    (b"hello world", "no NeuVector body"),
    (b"<134>1 2025-03-14T08:00:13Z pod-a app 13 neuvector - {\"notification\": \"event\", ", "invalid JSON"),
    (b'<134>1 2025-03-14T08:00:13Z pod-a app 13 neuvector - {"name": "x"}', "no \"notification\""),
    (b'{"notification": "event"} trailing', "invalid JSON"),
    (b"<134>1 2025-03-14T08:00:13Z pod-a app 13 neuvector - [1,2]", "no NeuVector body"),
])
def test_bad_frames_are_dead_letters_with_a_reason(frame, reason):
    event = parse_frame(frame, offset=7)
    assert type(event) is DeadLetter
    assert reason in event.reason
    assert event.raw == frame and event.offset == 7


def test_invalid_utf8_becomes_one_replacement_per_byte_like_go_json():
    # description cut at 256 bytes can end inside a character: Go's JSON
    # writes one U+FFFD per invalid byte, text mode must agree.
    frame = b"notification=audit,name=x,level=Info,critical_vul_cnt=0,high_vul_cnt=0,medium_vul_cnt=0,message=,description=caf\xe2\x82"
    _, data = data_without(frame)
    assert data["description"] == "caf\ufffd\ufffd"


def test_json_mode_keeps_go_escapes_and_unicode():
    frame = '{"notification": "incident", "name":"x","level":"Critical","message":"\\u003cé☃\\u003e \\u0026 line\\nbreak"}'
    _, data = data_without(frame.encode())
    assert data["message"] == "<é☃> & line\nbreak"


def test_bom_before_the_body_is_ignored():
    _, data = data_without(("<134>1 2025-03-14T08:00:13Z h a 1 neuvector - \ufeff" + BODY).encode())
    assert data["name"] == "User.Login"


def test_fast_path_agrees_with_the_general_path_on_every_reference_frame():
    from nvparser._decode import _parse
    from nvparser._fast import fast_record
    from helpers.nvsamples import load_samples

    wire = re.compile(rb"<\d+>1 \S+ \S+ \S+ \S+ \S+ - (notification=|\{)")
    fast = 0
    for sample in load_samples():
        for line in sample.lines:
            quick = fast_record(line, 0)
            if quick is not None:
                fast += 1
                assert quick == _parse(line, 0), sample.id
            else:  # NeuVector's own wire form always takes the fast path
                assert not wire.match(line), sample.id
    assert fast >= 30


RELAYED_HEADS = [
    rb"<\1>Mar 14 08:00:13 \2 controller[13]: ",  # rsyslog's RFC 3164 forwarding
    rb"<\1>Mar  4 08:00:13 \2 neuvector: ",
    rb"<\1>2025-03-14T08:00:13+00:00 \2 neuvector: ",
    rb"<\1>Mar 14 08:00:13 \2 ",  # no tag
]


@pytest.mark.parametrize("head", RELAYED_HEADS)
def test_relayed_reference_frames_take_the_fast_path_and_agree_with_the_general_path(head):
    from nvparser._decode import _parse
    from nvparser._fast import fast_record
    from helpers.nvsamples import load_samples

    wire = re.compile(rb"<(\d+)>1 \S+ (\S+) \S+ \S+ \S+ - (?=notification=|\{)")
    relayed = [wire.sub(head, line, 1) for sample in load_samples() for line in sample.lines if wire.match(line)]
    assert len(relayed) >= 30
    for frame in relayed:
        quick = fast_record(frame, 0)
        assert quick is not None, frame[:120]
        assert quick == _parse(frame, 0)


HEAD_PIECES = ["<134>", "<13>", "<999>", "<0134>", "<x>", "1 ", "1", " ", "-", "- ", "Mar 14 08:00:13 ", "Mar  4 08:00:13 ",
               "2025-03-14T08:00:13Z ", "host ", "tag[1]: ", "tag: ", ":", "[", "]", '[m x="a"] ', '"', "=", ",",
               "notification=", '{"notification"', "é", "\t"]


@given(st.lists(st.sampled_from(HEAD_PIECES), max_size=12),
       st.sampled_from([BODY, '{"notification":"event"}', "notification=event,message=a,b=c"]))
@example(["<134>", "1 ", "2025-03-14T08:00:13Z ", "h a 1 m ", "[", "notification=", "]", " "], BODY)
# RFC 5424 structured data holding a body's start: only the whole line shows where it ends.
@example(["<134>1 2025-03-14T08:00:13Z h a 1 m [notification=audit,message=x] "], "notification=audit,user=bob")
@example(["<0134>", "1 ", "2025-03-14T08:00:13Z ", "h a 1 m - "], BODY)  # a PRI of four digits is no PRI
@example(["<134>", "Mar 14 08:00:13 ", "h=event,user=x, tag: "], "notification=event,message=hi")
def test_the_fast_path_gives_the_general_paths_record_or_leaves_the_frame_to_it(pieces, body):
    # Whatever comes before the body: a relay's head must be read exactly as the general path
    # reads it, with the C accelerator (where built) and with its Python twins.
    from nvparser._decode import _parse
    from nvparser._fast import fast_record
    from helpers.twins import python_twins

    frame = ("".join(pieces) + body).encode()
    general = _parse(frame, 0)
    quick = fast_record(frame, 0)
    assert quick is None or quick == general
    with python_twins():
        quick = fast_record(frame, 0)
    assert quick is None or quick == general


@pytest.mark.parametrize("head", ["", "<134>1 2025-03-14T08:00:13Z h a 1 m - ", "<134>Mar 14 08:00:13 h t: "])
@pytest.mark.parametrize("value", ["[1]", "{}", "null", "7"])
def test_a_json_notification_that_is_not_a_string_is_a_dead_letter_saying_so(head, value):
    event = parse_frame((head + '{"notification":%s,"name":"x"}' % value).encode())
    assert type(event) is DeadLetter and event.reason == 'JSON body has no "notification" string'


@pytest.mark.parametrize("head", ["<134>1 2025-03-14T08:00:13Z h a 1 m - ", "<134>Mar 14 08:00:13 h t: "])
def test_only_the_schemas_float_fields_become_floats(head):
    # Go prints a float32 10 as 10: audit's score is a float in JSON mode as in text mode. A key
    # the schema does not know keeps the type JSON gave it.
    from nvparser._decode import _parse
    from nvparser._fast import fast_record

    for body, key, expected in (('{"notification":"audit","name":"x","score":10}', "score", 10.0),
                                ('{"notification":"event","name":"x","score":10}', "score", 10)):
        frame = (head + body).encode()
        assert type(parse_frame(frame).data[key]) is type(expected) and parse_frame(frame).data[key] == expected
        assert type(_parse(frame, 0).data[key]) is type(expected)
        quick = fast_record(frame, 0)  # such frames take the fast path: it must type them alike
        assert quick is not None and type(quick.data[key]) is type(expected)


def test_the_python_split_cuts_at_every_separator_where_they_alternate():
    # The cheaper split, taken when no value holds "," or "=", also cuts
    # before a key that is no name; otherwise the regex's cut.
    from nvparser._fast import _split_body

    assert _split_body(b"- notification=x,a b=1,c=2", 2) == ("x", "a b,c", ["1", "2"])
    assert _split_body(b"- notification=x,a b=1=,c=2", 2) == ("x,a b=1=", "c", ["2"])
    assert _split_body(b"- notification=x,a=1,", 2) == ("x", "a", ["1,"])


def test_a_value_holding_key_and_separators_is_not_read_as_fields():
    # "=" and "," as many as the separators of one more field: only their order
    # shows that rest_body is inside rest_request's value.
    from nvparser._decode import _parse
    from nvparser._fast import fast_record

    frame = ("<134>1 2025-03-14T08:00:13Z h a 1 neuvector - notification=event,name=User.Login,level=Info,"
             "rest_request=a=rest_body,b,message=m").encode()
    data = parse_frame(frame).data
    assert data["rest_request"] == "a=rest_body,b" and data["message"] == "m"
    assert "rest_body" not in data
    assert fast_record(frame, 0) == _parse(frame, 0)


@pytest.mark.parametrize("first", ["nope=event", "n=event", "notificationX=event"])
def test_a_body_not_opening_with_notification_is_a_dead_letter(first):
    frame = ("<134>1 2025-03-14T08:00:13Z h a 1 neuvector - %s,name=User.Login,level=Info,message=m" % first).encode()
    assert type(parse_frame(frame)) is DeadLetter


def test_json_mode_gives_the_same_records_without_orjson(monkeypatch):
    from nvparser import _codec, _fast
    from helpers.nvsamples import load_samples

    frames = [line for s in load_samples() if s.mode == "json" for line in s.lines]
    with_orjson = [parse_frame(f).data for f in frames]
    monkeypatch.setattr(_fast, "json_loads_from", _codec.loads_from_std)
    assert [parse_frame(f).data for f in frames] == with_orjson
    assert len(frames) >= 6


# -- RFC 6587 octet counting: the count is framing, the header is the message's --

OCTET_MSG = b"<133>1 2025-03-14T08:10:00Z host app 13 neuvector - " + BODY.encode()
OCTET_SYSLOG = {"pri": 133, "facility": 16, "severity": 5, "version": 1, "timestamp": "2025-03-14T08:10:00Z",
                "hostname": "host", "app_name": "app", "procid": "13", "msgid": "neuvector"}


def stream(data: bytes, chunk: int):
    from nvparser import Parser

    parser = Parser()
    events = []
    for i in range(0, len(data), chunk or len(data)):
        events += parser.feed(data[i:i + (chunk or len(data))])
    return events + parser.close()


@pytest.mark.parametrize("chunk", [0, 1, 9])
def test_octet_counted_frames_keep_their_syslog_header(chunk):
    # One count without NeuVector's LF, one that includes it (§1.2: MSG gets a LF appended).
    first = b"%d %s" % (len(OCTET_MSG), OCTET_MSG)
    second = b"%d %s\n" % (len(OCTET_MSG) + 1, OCTET_MSG)
    events = stream(first + second, chunk)
    assert [type(e) for e in events] == [Record, Record]
    for event in events:
        body = {k: v for k, v in event.data.items() if k != "syslog"}
        assert body == EXPECTED and event.data["syslog"] == OCTET_SYSLOG and event.notes == ()
    # The event spans the whole frame, count included: every byte is accounted for.
    assert (events[0].raw, events[0].offset) == (first, 0)
    assert (events[1].raw, events[1].offset) == (second, len(first))


def test_an_octet_counted_frame_decoded_on_its_own():
    frame = b"%d %s" % (len(OCTET_MSG), OCTET_MSG)
    event = parse_frame(frame, offset=3)
    assert type(event) is Record and event.data["syslog"] == OCTET_SYSLOG
    assert event.raw == frame and event.offset == 3
    bad = b"10 <134>1 x y"
    dead = parse_frame(bad, offset=3)
    assert type(dead) is DeadLetter and (dead.raw, dead.offset) == (bad, 3)


# -- JSON mode never holds a raw LF (§0.6, §1.4) --------------------------------

def test_a_foreign_line_after_a_json_record_is_its_own_dead_letter():
    login = b'{"notification": "event", "name":"User.Login","level":"Info"}'
    logout = b'{"notification": "event", "name":"User.Logout","level":"Info"}'
    foreign = b"E0314 08:00:12.345678 12 reflector.go:147] watch failed"
    events = stream(login + b"\n" + foreign + b"\n" + logout + b"\n", 0)
    assert [type(e) for e in events] == [Record, DeadLetter, Record]
    assert events[0].raw == login and events[0].data["name"] == "User.Login"
    assert events[1].raw == foreign and events[1].offset == len(login) + 1
    assert "no NeuVector body" in events[1].reason
    assert events[2].data["name"] == "User.Logout"


# -- the rsyslog file format: RFC 3164 without PRI ------------------------------

def test_rfc3164_without_pri_as_rsyslog_writes_files():
    body, data = data_without("Mar 14 08:10:00 nv-ctl-0 controller[13]: " + BODY, "syslog")
    assert body == EXPECTED
    assert data["syslog"] == {"pri": None, "facility": None, "severity": None, "version": None,
                              "timestamp": "Mar 14 08:10:00", "hostname": "nv-ctl-0",
                              "app_name": "controller", "procid": "13", "msgid": None}


def test_rfc3164_without_pri_from_neuvectors_rfc5424_header():
    _, data = data_without("Mar  4 08:10:00 nv-ctl-0 /usr/local/bin/controller[13]: " + BODY)
    assert data["syslog"]["timestamp"] == "Mar  4 08:10:00"
    assert data["syslog"]["app_name"] == "/usr/local/bin/controller" and data["syslog"]["procid"] == "13"


def test_bom_before_the_body_keeps_the_rfc5424_header():
    # RFC 5424 lets MSG open with a BOM; the header is still the RFC 5424 one.
    _, data = data_without(("<134>1 2025-03-14T08:00:13Z h a 1 neuvector - \ufeff" + BODY).encode())
    assert data["syslog"] == {"pri": 134, "facility": 16, "severity": 6, "version": 1,
                              "timestamp": "2025-03-14T08:00:13Z", "hostname": "h",
                              "app_name": "a", "procid": "1", "msgid": "neuvector"}


def test_records_with_the_same_header_do_not_share_its_syslog_object():
    # The fast path decodes a header once and gives each record a copy.
    frame = ("<134>1 2025-03-14T08:00:13Z h a 1 neuvector - " + BODY).encode()
    first = parse_frame(frame).data
    first["syslog"]["hostname"] = "changed by a sink"
    assert parse_frame(frame).data["syslog"]["hostname"] == "h"


def test_feed_takes_any_bytes_like_buffer_and_says_what_it_wants_otherwise():
    from nvparser import Parser

    frame = b"<134>1 2025-03-14T08:00:13Z h a 1 m - " + BODY.encode()
    for wrap in (bytes, bytearray, memoryview):
        parser = Parser()
        events = parser.feed(wrap(frame + b"\n")) + parser.close() + parser.feed_datagram(wrap(frame))
        assert [type(e) for e in events] == [Record, Record] and events[0].data == events[1].data
    with pytest.raises(TypeError, match="bytes, not str"):
        Parser().feed(frame.decode())
