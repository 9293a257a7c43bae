"""The framer: LF frames, octet counting, continuation lines, size limits."""
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nvparser._framing import LineFramer

HEAD = b"<134>1 2025-03-14T09:26:47Z host /usr/local/bin/controller 13 neuvector - "
R1 = HEAD + b"notification=activity,name=Container.Start,level=Info"
R2 = HEAD + b"notification=activity,name=Container.Stop,level=Info"


def frames_of(data: bytes, chunk: int = 0, **kw):
    framer = LineFramer(**kw)
    out = []
    if chunk:
        for i in range(0, len(data), chunk):
            out += framer.feed(data[i:i + chunk])
    else:
        out += framer.feed(data)
    return out + framer.close()


def test_lf_frames_with_offsets():
    data = R1 + b"\n" + R2 + b"\n"
    assert frames_of(data) == [(R1, 0, None), (R2, len(R1) + 1, None)]


def test_last_line_is_held_until_the_next_line_or_flush():
    framer = LineFramer()
    assert framer.feed(R1 + b"\n") == []
    assert framer.feed(R2 + b"\n") == [(R1, 0, None)]
    assert framer.flush() == [(R2, len(R1) + 1, None)]
    assert framer.close() == []


def test_a_line_that_does_not_start_a_record_continues_the_previous_one():
    first = HEAD + b"notification=incident,proc_cmd=sh -c echo start"
    second = b"curl -s http://198.51.100.9/t,action=deny,message=x"
    assert frames_of(first + b"\n" + second + b"\n" + R2 + b"\n") == [
        (first + b"\n" + second, 0, None),
        (R2, len(first) + len(second) + 2, None),
    ]


def test_blank_lines_inside_a_value_are_kept_and_trailing_ones_are_frames():
    first = HEAD + b"notification=incident,proc_cmd=a"
    data = first + b"\n\nb,message=x\n\n" + R2 + b"\n"
    frames = frames_of(data)
    assert frames[0] == (first + b"\n\nb,message=x", 0, None)
    assert frames[1][0] == b"" and data[frames[1][1]:frames[1][1] + 1] == b"\n"
    assert frames[2][0] == R2


def test_every_header_form_starts_a_record():
    lines = [
        R1,
        b"2020-01-24T21:39:34Z pod /usr/local/bin/controller 12 neuvector - notification=violation,level=Warning",
        b"notification=event,name=User.Login",
        b'{"notification": "event", "name":"User.Login"}',
        b"<134>Mar 14 09:26:47 host controller[13]: notification=event,name=x",
        b"2025-03-14T08:00:12.345678901Z stdout F notification=event,name=x",
        b"2025-03-14T08:00:12.345|INFO|CTL|main: started",
    ]
    assert [f[0] for f in frames_of(b"\n".join(lines) + b"\n")] == lines


def test_cri_partial_lines_are_joined_with_the_next_one():
    p = b"2025-03-14T08:00:12.1Z stdout P notification=event,name=User.Login,me"
    f = b"2025-03-14T08:00:12.2Z stdout F ssage=User admin login"
    other = b"2025-03-14T08:00:13.0Z stdout F notification=event,name=User.Logout"
    frames = frames_of(b"\n".join([p, f, other]) + b"\n")
    assert [x[0] for x in frames] == [p + b"\n" + f, other]


def test_cri_continuation_of_a_raw_newline_is_joined():
    a = b"2025-03-14T08:00:12.1Z stdout F notification=incident,proc_cmd=sh -c echo"
    b = b"2025-03-14T08:00:12.1Z stdout F curl x,message=y"
    assert [x[0] for x in frames_of(a + b"\n" + b + b"\n")] == [a + b"\n" + b]


def test_octet_counted_frames_without_lf():
    data = b"%d %s%d %s" % (len(R1), R1, len(R2), R2)
    assert frames_of(data, chunk=7) == [
        (b"%d %s" % (len(R1), R1), 0, None),
        (b"%d %s" % (len(R2), R2), len(R1) + len(str(len(R1))) + 1, None),
    ]


