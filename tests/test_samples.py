"""Every reference sample gives exactly the record written down for it.

The expected records (tests/fixtures/samples_expected/) were written by hand
from the wire-format reference; see the README there for the conventions.
"""
import pytest

import nvparser
import nvsamples

SAMPLES = nvsamples.load_samples()
IDS = [s.id for s in SAMPLES]


def test_reference_has_all_41_samples():
    assert len(SAMPLES) == 41


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
