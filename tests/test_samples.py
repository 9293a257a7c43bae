"""Every reference sample gives exactly the record written down for it.

The expected records (tests/fixtures/samples_expected/) were written by hand
from the wire-format reference; see the README there for the conventions.
"""
from collections import Counter

import pytest

import nvparser
from helpers import nvsamples

SAMPLES = nvsamples.load_samples()
IDS = [s.id for s in SAMPLES]


def test_fixture_holds_every_reference_vector():
    """The reference's 41 vectors, by mode and transport, as its headers list them."""
    assert Counter(s.mode for s in SAMPLES) == {"text": 26, "json": 8, "podlog": 2, "http": 5}
    assert Counter(s.is_datagram for s in SAMPLES if s.mode in ("text", "json")) == {True: 20, False: 14}
    assert {s.id for s in SAMPLES if len(s.lines) > 1} == {"incident-text-5", "tcp-stream-1"}
    for kind in ("violation", "threat", "incident", "event", "activity", "audit"):
        assert {s.mode for s in SAMPLES if s.id.startswith(kind + "-")} == {"text", "json"}, kind
    docs = [s for s in SAMPLES if s.provenance == "quoted from docs/tests"]
    assert [s.id for s in docs] == ["docs-violation-legacy", "docs-incident-legacy", "docs-admission-legacy"]
    assert all(not s.lines[0].startswith(b"<") for s in docs)  # shown by a receiver: no PRI


def test_a_broken_fixture_layout_is_an_error_not_fewer_samples(tmp_path):
    broken = tmp_path / "samples.txt"
    broken.write_bytes(b"### a | p | transport=UDP | mode=text | lines=2\n<134>1 one\n"
                       b"### b | p | transport=UDP | mode=text | lines=1\n<134>1 two\n")
    with pytest.raises(ValueError, match="lacks its 2 raw lines"):
        nvsamples.load_samples(broken)


def test_every_sample_has_an_expected_record_and_nothing_else():
    on_disk = {p.stem for p in nvsamples.EXPECTED_DIR.glob("*.json")}
    assert on_disk == set(IDS)


def _parse(sample):
    """Feed a sample the way its transport delivers it; return all events."""
    if sample.mode == "http":
        body = b"\n".join(sample.lines)
        return [nvparser.parse_webhook(body, sample.content_type)]
    parser = nvparser.Parser()
    events = []
    if sample.is_datagram:
        for line in sample.lines:
            events += parser.feed_datagram(line + b"\n")
    else:
        events += parser.feed(sample.stream)
    return events + parser.close()


def _records(events):
    dead = [e for e in events if isinstance(e, nvparser.DeadLetter)]
    assert not dead, f"dead letters: {dead}"
    return [e.data for e in events if isinstance(e, nvparser.Record)]


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_sample_gives_expected_records(sample):
    nvsamples.assert_same_records(_records(_parse(sample)), nvsamples.expected_records(sample.id))


STREAMED = [s for s in SAMPLES if s.mode != "http" and not s.is_datagram]


@pytest.mark.parametrize("sample", STREAMED, ids=[s.id for s in STREAMED])
def test_stream_sample_split_into_small_reads(sample):
    """A TCP read can end anywhere: 7-byte reads give the same records."""
    parser = nvparser.Parser()
    data = sample.stream
    events = []
    for i in range(0, len(data), 7):
        events += parser.feed(data[i:i + 7])
    events += parser.close()
    nvsamples.assert_same_records(_records(events), nvsamples.expected_records(sample.id))