def test_octet_counting_can_be_turned_off():
    line = b"12 <not a count"
    assert frames_of(line + b"\n", octet_counting=False) == [(line, 0, None)]


def test_overlong_line_is_dead_lettered_in_pieces_and_framing_resumes():
    big = b"<134>1 " + b"x" * 3 * len(R1)
    frames = frames_of(big + b"\n" + R1 + b"\n", chunk=64, max_frame=len(R1) + 10)
    dead = [f for f in frames if f[2]]
    assert b"".join(f[0] for f in dead) == big
    assert all("max_frame" in f[2] for f in dead)
    assert frames[-1] == (R1, len(big) + 1, None)


def test_overlong_multiline_record_is_dead_lettered():
    first = HEAD + b"notification=incident,proc_cmd=" + b"a" * 50
    data = first + b"\n" + b"b" * 60 + b"\n" + R1 + b"\n"
    frames = frames_of(data, max_frame=len(first) + 10)
    assert frames[0][2] and "max_frame" in frames[0][2]
    assert frames[-1][0] == R1


def test_the_size_limit_counts_the_held_line_it_continues_not_an_earlier_one():
    # A short frame, then a long one the usual step holds, then its continuation line:
    # together over the limit, though the short frame and the continuation fit.
    long = HEAD + b"notification=incident,proc_cmd=" + b"a" * 300
    continuation = b"b" * 100
    data = R1 + b"\n" + long + b"\n" + continuation + b"\n" + R2 + b"\n"
    for chunk in (0, 7, len(R1) + 1):
        frames = frames_of(data, chunk, max_frame=len(long) + 50)
        assert frames[0] == (R1, 0, None)
        assert frames[1] == (long + b"\n" + continuation, len(R1) + 1,
                             "record longer than max_frame (%d bytes) across lines" % (len(long) + 50))
        assert frames[-1] == (R2, len(data) - len(R2) - 1, None)


def test_blank_lines_held_after_a_text_frame_end_it_once_past_the_limit():
    # They may be part of a value (the next line tells), so they are held, but never past
    # max_frame: no record within the limit goes on after that many (keep-alive LFs, say).
    flood = R1 + b"\n" + b"\n" * 200 + b"cont\n" + R2 + b"\n"
    for chunk in (0, 7):
        frames = frames_of(flood, chunk, max_frame=len(R1) + 50)
        assert frames[0] == (R1, 0, None)
        assert frames[1:201] == [(b"", len(R1) + 1 + i, None) for i in range(200)]
        assert frames[201:] == [(b"cont", len(R1) + 201, None), (R2, len(flood) - len(R2) - 1, None)]
    # Fewer than that, and a continuation line still joins them onto the record.
    assert frames_of(R1 + b"\n" * 4 + b"cont\n", max_frame=len(R1) + 50)[0] == (R1 + b"\n\n\n\ncont", 0, None)


def test_a_blank_line_after_a_json_mode_frame_is_a_frame_at_once():
    json_frame = HEAD + b'{"notification":"event","name":"a"}'
    framer = LineFramer(max_frame=len(json_frame) + 10)
    assert framer.feed(json_frame + b"\n" + b"\n" * 100) == [(json_frame, 0, None)] + [
        (b"", len(json_frame) + 1 + i, None) for i in range(100)]


def test_octet_count_above_the_limit_is_dead_lettered():
    data = b"500 <" + b"y" * 499 + R1 + b"\n"
    frames = frames_of(data, chunk=50, max_frame=len(R1) + 10)
    assert b"".join(f[0] for f in frames if f[2]) == data[:504]
    assert frames[-1][0] == R1


def accounted(data: bytes, frames) -> None:
    """Every byte is inside exactly one frame, or is an LF separator."""
    covered = bytearray(len(data))
    for raw, offset, _ in frames:
        assert data[offset:offset + len(raw)] == raw
        for i in range(offset, offset + len(raw)):
            assert not covered[i]
            covered[i] = 1
    assert all(data[i:i + 1] == b"\n" for i in range(len(data)) if not covered[i])


