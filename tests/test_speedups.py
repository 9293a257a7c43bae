"""The parser's C accelerator against independent oracles and its Python twin.

``nvparser._speedups`` holds C versions of ``_fast._split_body`` and
``_fast._build``. Here each is checked against an oracle written from the
rules it implements (Python's regex engine for the split, the Go number
formats for the typing), on generated input with the bytes that trip a
hand-written scanner; the whole fast path with and without it must give the
same records; and it must not leak or crash on bad arguments. Its
``split_lists`` (behind ``nvparser.json_lists``) is held to the standard
library's JSON decoder.
"""
import gc
import json
import os
import re
import tracemalloc

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nvparser import _fast
from nvparser._decode import _parse
from helpers.twins import python_twins

if os.environ.get("NVSIEM_REQUIRE_SPEEDUPS"):  # CI: a missing accelerator fails, never skips
    from nvparser import _speedups as speedups
else:
    speedups = pytest.importorskip("nvparser._speedups", reason="built by setup.py where a C compiler is found")

SETTINGS = settings(max_examples=400, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- split_body: cut at every ",key=" like this regex, left to right ------------

CUT = re.compile(r",([A-Za-z_][A-Za-z0-9_]*)=")


def oracle_split(raw, start):
    parts = CUT.split(raw[start + len(b"notification="):].decode("utf-8"))
    return parts[0], ",".join(parts[1::2]), parts[2::2]


PIECES = [b",", b"=", b",a=", b",_x9=", b",9a=", b",a", b"=,", b",,k=", b",k==", b",k=,", b"a", b"Z", b"0", b" ",
          b"\xc3\xa9", b",\xc3\xa9=", b"\xe2\x82", b"\xff", b"\x00", b"\n", b"notification="]
bodies = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=3)), max_size=40).map(b"".join)
prefixes = st.sampled_from([b"", b"<134>1 2025-03-14T08:00:13Z h a 1 neuvector - ", b"x,y=z "])


@SETTINGS
@given(prefix=prefixes, body=bodies)
def test_split_body_cuts_as_the_regex_does(prefix, body):
    raw = prefix + b"notification=" + body
    try:
        expected = oracle_split(raw, len(prefix))
    except UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            speedups.split_body(raw, len(prefix))
        return
    assert speedups.split_body(raw, len(prefix)) == expected


def test_split_body_examples():
    assert speedups.split_body(b"notification=event", 0) == ("event", "", [])
    assert speedups.split_body(b"- notification=x,a=1,b=,c=p,q=r=s,", 2) == ("x", "a,b,c,q", ["1", "", "p", "r=s,"])
    assert speedups.split_body(b"notification=x,a b=1,_=\xc3\xa9", 0) == ("x,a b=1", "_", ["é"])
    many = b"notification=x" + b"".join(b",k%d=%d" % (i, i) for i in range(1000))  # past the 128 cuts on the stack
    notification, keys, values = speedups.split_body(many, 0)
    assert keys.split(",") == ["k%d" % i for i in range(1000)] and values == [str(i) for i in range(1000)]


@pytest.mark.parametrize("args, error", [
    ((b"notification", 0), ValueError),
    ((b"xnotification=a", 0), ValueError),
    ((b"notification=a", 1), ValueError),
    ((b"notification=a", -1), ValueError),
    ((b"notification=a", 1 << 70), OverflowError),
    (("notification=a", 0), TypeError),
    ((b"notification=a",), TypeError),
])
def test_split_body_refuses_bad_arguments(args, error):
    with pytest.raises(error):
        speedups.split_body(*args)


# -- build: the template with values typed as Go's %v prints them -------------

GO_INT = re.compile(r"-?[0-9]+")
GO_FLOAT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:e[-+][0-9]+)?")  # a float32 by %v: 10, 9.8, -0.5, 1e+06
GO_LIST = re.compile(r"\[(.*)\]", re.S)
GO_MAP = re.compile(r"map\[(.*)\]", re.S)


def go_map(text):
    inner = GO_MAP.fullmatch(text).group(1)
    if not inner:
        return None  # map[]: a nil map, JSON null
    return dict((pair.split(":", 1) + [""])[:2] for pair in inner.split(" "))


RULES = (  # (fits, convert) per kind, in build's argument order
    (GO_INT.fullmatch, int),
    (GO_FLOAT.fullmatch, float),
    ({"true", "false"}.__contains__, "true".__eq__),
    (GO_LIST.fullmatch, lambda text: GO_LIST.fullmatch(text).group(1).split(" ")),
    (GO_MAP.fullmatch, go_map),
)


def oracle_build(template, keys, values, *indexes):
    data = dict(template)
    data.update(zip(keys, values))
    for (fits, convert), kind in zip(RULES, indexes):
        for i in kind:
            if not fits(values[i]):
                return None
            data[keys[i]] = convert(values[i])
    return data