pieces = st.sampled_from([R1, R2, b"\n", b"\n\n", b"x", b"12 ", b"5 <abc", b"2025-03-14T08:00:12Z stdout P ",
                          b"notification=", b"\r\n", b"{\"", b"\xff\xfe", b"<?x", b"<13>", b'{"notification": "e"}'])


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=30), st.integers(1, 40), st.integers(8, 200))
def test_every_input_byte_is_accounted_for(parts, chunk, max_frame):
    data = b"".join(parts)
    accounted(data, frames_of(data, chunk=chunk, max_frame=max_frame))


@settings(max_examples=200, deadline=None)
@given(st.lists(pieces, max_size=20), st.integers(1, 30))
# A CRI partial line, then a line starting "<", reached by the byte loop or by the line split
@example(parts=[b"5 <abc", b"\n", b"2025-03-14T08:00:12Z stdout P ", b"\n", R1, b"\r\n"], chunk=1)
# A "<" line that starts no record, after one that does: byte loop (after the octet-counted
# frame) when fed whole, line split when fed byte by byte
@example(parts=[b"5 <abc", b"\n", R1, b"\n", b"<?x", b"\n", R2, b"\n"], chunk=1)
def test_chunking_does_not_change_the_frames(parts, chunk):
    data = b"".join(parts)
    assert frames_of(data, chunk=chunk) == frames_of(data)


def test_a_continuation_line_opening_with_lt_but_no_pri_is_joined():
    # A here-doc in proc_cmd: "<?xml" does not start a record (§3.4 step 7: only
    # "<digits>" does), so it is rejoined, whichever way the input is chunked.
    first = HEAD + b"notification=incident,proc_cmd=sh -c cat <<EOF > /tmp/a.xml"
    rest = [b'<?xml version="1.0"?>', b"EOF,message=x"]
    record = b"\n".join([first] + rest)
    data = record + b"\n" + R2 + b"\n"
    for chunk in (0, 1, 7):
        assert frames_of(data, chunk=chunk) == [(record, 0, None), (R2, len(record) + 1, None)]


def test_a_line_opening_with_a_pri_after_a_frame_still_starts_a_record():
    for start in (b"<1>", b"<13>", b"<134>"):
        line = start + b"Mar 14 09:26:47 host controller[13]: notification=event,name=x"
        assert [f[0] for f in frames_of(R1 + b"\n" + line + b"\n")] == [R1, line]


JSON_BODY = b'{"notification": "event", "name":"User.Login","level":"Info","message":"a\\nb"}'
FOREIGN = b"E0314 08:00:12.345678 12 reflector.go:147] watch failed"


def test_nothing_is_joined_onto_a_json_mode_frame():
    # JSON mode escapes every LF (§0.6, §1.4): a line after a JSON record is
    # never part of it, even one that does not start a record.
    for prefix in (b"", HEAD, b"2025-03-14T08:00:12.1Z stdout F "):
        record = prefix + JSON_BODY
        foreign = (b"2025-03-14T08:00:12.2Z stdout F " if prefix[:4] == b"2025" else b"") + FOREIGN
        data = record + b"\n" + foreign + b"\n" + record + b"\n"
        for chunk in (0, 1, 5):
            assert frames_of(data, chunk=chunk) == [
                (record, 0, None),
                (foreign, len(record) + 1, None),
                (record, len(record) + len(foreign) + 2, None),
            ]


def test_a_json_record_split_into_cri_partial_lines_is_still_joined():
    p = b"2025-03-14T08:00:12.1Z stdout P " + JSON_BODY[:30]
    f = b"2025-03-14T08:00:12.1Z stdout F " + JSON_BODY[30:]
    foreign = b"2025-03-14T08:00:12.2Z stdout F " + FOREIGN
    assert [x[0] for x in frames_of(b"\n".join([p, f, foreign]) + b"\n")] == [p + b"\n" + f, foreign]


def test_a_text_record_quoting_json_still_takes_its_continuation_lines():
    first = HEAD + b'notification=event,name=RESTful.Write,rest_body={"notification": "event"}'
    second = b"more,message=x"
    assert [x[0] for x in frames_of(first + b"\n" + second + b"\n")] == [first + b"\n" + second]