def typed_items(data):
    """Items with their types: True == 1 and 1 == 1.0 must not pass for each other."""
    if isinstance(data, dict):
        return [(k, type(v), typed_items(v)) for k, v in data.items()]
    if isinstance(data, list):
        return [typed_items(v) for v in data]
    return data


TEXTS = ["0", "12", "-3", "-0", "-", "", "007", "1_0", " 4", "4 ", "+4", "\u0664", "1.5", "5.", ".5", ".", "1.2.3",
         "-1.5", "1e5", "1e+06", "-2.5e-07", "1e+", "1e-x", "1.e+06", "1.5e", "1E+06", "nan", "true", "false", "True", "FALSE", "9" * 18, "-" + "9" * 18, "9" * 19, "-" + "9" * 19,
         "18446744073709551616" * 3, "é", "[]", "[a b]", "[ ]", "[a  b]", "[", "]", "[x]y", "[é☃ 😀]", "map[]",
         "map[:admin]", "map[a:b c:d:e f]", "map[ ]", "map[x", "map]", "Map[a:b]", "map[a:b]]"]


@st.composite
def build_args(draw):
    n = draw(st.integers(0, 12))
    keys = tuple("k%d" % i for i in range(n))
    values = draw(st.lists(st.one_of(st.sampled_from(TEXTS), st.text(max_size=4)), min_size=n, max_size=n))
    kinds = draw(st.lists(st.sampled_from("sifblm"), min_size=n, max_size=n))
    pick = lambda kind: tuple(i for i in draw(st.permutations(range(n))) if kinds[i] == kind)  # noqa: E731
    template = dict.fromkeys(("notification",) + keys + ("syslog",))
    template["notification"] = "event"
    return (template, keys, values) + tuple(pick(kind) for kind in "ifblm")


@SETTINGS
@given(args=build_args())
def test_build_types_values_as_go_prints_them(args):
    template, keys, values, *indexes = args
    expected = typed_items(oracle_build(template, keys, values, *indexes))
    assert typed_items(speedups.build(template, keys, list(values), *indexes)) == expected
    assert typed_items(_fast._build(template, keys, list(values), *indexes)) == expected


def test_build_examples():
    template = {"notification": "threat", "a": None, "b": None, "c": None, "d": None, "e": None, "syslog": None}
    got = speedups.build(template, ("a", "b", "c", "d", "e"), ["-" + "9" * 25, "7.5", "false", "[x  y]", "map[:admin]"],
                         (0,), (1,), (2,), (3,), (4,))
    assert typed_items(got) == typed_items({"notification": "threat", "a": -int("9" * 25), "b": 7.5, "c": False,
                                            "d": ["x", "", "y"], "e": {"": "admin"}, "syslog": None})
    assert template["a"] is None  # a copy
    for digits in ("9" * 18, "9" * 19, "9223372036854775807", "9223372036854775808", "1" + "0" * 40):
        for text in (digits, "-" + digits):  # around where a 64-bit integer ends
            assert speedups.build(template, ("a",), [text], (0,), (), (), (), ())["a"] == int(text)
    assert speedups.build(template, ("a",), [7], (), (), (), (), ()) == dict(template, a=7)  # untyped: as given
    assert speedups.build(template, ("a",), [7], (0,), (), (), (), ()) is None  # not text: not a Go integer
    assert speedups.build(template, ("a",), ["map[]"], (), (), (), (), (0,)) == dict(template, a=None)


@pytest.mark.parametrize("args, error", [
    (({}, ("a",), [], (), (), (), (), ()), ValueError),
    (({}, ("a",), ["1"], (1,), (), (), (), ()), IndexError),
    (({}, ("a",), ["1"], (), (), (), (-1,), ()), IndexError),
    (({}, ("a",), ["1"], ("0",), (), (), (), ()), TypeError),
    (({}, ["a"], ["1"], (), (), (), (), ()), TypeError),
    (({}, ("a",), ("1",), (), (), (), (), ()), TypeError),
    (({}, ("a",), ["1"], (), (), (), ()), TypeError),
])
def test_build_refuses_bad_arguments(args, error):
    with pytest.raises(error):
        speedups.build(*args)


# -- split_lists: a REST list reply cut into its elements, undecoded --------------

_JSON_TEXT = st.text(st.sampled_from('a"\\/[]{},:é\n\t ') | st.characters(blacklist_categories=("Cs",)), max_size=12)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.floats(allow_nan=False, allow_infinity=False)
    | _JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_JSON_TEXT, inner, max_size=3), max_leaves=12)
#: The lists' names are plain words (a name with an escape is left to the decoder, below).
_REPLIES = st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), st.lists(_JSON_VALUES, max_size=5),
                           max_size=4)


@SETTINGS
@given(_REPLIES, st.sampled_from([{"separators": (",", ":")}, {"indent": 1}, {"separators": (" , ", " : ")},
                                  {"ensure_ascii": False, "separators": (",", ":")}]))
def test_split_lists_cuts_each_element_as_a_decoder_reads_it(reply, style):
    payload = json.dumps(reply, **style).encode("utf-8")
    lists = speedups.split_lists(payload)
    assert lists is not None and list(lists) == list(reply)
    assert {key: [json.loads(element) for element in elements] for key, elements in lists.items()} == reply
    if style.get("separators") == (",", ":"):  # compact: each element is exactly the text it was written as
        assert all(element == json.dumps(value, **style).encode() for key, elements in lists.items()
                   for element, value in zip(elements, reply[key]))


@pytest.mark.parametrize("payload", [
    b'{"events":{"a":1}}', b'{"events":1}', b'["events"]', b'{"ev\\u0065nts":[1]}', b'{"events":[1,2]',
    b'{"events":[1,]}', b'{"events":[,1]}', b'{"events":[1]} x', b'{"events":["a]}', b'', b'{"\xff":[1]}',
    b'{"events":[1] "x":[2]}',
])
def test_split_lists_leaves_any_other_document_to_the_decoder(payload):
    assert speedups.split_lists(payload) is None


def test_split_lists_examples():
    assert speedups.split_lists(b'{"threats":[{"a":"}\\\\"},[1,[2]]],"violations":[],"incidents":[null]}') == {
        "threats": [b'{"a":"}\\\\"}', b'[1,[2]]'], "violations": [], "incidents": [b"null"]}
    assert speedups.split_lists(b'{"a":[1],"a":[2]}') == {"a": [b"2"]}  # the last, as a decoder keeps
    assert speedups.split_lists(b" {}\n") == {}
    with pytest.raises(TypeError):
        speedups.split_lists("{}")


# -- the fast path with and without the accelerator ------------------------------

def test_the_fast_path_runs_the_accelerator_where_it_is_built():
    assert (_fast.split_body, _fast.build) == (speedups.split_body, speedups.build)


def both_ways(frame):
    with_c = _fast.fast_record(frame, 0)
    with python_twins():
        without = _fast.fast_record(frame, 0)
    if with_c is None or without is None:
        assert with_c is None and without is None or (with_c or without) == _parse(frame, 0)
    else:
        assert typed_items(with_c.data) == typed_items(without.data)
    return with_c


def test_the_reference_samples_give_the_same_records_either_way():
    from helpers.nvsamples import load_samples

    wire = re.compile(rb"<\d+>1 \S+ \S+ \S+ \S+ \S+ - notification=")
    for line in (line for sample in load_samples() for line in sample.lines):
        record = both_ways(line)
        if wire.match(line):  # NeuVector's own text frames take the fast path both ways
            with python_twins():
                assert record is not None and _fast.fast_record(line, 0) is not None


@pytest.mark.parametrize("notification", ["violation", "threat", "incident", "event", "audit"])
def test_generated_frames_give_the_same_records_either_way(notification):
    from test_text_json_equivalence import _frame, records

    @settings(max_examples=100, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(record=records(notification))
    def check(record):
        syslog = {"pri": 134, "facility": 16, "severity": 6, "version": 1, "timestamp": "2025-03-14T08:00:13Z",
                  "hostname": "h", "app_name": "/usr/local/bin/controller", "procid": "12", "msgid": "neuvector"}
        expected = {"notification": notification, **record}
        frame = _frame(expected, syslog, json_mode=False)
        got = both_ways(frame)
        if got is not None:
            assert got == _parse(frame, 0)

    check()


def test_no_memory_is_kept_across_calls():
    raw = b"- notification=x,a=1,b=\xc3\xa9,c=true,d=2.5,e=[p q],f=map[r:s t]," + b",".join(b"k%d=v" % i for i in range(200))
    bad = raw + b"\xff"
    notification, keys, values = speedups.split_body(raw, 2)
    keys = tuple(keys.split(","))
    template = dict.fromkeys(keys)

    def calls():
        speedups.split_body(raw, 2)
        try:
            speedups.split_body(bad, 2)
        except UnicodeDecodeError:
            pass
        speedups.build(template, keys, values, (0,), (3,), (2,), (4,), (5,))
        speedups.build(template, keys, values, (1,), (), (), (), ())  # None: "é" is no integer
        speedups.split_lists(b'{"events":[{"a":[1,"x"]},2],"threats":[]}')
        speedups.split_lists(b'{"events":[{"a":[1,"x"]},2],"threats":[1,}')  # None, after two lists were made

    for _ in range(100):
        calls()
    gc.collect()
    # Only what is allocated from this file's lines (the C calls' objects): threads other tests
    # left behind (a collector draining, a logger) allocate too, elsewhere.
    here = [tracemalloc.Filter(True, __file__)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(here)
        for _ in range(3000):
            calls()
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(here)
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 4096, grown  # a leak of one object per call would be > 100 KB
